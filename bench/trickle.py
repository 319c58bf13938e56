#!/usr/bin/env python3
"""trickle.py - what a large request that arrives slowly costs a server's CPU.

One client sends an MGET of 60,000 keys (about 700 KB): all of it at once but
its last 3 KB, which then arrive one byte every 0.5 ms, each byte its own TCP
segment (about 1.5 s). The server's CPU time (utime + stime from
/proc/PID/stat) is read once the first part has been taken in and again when
the reply has arrived. A parser that resumes where it stopped spends next to
nothing per byte; one that parses the request again from its first byte on
every read spends seconds.

Servers, one after the other: kettle-db; kettled in front of its own
kettle-db (the MGET is over kettled's max-keys, so it is answered with an
error as soon as it is parsed); redis-server when it is installed.

  bench/trickle.py --builddir BUILD [--keys 60000] [--tail 3000]
                   [--interval-ms 0.5] [--json FILE]

Run it with an optimised build (no sanitizers) on a quiet machine. Not a
test: it asserts nothing, it prints figures.
"""
import argparse
import importlib.util
import json
import os
import shutil
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("bench_db", os.path.join(HERE, "bench-db.py"))
bench_db = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_db)  # free_port, cpu_seconds, wait_port, start_*, stop


def mget(keys):
    args = [b"MGET"] + [b"%d" % (i * 7919 % 1000003) for i in range(keys)]
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def read_reply(f):
    """Read one RESP reply; return its first line (the rest is skipped)."""
    line = f.readline()
    if not line:
        raise ConnectionError("connection closed before the reply")
    if line[:1] == b"$" and int(line[1:]) >= 0:
        f.read(int(line[1:]) + 2)
    elif line[:1] == b"*":
        for _ in range(max(int(line[1:]), 0)):
            read_reply(f)
    return line.rstrip(b"\r\n").decode(errors="replace")


def trickle(pid, port, request, tail, interval):
    """Send request with its last tail bytes trickled; the server's CPU
    seconds and the wall seconds from the first trickled byte to the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(request[:-tail])
        time.sleep(0.5)  # let the server take the first part in
        cpu0 = bench_db.cpu_seconds(pid)
        t0 = next_at = time.perf_counter()
        for i in range(len(request) - tail, len(request)):
            s.send(request[i:i + 1])
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        first = read_reply(s.makefile("rb"))
        wall = time.perf_counter() - t0
        cpu = bench_db.cpu_seconds(pid) - cpu0
    return {"cpu_s": cpu, "wall_s": wall, "cpu_per_s": cpu / wall, "reply": first[:60]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--builddir", default=os.environ.get("KETTLE_BUILDDIR", "build"))
    ap.add_argument("--keys", type=int, default=60000)
    ap.add_argument("--tail", type=int, default=3000, help="bytes trickled")
    ap.add_argument("--interval-ms", type=float, default=0.5)
    ap.add_argument("--json")
    a = ap.parse_args()
    db = os.path.join(a.builddir, "kettle-db")
    kd = os.path.join(a.builddir, "kettled")
    if not (os.access(db, os.X_OK) and os.access(kd, os.X_OK)):
        sys.exit("no kettle-db or kettled in %s (use --builddir)" % a.builddir)
    request = mget(a.keys)
    interval = a.interval_ms / 1000.0
    print("MGET of %d keys, %d bytes; the last %d trickled one every %.2f ms; "
          "machine: %d CPUs, load average %.2f" % (a.keys, len(request), a.tail, a.interval_ms,
                                                   os.cpu_count(), os.getloadavg()[0]))
    print("%-12s %10s %10s %12s  %s" % ("server", "CPU s", "wall s", "CPU s per s", "reply"))
    out = {}
    backend = bench_db.start_kettle_db(db, "--latency", "none")
    procs = [backend]
    try:
        servers = [("kettle-db",) + backend]
        port = bench_db.free_port()
        p = bench_db.subprocess.Popen(
            [kd, "--listen", "127.0.0.1:%d" % port, "--backend", "127.0.0.1:%d" % backend[1]],
            stdout=bench_db.subprocess.DEVNULL, stderr=bench_db.subprocess.DEVNULL)
        procs.append((p, port))
        bench_db.wait_port(port, p)
        servers.append(("kettled", p, port))
        if shutil.which("redis-server"):
            servers.append(("redis-server",) + bench_db.start_redis())
            procs.append(servers[-1][1:])
        for name, proc, port in servers:
            r = trickle(proc.pid, port, request, a.tail, interval)
            out[name] = r
            print("%-12s %10.3f %10.3f %12.3f  %s" % (name, r["cpu_s"], r["wall_s"],
                                                      r["cpu_per_s"], r["reply"]))
    finally:
        for p, _ in procs:
            bench_db.stop(p)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
