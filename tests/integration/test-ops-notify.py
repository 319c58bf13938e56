"""kettled as a Type=notify service, without systemd as PID 1: the messages
it sends to the socket named by NOTIFY_SOCKET are read by the test.

  READY=1 with STATUS= once listening (a client is served at once);
  STATUS= lines that follow the clients and the backends;
  RELOADING=1 with MONOTONIC_USEC=, then READY=1, on SIGHUP;
  STOPPING=1 on SIGTERM, then exit 0;
  WATCHDOG=1 at least twice per WATCHDOG_USEC, only for WATCHDOG_PID;
  a stalled loop stops the pings, and they resume when it runs again.

Built without libsystemd, only test_without_systemd runs: kettled works
and sends nothing."""
import fcntl
import os
import re
import signal
import socket
import subprocess
import threading
import time

import harness as h
from notify import Notify, WITH_OWN_PID, start_kettled, systemd_support

WD_USEC = 1000000  # WatchdogSec=1s


def test_sequence():
    n = Notify()
    try:
        kd = start_kettled(n, watchdog_usec=WD_USEC)
        ready = n.wait(lambda m: "READY" in m, 20, "READY=1")
        assert ready["READY"] == "1" and "STATUS" in ready, ready
        # READY means listening: a client is served at once
        with h.Client(kd.port) as c:
            assert c.call("PING") == "PONG"

            # STATUS follows the clients and the backend
            st = n.wait(lambda m: re.match(r"1 client\b", m.get("STATUS", "")), 10,
                        "STATUS= counting our client")
            assert "embedded database up" in st["STATUS"], st

            # reload: RELOADING=1 stamped with the monotonic clock, then READY=1
            kd.signal(signal.SIGHUP)
            rel = n.wait(lambda m: "RELOADING" in m, 10, "RELOADING=1")
            now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            stamp = int(rel["MONOTONIC_USEC"])
            assert 0 < now_us - stamp < 10_000_000, (stamp, now_us)
            n.wait(lambda m: m.get("READY") == "1", 10, "READY=1 after the reload")
            assert c.call("MGET", 1, 2, 3) == [b"1", b"2", b"3"]

            # drain: STOPPING=1, the idle client is closed, exit 0
            kd.signal(signal.SIGTERM)
            n.wait(lambda m: "STOPPING" in m, 10, "STOPPING=1")
            assert c.closed_by_peer(10), "client not closed by the drain"
        # (not kd.stop(): a second SIGTERM could land while kettled exits)
        rc = kd.wait(30)
        kd.check_clean()
        assert rc == 0, "kettled exited %s:\n%s" % (rc, kd.log()[-3000:])
        # no READY after STOPPING, and nothing unknown was sent
        keys = [k for _, m in n.msgs for k in m]
        assert set(keys) <= {"READY", "STATUS", "RELOADING", "MONOTONIC_USEC", "STOPPING",
                             "WATCHDOG"}, keys
        order = [k for k in keys if k in ("READY", "RELOADING", "STOPPING")]
        assert order == ["READY", "RELOADING", "READY", "STOPPING"], order
    finally:
        n.close()


