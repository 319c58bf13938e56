#!/usr/bin/env python3
"""kettled's client limits: maxclients (Redis's error, then closed),
running out of descriptors (EMFILE under a low RLIMIT_NOFILE: refused
without a busy loop, service continues), idle-timeout (not for a client
waiting on the database), max-pending backpressure, max-pending-bytes,
max-keys, max-clients-memory, and the backend queue limit."""
import resource
import socket
import threading
import time

import harness as h
from kdtest import E, kettle_db, kettled, raw, read_until_closed


def test_maxclients():
    with kettled("--maxclients", "3") as kd:
        cs = [h.Client(kd.port) for _ in range(3)]
        for c in cs:
            assert c.call("PING") == "PONG"
        s = raw(kd.port)
        got, how = read_until_closed(s)
        assert got == b"-ERR max number of clients reached\r\n", got
        assert h.info(cs[0], "clients")["rejected_connections"] == "1"
        cs[2].close()
        h.wait_for(lambda: h.info(cs[0], "clients")["connected_clients"] == "2", 5, "a client gone")
        n = h.Client(kd.port)
        assert n.call("GET", "5") == b"5"
        # maxclients can be lowered at run time; clients above it stay
        assert cs[0].call("CONFIG", "SET", "maxclients", "1") == "OK"
        got, _ = read_until_closed(raw(kd.port))
        assert got == b"-ERR max number of clients reached\r\n", got
        assert cs[1].call("PING") == "PONG"


def low_nofile(n):
    def pre():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return pre


def test_emfile_under_low_rlimit():
    kd = kettled("--embedded-latency", "none", preexec_fn=low_nofile(48))
    socks = []
    try:
        c = h.Client(kd.port)
        assert c.call("GET", "1") == b"1"
        assert "file descriptors" in kd.log()  # said at start: maxclients cannot be met
        # more connections than descriptors: the extra ones are accepted and
        # closed at once (spare descriptor), accepting pauses, no busy loop
        for _ in range(80):
            try:
                socks.append(raw(kd.port, timeout=2))
            except OSError:
                pass
        cpu0 = h.cpu_seconds(kd.pid)
        time.sleep(1.0)
        assert h.cpu_seconds(kd.pid) - cpu0 < 0.5, "busy loop while out of descriptors"
        assert kd.alive()
        # the existing client is still served meanwhile
        assert c.call("MGET", "1", "2") == [b"1", b"2"]
        for s in socks:
            s.close()
        socks = []
        h.wait_for(lambda: _works(kd.port), 10, "new clients accepted again")
    finally:
        for s in socks:
            s.close()
        kd.stop()


def _works(port):
    try:
        c = h.Client(port, timeout=2)
        ok = c.call("GET", "3") == b"3"
        c.close()
        return ok
    except (OSError, h.Closed):
        return False


def test_idle_timeout():
    kd = kettled("--idle-timeout", "1", "--embedded-latency", "proportional 1ms",
                 "--request-timeout", "10s")
    try:
        idle = raw(kd.port)
        busy = h.Client(kd.port)
        t0 = time.monotonic()
        busy.send(h.encode("GET", "2500"))  # 2.5 s at the database
        got, how = read_until_closed(idle, 30)
        took = time.monotonic() - t0
        assert got == b"" and took >= 0.9, (got, took)  # not before its second
        assert busy.read_reply() == b"2500"  # waiting on the database is not idle
        assert busy.closed_by_peer(30)       # then idle for a second: closed
        c = h.Client(kd.port)
        assert int(h.info(c, "stats")["clients_closed_idle"]) == 2
    finally:
        kd.stop()


def test_max_pending_backpressure():
    with kettled("--max-pending", "10", "--embedded-latency", "fixed 2ms") as kd:
        c = h.Client(kd.port)
        n = 500
        c.send(b"".join(h.encode("GET", str(i)) for i in range(n)))
        for i in range(n):
            assert c.read_reply() == str(i).encode()
        inf = h.info(c, "stats")
        assert int(inf["clients_paused_reading"]) >= 1, inf


def client_line(c, cid):
    """The CLIENT LIST fields of client cid, or None once it is gone."""
    for line in c.call("CLIENT", "LIST").decode().splitlines():
        f = dict(kv.split("=", 1) for kv in line.split())
        if f["id"] == str(cid):
            return f
    return None


