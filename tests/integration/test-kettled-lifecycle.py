#!/usr/bin/env python3
"""kettled's life: the database down at start, the database restarted
mid-load, SIGTERM with 1,000 requests in flight (all answered, exit 0), a
second signal and shutdown-timeout (exit status 3: requests were left
unanswered), SIGHUP reload (applied, and the old
configuration kept when the new one is invalid), and a reloaded backend
list, and no switch between configured backends and the embedded
database at run time."""
import os
import re
import signal
import socket
import tempfile
import time

import harness as h
from kdtest import E, Load, kettle_db, kettled, raw

UNANSWERED = 3  # exit status of a drain that left requests unanswered

FAST = ("--backend-retry-min", "20ms", "--backend-retry-max", "150ms", "--eject-time", "300ms",
        "--connect-timeout", "300ms")


def test_db_down_at_start():
    port = h.free_port()
    addr = "127.0.0.1:%d" % port
    kd = kettled("--backend", addr, *FAST)
    db = None
    try:
        c = h.Client(kd.port)
        r = c.call("GET", "1")
        assert isinstance(r, E) and addr in str(r), r
        # the refused connection answered it, not the request's deadline
        inf = h.info(c, "stats")
        assert inf["request_timeouts"] == "0" and int(inf["backend_connection_failures"]) >= 1, inf
        r = c.call("MGET", "1", "2")
        assert all(isinstance(x, E) for x in r), r
        db = kettle_db("--latency", "none", listen=addr)
        h.wait_for(lambda: c.call("GET", "5") == b"5", 10, "service once the database is up")
        assert c.call("MGET", "1", "2") == [b"1", b"2"]
    finally:
        kd.stop()
        if db:
            db.stop()


def test_db_restarted_mid_load():
    port = h.free_port()
    addr = "127.0.0.1:%d" % port
    db = kettle_db("--latency", "fixed 2ms", listen=addr)
    kd = kettled("--backend", addr, "--request-timeout", "800ms", "--backend-timeout", "500ms", *FAST)
    try:
        c = h.Client(kd.port)
        assert c.call("GET", "1") == b"1"
        h.wait_for(lambda: re.search(r"connections=(\d+)/\1,", h.info(c, "backend")["backend0"]), 5,
                   "pool up")
        base = h.fd_count(kd.pid)
        with Load(kd.port, n=4, deadline=0.8 + 1.0) as load:
            load.wait_ok(20, 10)
            db.kill()
            load.wait_errors(10, 10, "errors while the database is gone")
            assert kd.alive()
            db = kettle_db("--latency", "fixed 2ms", listen=addr)
            load.wait_ok(50, 15, "service after the restart")
        assert c.call("MGET", "7", "8") == [b"7", b"8"]
        h.wait_for(lambda: h.fd_count(kd.pid) <= base, 10, "descriptors back to the baseline")
    finally:
        kd.stop()
        db.stop(expect=None)


def test_sigterm_with_1000_in_flight():
    kd = kettled("--embedded-latency", "fixed 700ms", "--request-timeout", "10s")
    socks = []
    try:
        mon = h.Client(kd.port)
        for i in range(10):
            s = raw(kd.port)
            s.sendall(b"".join(h.encode("GET", str(i * 100 + j)) for j in range(100)))
            socks.append(s)
        h.wait_for(lambda: int(h.info(mon, "stats")["fetches_outstanding"]) == 1000, 10,
                   "1,000 fetches in flight")
        mon.close()
        kd.signal(signal.SIGTERM)
        # the listeners close at once: no new client gets in
        h.wait_for(lambda: _refused(kd.port), 5, "listener closed")
        for i, s in enumerate(socks):
            c = h.Client.__new__(h.Client)
            c.sock, c.buf = s, b""
            s.settimeout(10)
            for j in range(100):
                assert c.read_reply() == str(i * 100 + j).encode()
            assert c.closed_by_peer(5)
        assert kd.wait(10) == 0
        kd.check_clean()
        assert "shutting down" in kd.log()
    finally:
        for s in socks:
            s.close()
        kd.kill()


