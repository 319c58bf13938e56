#!/usr/bin/env python3
"""kettled's cross-client batching and singleflight against real databases
(kettle-db and redis-server): every client's replies right, and the
commands that reached the database counted by the database itself
(kettle-db's INFO, redis-server's INFO commandstats). Also: an error reply
fails its batch only, cancellation and deadlines inside a batch, and the
bound on what one client can make the pool hold, and io-batch-wait."""
import os
import re
import socket
import struct
import threading
import time

import harness as h
from kdtest import E, field, kettle_db, kettled, raw


def db_stat(c, key):
    return int(h.info(c)[key])


def redis_calls(c, cmd):
    s = h.info(c, "commandstats").get("cmdstat_" + cmd)
    return int(s.split("calls=")[1].split(",")[0]) if s else 0


def start_redis_numbers(n):
    r = h.start_redis()
    c = h.Client(r.port)
    for base in range(0, n, 500):
        c.pipeline([("SET", str(k), str(k)) for k in range(base, min(n, base + 500))])
    return r, c


def test_one_request_one_batch_kettle_db():
    """The 100 keys of one MGET leave as ceil(100 / backend-batch) MGETs."""
    db = kettle_db("--latency", "fixed 1ms")
    kd = kettled("--backend", db.addr, "--backend-batch", "32")
    try:
        c, adm = h.Client(kd.port), h.Client(db.port)
        assert c.call("GET", "1") == b"1"
        before = db_stat(adm, "total_commands_processed")
        keys = [str(k) for k in range(100, 200)]
        assert c.call("MGET", *keys) == [k.encode() for k in keys]
        # 4 MGETs (32 + 32 + 32 + 4), and the INFO that counts them
        assert db_stat(adm, "total_commands_processed") - before == 4 + 1
        inf = h.info(c, "backend")
        assert "batches=5," in inf["backend0"] and "keys_per_batch_p99=32," in inf["backend0"], inf
        # off: one GET per key
        assert c.call("CONFIG", "SET", "backend-batch", "1") == "OK"
        before = db_stat(adm, "total_commands_processed")
        assert c.call("MGET", *keys[:10]) == [k.encode() for k in keys[:10]]
        assert db_stat(adm, "total_commands_processed") - before == 10 + 1
    finally:
        kd.stop()
        db.stop()


def test_batching_redis():
    """Against redis-server: MGETs, not GETs, and every value right."""
    r, rc = start_redis_numbers(2000)
    kd = kettled("--backend", r.addr, "--backend-connections", "1")
    try:
        c = h.Client(kd.port)
        g0, m0 = redis_calls(rc, "get"), redis_calls(rc, "mget")
        keys = [str(k) for k in range(0, 64)]
        assert c.call("MGET", *keys) == [k.encode() for k in keys]
        assert redis_calls(rc, "mget") - m0 == 2 and redis_calls(rc, "get") == g0
        # a pipeline of 40 GETs read at once: batched across the requests
        got = c.pipeline([("GET", str(k)) for k in range(500, 540)])
        assert got == [str(k).encode() for k in range(500, 540)], got
        assert redis_calls(rc, "get") + redis_calls(rc, "mget") - g0 - m0 <= 2 + 8
        # a missing key is nil, a value of another type its error, in place
        rc.call("SET", "word", "hello")
        assert c.call("MGET", "1", "missing", "word", "2") == [b"1", None, b"hello", b"2"]
    finally:
        kd.stop()
        r.stop()