def test_watchdog_pings():
    """WATCHDOG=1 at least twice per WatchdogSec, from the start on."""
    n = Notify()
    try:
        kd = start_kettled(n, watchdog_usec=WD_USEC)
        n.wait(lambda m: "READY" in m, 20, "READY=1")
        # Seven pings (a deadline only as a net): kettled pings every half
        # WatchdogSec. The median gap says which period it keeps; one
        # late ping on a loaded machine moves a maximum, not a median.
        for i in range(7):
            n.wait(lambda m: "WATCHDOG" in m, 30, "WATCHDOG=1 number %d" % (i + 1))
        pings = n.since(0, "WATCHDOG")
        gaps = sorted(b - a for a, b in zip(pings, pings[1:]))
        mid = gaps[len(gaps) // 2]
        print("  %d pings, median gap %.3f s (WatchdogSec %.1f s)" % (len(pings), mid, WD_USEC / 1e6))
        assert 0.35 * WD_USEC / 1e6 <= mid <= 0.75 * WD_USEC / 1e6, \
            "median gap %.3f s: kettled does not ping twice per WatchdogSec" % mid
        kd.stop()
    finally:
        n.close()


def test_watchdog_for_another_pid():
    """WATCHDOG_PID names another process (the variables were inherited):
    no pings, and the rest works."""
    n = Notify()
    try:
        kd = start_kettled(n, watchdog_usec=WD_USEC, watchdog_pid=1)
        n.wait(lambda m: "READY" in m, 20, "READY=1")
        t0 = time.monotonic()
        n.poll(1.6)
        assert not n.since(t0, "WATCHDOG"), "pinged for a watchdog meant for pid 1"
        kd.stop()
    finally:
        n.close()


def test_status_backends():
    """STATUS= counts the database servers that are up."""
    n = Notify()
    db = h.Server("kettle-db", "--latency", "none")
    dead = h.free_port()  # nothing listens there
    try:
        kd = start_kettled(n, "--backend", db.addr, "--backend", "127.0.0.1:%d" % dead,
                           "--backend-retry-max", "200ms")
        n.wait(lambda m: "READY" in m, 20, "READY=1")
        n.wait(lambda m: "backends 1/2 up" in m.get("STATUS", ""), 10, "STATUS= backends 1/2 up")
        db.stop()
        n.wait(lambda m: "backends 0/2 up" in m.get("STATUS", ""), 15, "STATUS= backends 0/2 up")
        kd.stop()
    finally:
        n.close()


class PipeDrain(threading.Thread):
    """Reads a pipe until EOF, keeping what it read."""

    def __init__(self, fd):
        super().__init__(daemon=True)
        self.fd, self.data = fd, b""
        self.start()

    def run(self):
        while True:
            b = os.read(self.fd, 65536)
            if not b:
                return
            self.data += b


def test_stalled_loop_stops_pings():
    """Stall the loop the way a real daemon stalls: its log goes to a pipe
    nobody reads (a wedged journald). kettled's stderr is a pipe the test
    fills to the brim; SIGHUP makes the loop log a line, and the write
    blocks the loop's thread. The pings must stop (the manager would kill
    the service) and PING must go unanswered; once the pipe is drained the
    loop runs again and so do the pings."""
    exe = h.program("kettled")
    n = Notify()
    r, w = os.pipe()
    fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ: one page, quick to fill
    env = dict(os.environ, NOTIFY_SOCKET=n.path, WATCHDOG_USEC=str(WD_USEC))
    port = h.free_port()
    p = subprocess.Popen(["/bin/sh", "-c", WITH_OWN_PID, exe, "--listen", "127.0.0.1:%d" % port],
                         stdin=subprocess.DEVNULL, stdout=w, stderr=w, env=env)
    drain = None
    filler = None
    try:
        # the start-up lines fit in the pipe: nobody reads yet
        n.wait(lambda m: "READY" in m, 20, "READY=1")
        t0 = time.monotonic()
        n.wait(lambda m: "WATCHDOG" in m, 5, "a first WATCHDOG=1")
        # fill the pipe through a second, non-blocking open file description
        # (kettled's stays blocking)
        filler = os.open("/proc/self/fd/%d" % w, os.O_WRONLY | os.O_NONBLOCK)
        try:
            while True:
                os.write(filler, b"x" * 512)
        except BlockingIOError:
            pass
        try:
            while True:
                os.write(filler, b"x")
        except BlockingIOError:
            pass
        c = h.Client(port)
        assert c.call("PING") == "PONG"
        p.send_signal(signal.SIGHUP)  # RELOADING=1, then a log line: blocked
        n.wait(lambda m: "RELOADING" in m, 10, "RELOADING=1")
        t_stall = time.monotonic()
        n.poll(2.5)  # 2.5 WatchdogSec
        late = n.since(t_stall, "WATCHDOG")
        assert not late, "%d WATCHDOG=1 while the loop was stalled" % len(late)
        c.sock.settimeout(0.5)
        c.send(h.encode("PING"))
        try:
            got = c.sock.recv(100)
            raise AssertionError("the loop answered while stalled: %r" % got)
        except socket.timeout:
            pass
        assert p.poll() is None
        # unblock: the loop goes on, finishes the reload, pings again
        drain = PipeDrain(r)
        n.wait(lambda m: m.get("READY") == "1", 10, "READY=1 after the stall")
        n.wait(lambda m: "WATCHDOG" in m, 10, "WATCHDOG=1 after the stall")
        c.sock.settimeout(10)
        assert c.read_reply() == "PONG"
        n.wait(lambda m: "WATCHDOG" in m, 10, "a second WATCHDOG=1 after the stall")
        print("  pings: %d before the stall, none in 2.5 s stalled, %d after" % (
            len(n.since(t0, "WATCHDOG")) - len(n.since(t_stall, "WATCHDOG")),
            len(n.since(t_stall, "WATCHDOG"))))
        c.close()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(30)
        os.close(w)
        w = -1
        os.close(filler)
        filler = None
        drain.join(10)
        out = drain.data.decode(errors="replace")
        for mark in h.SANITIZER_MARKS:
            assert mark not in out, out[-4000:]
        assert rc == 0, "kettled exited %s:\n%s" % (rc, out[-3000:])
        assert "configuration reloaded" in out
    finally:
        if p.poll() is None:
            p.kill()
            if drain is None:
                drain = PipeDrain(r)
            p.wait(10)
        for fd in (w, filler):
            if fd is not None and fd >= 0:
                os.close(fd)
        if drain is not None:
            drain.join(5)
        os.close(r)
        n.close()


def test_without_systemd():
    """Built without libsystemd: kettled runs, serves and stops as usual,
    and sends nothing to NOTIFY_SOCKET."""
    n = Notify()
    try:
        kd = start_kettled(n, watchdog_usec=WD_USEC)
        with h.Client(kd.port) as c:
            assert c.call("GET", 3) == b"3"
        kd.signal(signal.SIGHUP)
        kd.wait_log("configuration reloaded", 10)
        n.poll(1.2)
        kd.stop()
        assert not n.msgs, n.msgs
    finally:
        n.close()


tests = {k: v for k, v in globals().items() if not k.startswith("test_")}
if systemd_support():
    tests.update((k, v) for k, v in globals().items()
                 if k.startswith("test_") and k != "test_without_systemd")
else:
    tests["test_without_systemd"] = test_without_systemd
h.main(tests)
