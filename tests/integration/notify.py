"""notify.py - what the operations tests share: a stand-in for the service
manager's notification socket, and kettled started as systemd starts it.

    n = Notify()                         # a datagram socket; n.path
    kd = start_kettled(n, watchdog_usec=1000000)
    n.wait(lambda m: "READY" in m, 20, "READY=1")
    ...
    n.close()

kettled sends sd_notify(3) messages (READY=1, STATUS=, RELOADING=1,
STOPPING=1, WATCHDOG=1) to the AF_UNIX datagram socket named by
NOTIFY_SOCKET; each message is kept as (arrival time, {key: value}).
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import harness as h


def skip_file(reason):
    """Skip the whole file (exit 77) before harness.main runs."""
    print("SKIP: %s" % reason)
    sys.stdout.flush()
    os._exit(77)


def require(cmd):
    """Path of an external command, or skip the file."""
    path = shutil.which(cmd)
    if path is None:
        skip_file("%s not installed" % cmd)
    return path


def systemd_support():
    """Whether kettled was built with libsystemd (its --version says);
    skips the file when kettled is not built."""
    exe = os.path.join(h.BUILDDIR, "kettled")
    if not os.access(exe, os.X_OK):
        skip_file("kettled not built at %s" % exe)
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout
    if "systemd support: on" in out:
        return True
    assert "systemd support: off" in out, "kettled --version says nothing of systemd: %r" % out
    return False


def require_systemd_support():
    """Skip the file unless kettled is built, with libsystemd."""
    if not systemd_support():
        skip_file("kettled built without systemd support")


class Notify:
    """The service manager's end of NOTIFY_SOCKET."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="kettle-notify-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.msgs = []  # (time.monotonic(), {key: value}), in arrival order
        self.seen = 0   # messages already returned by wait()

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def poll(self, timeout):
        """Read every message arriving within timeout seconds (at least one
        read attempt); returns the number read."""
        deadline = time.monotonic() + timeout
        n = 0
        while True:
            left = deadline - time.monotonic()
            self.sock.settimeout(max(left, 0.001))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return n
            fields = {}
            for line in data.decode(errors="replace").split("\n"):
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v
            self.msgs.append((time.monotonic(), fields))
            n += 1
            if time.monotonic() >= deadline:
                return n

    def wait(self, pred, timeout, what):
        """The first message not returned before that satisfies pred(fields);
        messages before it are skipped. Fails after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            while self.seen < len(self.msgs):
                t, m = self.msgs[self.seen]
                self.seen += 1
                if pred(m):
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out after %.1fs waiting for %s; got %s" % (
                    timeout, what, [m for _, m in self.msgs[-12:]]))
            self.poll(min(left, 0.2))

    def since(self, t0, key):
        """Arrival times of the messages holding key, received at or after t0."""
        return [t for t, m in self.msgs if t >= t0 and key in m]


# Variables a service manager sets: when the tests themselves run under one
# (a CI job in a unit), theirs must not reach the programs they start.
for _k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
           "LISTEN_FDNAMES"):
    os.environ.pop(_k, None)


# Run argv with WATCHDOG_PID set to the pid it will have: the shell exports
# its own pid and execs the program, which keeps it (as systemd does).
WITH_OWN_PID = 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@"'


def start_kettled(notify, *args, watchdog_usec=None, watchdog_pid="self", env=None,
                  listen="127.0.0.1:0"):
    """kettled with NOTIFY_SOCKET (and WATCHDOG_USEC/WATCHDOG_PID when
    watchdog_usec is given; watchdog_pid "self", a number, or None to leave
    it unset), waiting for its `listening on` line. A harness.Server."""
    exe = h.program("kettled")
    e = {"NOTIFY_SOCKET": notify.path}
    if watchdog_usec is not None:
        e["WATCHDOG_USEC"] = str(watchdog_usec)
    if env:
        e.update(env)
    argv = ["--listen", listen] + list(args) if listen else list(args)
    if watchdog_usec is not None and watchdog_pid == "self":
        return h.Server("/bin/sh", "-c", WITH_OWN_PID, exe, *argv, listen=None, env=e)
    if watchdog_usec is not None and watchdog_pid is not None:
        e["WATCHDOG_PID"] = str(watchdog_pid)
    return h.Server(exe, *argv, listen=None, env=e)
