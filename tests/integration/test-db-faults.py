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


def db(*args):
    return h.Server("kettle-db", "--latency", "none", "--seed", "5", *args)


def test_error():
    with db() as d:
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


def test_stall():
    with db() as d:
        adm = h.Client(d.port)
        s = h.raw(d.port)
        assert adm.call("FAULT", "SET", "stall", "1") == "OK"
        s.sendall(h.encode("GET", "1") + h.encode("PING"))
        # never answered, and the PING behind it waits too (head-of-line)
        h.wait_for(lambda: h.info(adm, "stats")["requests_stalled"] == "1", 5, "a stalled request")
        h.still_open(s, 0.4)
        assert adm.call("FAULT", "CLEAR") == "OK"
        h.still_open(s, 0.2)
        # other connections are served
        assert h.Client(d.port).call("GET", "2") == b"2"
        s.close()
        h.wait_for(lambda: h.info(adm, "stats")["requests_stalled"] == "0", 5, "stall released on close")


def test_close_and_reset():
    with db() as d:
        adm = h.Client(d.port)
        for fault, end in (("close", "eof"), ("reset", "reset")):
            assert adm.call("FAULT", "SET", fault, "1") == "OK"
            s = h.raw(d.port)
            # the reply before the faulty request arrives whole, then the end
            s.sendall(h.encode("PING") + h.encode("GET", "1") + h.encode("PING"))
            data, how = h.read_until_closed(s)
            assert data == b"+PONG\r\n", (fault, data)
            assert how == end, (fault, how)
            s.close()
            assert adm.call("FAULT", "CLEAR") == "OK"
        inf = h.info(adm, "faults")
        assert inf["fault_close_count"] == "1" and inf["fault_reset_count"] == "1"
        # with a delay: earlier delayed replies still leave first
        assert adm.call("CONFIG", "SET", "latency", "proportional 20ms") == "OK"
        assert adm.call("FAULT", "SET", "reset", "0") == "OK"
        s = h.raw(d.port)
        served = int(h.info(adm, "stats")["requests_served"])
        s.sendall(h.encode("GET", "3"))
        # read (in service, or already served): the fault set next is not rolled for it
        read = lambda st: int(st["requests_in_service"]) + int(st["requests_served"]) > served
        h.wait_for(lambda: read(h.info(adm, "stats")), 30, "GET 3 read")
        assert adm.call("FAULT", "SET", "reset", "1") == "OK"
        s.sendall(h.encode("GET", "1"))
        data, how = h.read_until_closed(s)
        assert (data, how) == (b"$1\r\n3\r\n", "reset"), (data, how)


def test_garbage():
    with db() as d:
        adm = h.Client(d.port)
        s = h.raw(d.port)
        assert adm.call("FAULT", "SET", "garbage", "1", "5") == "OK"
        s.sendall(h.encode("GET", "1"))
        g = h.read_n(s, 5)
        assert g[:1] == b"@", g  # no RESP type byte
        h.still_open(s, 0.2)
        assert adm.call("FAULT", "SET", "garbage", "1") == "OK"
        s.sendall(h.encode("GET", "1"))
        g = h.read_n(s, 16)
        assert g[:1] == b"@"
        h.still_open(s, 0.2)
        # the connection stays usable: the next reply is well-formed
        assert adm.call("FAULT", "CLEAR") == "OK"
        s.sendall(h.encode("GET", "2"))
        assert h.read_n(s, 7) == b"$1\r\n2\r\n"


def test_cut():
    with db() as d:
        adm = h.Client(d.port)
        assert adm.call("FAULT", "SET", "cut", "1", "3") == "OK"
        s = h.raw(d.port)
        s.sendall(h.encode("GET", "12") + h.encode("PING"))
        assert h.read_n(s, 3) == b"$2\r"
        h.still_open(s, 0.4)  # stalls: no more bytes, not closed
        # K past the reply's end still cuts: all but the last byte
        s2 = h.raw(d.port)
        assert adm.call("FAULT", "SET", "cut", "1", "100") == "OK"
        s2.sendall(h.encode("GET", "12"))
        assert h.read_n(s2, 7) == b"$2\r\n12\r"
        h.still_open(s2, 0.4)
        # MGET replies are cut as a whole
        s3 = h.raw(d.port)
        assert adm.call("FAULT", "SET", "cut", "1", "6") == "OK"
        s3.sendall(h.encode("MGET", "1", "2"))
        assert h.read_n(s3, 6) == b"*2\r\n$1"
        h.still_open(s3, 0.2)
        assert h.info(adm, "faults")["fault_cut_count"] == "3"
        assert adm.call("FAULT", "CLEAR") == "OK"
        h.still_open(s, 0.2)  # a cut connection stays dead
        assert h.Client(d.port).call("GET", "4") == b"4"


