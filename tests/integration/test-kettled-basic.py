#!/usr/bin/env python3
"""kettled with its embedded simulated database: every command through
redis-cli (one-shot and interactive), pipelining answered in request order,
the three shapes of get_numbers() (MGET concurrent, MGETSEQ sequential,
MGETANY first-wins), request-timeout with partial results, AUTH/HELLO,
CLIENT, CONFIG GET/SET, INFO, a unix socket listener, two instances on one
port with reuseport, --check-config and the committed conf/kettled.conf."""
import os
import subprocess
import tempfile
import time

import harness as h

E = h.RespError


def kettled(*args, **kw):
    return h.Server("kettled", *args, **kw)


def cli(port, *args, timeout=60):
    exe = h.need("redis-cli")
    p = subprocess.run([exe, "-p", str(port)] + [str(a) for a in args], capture_output=True,
                       timeout=timeout)
    return p.stdout.decode()


def test_redis_cli_every_command():
    with kettled("--embedded-latency", "fixed 1ms") as k:
        p = k.port
        assert cli(p, "PING") == "PONG\n"
        assert cli(p, "PING", "hello") == "hello\n"
        assert cli(p, "ECHO", "a b") == "a b\n"
        assert cli(p, "GET", "42") == "42\n"
        assert cli(p, "MGET", "1", "2", "3") == "1\n2\n3\n"
        assert cli(p, "MGETSEQ", "4", "5", "6") == "4\n5\n6\n"
        assert cli(p, "MGETANY", "7", "7") == "7\n"
        assert cli(p, "GET", "x").startswith("ERR"), cli(p, "GET", "x")
        assert cli(p, "SELECT", "0") == "OK\n"
        assert cli(p, "SELECT", "1").strip() == "ERR DB index is out of range"
        assert cli(p, "QUIT") == "OK\n"
        assert cli(p, "CLIENT", "SETNAME", "x") == "OK\n"
        assert cli(p, "CLIENT", "GETNAME") == "\n"  # a new connection: nil
        assert cli(p, "CLIENT", "ID").strip().isdigit()
        assert "id=" in cli(p, "CLIENT", "LIST")
        assert cli(p, "COMMAND", "COUNT").strip().isdigit()
        assert "mgetseq" in cli(p, "COMMAND", "LIST")
        assert "summary" in cli(p, "COMMAND", "DOCS", "GET")
        assert "readonly" in cli(p, "COMMAND", "INFO", "GET")
        assert "io_backend:" in cli(p, "INFO", "server")
        assert "# Backend" in cli(p, "INFO")
        assert cli(p, "HELLO", "3").startswith("NOPROTO")
        assert "kettled" in cli(p, "HELLO", "2")
        assert cli(p, "AUTH", "x").startswith("ERR AUTH <password> called without")
        assert cli(p, "CONFIG", "GET", "request-timeout") == "request-timeout\n5000ms\n"
        assert cli(p, "CONFIG", "RESETSTAT") == "OK\n"
        assert cli(p, "NOSUCH", "a").strip() == "ERR unknown command 'NOSUCH', with args beginning with: 'a'"
        assert cli(p, "GET").strip() == "ERR wrong number of arguments for 'get' command"
        assert cli(p, "CLIENT", "FOO").startswith("ERR unknown subcommand 'FOO'. Try CLIENT HELP.")
        # redis-cli's --no-raw formatting of an array with an error element
        out = subprocess.run([h.need("redis-cli"), "-p", str(p), "--no-raw", "MGET", "1", "x"],
                             capture_output=True, timeout=60).stdout.decode()
        assert out.startswith('1) "1"\n2) (error) ERR'), out


def test_redis_cli_interactive():
    """redis-cli's prompt reads COMMAND DOCS at start: help and replies work."""
    exe = h.need("redis-cli")
    k = kettled()
    env = dict(os.environ, TERM="dumb", HOME=tempfile.mkdtemp())
    with k, h.Pty([exe, "-p", str(k.port)], env, eol="\n", timeout=60) as t:
        t.send("help mgetany")
        t.expect("first to arrive")
        t.send("mget 1 2")
        t.expect('2) "2"')
        t.send("ping")
        t.expect("PONG")


def test_pipeline_in_order():
    """Replies leave in request order even when later fetches finish first
    (proportional delay: GET 30 takes 30 units, GET 1 one)."""
    with kettled("--embedded-latency", "proportional 5ms") as k:
        c = h.Client(k.port)
        cmds = [("GET", "30"), ("PING",), ("GET", "1"), ("MGET", "20", "2"), ("ECHO", "e"),
                ("GET", "nope"), ("GET", "3")]
        got = c.pipeline(cmds)
        assert got[:5] == [b"30", "PONG", b"1", [b"20", b"2"], b"e"], got
        assert isinstance(got[5], E) and got[6] == b"3", got


def timed(c, *args):
    t0 = time.monotonic()
    r = c.call(*args)
    return r, time.monotonic() - t0