def test_sigterm_answers_what_was_sent():
    """50 clients pipeline 1,500 GETs each, more than max-pending (1,024):
    at the signal part of each client's requests are still unread in its
    socket. Every request sent before the signal is answered, in order;
    then each client is closed and kettled exits 0."""
    # no deadline of kettled's may cut a request short on a loaded machine:
    # this is about the drain alone
    kd = kettled("--embedded-latency", "fixed 200ms", "--request-timeout", "0",
                 "--backend-timeout", "0", "--shutdown-timeout", "0")
    socks = []
    n, per = 50, 1500
    try:
        mon = h.Client(kd.port)
        for i in range(n):
            s = raw(kd.port)
            s.sendall(b"".join(h.encode("GET", str(i * per + j)) for j in range(per)))
            socks.append(s)
        # every client has hit max-pending: the rest of its requests wait unread
        h.wait_for(lambda: int(h.info(mon, "stats")["clients_paused_reading"]) >= n, 30,
                   "every client paused at max-pending")
        mon.close()
        kd.signal(signal.SIGTERM)
        for i, s in enumerate(socks):
            c = h.Client.__new__(h.Client)
            c.sock, c.buf = s, b""
            s.settimeout(60)
            for j in range(per):
                r = c.read_reply()
                assert r == str(i * per + j).encode(), (i, j, r)
            assert c.closed_by_peer(10), i
        assert kd.wait(30) == 0
        kd.check_clean()
        assert "unanswered" not in kd.log()
    finally:
        for s in socks:
            s.close()
        kd.kill()


def _refused(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except OSError:
        return True
    s.close()
    return False


def in_flight(kd, *cmd):
    """A raw connection to kd that sent cmd, once kd's fetches for it are
    out (each takes 20 s in the tests below)."""
    s = raw(kd.port)
    s.sendall(h.encode(*cmd))
    with h.Client(kd.port) as mon:
        h.wait_for(lambda: h.info(mon, "stats")["fetches_outstanding"] == str(len(cmd) - 1), 30,
                   "fetches in flight")
    return s


def exits_unanswered(kd, why):
    """kd exits with the status of a drain that left requests unanswered,
    before its 20 s fetches could end, with no sanitizer report, logging
    why and the one client's unanswered request."""
    assert kd.wait(15) == UNANSWERED
    kd.check_clean()
    assert why in kd.log() and "1 requests unanswered" in kd.log(), kd.log()[-2000:]


def test_second_signal_exits_at_once():
    kd = kettled("--embedded-latency", "fixed 20s", "--request-timeout", "0")
    try:
        s = in_flight(kd, "GET", "1")
        kd.signal(signal.SIGTERM)
        kd.wait_log("shutting down")  # the drain began; the fetch takes 20 s
        assert kd.alive()
        kd.signal(signal.SIGINT)
        exits_unanswered(kd, "second signal")  # at once; the GET sent before got no reply
        s.close()
    finally:
        kd.kill()


def test_shutdown_timeout():
    kd = kettled("--embedded-latency", "fixed 20s", "--request-timeout", "0", "--shutdown-timeout", "300ms")
    try:
        s = in_flight(kd, "MGET", "1", "2")
        t0 = time.monotonic()
        kd.signal(signal.SIGTERM)
        exits_unanswered(kd, "shutdown-timeout")
        assert time.monotonic() - t0 >= 0.3
        s.close()
    finally:
        kd.kill()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def conf_file(text):
    """A config file holding text (the caller removes it)."""
    path = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False).name
    write(path, text)
    return path


def test_sighup_reload():
    db1 = kettle_db("--latency", "none")
    db2 = kettle_db("--latency", "none")
    conf = conf_file("backend = %s\nrequest-timeout = 1s\nmax-keys = 10\n" % db1.addr)
    kd = kettled("-c", conf)
    try:
        c = h.Client(kd.port)
        assert c.call("MGET", "1", "2") == [b"1", b"2"]
        assert db1.addr in h.info(c, "backend")["backend0"]
        # a valid change: applied without dropping the client
        write(conf, "backend = %s\nrequest-timeout = 2s\nmax-keys = 2\nlog-level = info\n"
              "backlog = 7\n" % db2.addr)
        kd.signal(signal.SIGHUP)
        h.wait_for(lambda: c.call("CONFIG", "GET", "request-timeout") == [b"request-timeout", b"2000ms"],
                   5, "reloaded request-timeout")
        assert c.call("MGET", "1", "2", "3") == E("ERR too many keys: 3 (max-keys is 2)")
        inf = h.info(c, "backend")
        assert inf["backends"] == "1" and db2.addr in inf["backend0"], inf
        assert c.call("GET", "9") == b"9"
        h.wait_for(lambda: "configuration reloaded" in kd.log(), 5, "reload logged")
        assert "option backlog changed" in kd.log()  # needs a restart: kept
        assert c.call("CONFIG", "GET", "backlog") == [b"backlog", b"4096"]
        # an invalid file: the running configuration stays
        write(conf, "backend = %s\nrequest-timeout = soon\n" % db1.addr)
        kd.signal(signal.SIGHUP)
        h.wait_for(lambda: "reload failed" in kd.log(), 5, "reload refused")
        assert c.call("CONFIG", "GET", "request-timeout") == [b"request-timeout", b"2000ms"]
        assert db2.addr in h.info(c, "backend")["backend0"]
        assert c.call("GET", "4") == b"4"
    finally:
        kd.stop()
        db1.stop()
        db2.stop()
        os.unlink(conf)


