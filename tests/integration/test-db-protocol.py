#!/usr/bin/env python3
"""kettle-db and bad input: protocol errors answered with Redis's texts
and the connection closed, every limit (maxclients, inline, bulk,
arguments, query buffer, output buffer, pending requests) enforced, odd but
valid input served, and none of it disturbing the other connections."""
import select
import socket
import struct
import time

import harness as h

E = h.RespError


PROTOCOL_CASES = [
    (b"*3000000000\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1\r\n$-10\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$blabla\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$2000000\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),  # over max-bulk
    (b"*1\r\nfoo\r\n", b"-ERR Protocol error: expected '$', got 'f'\r\n"),
    (b"*1\r\n$3\r\nfoobar\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*blah\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*11\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),  # over max-args
    (b"ECHO \"abc\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    (b"ECHO 'abc\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    (b"x" * 70000, b"-ERR Protocol error: too big inline request\r\n"),
    (b"*" + b"1" * 100, b"-ERR Protocol error: too big mbulk count string\r\n"),
    (b"*1\r\n$" + b"1" * 100, b"-ERR Protocol error: too big bulk count string\r\n"),
]


def test_protocol_errors_close_only_that_connection():
    with h.Server("kettle-db", "--latency", "fixed 300ms", "--max-args", "10") as db:
        adm = h.Client(db.port)
        assert adm.call("PING") == "PONG"  # accepted: counted in the baseline
        base_fds = h.fd_count(db.pid)
        # a request in flight elsewhere must come through all of this
        bystander = h.Client(db.port)
        bystander.send(h.encode("GET", "42"))
        for data, want in PROTOCOL_CASES:
            s = h.raw(db.port)
            # an earlier request's reply still comes first
            s.sendall(h.encode("PING") + data)
            got = h.read_until_closed(s)[0]
            assert got == b"+PONG\r\n" + want, (data[:40], got)
            s.close()
        assert bystander.read_reply() == b"42"
        inf = h.info(adm)
        assert int(inf["protocol_errors"]) == len(PROTOCOL_CASES)
        h.wait_for(lambda: h.fd_count(db.pid) <= base_fds + 1, 5, "descriptors back to baseline")


def test_errors_that_keep_the_connection():
    with h.Server("kettle-db", "--latency", "none") as db:
        c = h.Client(db.port)
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.read_reply() == E("ERR wrong number of arguments for 'get' command")
        # an HTTP request: the connection is closed at its Host: line, as Redis does
        assert c.closed_by_peer(5)
        c = h.Client(db.port)
        assert c.call("PING") == "PONG"
        assert c.call("HOST", "x") == E("ERR unknown command 'HOST', with args beginning with: 'x' ")
        # empty lines, *0 and *-1 are skipped
        c.send(b"\r\n\n*0\r\n*-1\r\nPING\r\n")
        assert c.read_reply() == "PONG"
        # binary-safe arguments, NUL bytes included
        assert c.call("ECHO", b"\x00a\xffb\r\n") == b"\x00a\xffb\r\n"
        # a long unknown command name is cut in the error
        r = c.call("X" * 500)
        assert isinstance(r, E) and len(str(r)) < 300
        assert c.call("GET", "1") == b"1"


def test_pipelines_and_fragments():
    with h.Server("kettle-db", "--latency", "uniform 0 2ms") as db:
        c = h.Client(db.port)
        # 10,000 requests in one write, answered in order
        c.send(b"".join(h.encode("GET", i) for i in range(10000)))
        for i in range(10000):
            assert c.read_reply() == str(i).encode()
        # one byte at a time
        s = h.raw(db.port)
        for b in h.encode("GET", "77") + b"PING\r\n":
            s.sendall(bytes([b]))
        assert h.read_n(s, 15) == b"$2\r\n77\r\n+PONG\r\n"
        s.close()
        # MGET with many keys, split across writes
        keys = [str(i) for i in range(2000)]
        msg = h.encode("MGET", *keys)
        for i in range(0, len(msg), 1000):
            c.send(msg[i:i + 1000])
        assert c.read_reply() == [k.encode() for k in keys]


def test_maxclients():
    with h.Server("kettle-db", "--latency", "none", "--maxclients", "3") as db:
        cs = [h.Client(db.port) for _ in range(3)]
        assert all(c.call("PING") == "PONG" for c in cs)
        s = h.raw(db.port)
        assert h.read_until_closed(s)[0] == b"-ERR max number of clients reached\r\n"
        s.close()
        assert cs[0].call("GET", "1") == b"1"
        assert h.info(cs[0], "clients")["rejected_connections"] == "1"
        cs[2].close()
        h.wait_for(lambda: h.info(cs[0], "clients")["connected_clients"] == "2", 5, "a slot free")
        assert h.Client(db.port).call("PING") == "PONG"
        # at run time
        assert cs[0].call("CONFIG", "SET", "maxclients", "10") == "OK"
        more = [h.Client(db.port) for _ in range(5)]
        assert all(c.call("PING") == "PONG" for c in more)


def test_query_buffer_limit():
    db = h.Server("kettle-db", "--latency", "none", "--max-query-buffer", "100kb")
    try:
        adm = h.Client(db.port)
        s = h.raw(db.port)
        # a bulk within max-bulk that never completes, larger than the buffer
        try:
            s.sendall(b"*2\r\n$4\r\nECHO\r\n$900000\r\n" + b"a" * 200000)
        except (ConnectionResetError, BrokenPipeError):
            pass
        assert h.read_until_closed(s)[0] == b""
        s.close()
        assert h.info(adm, "stats")["closed_query_buffer"] == "1"
        assert adm.call("PING") == "PONG"
    finally:
        db.stop()


def test_output_buffer_limit():
    db = h.Server("kettle-db", "--latency", "none", "--max-output-buffer", "256kb")
    try:
        adm = h.Client(db.port)
        s = h.raw(db.port)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.setblocking(False)
        req = h.encode("ECHO", "x" * 10000)
        deadline = time.monotonic() + 20
        closed = False
        # write, never read, until the server gives up on this client
        while time.monotonic() < deadline and not closed:
            try:
                s.send(req * 10)
            except BlockingIOError:
                select.select([], [s], [], 0.05)
            except (ConnectionResetError, BrokenPipeError):
                closed = True
            if h.info(adm, "stats")["closed_output_buffer"] == "1":
                closed = True
        assert closed, "a client that never reads was not closed"
        s.close()
        assert adm.call("GET", "3") == b"3"
    finally:
        db.stop()


def test_max_pending_backpressure():
    with h.Server("kettle-db", "--latency", "fixed 200ms", "--max-pending", "100") as db:
        adm = h.Client(db.port)
        c = h.Client(db.port)
        c.send(b"".join(h.encode("GET", i) for i in range(1000)))
        h.wait_for(lambda: h.info(adm, "stats")["requests_in_service"] == "100", 30, "100 in service")
        # reading is paused, not the server: others are served meanwhile
        assert adm.call("PING") == "PONG"
        assert int(h.info(adm, "stats")["requests_in_service"]) <= 100  # never past max-pending
        for i in range(1000):
            assert c.read_reply() == str(i).encode()


def test_half_close_and_reset_with_requests_in_flight():
    with h.Server("kettle-db", "--latency", "fixed 100ms") as db:
        adm = h.Client(db.port)
        # half-close after the requests: the replies come, then the close
        s = h.raw(db.port)
        s.sendall(h.encode("GET", "1") + h.encode("MGET", "2", "3"))
        s.shutdown(socket.SHUT_WR)
        assert h.read_until_closed(s)[0] == b"$1\r\n1\r\n*2\r\n$1\r\n2\r\n$1\r\n3\r\n"
        s.close()
        # RST while requests are in service: dropped, timers stopped
        for _ in range(20):
            s = h.raw(db.port)
            s.sendall(h.encode("GET", "5") * 10 + h.encode("MGET", "1", "2"))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        h.wait_for(lambda: h.info(adm, "clients")["connected_clients"] == "1", 5, "clients gone")
        h.wait_for(lambda: h.info(adm, "stats")["requests_in_service"] == "0", 5, "requests dropped")
        assert int(h.info(adm, "loop")["timers_pending"]) <= 2
        assert adm.call("GET", "6") == b"6"


if __name__ == "__main__":
    h.main(globals())