def many_clients(port, nclients, rounds, keys_of):
    """nclients threads, each doing `rounds` MGETs; every reply checked."""
    problems = []

    def run(i):
        try:
            with h.Client(port) as c:
                for k in range(rounds):
                    keys = keys_of(i, k)
                    got = c.call("MGET", *keys)
                    if got != [x.encode() for x in keys]:
                        problems.append((keys, got))
        except Exception as e:  # noqa: BLE001 - collected and reported
            problems.append(repr(e))
    ts = [threading.Thread(target=run, args=(i,)) for i in range(nclients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not problems, problems[:5]


def database(which, latency):
    """kettle-db (with latency) or redis-server holding the numbers, and a
    function counting the data commands (GET, MGET) it has served."""
    if which == "redis":
        db, adm = start_redis_numbers(5000)
        return db, lambda: redis_calls(adm, "get") + redis_calls(adm, "mget")
    db = kettle_db("--latency", latency)
    adm = h.Client(db.port)
    infos = [0]

    def count():  # every command but the INFOs asked here
        infos[0] += 1
        return db_stat(adm, "total_commands_processed") - infos[0]
    return db, count


def test_cross_client_batching():
    """Clients at once: their keys share commands, each gets its own values."""
    for which in ("kettle-db", "redis"):
        db, count = database(which, "fixed 2ms")
        kd = kettled("--backend", db.addr, "--singleflight", "no")
        try:
            c = h.Client(kd.port)
            before, s0 = count(), h.info(c, "stats")
            many_clients(kd.port, 16, 30, lambda i, k: [str((i * 131 + k * 7 + j) % 5000)
                                                        for j in range(3)])
            sent = count() - before
            s1 = h.info(c, "stats")
            assert int(s1["fetches"]) - int(s0["fetches"]) == 16 * 30 * 3
            # every key went out (no singleflight)
            inf = h.info(c, "backend")["backend0"]
            assert int(field(inf, "fetches")) == 16 * 30 * 3, inf
            assert int(field(inf, "batches")) == sent, (inf, sent)
            # at most one command per request; with kettle-db's delay the
            # clients' requests meet in the same loop pass and share commands
            assert 0 < sent <= 16 * 30, (sent, which)
            if which == "kettle-db":
                assert float(field(inf, "keys_per_batch_mean")) > 3, inf
        finally:
            kd.stop()
            db.stop()


def test_singleflight_kettle_db_and_redis():
    """50 pipelined GETs of one key: one fetch reaches the database."""
    for which in ("kettle-db", "redis"):
        db, count = database(which, "fixed 20ms")
        kd = kettled("--backend", db.addr)
        try:
            c = h.Client(kd.port)
            assert c.call("GET", "7") == b"7"
            before = count()
            assert c.pipeline([("GET", "7")] * 50) == [b"7"] * 50
            assert count() - before == 1, which
            assert int(field(h.info(c, "backend")["group0"], "joins")) == 49, h.info(c, "backend")
            assert c.call("CONFIG", "SET", "singleflight", "no") == "OK"
            before = count()
            assert c.pipeline([("GET", "7")] * 50) == [b"7"] * 50
            assert count() - before == 2, which  # MGET of 32, MGET of 18
        finally:
            kd.stop()
            db.stop()


def test_error_reply_fails_its_batch_only():
    db = kettle_db("--latency", "fixed 300ms")
    kd = kettled("--backend", db.addr, "--backend-connections", "1")
    try:
        adm = h.Client(db.port)
        a, b = h.Client(kd.port), h.Client(kd.port)
        assert adm.call("FAULT", "SET", "error", "1") == "OK"
        a.send(h.encode("MGET", "1", "2", "3"))
        # read (its keys in service, or already served): counted whatever the load
        read = lambda st: int(st["requests_in_service"]) + int(st["requests_served"]) >= 3
        h.wait_for(lambda: read(h.info(adm, "stats")), 30, "the first batch read")
        assert adm.call("FAULT", "CLEAR") == "OK"
        assert b.call("MGET", "4", "5") == [b"4", b"5"]
        got = a.read_reply()
        want = E("ERR injected fault (backend %s)" % db.addr)
        assert got == [want, want, want], got
    finally:
        kd.stop()
        db.stop()


def test_cancel_and_deadline_in_a_batch():
    """A client leaving cancels its fetches only; each request keeps its own
    deadline even when its keys share a command with another's."""
    # 2 s fetches: still out whenever the test looks, however loaded the machine
    db = kettle_db("--latency", "fixed 2s")
    kd = kettled("--backend", db.addr, "--backend-connections", "1", "--request-timeout", "20s")
    try:
        c = h.Client(kd.port)
        s = raw(kd.port)
        b = h.Client(kd.port)
        # one read, one batch: a's three keys and b's key
        s.sendall(h.encode("MGET", "11", "12", "13"))
        b.send(h.encode("GET", "12"))
        h.wait_for(lambda: int(h.info(c, "stats")["fetches_outstanding"]) >= 3, 30, "fetches out")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST: its fetches are cancelled
        assert b.read_reply() == b"12"
        h.wait_for(lambda: int(h.info(c, "stats")["fetch_cancellations"]) >= 3, 30, "cancellations")
        h.wait_for(lambda: h.info(c, "stats")["fetches_outstanding"] == "0", 30, "replies read")
        # two requests sharing one fetch, each with its own deadline (the
        # request-timeout in force when it arrived)
        joins = lambda: int(field(h.info(c, "backend")["group0"], "joins"))
        j0 = joins()
        assert c.call("CONFIG", "SET", "request-timeout", "100ms") == "OK"
        x = h.Client(kd.port)
        x.send(h.encode("GET", "30"))
        h.wait_for(lambda: h.info(c, "stats")["fetches_outstanding"] == "1", 30, "the fetch out")
        assert c.call("CONFIG", "SET", "request-timeout", "20s") == "OK"
        y = h.Client(kd.port)
        y.send(h.encode("GET", "30"))
        assert str(x.read_reply()).startswith("ERR request timed out")
        assert y.read_reply() == b"30"
        assert joins() == j0 + 1
    finally:
        kd.stop()
        db.stop()


def test_held_bytes_bounded():
    """A client pipelining MGETs of 1,000 keys of 8,000 bytes to a database
    that does not answer: the pool holds at most backend-queue-bytes for
    the server, and the keys past it fail at once."""
    db = kettle_db("--fault", "stall 1")
    # (the client's own bound, max-pending-bytes, is set above the pool's)
    kd = kettled("--backend", db.addr, "--backend-queue-bytes", "20mb", "--max-query-buffer", "16mb",
                 "--max-pending-bytes", "64mb", "--request-timeout", "60s",
                 "--backend-timeout", "60s")
    try:
        c = h.Client(kd.port)
        s = raw(kd.port, timeout=30)
        for r in range(4):  # distinct keys: none joins another's fetch
            s.sendall(h.encode("MGET", *[("%d%06d" % (r, i)) * 1143 for i in range(1000)]))
        held = []

        def look():
            inf = h.info(c, "backend")["backend0"]
            held.append(int(inf.split("held_bytes=")[1].split(",")[0]))
            return int(h.info(c, "stats")["fetches"]) == 4000
        h.wait_for(look, 60, "the four requests read")
        st = h.info(c, "stats")
        # (8,001 + 160) bytes a fetch: 2,569 fit in 20 MB, 1,431 failed
        assert int(st["fetch_failures"]) == 4000 - (20 << 20) // 8161, st
        assert max(held) <= 20 << 20, held
        assert c.call("CONFIG", "GET", "backend-queue-bytes") == [b"backend-queue-bytes", b"20971520"]
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # RST: its fetches are cancelled; their replies would be dropped
        h.wait_for(lambda: int(h.info(c, "stats")["fetch_cancellations"]) == (20 << 20) // 8161,
                   10, "the held fetches cancelled")
    finally:
        kd.stop()
        db.stop()


def kernel_at_least(major, minor):
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m.group(1)), int(m.group(2))) >= (major, minor)


