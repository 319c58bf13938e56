#!/usr/bin/env python3
"""hostile-mget.py - clients that pipeline MGETs of large keys, and what
they cost the server: its peak resident size while they run, how long it
takes to give the memory back after they leave, and how long a probe on
another connection waits meanwhile.

    bench/hostile-mget.py --port 7379 --pid $(pidof kettled) \\
        [--clients 4] [--keys 1000] [--key-size 8000] [--seconds 8] [--after 8]

Each client sends MGET requests of `keys` keys of `key-size` bytes back to
back (pipelined, never waiting for a reply) and reads the replies on a
second thread so that it is not closed for not reading. The probe sends
`--probe` (default "GET 1") every 20 ms on its own connection and times
each reply. The server's VmRSS is sampled every 50 ms from /proc; its CPU
time and minor page faults while the clients run are read from there too.

Prints one line per figure and, with --json FILE, the same as JSON.
Exit status 0; the figures are for reading, not a test.
"""
import argparse
import json
import os
import socket
import threading
import time


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def proc_stat(pid):
    """(CPU seconds, minor page faults) of a process so far."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Hostile:
    """One client: a sender pipelining the same big MGET, a reader
    draining whatever comes back."""

    def __init__(self, host, port, request):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = request
        self.running = True
        self.sent = 0
        self.received = 0
        self.closed = None
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._read, daemon=True)]
        for t in self.threads:
            t.start()

    def _send(self):
        try:
            while self.running:
                self.sock.sendall(self.request)
                self.sent += 1
        except OSError as e:
            self.closed = self.closed or "send: %s" % e

    def _read(self):
        try:
            while self.running:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    self.closed = self.closed or "closed by the server"
                    return
                self.received += len(chunk)
        except OSError as e:
            if self.running:
                self.closed = self.closed or "recv: %s" % e

    def stop(self):
        self.running = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for t in self.threads:
            t.join(5)


class Probe:
    """A well-behaved client on its own connection: one request every
    20 ms, each timed until its reply is complete."""

    def __init__(self, host, port, words):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(30)
        self.request = encode(*words)
        self.times = []
        self.errors = 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _reply(self, buf):
        """Read one reply (a line, or a bulk string); return the rest."""
        while b"\r\n" not in buf:
            buf += self.sock.recv(65536)
        line, buf = buf.split(b"\r\n", 1)
        if line[:1] == b"$" and int(line[1:]) >= 0:
            n = int(line[1:]) + 2
            while len(buf) < n:
                buf += self.sock.recv(65536)
            buf = buf[n:]
        elif line[:1] == b"-":
            self.errors += 1
        return buf

    def _run(self):
        buf = b""
        while self.running:
            t0 = time.monotonic()
            try:
                self.sock.sendall(self.request)
                buf = self._reply(buf)
            except OSError:
                self.errors += 1
                return
            self.times.append(time.monotonic() - t0)
            time.sleep(0.02)

    def stop(self):
        self.running = False
        self.thread.join(35)
        self.sock.close()


def percentile(xs, q):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7379)
    ap.add_argument("--pid", type=int, required=True, help="the server process to watch")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--key-size", type=int, default=8000)
    ap.add_argument("--seconds", type=float, default=8.0, help="how long the clients run")
    ap.add_argument("--after", type=float, default=8.0,
                    help="how long to watch the memory after they leave")
    ap.add_argument("--limit-mb", type=float, default=32.0,
                    help="report when RSS falls under this after they leave")
    ap.add_argument("--probe", default="GET 1", help="the probe's command")
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()

    keys = [(b"%08d" % i) * (a.key_size // 8) + b"x" * (a.key_size % 8) for i in range(a.keys)]
    request = encode(b"MGET", *keys)
    base = rss_kb(a.pid)
    cpu0, flt0 = proc_stat(a.pid)
    probe = Probe(a.host, a.port, a.probe.split())
    clients = [Hostile(a.host, a.port, request) for _ in range(a.clients)]
    peak = base
    t0 = time.monotonic()
    while time.monotonic() - t0 < a.seconds:
        peak = max(peak, rss_kb(a.pid))
        time.sleep(0.05)
    sent = sum(c.sent for c in clients)
    received = sum(c.received for c in clients)
    closed = [c.closed for c in clients if c.closed]
    cpu1, flt1 = proc_stat(a.pid)
    for c in clients:
        c.stop()
    left = time.monotonic()
    under = None
    while time.monotonic() - left < a.after:
        r = rss_kb(a.pid)
        peak = max(peak, r)
        if under is None and r < a.limit_mb * 1024:
            under = time.monotonic() - left
        time.sleep(0.05)
    probe.stop()
    end = rss_kb(a.pid)
    out = {
        "clients": a.clients, "keys": a.keys, "key_size": a.key_size, "seconds": a.seconds,
        "request_bytes": len(request), "requests_sent": sent, "reply_bytes": received,
        "clients_closed": closed,
        "rss_start_mb": round(base / 1024, 1), "rss_peak_mb": round(peak / 1024, 1),
        "rss_end_mb": round(end / 1024, 1),
        "server_cpu_s": round(cpu1 - cpu0, 2), "server_minor_faults": flt1 - flt0,
        "under_limit_after_s": None if under is None else round(under, 2),
        "probe_requests": len(probe.times), "probe_errors": probe.errors,
        "probe_p50_ms": round(percentile(probe.times, 0.5) * 1e3, 1),
        "probe_p99_ms": round(percentile(probe.times, 0.99) * 1e3, 1),
        "probe_max_ms": round(max(probe.times, default=0) * 1e3, 1),
    }
    for k, v in out.items():
        print("%-20s %s" % (k, v))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