def with_info(c, *cmd):
    """(reply to cmd, INFO stats) for cmd and INFO sent in one write: the
    INFO runs as soon as it is read, right after cmd has started its fetches."""
    c.send(h.encode(*cmd) + h.encode("INFO", "stats"))
    r = c.read_reply()
    raw = c.read_reply()
    assert isinstance(raw, bytes), raw
    return r, dict(line.split(":", 1) for line in raw.decode().splitlines() if ":" in line)


def test_three_shapes():
    """MGET waits for the slowest, MGETSEQ for the sum, MGETANY for the fastest
    (each key its own GET: a batch would answer with its slowest key).
    Elapsed times are checked from below only (a loaded machine adds to
    them); MGET's concurrency is seen in INFO: all its fetches outstanding
    at once. Three connections to the database, all up before the first
    request, so that each key has one to itself: replies leave a connection
    in order, and a fast key sent behind a slow one would wait for it."""
    with kettled("--embedded-latency", "proportional 40ms", "--backend-batch", "1",
                 "--backend-connections", "3") as k:
        c = h.Client(k.port)
        h.wait_for(lambda: "connections=3/3," in h.info(c, "backend")["backend0"], 10,
                   "three connections to the database up")
        t0 = time.monotonic()
        r, inf = with_info(c, "MGET", "1", "2", "3")
        assert r == [b"1", b"2", b"3"] and time.monotonic() - t0 >= 0.12, (r, time.monotonic() - t0)
        assert inf["fetches_outstanding"] == "3", inf
        fetches = int(inf["fetches"])
        t0 = time.monotonic()
        r, inf = with_info(c, "MGETSEQ", "1", "2", "3")
        assert r == [b"1", b"2", b"3"] and time.monotonic() - t0 >= 0.24, (r, time.monotonic() - t0)
        assert int(inf["fetches_outstanding"]) <= 1, inf  # one after another
        r, t = timed(c, "MGETANY", "3", "1", "2")
        assert r == b"1" and t >= 0.04, (r, t)  # the fastest key won
        # the losers were cancelled: their replies are read and dropped
        inf = h.info(c, "stats")
        assert int(inf["fetch_cancellations"]) == 2, inf
        assert int(inf["fetches"]) == fetches + 6, inf
        h.wait_for(lambda: h.info(c, "stats")["fetches_outstanding"] == "0", 10, "losers' replies read")
        assert c.call("GET", "2") == b"2"


def test_request_timeout_partial():
    """At the deadline the outstanding fetches are cancelled; MGET answers
    with the parts that arrived and an error for the rest. Fast keys take
    20 ms, slow ones 2 s: far on either side of the 1 s deadline, so that
    which part arrives in time does not hang on the machine's load."""
    k = kettled("--embedded-latency", "proportional 10ms", "--request-timeout", "1s",
                "--backend-batch", "1")
    try:
        c = h.Client(k.port)
        late = E("ERR request timed out after 1000 ms (request-timeout)")
        r, t = timed(c, "MGET", "1", "200", "2")
        assert r[0] == b"1" and r[2] == b"2", r
        assert r[1] == late, r
        assert t >= 1.0, t  # the deadline is not early
        # (each time, the cancelled fetches' replies are awaited so that no
        # later request waits behind one on its connection)
        settled = lambda: h.info(c, "stats")["fetches_outstanding"] == "0"
        h.wait_for(settled, 10, "late replies read")
        r = c.call("GET", "190")
        assert r == late, r
        h.wait_for(settled, 10, "late replies read")
        fetches = int(h.info(c, "stats")["fetches"])
        r = c.call("MGETSEQ", "2", "200", "1")  # 20 ms, then 2 s > 1 s: the third never starts
        assert r[0] == b"2" and r[1] == late and isinstance(r[2], E), r
        assert int(h.info(c, "stats")["fetches"]) == fetches + 2
        assert c.call("MGETANY", "200", "190") == late
        inf = h.info(c, "stats")
        assert int(inf["request_timeouts"]) == 4, inf
        # the cancelled fetches' replies arrive later and are dropped
        h.wait_for(settled, 10, "late replies read")
        assert c.call("GET", "1") == b"1"
    finally:
        k.stop()


def test_auth_hello():
    with kettled("--requirepass", "s3cret") as k:
        c = h.Client(k.port)
        assert c.call("GET", "1") == E("NOAUTH Authentication required.")
        assert c.call("PING") == E("NOAUTH Authentication required.")
        assert c.call("AUTH", "bad") == E("WRONGPASS invalid username-password pair or user is disabled.")
        assert c.call("HELLO", "2").__class__ is E
        assert c.call("AUTH", "s3cret") == "OK"
        assert c.call("GET", "1") == b"1"
        d = h.Client(k.port)
        r = d.call("HELLO", "2", "AUTH", "default", "s3cret", "SETNAME", "me")
        assert r[:6] == [b"server", b"kettled", b"version", r[3], b"proto", 2], r
        assert d.call("CLIENT", "GETNAME") == b"me"
        assert d.call("MGET", "1", "2") == [b"1", b"2"]
        assert d.call("HELLO", "x") == E("ERR Protocol version is not an integer or out of range")
        assert d.call("HELLO", "2", "bogus") == E("ERR Syntax error in HELLO option 'bogus'")
        assert d.call("CLIENT", "SETNAME", "a b") == E(
            "ERR Client names cannot contain spaces, newlines or special characters.")
        e = h.Client(k.port)
        assert e.call("AUTH", "default", "s3cret") == "OK"
        assert e.call("QUIT") == "OK"
        assert e.closed_by_peer()
        # redis-cli -a
        assert subprocess.run([h.need("redis-cli"), "-p", str(k.port), "-a", "s3cret",
                               "--no-auth-warning", "GET", "5"],
                              capture_output=True, timeout=60).stdout == b"5\n"