def test_batch_wait():
    """io-batch-wait: off by default, reloadable; with clients at once the
    busy loop's waits gather completions (io_uring on Linux 6.12 or later),
    every reply right; 0 turns it off again; with epoll it is off, and
    logged."""
    db = kettle_db("--latency", "fixed 1ms")
    kd = kettled("--backend", db.addr)
    try:
        c = h.Client(kd.port)

        def loop_info():
            return h.info(c, "loop")
        assert c.call("CONFIG", "GET", "io-batch-wait") == [b"io-batch-wait", b"0ms"]
        assert loop_info()["io_batch_wait_us"] == "0"
        assert c.call("CONFIG", "SET", "io-batch-wait", "100us") == "OK"
        r = c.call("CONFIG", "SET", "io-batch-wait", "11ms")
        assert isinstance(r, E) and "at most 10ms" in str(r), r
        gathers = loop_info()["io_batch_wait_us"] == "100"
        # io_uring gathers wherever the kernel can (6.12 on)
        assert gathers or not (loop_info()["io_backend"] == "io_uring" and kernel_at_least(6, 12))
        b0 = b1 = int(loop_info()["batch_waits"])
        for _ in range(10):  # until the loop has been busy enough to wait for a batch
            many_clients(kd.port, 16, 50, lambda i, k: [str((i * 37 + k) % 1000)])
            b1 = int(loop_info()["batch_waits"])
            if b1 > b0:
                break
        assert (b1 > b0) == gathers, (b0, b1, gathers)
        assert c.call("CONFIG", "SET", "io-batch-wait", "0") == "OK"
        assert loop_info()["io_batch_wait_us"] == "0"
        b1 = int(loop_info()["batch_waits"])
        many_clients(kd.port, 16, 50, lambda i, k: [str((i * 41 + k) % 1000)])
        assert int(loop_info()["batch_waits"]) == b1
        assert c.call("CONFIG", "SET", "io-batch-wait", "250us") == "OK"
        assert c.call("CONFIG", "GET", "io-batch-wait") == [b"io-batch-wait", b"250us"]
        assert loop_info()["io_batch_wait_us"] == ("250" if gathers else "0")
        many_clients(kd.port, 8, 20, lambda i, k: [str((i * 43 + k) % 1000), str(k)])
    finally:
        kd.stop()
    kd = kettled("--backend", db.addr, "--io", "epoll", "--io-batch-wait", "100us",
                 "--log-level", "info")
    try:
        c = h.Client(kd.port)
        inf = h.info(c, "loop")
        assert inf["io_backend"] == "epoll" and inf["io_batch_wait_us"] == "0", inf
        many_clients(kd.port, 8, 20, lambda i, k: [str((i * 47 + k) % 1000)])
        assert h.info(c, "loop")["batch_waits"] == "0"
        assert "io-batch-wait: the epoll backend cannot gather completions" in kd.log()
    finally:
        kd.stop()
        db.stop()


h.main(globals())