def test_max_pending_bytes():
    """The keys a client's requests in flight hold are bounded: past
    max-pending-bytes reading from it pauses (its requests wait in the
    kernel) until replies have left; everything is answered, in order. A
    single request larger than the limit is still served when it is the
    client's only one."""
    db = kettle_db("--latency", "fixed 300ms")
    kd = kettled("--backend", db.addr, "--max-pending-bytes", "64kb", "--request-timeout", "10s")
    try:
        mon = h.Client(kd.port)
        c = h.Client(kd.port)
        cid = c.call("CLIENT", "ID")
        keys = [b"%0200d" % i for i in range(100)]  # 20,000 bytes of keys a request
        n = 12
        c.send(h.encode("MGET", *keys) * n)
        f = h.wait_for(lambda: (lambda f: f if int(f["pbytes"]) >= 64 * 1024 else None)(
            client_line(mon, cid)), 10, "64 KiB of keys in flight")
        # paused there: at most one request's keys past the limit, the rest unread
        assert int(f["pbytes"]) < 64 * 1024 + 20000, f
        assert int(f["pending"]) < n, f
        assert int(h.info(mon, "stats")["clients_paused_reading"]) >= 1
        assert int(h.info(mon, "memory")["clients_pending_bytes"]) < 64 * 1024 + 20000
        for _ in range(n):
            r = c.read_reply()
            assert isinstance(r, list) and len(r) == 100, r
        assert int(client_line(mon, cid)["pbytes"]) == 0
        # one request of 200 KB of keys, alone: served
        big = [b"%02000d" % i for i in range(100)]
        r = c.call("MGET", *big)
        assert isinstance(r, list) and len(r) == 100, r
        assert c.call("GET", "7") == b"7"
        assert c.call("CONFIG", "GET", "max-pending-bytes") == [b"max-pending-bytes", b"65536"]
    finally:
        kd.stop()
        db.stop()