def test_trickle():
    with db() as d:
        adm = h.Client(d.port)
        assert adm.call("FAULT", "SET", "trickle", "1", "2", "40ms") == "OK"
        s = h.raw(d.port)
        t0 = time.monotonic()
        # a PING behind it waits for the whole trickled reply
        s.sendall(h.encode("GET", "12345") + h.encode("PING"))
        want = b"$5\r\n12345\r\n"  # 11 bytes: 6 slices, 5 gaps of 40 ms
        got, chunks = b"", []
        while len(got) < len(want):
            got += h.read_n(s, 1)
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
        assert h.read_n(s, 7) == b"+PONG\r\n"
        assert h.info(adm, "faults")["fault_trickle_count"] == "1"
        assert adm.call("FAULT", "CLEAR") == "OK"
        s.sendall(h.encode("GET", "1"))
        assert h.read_n(s, 7) == b"$1\r\n1\r\n"


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
                s = h.raw(d.port)
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
    with db() as d:
        adm = h.Client(d.port)
        old = h.raw(d.port)
        assert h.Client(d.port).call("PING") == "PONG"
        assert adm.call("FAULT", "SET", "stop-reading", "1") == "OK"
        s = h.raw(d.port)  # accepted ...
        s.sendall(h.encode("PING"))
        h.still_open(s, 0.4)  # ... but never read
        h.wait_for(lambda: h.info(adm, "clients")["frozen_clients"] == "1", 5, "a frozen client")
        old.sendall(h.encode("PING"))  # existing connections are still read
        assert h.read_n(old, 7) == b"+PONG\r\n"
        # "all": existing connections too, but not the one that asks
        assert adm.call("FAULT", "SET", "stop-reading", "1", "all") == "OK"
        old.sendall(h.encode("PING"))
        h.still_open(old, 0.4)
        assert adm.call("PING") == "PONG"
        assert adm.call("FAULT", "CLEAR") == "OK"
        # cleared: what waited in the socket is read and answered
        assert h.read_n(s, 7) == b"+PONG\r\n"
        assert h.read_n(old, 7) == b"+PONG\r\n"


def test_slow_accept():
    with db() as d:
        adm = h.Client(d.port)
        count = lambda: int(h.info(adm, "faults")["fault_slow_accept_count"])
        # the pause comes after an accept: the first connection is served
        # at once (here the pause is 60 s: it would outlast any load), the
        # next one waits
        assert adm.call("FAULT", "SET", "slow-accept", "1", "60s") == "OK"
        first = h.raw(d.port)
        first.sendall(h.encode("PING"))
        assert h.read_n(first, 7, 30) == b"+PONG\r\n"
        assert count() == 1
        second = h.raw(d.port)  # the kernel completes the handshake
        second.sendall(h.encode("PING"))
        h.still_open(second, 0.4)
        # clearing the fault ends the pause
        assert adm.call("FAULT", "CLEAR") == "OK"
        assert h.read_n(second, 7, 30) == b"+PONG\r\n"
        # one accept per pause, each pause in full
        assert adm.call("FAULT", "SET", "slow-accept", "1", "300ms") == "OK"
        t0 = time.monotonic()
        socks = [h.raw(d.port) for _ in range(3)]
        for s in socks:
            s.sendall(h.encode("PING"))
        times = []
        pending = list(socks)
        while pending:
            r, _, _ = select.select(pending, [], [], 30)
            assert r, "no PONG within 30 s"
            for s in r:
                assert h.read_n(s, 7) == b"+PONG\r\n"
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


def test_probability_and_start_option():
    with db("--fault", "error 0.3", "--fault", "garbage 0") as d:
        c = h.Client(d.port)
        replies = c.pipeline([("GET", i) for i in range(1000)])
        errors = sum(1 for r in replies if isinstance(r, E))
        assert 240 <= errors <= 360, errors
        assert all(r == str(i).encode() for i, r in enumerate(replies) if not isinstance(r, E))
        assert int(h.info(c, "faults")["fault_error_count"]) == errors


def test_runtime_config():
    with db() as d:
        c = h.Client(d.port)
        assert c.call("CONFIG", "SET", "latency", "fixed 200ms") == "OK"
        t0 = time.monotonic()
        assert c.call("GET", "1") == b"1"
        assert time.monotonic() - t0 >= 195 * MS
        assert c.call("CONFIG", "GET", "latency") == [b"latency", b"fixed 200ms"]
        assert c.call("CONFIG", "GET", "max-*")[0::2] == [
            b"max-delay", b"max-inline", b"max-bulk", b"max-args", b"max-query-buffer",
            b"max-output-buffer", b"max-pending", b"max-clients-memory"]
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


def test_admin_disabled():
    with db("--no-admin") as d:
        c = h.Client(d.port)
        assert c.call("CONFIG", "GET", "*") == E("ERR admin commands are disabled (admin no)")
        assert c.call("FAULT", "SET", "stall", "1") == E("ERR admin commands are disabled (admin no)")
        assert c.call("GET", "1") == b"1"
        assert h.info(c, "server")["admin"] == "disabled"


def test_admin_password():
    with db("--admin-password", "s3cret") as d:
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


if __name__ == "__main__":
    h.main(globals())
