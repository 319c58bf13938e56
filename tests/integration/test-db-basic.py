#!/usr/bin/env python3
"""kettle-db basics: the commands, errors in Redis's words, redis-cli as a
real client, the command line (--help, --version, -c FILE), the generated
config file, and a clean exit on SIGINT and SIGTERM once what clients sent is
answered."""
import os
import signal
import subprocess
import tempfile

import harness as h

E = h.RespError


def test_commands():
    with h.Server("kettle-db", "--latency", "none") as db:
        c = h.Client(db.port)
        assert c.call("PING") == "PONG"
        assert c.call("PING", "hi") == b"hi"
        assert c.call("ECHO", "a b\r\nc") == b"a b\r\nc"
        assert c.call("GET", "5") == b"5"
        assert c.call("GET", "0") == b"0"
        assert c.call("GET", "123456789012") == b"123456789012"
        assert c.call("get", "9") == b"9"
        # not a decimal integer: an error, the connection stays
        assert c.call("GET", "abc") == E("ERR key is not a decimal integer")
        assert c.call("GET", "+5") == E("ERR key is not a decimal integer")
        assert c.call("GET", "5 ") == E("ERR key is not a decimal integer")
        assert c.call("GET", "99999999999999999999") == E("ERR key is not a decimal integer")
        # outside the number space: nil, as Redis answers a missing key
        assert c.call("GET", "-1") is None
        assert c.call("MGET", "1", "2", "x", "-3", "4") == [
            b"1", b"2", E("ERR key is not a decimal integer"), None, b"4"]
        assert c.call("DBSIZE") == 9223372036854775807
        assert c.call("SELECT", "0") == "OK"
        assert c.call("SELECT", "1") == E("ERR DB index is out of range")
        assert isinstance(c.call("CLIENT", "ID"), int)
        assert c.call("CLIENT", "SETNAME", "x") == "OK"
        docs = c.call("COMMAND", "DOCS")  # from the command table: redis-cli's help works
        assert {b"get", b"mget", b"dbsize", b"fault", b"ping", b"config"} <= set(docs[0::2]), docs
        # Redis's error texts for unknown commands and arity
        assert c.call("FOO", "a", "b") == E("ERR unknown command 'FOO', with args beginning with: 'a' 'b' ")
        assert c.call("GET") == E("ERR wrong number of arguments for 'get' command")
        assert c.call("GET", "1", "2") == E("ERR wrong number of arguments for 'get' command")
        assert c.call("ECHO") == E("ERR wrong number of arguments for 'echo' command")
        r = c.call("AUTH", "x")
        assert isinstance(r, E) and str(r).startswith("ERR AUTH <password> called without"), r
        # inline commands, with quotes
        c.send(b"GET 7\r\nECHO \"x y\"\r\nPING\r\n")
        assert c.read_reply() == b"7"
        assert c.read_reply() == b"x y"
        assert c.read_reply() == "PONG"
        # QUIT: +OK, then the server closes
        assert c.call("QUIT") == "OK"
        assert c.closed_by_peer(5)
        c.close()


def test_keyspace_option():
    with h.Server("kettle-db", "--latency", "none", "--keyspace", "100") as db:
        c = h.Client(db.port)
        assert c.call("DBSIZE") == 100
        assert c.call("GET", "99") == b"99"
        assert c.call("GET", "100") is None
        assert c.call("MGET", "0", "100") == [b"0", None]


def test_info():
    with h.Server("kettle-db", "--latency", "fixed 2ms", "--seed", "42") as db:
        c = h.Client(db.port)
        for i in range(20):
            assert c.call("GET", i) == str(i).encode()
        inf = h.info(c)
        assert inf["io_backend"] in ("epoll", "io_uring", "libevent"), inf
        assert inf["latency_model"] == "fixed 2ms"
        assert inf["seed"] == "42"
        assert int(inf["requests_served"]) == 20
        assert int(inf["connected_clients"]) == 1
        assert int(inf["delay_samples"]) == 20
        assert abs(float(inf["delay_scheduled_p50_us"]) - 2000) < 20
        assert float(inf["delay_actual_p99_us"]) >= 2000
        assert float(inf["delay_lateness_max_us"]) >= 0
        for k in ("requests_in_service", "requests_queued", "fault_stall_count",
                  "fault_cut_probability", "used_memory_rss", "loop_iterations"):
            assert k in inf, k
        raw = c.call("INFO", "server").decode()
        assert raw.startswith("# Server\r\n") and "io_backend:" in raw and "# Stats" not in raw
        assert c.call("INFO", "nosuchsection") == b""


def test_redis_cli():
    cli = h.need("redis-cli")
    with h.Server("kettle-db", "--latency", "fixed 1ms") as db:
        def run(*args):
            return subprocess.run([cli, "-h", "127.0.0.1", "-p", str(db.port)] + list(args),
                                  capture_output=True, text=True, timeout=20).stdout
        assert run("GET", "5").strip() == "5"
        assert run("PING").strip() == "PONG"
        assert run("MGET", "1", "2", "3").split() == ["1", "2", "3"]
        assert run("DBSIZE").strip() == "9223372036854775807"
        assert "io_backend:" in run("INFO")
        assert "ERR key is not a decimal integer" in run("GET", "x")
        assert run("CONFIG", "SET", "latency", "fixed 3ms").strip() == "OK"
        assert run("CONFIG", "GET", "latency").split("\n")[1].strip() == "fixed 3ms"
        assert run("FAULT", "LIST").strip() == ""
        # interactive mode over stdin (redis-cli asks COMMAND DOCS first)
        out = subprocess.run([cli, "-p", str(db.port)], input="GET 8\nPING\n", capture_output=True,
                             text=True, timeout=20).stdout
        assert "8" in out and "PONG" in out, out


