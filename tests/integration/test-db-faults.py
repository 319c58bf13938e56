#!/usr/bin/env python3
"""kettle-db's faults, each observed by a client byte for byte: error,
stall, close (FIN), reset (RST), garbage, cut, trickle, refuse,
stop-reading, slow-accept; probabilities; runtime reconfiguration through
CONFIG SET and FAULT SET/CLEAR/LIST; admin commands disabled or behind a
password."""
import select
import socket
import time

import harness as h

E = h.RespError
MS = 1e-3


def raw_connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until_end(s, timeout=5):
    """Bytes received until the peer ends the connection, and how it
    ended: "eof" (FIN) or "reset" (RST)."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], max(0, deadline - time.monotonic()))
        if not r:
            break
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return data, "reset"
        if not chunk:
            return data, "eof"
        data += chunk
    raise AssertionError("connection still open after %ss; got %r" % (timeout, data))


def read_exactly(s, n, timeout=5):
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < n:
        r, _, _ = select.select([s], [], [], max(0, deadline - time.monotonic()))
        assert r, "only %r of %d bytes within %ss" % (data, n, timeout)
        chunk = s.recv(n - len(data))
        assert chunk, "closed after %r" % data
        data += chunk
    return data


def quiet(s, t=0.4):
    """Nothing arrives (and the connection is not closed) within t seconds."""
    r, _, _ = select.select([s], [], [], t)
    if r:
        try:
            got = s.recv(65536, socket.MSG_PEEK)
        except ConnectionResetError:
            got = "RST"
        raise AssertionError("expected silence, got %r" % (got,))


def db(*args):
    return h.Server("kettle-db", "--latency", "none", "--seed", "5", *args)


def test_error():
    d = db()
    try:
        adm = h.Client(d.port)
        c = h.Client(d.port)
        assert adm.call("FAULT", "SET", "error", "1") == "OK"
        assert c.call("GET", "1") == E("ERR injected fault")
        assert c.call("MGET", "1", "2") == E("ERR injected fault")
        assert c.call("PING") == "PONG"  # never faulted
        assert adm.call("FAULT", "SET", "error", "1", "BUSY", "try", "later") == "OK"
        assert c.call("GET", "1") == E("BUSY try later")
        assert adm.call("FAULT", "LIST") == [b"error 1 BUSY try later"]
        assert int(h.info(adm, "faults")["fault_error_count"]) == 3
        assert adm.call("FAULT", "CLEAR") == "OK"
        assert c.call("GET", "1") == b"1"
        assert adm.call("FAULT", "LIST") == []
    finally:
        d.stop()


def test_stall():
    d = db()
    try:
        adm = h.Client(d.port)
        s = raw_connect(d.port)
        assert adm.call("FAULT", "SET", "stall", "1") == "OK"
        s.sendall(h.encode("GET", "1") + h.encode("PING"))
        # never answered, and the PING behind it waits too (head-of-line)
        h.wait_for(lambda: h.info(adm, "stats")["requests_stalled"] == "1", 5, "a stalled request")
        quiet(s)
        assert adm.call("FAULT", "CLEAR") == "OK"
        quiet(s, 0.2)
        # other connections are served
        assert h.Client(d.port).call("GET", "2") == b"2"
        s.close()
        h.wait_for(lambda: h.info(adm, "stats")["requests_stalled"] == "0", 5, "stall released on close")
    finally:
        d.stop()


def test_close_and_reset():
    d = db()
    try:
        adm = h.Client(d.port)
        for fault, end in (("close", "eof"), ("reset", "reset")):
            assert adm.call("FAULT", "SET", fault, "1") == "OK"
            s = raw_connect(d.port)
            # the reply before the faulty request arrives whole, then the end
            s.sendall(h.encode("PING") + h.encode("GET", "1") + h.encode("PING"))
            data, how = read_until_end(s)
            assert data == b"+PONG\r\n", (fault, data)
            assert how == end, (fault, how)
            s.close()
            assert adm.call("FAULT", "CLEAR") == "OK"
        inf = h.info(adm, "faults")
        assert inf["fault_close_count"] == "1" and inf["fault_reset_count"] == "1"
        # with a delay: earlier delayed replies still leave first
        assert adm.call("CONFIG", "SET", "latency", "proportional 20ms") == "OK"
        assert adm.call("FAULT", "SET", "reset", "0") == "OK"
        s = raw_connect(d.port)
        s.sendall(h.encode("GET", "3"))
        h.wait_for(lambda: h.info(adm, "stats")["requests_in_service"] == "1", 5, "GET 3 in service")
        assert adm.call("FAULT", "SET", "reset", "1") == "OK"
        s.sendall(h.encode("GET", "1"))
        data, how = read_until_end(s)
        assert (data, how) == (b"$1\r\n3\r\n", "reset"), (data, how)
    finally:
        d.stop()


def test_garbage():
    d = db()
    try:
        adm = h.Client(d.port)
        s = raw_connect(d.port)
        assert adm.call("FAULT", "SET", "garbage", "1", "5") == "OK"
        s.sendall(h.encode("GET", "1"))
        g = read_exactly(s, 5)
        assert g[:1] == b"@", g  # no RESP type byte
        quiet(s, 0.2)
        assert adm.call("FAULT", "SET", "garbage", "1") == "OK"
        s.sendall(h.encode("GET", "1"))
        g = read_exactly(s, 16)
        assert g[:1] == b"@"
        quiet(s, 0.2)
        # the connection stays usable: the next reply is well-formed
        assert adm.call("FAULT", "CLEAR") == "OK"
        s.sendall(h.encode("GET", "2"))
        assert read_exactly(s, 7) == b"$1\r\n2\r\n"
    finally:
        d.stop()


def test_cut():
    d = db()
    try:
        adm = h.Client(d.port)
        assert adm.call("FAULT", "SET", "cut", "1", "3") == "OK"
        s = raw_connect(d.port)
        s.sendall(h.encode("GET", "12") + h.encode("PING"))
        assert read_exactly(s, 3) == b"$2\r"
        quiet(s)  # stalls: no more bytes, not closed
        # K past the reply's end still cuts: all but the last byte
        s2 = raw_connect(d.port)
        assert adm.call("FAULT", "SET", "cut", "1", "100") == "OK"
        s2.sendall(h.encode("GET", "12"))
        assert read_exactly(s2, 7) == b"$2\r\n12\r"
        quiet(s2)
        # MGET replies are cut as a whole
        s3 = raw_connect(d.port)
        assert adm.call("FAULT", "SET", "cut", "1", "6") == "OK"
        s3.sendall(h.encode("MGET", "1", "2"))
        assert read_exactly(s3, 6) == b"*2\r\n$1"
        quiet(s3, 0.2)
        assert h.info(adm, "faults")["fault_cut_count"] == "3"
        assert adm.call("FAULT", "CLEAR") == "OK"
        quiet(s, 0.2)  # a cut connection stays dead
        assert h.Client(d.port).call("GET", "4") == b"4"
    finally:
        d.stop()


def test_trickle():
    d = db()
    try:
        adm = h.Client(d.port)
        assert adm.call("FAULT", "SET", "trickle", "1", "2", "40ms") == "OK"
        s = raw_connect(d.port)
        t0 = time.monotonic()
        # a PING behind it waits for the whole trickled reply
        s.sendall(h.encode("GET", "12345") + h.encode("PING"))
        want = b"$5\r\n12345\r\n"  # 11 bytes: 6 slices, 5 gaps of 40 ms
        got, chunks = b"", []
        while len(got) < len(want):
            got += read_exactly(s, 1)
            r, _, _ = select.select([s], [], [], 0)
            if r:
                got += s.recv(len(want) - len(got))
            chunks.append((time.monotonic() - t0, len(got)))
        assert got == want, got
        # slices of at most 2 bytes, 40 ms apart: by time t at most
        # 2 x (t / 40 ms + 1) bytes can have come (a slow reader may see more
        # slices at once, never slices sooner)
        for t, n in chunks:
            assert n <= 2 * (int((t + 1 * MS) / (40 * MS)) + 1), chunks
        assert chunks[-1][0] >= 5 * 40 * MS - 1 * MS, chunks
        assert read_exactly(s, 7) == b"+PONG\r\n"
        assert h.info(adm, "faults")["fault_trickle_count"] == "1"
        assert adm.call("FAULT", "CLEAR") == "OK"
        s.sendall(h.encode("GET", "1"))
        assert read_exactly(s, 7) == b"$1\r\n1\r\n"
    finally:
        d.stop()


def test_refuse():
    d = db()
    try:
        adm = h.Client(d.port)
        assert adm.call("FAULT", "SET", "refuse", "1") == "OK"
        try:
            socket.create_connection(("127.0.0.1", d.port), timeout=5)
            raise AssertionError("connected while refusing")
        except ConnectionRefusedError:
            pass
        assert adm.call("PING") == "PONG"  # existing connections go on
        assert h.info(adm, "faults")["refusing"] == "1"
        assert adm.call("FAULT", "CLEAR", "refuse") == "OK"
        assert h.Client(d.port).call("GET", "3") == b"3"  # the same port again
        # below 1: accepted, then reset at once, for about that share
        assert adm.call("FAULT", "SET", "refuse", "0.5") == "OK"
        refused = 0
        for _ in range(40):
            try:
                s = raw_connect(d.port)
            except ConnectionResetError:
                refused += 1  # the RST can beat connect()'s return
                continue
            try:
                s.sendall(h.encode("PING"))
                r, _, _ = select.select([s], [], [], 5)
                assert r
                data = s.recv(100)
                if data == b"":
                    refused += 1
                else:
                    assert data == b"+PONG\r\n", data
            except (ConnectionResetError, BrokenPipeError):
                refused += 1
            s.close()
        assert 8 <= refused <= 32, refused
        assert int(h.info(adm, "stats")["refused_connections"]) == refused
    finally:
        d.stop()


def test_stop_reading():
    d = db()
    try:
        adm = h.Client(d.port)
        old = raw_connect(d.port)
        assert h.Client(d.port).call("PING") == "PONG"
        assert adm.call("FAULT", "SET", "stop-reading", "1") == "OK"
        s = raw_connect(d.port)  # accepted ...
        s.sendall(h.encode("PING"))
        quiet(s)  # ... but never read
        h.wait_for(lambda: h.info(adm, "clients")["frozen_clients"] == "1", 5, "a frozen client")
        old.sendall(h.encode("PING"))  # existing connections are still read
        assert read_exactly(old, 7) == b"+PONG\r\n"
        # "all": existing connections too, but not the one that asks
        assert adm.call("FAULT", "SET", "stop-reading", "1", "all") == "OK"
        old.sendall(h.encode("PING"))
        quiet(old)
        assert adm.call("PING") == "PONG"
        assert adm.call("FAULT", "CLEAR") == "OK"
        # cleared: what waited in the socket is read and answered
        assert read_exactly(s, 7) == b"+PONG\r\n"
        assert read_exactly(old, 7) == b"+PONG\r\n"
    finally:
        d.stop()


def test_slow_accept():
    d = db()
    try:
        adm = h.Client(d.port)
        count = lambda: int(h.info(adm, "faults")["fault_slow_accept_count"])
        # the pause comes after an accept: the first connection is served
        # at once (here the pause is 60 s: it would outlast any load), the
        # next one waits
        assert adm.call("FAULT", "SET", "slow-accept", "1", "60s") == "OK"
        first = raw_connect(d.port)
        first.sendall(h.encode("PING"))
        assert read_exactly(first, 7, 30) == b"+PONG\r\n"
        assert count() == 1
        second = raw_connect(d.port)  # the kernel completes the handshake
        second.sendall(h.encode("PING"))
        quiet(second)
        # clearing the fault ends the pause
        assert adm.call("FAULT", "CLEAR") == "OK"
        assert read_exactly(second, 7, 30) == b"+PONG\r\n"
        # one accept per pause, each pause in full
        assert adm.call("FAULT", "SET", "slow-accept", "1", "300ms") == "OK"
        t0 = time.monotonic()
        socks = [raw_connect(d.port) for _ in range(3)]
        for s in socks:
            s.sendall(h.encode("PING"))
        times = []
        pending = list(socks)
        while pending:
            r, _, _ = select.select(pending, [], [], 30)
            assert r, "no PONG within 30 s"
            for s in r:
                assert read_exactly(s, 7) == b"+PONG\r\n"
                times.append(time.monotonic() - t0)
                pending.remove(s)
        times.sort()
        assert times[1] >= 300 * MS - 1 * MS, times
        assert times[2] >= 600 * MS - 1 * MS, times
        assert count() == 4
        # cleared: no more pauses
        assert adm.call("FAULT", "CLEAR") == "OK"
        for _ in range(5):
            assert h.Client(d.port).call("PING") == "PONG"
        assert count() == 4
        assert h.info(adm, "faults")["faults_active"] == ""
    finally:
        d.stop()


def test_probability_and_start_option():
    d = db("--fault", "error 0.3", "--fault", "garbage 0")
    try:
        c = h.Client(d.port)
        replies = c.pipeline([("GET", i) for i in range(1000)])
        errors = sum(1 for r in replies if isinstance(r, E))
        assert 240 <= errors <= 360, errors
        assert all(r == str(i).encode() for i, r in enumerate(replies) if not isinstance(r, E))
        assert int(h.info(c, "faults")["fault_error_count"]) == errors
    finally:
        d.stop()


def test_runtime_config():
    d = db()
    try:
        c = h.Client(d.port)
        assert c.call("CONFIG", "SET", "latency", "fixed 200ms") == "OK"
        t0 = time.monotonic()
        assert c.call("GET", "1") == b"1"
        assert time.monotonic() - t0 >= 195 * MS
        assert c.call("CONFIG", "GET", "latency") == [b"latency", b"fixed 200ms"]
        assert c.call("CONFIG", "GET", "max-*")[0::2] == [
            b"max-delay", b"max-inline", b"max-bulk", b"max-args", b"max-query-buffer",
            b"max-output-buffer", b"max-pending"]
        r = c.call("CONFIG", "SET", "latency", "sometimes")
        assert isinstance(r, E) and str(r).startswith(
            "ERR CONFIG SET failed (possibly related to argument 'latency') - expected none"), r
        r = c.call("CONFIG", "SET", "io", "epoll")
        assert r == E("ERR CONFIG SET failed (possibly related to argument 'io') - can't set immutable config")
        r = c.call("CONFIG", "SET", "nosuch", "1")
        assert r == E("ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'")
        # all or nothing
        r = c.call("CONFIG", "SET", "workers", "3", "latency", "bogus")
        assert isinstance(r, E)
        assert c.call("CONFIG", "GET", "workers") == [b"workers", b"0"]
        assert c.call("CONFIG", "SET", "workers", "3", "latency", "none") == "OK"
        assert c.call("CONFIG", "GET", "workers", "latency") == [b"latency", b"none", b"workers", b"3"]
        assert c.call("CONFIG", "SET", "latency", "uniform 1ms 2ms", "seed", "77") == "OK"
        assert h.info(c, "server")["seed"] == "77"
        # FAULT SET errors and listing
        assert isinstance(c.call("FAULT", "SET", "melt", "0.1"), E)
        assert isinstance(c.call("FAULT", "SET", "stall", "2"), E)
        assert isinstance(c.call("FAULT", "SET", "cut", "0.1", "x"), E)
        assert c.call("FAULT", "SET", "stall", "0.1") == "OK"
        assert c.call("FAULT", "SET", "trickle", "0.2", "3", "5ms") == "OK"
        assert c.call("FAULT", "LIST") == [b"stall 0.1", b"trickle 0.2 3 5ms"]
        assert c.call("FAULT", "CLEAR", "stall") == "OK"
        assert c.call("FAULT", "LIST") == [b"trickle 0.2 3 5ms"]
        assert isinstance(c.call("FAULT", "CLEAR", "nosuch"), E)
        assert c.call("CONFIG", "RESETSTAT") == "OK"
        assert h.info(c, "stats")["requests_served"] == "0"
    finally:
        d.stop()


def test_admin_disabled():
    d = db("--no-admin")
    try:
        c = h.Client(d.port)
        assert c.call("CONFIG", "GET", "*") == E("ERR admin commands are disabled (admin no)")
        assert c.call("FAULT", "SET", "stall", "1") == E("ERR admin commands are disabled (admin no)")
        assert c.call("GET", "1") == b"1"
        assert h.info(c, "server")["admin"] == "disabled"
    finally:
        d.stop()


def test_admin_password():
    d = db("--admin-password", "s3cret")
    try:
        c = h.Client(d.port)
        assert c.call("FAULT", "LIST") == E("NOAUTH Authentication required.")
        assert c.call("GET", "1") == b"1"  # data commands need no password
        assert c.call("AUTH", "wrong") == E("WRONGPASS invalid username-password pair or user is disabled.")
        assert c.call("FAULT", "LIST") == E("NOAUTH Authentication required.")
        assert c.call("AUTH", "default", "s3cret") == "OK"
        assert c.call("FAULT", "LIST") == []
        assert c.call("CONFIG", "GET", "admin-password") == [b"admin-password", b"***"]
        other = h.Client(d.port)
        assert other.call("CONFIG", "SET", "latency", "none") == E("NOAUTH Authentication required.")
        assert other.call("AUTH", "s3cret") == "OK"
        assert other.call("CONFIG", "SET", "latency", "none") == "OK"
        assert int(h.info(c, "stats")["auth_failures"]) == 1
    finally:
        d.stop()


if __name__ == "__main__":
    h.main(globals())