def test_no_switch_to_the_embedded_database():
    """A kettled started with backends never falls back to its embedded
    simulated database: CONFIG SET backend "" and an empty config file on
    SIGHUP are refused and the configured server goes on serving; no
    embedded listener is ever opened. One started without a backend keeps
    its embedded database: adding backends at run time is refused too."""
    db = kettle_db("--latency", "none")
    conf = conf_file("backend = %s\n" % db.addr)
    kd = kettled("-c", conf)
    try:
        c = h.Client(kd.port)
        assert c.call("GET", "1") == b"1"
        r = c.call("CONFIG", "SET", "backend", "")
        assert isinstance(r, E) and "embedded database" in str(r), r
        assert c.call("CONFIG", "GET", "backend") == [b"backend", db.addr.encode()]
        write(conf, "")
        kd.signal(signal.SIGHUP)
        line = kd.wait_log(r"reload failed.*").group(0)
        assert "embedded database" in line, line
        assert h.info(c, "server")["database"] == "external"
        served = int(h.info(h.Client(db.port), "stats")["requests_served"])
        assert c.call("MGET", "2", "3") == [b"2", b"3"]
        assert int(h.info(h.Client(db.port), "stats")["requests_served"]) == served + 2
        assert "simulated database" not in kd.log()
    finally:
        kd.stop()
        os.unlink(conf)
    kd = kettled()
    try:
        c = h.Client(kd.port)
        assert h.info(c, "server")["database"].startswith("embedded ")
        r = c.call("CONFIG", "SET", "backend", db.addr)
        assert isinstance(r, E) and "embedded database" in str(r), r
        assert c.call("CONFIG", "GET", "backend") == [b"backend", b""]
        assert c.call("GET", "4") == b"4"
        assert h.info(c, "server")["database"].startswith("embedded ")
    finally:
        kd.stop()
        db.stop()


def test_backends_changed_at_run_time():
    """CONFIG SET backend: requests already sent to a removed server are
    answered; new ones go to the new list; the old server is released."""
    db1 = kettle_db("--latency", "fixed 3s")  # GET 11 is still out when the list changes
    db2 = kettle_db("--latency", "none")
    kd = kettled("--backend", db1.addr, "--request-timeout", "30s", "--backend-timeout", "30s")
    try:
        c = h.Client(kd.port)
        s = raw(kd.port)
        s.sendall(h.encode("GET", "11"))
        h.wait_for(lambda: h.info(c, "stats")["fetches_outstanding"] == "1", 30, "a fetch in flight")
        assert c.call("CONFIG", "SET", "backend", db2.addr) == "OK"
        assert c.call("GET", "12") == b"12"
        c2 = h.Client.__new__(h.Client)
        c2.sock, c2.buf = s, b""
        assert c2.read_reply() == b"11"
        h.wait_for(lambda: h.info(c, "backend")["backends"] == "1" and
                   "backend1" not in h.info(c, "backend"), 5, "the old server retired")
        db1_clients = lambda: int(h.info(h.Client(db1.port), "clients")["connected_clients"])
        h.wait_for(lambda: db1_clients() <= 1, 5, "connections to the old server closed")
        assert c.call("CONFIG", "SET", "backend", "%s %s" % (db1.addr, db2.addr)) == "OK"
        assert c.call("MGET", *[str(i) for i in range(20)]) == [str(i).encode() for i in range(20)]
    finally:
        kd.stop()
        db1.stop()
        db2.stop()


h.main(globals())
