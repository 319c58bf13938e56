#!/usr/bin/env python3
"""A real redis-server as kettled's database: GET n of a key set to n,
nil for a missing key, other values and error replies passed through;
three redis-servers as shards (consistent hashing: every key always on one
server, an MGET spread over all three, a removed server moving only its own
keys, a dead one ejected); redis-benchmark as a client."""
import subprocess

import harness as h
from kdtest import E, kettled


def fill(port, keys, tag=None):
    """SET each key to itself (or to "tag:key")."""
    c = h.Client(port)
    out = c.pipeline([("SET", k, k if tag is None else "%s:%s" % (tag, k)) for k in keys])
    assert all(r == "OK" for r in out)
    c.close()


def test_one_redis():
    r = h.start_redis()
    kd = kettled("--backend", r.addr)
    try:
        fill(r.port, [str(i) for i in range(200)])
        rc = h.Client(r.port)
        assert rc.call("SET", "word", "hello world") == "OK"
        assert rc.call("SET", "007", "7") == "OK"
        assert rc.call("RPUSH", "list", "a") == 1
        c = h.Client(kd.port)
        assert c.call("GET", "42") == b"42"
        assert c.call("MGET", *[str(i) for i in range(100)]) == [str(i).encode() for i in range(100)]
        assert c.call("GET", "missing") is None
        assert c.call("MGET", "1", "missing", "2") == [b"1", None, b"2"]
        assert c.call("GET", "word") == b"hello world"
        assert c.call("GET", "007") == b"7"
        r2 = c.call("GET", "list")
        assert isinstance(r2, E) and str(r2).startswith("WRONGTYPE"), r2
        assert c.call("MGETSEQ", "3", "4") == [b"3", b"4"]
        # the race answers with the first value to arrive; a nil only when
        # every key is missing
        assert c.call("MGETANY", "5", "missing") == b"5"
        assert c.call("MGETANY", "missing", "absent") is None
        inf = h.info(c, "backend")["backend0"]
        assert r.addr in inf and "state=up" in inf, inf
    finally:
        kd.stop()
        r.stop()


def test_redis_benchmark_against_kettled():
    exe = h.need("redis-benchmark")
    r = h.start_redis()
    kd = kettled("--backend", r.addr)
    try:
        fill(r.port, [str(i) for i in range(10)])
        for extra in ([], ["-P", "16"]):
            p = subprocess.run([exe, "-p", str(kd.port), "-t", "get,ping", "-n", "2000", "-c", "10",
                                "-q"] + extra, capture_output=True, timeout=60)
            out = p.stdout.decode(errors="replace")
            assert p.returncode == 0 and "GET" in out and "PING" in out, out + p.stderr.decode()
        c = h.Client(kd.port)
        inf = h.info(c, "stats")
        assert int(inf["cmd_get"]) >= 4000, inf
        assert inf["errors_protocol"] == "0"
    finally:
        kd.stop()
        r.stop()


def shard_of(c, key, tags):
    v = c.call("GET", key)
    assert isinstance(v, bytes), (key, v)
    tag, k = v.decode().split(":")
    assert k == key and tag in tags, v
    return tag


def test_three_shards():
    rs = [h.start_redis() for _ in range(3)]
    tags = {"s%d" % i: r for i, r in enumerate(rs)}
    keys = [str(i) for i in range(300)]
    for i, r in enumerate(rs):
        fill(r.port, keys, "s%d" % i)  # every shard has every key, tagged
    kd = kettled(*sum((["--backend", r.addr] for r in rs), []), "--eject-after", "1",
                 "--eject-time", "30s", "--backend-retry-min", "20ms", "--connect-timeout", "300ms")
    try:
        c = h.Client(kd.port)
        where = {k: shard_of(c, k, tags) for k in keys}
        counts = {t: sum(1 for v in where.values() if v == t) for t in tags}
        assert all(n >= 40 for n in counts.values()), counts  # spread over all three
        assert all(shard_of(c, k, tags) == where[k] for k in keys[:50])  # stable
        # one MGET across the shards, answered in key order
        r = c.call("MGET", *keys[:30])
        assert [x.decode() for x in r] == ["%s:%s" % (where[k], k) for k in keys[:30]], r
        # remove s2: only its keys move
        addrs = "%s %s" % (rs[0].addr, rs[1].addr)
        assert c.call("CONFIG", "SET", "backend", addrs) == "OK"
        for k in keys:
            t = shard_of(c, k, ("s0", "s1"))
            if where[k] != "s2":
                assert t == where[k], (k, where[k], t)
        # kill s1: after the failure it is ejected and its keys go to s0
        rs[1].kill()
        k1 = [k for k in keys if where[k] == "s1"]
        r = c.call("GET", k1[0])  # an error naming s1, or already ejected and served by s0
        assert (isinstance(r, E) and rs[1].addr in str(r)) or r == ("s0:" + k1[0]).encode(), r
        h.wait_for(lambda: "state=ejected" in h.info(c, "backend")["backend1"], 5, "s1 ejected")
        h.wait_for(lambda: c.call("GET", k1[1]) == ("s0:" + k1[1]).encode(), 5, "s1's keys on s0")
        for k in keys:
            if where[k] == "s0":
                assert shard_of(c, k, ("s0",)) == "s0"
    finally:
        kd.stop()
        for r in rs:
            r.kill()


h.main(globals())
