#!/usr/bin/env python3
"""bench/bench-backends.py - kettle's I/O backends side by side.

Starts bench/bench-backends (a PING server on libkettle) once per backend,
drives each with redis-benchmark at 1, 50 and 500 connections, unpipelined
and pipelined 16, alternating the backends round by round, and prints one
table: requests/s and server CPU seconds per 100,000 requests (utime+stime
of the server process, every thread included, from /proc/PID/stat), median
of the rounds, with the ratios to epoll.

    bench/bench-backends.py                      # everything, 3 rounds
    bench/bench-backends.py --rounds 5 --scale 2 # more rounds, twice the requests
    bench/bench-backends.py --conns 50 --pipeline 16 --backends epoll,io_uring
    bench/bench-backends.py --pin                # server on CPU 1, client on CPU 0

Measure on a quiet machine with an optimised build (no sanitizers): the
client shares the cores with the server. KETTLE_BUILDDIR names the build
tree (default: the current directory). A benchmark, not a test: it asserts
nothing.
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
# requests per run by (connections, pipeline): about 1-3 s each on 2 cores
BASE_REQUESTS = {(1, 1): 100000, (50, 1): 200000, (500, 1): 200000,
                 (1, 16): 1000000, (50, 16): 2000000, (500, 16): 2000000}


class Server:
    """One bench-backends process on an ephemeral port."""

    def __init__(self, binary, backend, pin):
        self.backend = backend
        argv = [binary, "--io", backend, "--listen", "127.0.0.1:0"]
        if pin:
            argv = ["taskset", "-c", "1"] + argv  # taskset execs: same pid
        self.p = subprocess.Popen(argv,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 10
        self.port = None
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                break
            m = re.search(r"listening on [^ ]*:(\d+) \(io (\S+)\)", line)
            if m:
                self.port = int(m.group(1))
                if m.group(2) != backend:
                    self.stop()
                    raise RuntimeError("%s server runs on %s" % (backend, m.group(2)))
                break
        if self.port is None:
            self.stop()
            raise RuntimeError("%s server did not start" % backend)

    def cpu(self):
        with open("/proc/%d/stat" % self.p.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def run_one(srv, conns, pipeline, requests, pin):
    """(requests/s, CPU s per 100k requests) of one redis-benchmark run."""
    argv = ["redis-benchmark", "-p", str(srv.port), "-c", str(conns), "-n", str(requests),
            "-P", str(pipeline), "-t", "ping_mbulk", "-q"]
    if pin:
        argv = ["taskset", "-c", "0"] + argv
    c0 = srv.cpu()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600).stdout
    c1 = srv.cpu()
    m = re.findall(r"PING_MBULK: ([\d.]+) requests per second", out.replace("\r", "\n"))
    if not m:
        raise RuntimeError("redis-benchmark said: %s" % out.strip()[-200:])
    return float(m[-1]), (c1 - c0) / requests * 100000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backends", default="epoll,io_uring,libevent")
    ap.add_argument("--conns", default="1,50,500")
    ap.add_argument("--pipeline", default="1,16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the request counts")
    ap.add_argument("--pin", action="store_true",
                    help="pin the server to CPU 1 and the client to CPU 0 (less noise)")
    args = ap.parse_args()

    builddir = os.environ.get("KETTLE_BUILDDIR") or os.getcwd()
    binary = os.path.join(builddir, "bench", "bench-backends")
    if not os.access(binary, os.X_OK):
        sys.exit("bench-backends.py: build bench/bench-backends first (make bench/bench-backends) "
                 "or set KETTLE_BUILDDIR")
    if shutil.which("redis-benchmark") is None:
        sys.exit("bench-backends.py: redis-benchmark is not installed")

    backends = args.backends.split(",")
    conns = [int(c) for c in args.conns.split(",")]
    pipes = [int(p) for p in args.pipeline.split(",")]
    servers = {}
    try:
        for b in backends:
            servers[b] = Server(binary, b, args.pin)
        results = {}
        for c in conns:
            for p in pipes:
                n = int(BASE_REQUESTS.get((c, p), 200000) * args.scale)
                runs = {b: [] for b in backends}
                for r in range(args.rounds):
                    # rotate the order so no backend always runs first
                    order = backends[r % len(backends):] + backends[:r % len(backends)]
                    for b in order:
                        runs[b].append(run_one(servers[b], c, p, n, args.pin))
                        print("  c=%-3d P=%-2d round %d %-8s %10.0f req/s %.4f cpu-s/100k" %
                              ((c, p, r + 1, b) + runs[b][-1]), file=sys.stderr)
                results[(c, p)] = {b: (statistics.median(x[0] for x in runs[b]),
                                       statistics.median(x[1] for x in runs[b]))
                                   for b in backends}
    finally:
        for s in servers.values():
            s.stop()

    print()
    print("I/O backends, PING (redis-benchmark -t ping_mbulk), median of %d rounds%s" %
          (args.rounds, ", server and client pinned to CPUs 1 and 0" if args.pin else ""))
    print()
    head = "| conns | pipeline |"
    for b in backends:
        head += " %s req/s |" % b
    for b in backends:
        head += " %s CPU s/100k |" % b
    others = [b for b in backends if b != "epoll"] if "epoll" in backends else []
    for b in others:
        head += " %s/epoll CPU | %s/epoll req/s |" % (b, b)
    print(head)
    print("|" + "|".join(["---"] * (head.count("|") - 1)) + "|")
    for (c, p), res in results.items():
        row = "| %d | %d |" % (c, p)
        for b in backends:
            row += " %.0f |" % res[b][0]
        for b in backends:
            row += " %.4f |" % res[b][1]
        for b in others:
            e = res["epoll"]
            row += " %.2f | %.2f |" % (res[b][1] / e[1] if e[1] else float("nan"),
                                       res[b][0] / e[0] if e[0] else float("nan"))
        print(row)


if __name__ == "__main__":
    main()
