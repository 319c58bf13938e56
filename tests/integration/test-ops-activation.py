"""Socket activation without systemd as PID 1: systemd-socket-activate binds
the listening sockets, waits for the first client, then execs kettled with
LISTEN_FDS/LISTEN_PID, as kettled.socket does. kettled must serve on the
sockets it is passed (and not bind its own `listen`), and a client that
connected before kettled existed must be answered. Stale LISTEN_* variables
meant for another process must be ignored.

Skipped (77) without systemd-socket-activate or without systemd support."""
import contextlib
import os
import re
import signal
import tempfile

import harness as h
from notify import Notify, require, require_systemd_support, start_kettled

SSA = None


def activate(ports, notify, unused_sock):
    """systemd-socket-activate on ports running kettled, whose own listen
    option names a unix socket that must never be created."""
    exe = h.program("kettled")
    argv = [SSA]
    for p in ports:
        argv += ["-l", "127.0.0.1:%d" % p]
    # systemd-socket-activate passes on only the variables named with -E
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "KETTLE_IO"):
        if var in os.environ:
            argv += ["-E", var]
    argv += ["-E", "NOTIFY_SOCKET=" + notify.path]
    argv += [exe, "--listen", "unix:" + unused_sock]
    p = h.Proc(argv)
    for port in ports:
        p.wait_log(r"Listening on 127\.0\.0\.1:%d" % port, 20)
    return p


@contextlib.contextmanager
def notify_and_unused():
    """A notify socket and the path of the unix socket kettled's own listen
    option names (which must never be created); both gone afterwards."""
    n = Notify()
    tmp = tempfile.mkdtemp(prefix="kettle-act-")
    unused = os.path.join(tmp, "own.sock")
    try:
        yield n, unused
    finally:
        n.close()
        if os.path.exists(unused):
            os.unlink(unused)
        os.rmdir(tmp)


def test_first_client_wakes_kettled():
    port = h.free_port()
    with notify_and_unused() as (n, unused):
        p = activate([port], n, unused)
        # kettled does not exist yet: this client waits in the backlog
        c = h.Client(port, timeout=30)
        c.send(h.encode("MGET", 1, 2, 3))
        assert c.read_reply() == [b"1", b"2", b"3"]
        n.wait(lambda m: "READY" in m, 20, "READY=1")
        log = p.log()
        assert re.search(r"socket activation: 1 listening socket", log), log
        assert "listening on 127.0.0.1:%d" % port in log, log
        assert not os.path.exists(unused), "kettled bound its own listen address too"
        # the same process (exec'd in place) serves further clients
        with h.Client(port) as c2:
            assert c2.call("GET", 42) == b"42"
        c.close()
        p.stop()


def test_two_sockets():
    ports = [h.free_port(), h.free_port()]
    with notify_and_unused() as (n, unused):
        p = activate(ports, n, unused)
        with h.Client(ports[1], timeout=30) as c:
            assert c.call("PING") == "PONG"
        with h.Client(ports[0]) as c:
            assert c.call("GET", 7) == b"7"
        assert "socket activation: 2 listening sockets" in p.log(), p.log()
        assert not os.path.exists(unused)
        # the drain closes the passed sockets too: new connections are refused
        p.signal(signal.SIGTERM)
        p.wait(30)
        p.check_clean()
        assert p.p.returncode == 0, p.log()
        for port in ports:
            try:
                h.Client(port, timeout=5).close()
                raise AssertionError("port %d still accepts after the exit" % port)
            except ConnectionRefusedError:
                pass


def test_stale_listen_fds_ignored():
    """LISTEN_FDS meant for another pid: kettled binds its own listener."""
    n = Notify()
    try:
        kd = start_kettled(n, env={"LISTEN_FDS": "1", "LISTEN_PID": "1"})
        with h.Client(kd.port) as c:
            assert c.call("PING") == "PONG"
        assert "socket activation" not in kd.log()
        kd.stop()
    finally:
        n.close()


SSA = require("systemd-socket-activate")
require_systemd_support()
h.main(globals())