def test_config_set_and_info():
    with kettled() as k:
        c = h.Client(k.port)
        assert c.call("CONFIG", "SET", "request-timeout", "250ms", "max-keys", "3") == "OK"
        assert c.call("CONFIG", "GET", "max-keys") == [b"max-keys", b"3"]
        assert c.call("MGET", "1", "2", "3", "4") == E("ERR too many keys: 4 (max-keys is 3)")
        assert c.call("CONFIG", "SET", "io", "epoll") == E(
            "ERR CONFIG SET failed (possibly related to argument 'io') - can't set immutable config")
        assert c.call("CONFIG", "SET", "nosuch", "1") == E(
            "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'")
        r = c.call("CONFIG", "SET", "max-keys", "lots")
        assert isinstance(r, E) and "max-keys" in str(r), r
        assert c.call("CONFIG", "GET", "max-keys") == [b"max-keys", b"3"]  # unchanged
        inf = h.info(c)
        for key in ("io_backend", "process_id", "uptime_in_seconds", "connected_clients",
                    "blocked_clients", "rejected_connections", "total_commands_processed",
                    "cmd_mget", "fetches", "request_timeouts", "fetch_cancellations",
                    "backends", "backend0", "iterations", "longest_iteration_us",
                    "timers_pending", "used_memory_rss"):
            assert key in inf, key
        assert "latency_p999_us=" in inf["backend0"] and "state=up" in inf["backend0"]
        assert inf["io_backend"] in ("epoll", "io_uring", "libevent")
        assert h.info(c, "nosuch") == {}
        assert set(h.info(c, "clients")) >= {"connected_clients", "maxclients"}


def test_unix_socket_and_two_listeners():
    d = tempfile.mkdtemp()
    path = os.path.join(d, "kettled.sock")
    with kettled("--listen", "unix:" + path) as k:
        c = h.Client(k.port)
        assert c.call("GET", "3") == b"3"
        u = h.Client(0, unix=path)
        assert u.call("MGET", "4", "5") == [b"4", b"5"]
    assert not os.path.exists(path)


def test_reuseport():
    """With reuseport, a second kettled listens on the port of the first
    (SO_REUSEPORT); without it, the second one cannot."""
    a = kettled("--reuseport", "yes")
    b = None
    try:
        b = kettled("--reuseport", "yes", listen=a.addr)
        assert a.alive() and b.alive()
        for _ in range(4):  # served whichever instance the kernel picks
            assert h.Client(a.port).call("GET", "8") == b"8"
        r = subprocess.run([h.program("kettled"), "--listen", a.addr], capture_output=True,
                           timeout=20)
        assert r.returncode == 1 and b"cannot listen" in r.stderr, r
    finally:
        a.stop()
        if b:
            b.stop()


def test_io_backends():
    for io in ("epoll", "libevent", "io_uring"):
        k = None
        try:
            k = kettled("--io", io)
        except AssertionError as e:
            if io != "epoll" and ("cannot create" in str(e) or "exited" in str(e)):
                continue  # not available here
            raise
        try:
            c = h.Client(k.port)
            assert c.call("MGET", "1", "2") == [b"1", b"2"]
            assert h.info(c, "server")["io_backend"] == io
        finally:
            k.stop()


def test_check_config_and_conf_file():
    exe = h.program("kettled")
    conf = os.path.join(h.SRCDIR, "conf", "kettled.conf")
    out = subprocess.run([exe, "--write-conf"], capture_output=True, timeout=60).stdout.decode()
    with open(conf) as f:
        assert f.read() == out, "conf/kettled.conf is stale: regenerate with kettled --write-conf"
    r = subprocess.run([exe, "-c", conf, "--check-config"], capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == b"configuration OK\n", r
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        f.write("maxclients = many\n")
    r = subprocess.run([exe, "-c", f.name, "--check-config"], capture_output=True, timeout=60)
    assert r.returncode == 1 and b"maxclients" in r.stderr, r
    r = subprocess.run([exe, "--max-keys", "70000", "--check-config"], capture_output=True, timeout=60)
    assert r.returncode == 1 and b"max-keys" in r.stdout, r
    os.unlink(f.name)
    # --help lists the commands and every option; --version
    r = subprocess.run([exe, "--help"], capture_output=True, timeout=60).stdout.decode()
    for word in ("MGETSEQ", "MGETANY", "--request-timeout", "--backend-pipeline", "--embedded-latency"):
        assert word in r, word
    assert subprocess.run([exe, "--version"], capture_output=True, timeout=60).stdout.startswith(b"kettled ")


h.main(globals())