def test_help_version_conf():
    exe = h.program("kettle-db")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0
    for word in ("--listen", "--latency", "--seed", "--io", "--workers", "pareto SCALE SHAPE",
                 "proportional", "FAULT SET", "head-of-line", "maxclients", "max-inline"):
        assert word in out.stdout, word
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and out.stdout.startswith("kettle-db ")
    # conf/kettle-db.conf is exactly what the option table generates
    gen = subprocess.run([exe, "--write-conf"], capture_output=True, text=True, timeout=20).stdout
    with open(os.path.join(h.SRCDIR, "conf", "kettle-db.conf")) as f:
        assert f.read() == gen, "conf/kettle-db.conf is stale: regenerate with kettle-db --write-conf"
    for name in ("listen", "latency", "seed", "workers", "fault", "admin", "admin-password",
                 "maxclients", "max-inline", "max-bulk", "max-args", "max-query-buffer",
                 "max-output-buffer", "max-pending", "io"):
        assert "# %s = " % name in gen or "# %s =\n" % name in gen, name
    out = subprocess.run([exe, "--bogus"], capture_output=True, text=True, timeout=20)
    assert out.returncode != 0
    out = subprocess.run([exe, "--latency", "sometimes"], capture_output=True, text=True, timeout=20)
    assert out.returncode != 0 and "latency" in out.stderr


def test_config_file():
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        f.write("# test\nlatency = fixed 7ms\nseed = 99\nkeyspace = 1000\nfault = error 0.25\n")
        path = f.name
    try:
        with h.Server("kettle-db", "-c", path) as db:
            c = h.Client(db.port)
            inf = h.info(c)
            assert inf["latency_model"] == "fixed 7ms" and inf["seed"] == "99"
            assert inf["keyspace"] == "1000"
            assert c.call("FAULT", "LIST") == [b"error 0.25 ERR injected fault"]
        # the command line wins over the file
        with h.Server("kettle-db", "-c", path, "--latency", "none") as db:
            assert h.info(h.Client(db.port))["latency_model"] == "none"
    finally:
        os.unlink(path)


def test_signals_exit_clean():
    for sig in (signal.SIGINT, signal.SIGTERM):
        db = h.Server("kettle-db", "--latency", "fixed 1s")
        c = h.Client(db.port)
        # requests in flight and a half-read connection at exit
        c.send(h.encode("GET", "1") * 100 + b"*2\r\n$3\r\nGET")
        h.wait_for(lambda: int(h.info(h.Client(db.port))["requests_in_service"]) == 100, 10,
                   "requests in service")
        db.stop(sig=sig)
        c.close()


def test_sigterm_answers_what_was_sent():
    """SIGTERM with requests in service and more unread behind max-pending:
    every request sent before the signal is answered, then exit 0; an idle
    connection does not hold the exit up. A second signal cuts the drain
    short with exit status 3."""
    db = h.Server("kettle-db", "--latency", "fixed 300ms", "--max-pending", "50")
    try:
        idle = h.Client(db.port)
        assert idle.call("PING") == "PONG"
        c = h.Client(db.port)
        c.send(b"".join(h.encode("GET", i) for i in range(200)))
        adm = h.Client(db.port)
        h.wait_for(lambda: h.info(adm, "stats")["requests_in_service"] == "50", 10, "50 in service")
        adm.close()
        db.signal(signal.SIGTERM)
        c.sock.settimeout(30)
        for i in range(200):
            assert c.read_reply() == str(i).encode(), i
        assert c.closed_by_peer(10)
        assert idle.closed_by_peer(10)
        assert db.wait(30) == 0
        db.check_clean()
    finally:
        db.kill()
    db = h.Server("kettle-db", "--latency", "fixed 20s")
    try:
        c = h.Client(db.port)
        c.send(h.encode("GET", "1"))
        adm = h.Client(db.port)
        h.wait_for(lambda: h.info(adm, "stats")["requests_in_service"] == "1", 10, "in service")
        adm.close()
        db.signal(signal.SIGTERM)
        db.wait_log("shutting down")
        db.signal(signal.SIGTERM)
        assert db.wait(10) == 3
        assert "1 requests unanswered" in db.log()
        db.check_clean()
    finally:
        db.kill()


def test_listen_several_and_unix():
    path = os.path.join(tempfile.mkdtemp(), "db.sock")
    db = h.Server("kettle-db", "--latency", "none", "--listen", "unix:" + path,
                  listen="127.0.0.1:0")
    try:
        db.wait_log(r"listening on unix:")
        c = h.Client(None, unix=path)
        assert c.call("GET", "3") == b"3"
        assert h.Client(db.port).call("GET", "4") == b"4"
    finally:
        db.stop()


if __name__ == "__main__":
    h.main(globals())