def vm_hwm(pid):
    """The peak resident size of process pid so far, in bytes."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM for %d" % pid)


def test_memory_given_back_after_a_burst():
    """A burst of MGETs of large keys grows the process; once the client
    holds nothing more, the server gives the freed memory back (counted in
    INFO memory_trims), unless the allocator already has (a buffer large
    enough to be a mapping of its own goes back when freed): either the
    resident size falls back, or a trim is counted (under AddressSanitizer,
    whose allocator keeps freed memory, only the latter)."""
    with kettled("--embedded-latency", "none") as kd:
        c = h.Client(kd.port, timeout=60)
        start = int(h.info(c, "memory")["used_memory_rss"])
        keys = [(b"%08d" % i) * 1000 for i in range(1000)]  # 8 MB of keys
        for _ in range(3):
            r = c.call("MGET", *keys)
            assert isinstance(r, list) and len(r) == 1000, r
        peak = vm_hwm(kd.pid)
        assert peak >= start + (16 << 20), (start, peak)  # the burst did grow it
        def given_back():
            m = h.info(c, "memory")
            return int(m["memory_trims"]) >= 1 or int(m["used_memory_rss"]) < start + (16 << 20)
        h.wait_for(given_back, 20, "memory given back")
        inf = h.info(c, "memory")
        assert inf["clients_pending_bytes"] == "0" and inf["clients_query_bytes"] == "0", inf


def _hostile(port, request):
    """A client pipelining request without end, its replies drained on a
    second thread; (socket, requests sent so far as a list)."""
    s = raw(port)
    sent = []

    def send():
        try:
            while True:
                s.sendall(request)
                sent.append(1)
        except OSError:
            pass

    def drain():
        try:
            while s.recv(1 << 20):
                pass
        except OSError:
            pass
    for fn in (send, drain):
        threading.Thread(target=fn, daemon=True).start()
    return s, sent


def test_reset_mid_request_frees_the_client():
    """Clients pipeline 8 MB MGETs as fast as they can at a database that
    stopped reading (each gets an error, and kettled keeps reading), then
    shut down and close with replies unread (FIN, then RST) while kettled
    is still taking their bytes: kettled must notice the end and free
    them and their partial requests (megabytes) now, not at idle-timeout
    (io_uring's multishot receive could lose that end)."""
    db = kettle_db()
    kd = kettled("--backend", db.addr)
    try:
        adm = h.Client(db.port)
        assert adm.call("FAULT", "SET", "stop-reading", "1", "all") == "OK"
        c = h.Client(kd.port)
        request = h.encode("MGET", *[(b"%08d" % i) * 1000 for i in range(1000)])
        for _ in range(4):  # the end is lost only in some runs: several chances
            hostile = [_hostile(kd.port, request) for _ in range(2)]
            h.wait_for(lambda: all(len(sent) >= 2 for _, sent in hostile), 60,
                       "requests under way")
            for s, _ in hostile:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            h.wait_for(lambda: h.info(c, "clients")["connected_clients"] == "1", 30,
                       "the reset clients freed")
        assert int(h.info(c, "memory")["clients_query_bytes"]) == 0
    finally:
        kd.stop()
        db.stop()


def test_max_clients_memory():
    """Clients each within their own limits cannot add up past
    max-clients-memory: the one holding the most is closed (logged,
    counted), the others are left alone and served. What they hold here
    is a request in the making: a bulk argument declared and partly sent."""
    with kettled("--max-clients-memory", "1mb") as kd:
        mon = h.Client(kd.port)
        sizes = {"big": 700000, "mid": 300000, "small": 100000}
        socks = {}
        for name, n in sizes.items():
            s = raw(kd.port)
            s.sendall(b"*2\r\n$4\r\nECHO\r\n$%d\r\n" % (n + 10) + b"x" * n)
            socks[name] = s
        h.wait_for(lambda: int(h.info(mon, "stats")["clients_closed_memory_limit"]) == 1, 20,
                   "a client closed for max-clients-memory")
        got, _ = read_until_closed(socks["big"], 20)
        assert got == b"", got
        assert "(max-clients-memory)" in kd.log()
        # the others fit and are served: their requests complete
        for name in ("mid", "small"):
            socks[name].sendall(b"y" * 10 + b"\r\n")
            want = b"$%d\r\n" % (sizes[name] + 10)
            buf = b""
            while len(buf) < len(want) + sizes[name] + 12:
                chunk = socks[name].recv(1 << 20)
                assert chunk, "closed: %s" % name
                buf += chunk
            assert buf.startswith(want) and buf.endswith(b"y" * 10 + b"\r\n"), buf[:40]
        assert int(h.info(mon, "stats")["clients_closed_memory_limit"]) == 1
        assert mon.call("CONFIG", "GET", "max-clients-memory") == [b"max-clients-memory",
                                                                   b"1048576"]
        # 0: no bound
        assert mon.call("CONFIG", "SET", "max-clients-memory", "0") == "OK"
        s = raw(kd.port)
        s.sendall(b"*2\r\n$4\r\nECHO\r\n$1000010\r\n" + b"x" * 1000000)
        h.wait_for(lambda: int(h.info(mon, "memory")["clients_query_bytes"]) >= 1000000, 20,
                   "1 MB of a request held")
        assert mon.call("PING") == "PONG"
        assert int(h.info(mon, "stats")["clients_closed_memory_limit"]) == 1
        s.close()


def test_max_keys():
    with kettled("--max-keys", "4") as kd:
        c = h.Client(kd.port)
        assert c.call("MGET", "1", "2", "3", "4") == [b"1", b"2", b"3", b"4"]
        for cmd in ("MGET", "MGETSEQ", "MGETANY"):
            assert c.call(cmd, "1", "2", "3", "4", "5") == E("ERR too many keys: 5 (max-keys is 4)")
        assert c.call("GET", "6") == b"6"


def test_backend_queue_limit():
    """More fetches than the connections can take: the excess waits in a
    bounded queue; past it, fetches fail at once with a clear error."""
    db = kettle_db("--latency", "fixed 300ms")
    kd = kettled("--backend", db.addr, "--backend-connections", "1", "--backend-pipeline", "2",
                 "--backend-queue-limit", "3", "--backend-batch", "1")
    try:
        c = h.Client(kd.port)
        # the connection's pipeline counts only once it is up (a fetch sent
        # while it connects waits in the queue)
        h.wait_for(lambda: "connections=1/1" in h.info(c, "backend")["backend0"], 30,
                   "the backend connection up")
        r = c.call("MGET", *[str(i) for i in range(8)])
        assert r[:5] == [str(i).encode() for i in range(5)], r
        for x in r[5:]:
            assert isinstance(x, E) and "overloaded" in str(x) and db.addr in str(x), r
        assert c.call("MGET", "1", "2") == [b"1", b"2"]
    finally:
        kd.stop()
        db.stop()


h.main(globals())
