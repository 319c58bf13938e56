#!/usr/bin/env python3
"""bench-db.py - kettle-db's benchmark targets, measured beside redis-server.

  1. Zero delay: redis-benchmark (the same client, the same run) against
     kettle-db --latency none and against redis-server holding the same key;
     requests/s and server CPU per request, median of the rounds, and the
     ratios (target: kettle-db within 1.1x of redis-server on both).
  2. 100,000 requests in flight with a fixed 200 ms delay: bench/kdb-load.c
     (built here with cc -O2) opens 100 connections with 1,000 pipelined
     GETs each; every reply is checked; the server's own accuracy figures
     (INFO delay: lateness = actual - scheduled) and its peak RSS are
     printed (targets: lateness p99 <= 2 ms, max <= 10 ms, RSS <= 150 MB).
     "burst" sends the 100,000 at once; "sustained" keeps 100,000 in flight
     while 1,000,000 requests go through (500,000 requests/s).

Run it on a quiet machine with an optimised build (no sanitizers):
  bench/bench-db.py --builddir BUILD [--rounds 3] [--json FILE]
Not a test: it asserts nothing, it prints figures.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# free ports and /proc figures as the integration tests read them
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))
from harness import cpu_seconds, free_port, rss_kb  # noqa: E402


def resp(port, *args):
    """One command over a fresh connection; the reply as text."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"*%d\r\n" % len(args) + b"".join(
            b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args))
        f = s.makefile("rb")
        line = f.readline()
        if line[:1] == b"$":
            n = int(line[1:])
            return f.read(n + 2)[:n].decode(errors="replace") if n >= 0 else ""
        return line.decode(errors="replace").strip()


def info(port):
    return dict(line.split(":", 1) for line in resp(port, "INFO").splitlines()
                if ":" in line and not line.startswith(("#", "$")))


def wait_port(port, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("server exited: %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("server did not listen on %d" % port)


def start_kettle_db(exe, *args):
    port = free_port()
    p = subprocess.Popen([exe, "--listen", "127.0.0.1:%d" % port] + list(args),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, p)
    return p, port


def start_redis():
    exe = shutil.which("redis-server")
    if not exe:
        sys.exit("redis-server not installed")
    port = free_port()
    p = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, p)
    return p, port


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def redis_benchmark(port, clients, n, pipeline, key):
    out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(clients),
                          "-n", str(n), "-P", str(pipeline), "--csv", "GET", key],
                         capture_output=True, text=True, timeout=300).stdout
    for line in out.splitlines():
        m = re.match(r'"GET [^"]*","([\d.]+)"', line)
        if m:
            return float(m.group(1))
    sys.exit("cannot read redis-benchmark output:\n" + out)


def zero_delay(exe, rounds, n):
    print("== zero delay: redis-benchmark -c 50 -n %d, GET 12345 (kettle-db --latency none vs "
          "redis-server with the key set)" % n)
    kdb, kport = start_kettle_db(exe, "--latency", "none")
    red, rport = start_redis()
    results = {}
    try:
        resp(rport, "SET", "12345", "12345")
        io = info(kport).get("io_backend", "?")
        for pipeline in (16, 1):
            rows = {"kettle-db": [], "redis-server": []}
            for _ in range(rounds):
                for name, proc, port in (("kettle-db", kdb, kport), ("redis-server", red, rport)):
                    c0 = cpu_seconds(proc.pid)
                    rps = redis_benchmark(port, 50, n, pipeline, "12345")
                    cpu = cpu_seconds(proc.pid) - c0
                    rows[name].append((rps, cpu / n * 1e6))
            med = {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v))
                   for k, v in rows.items()}
            k, r = med["kettle-db"], med["redis-server"]
            print("  -P %-3d %-14s %12s %14s" % (pipeline, "", "requests/s", "CPU us/request"))
            print("         %-14s %12.0f %14.3f   (io %s)" % ("kettle-db", k[0], k[1], io))
            print("         %-14s %12.0f %14.3f" % ("redis-server", r[0], r[1]))
            print("         ratio          %12.2f %14.2f   (throughput redis/kettle-db, CPU "
                  "kettle-db/redis; target <= 1.10)" % (r[0] / k[0], k[1] / r[1] if r[1] else 0))
            results["P%d" % pipeline] = {"kettle_db": k, "redis_server": r}
    finally:
        stop(kdb)
        stop(red)
    return results


def build_load():
    src = os.path.join(HERE, "kdb-load.c")
    out = os.path.join(tempfile.mkdtemp(prefix="kdb-load-"), "kdb-load")
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O2", "-o", out, src], check=True)
    return out


def in_flight(exe, load, rounds, backend):
    print("== 100,000 in flight, fixed 200 ms (kdb-load: 100 connections x 1,000 pipelined GETs)"
          + (" io=%s" % backend if backend else ""))
    args = ["--latency", "fixed 200ms"] + (["--io", backend] if backend else [])
    kdb, port = start_kettle_db(exe, *args)
    results = []
    try:
        # warm up (slabs, heap and buffers grow once)
        subprocess.run([load, "127.0.0.1", str(port), "100", "1000", "100000", "200"],
                       check=True, capture_output=True)
        for mode, total in [("burst", 100000)] * rounds + [("sustained", 1000000)]:
            resp(port, "CONFIG", "RESETSTAT")
            out = subprocess.run([load, "127.0.0.1", str(port), "100", "1000", str(total), "200"],
                                 capture_output=True, text=True)
            if out.returncode not in (0, 1):
                sys.exit("kdb-load failed: " + out.stderr)
            c = json.loads(out.stdout)
            inf = info(port)
            row = {
                "mode": mode, "requests": c["requests"], "bad_replies": c["bad_replies"],
                "inflight_max": c["inflight_max"], "rps": c["rps"],
                "late_p50_ms": float(inf["delay_lateness_p50_us"]) / 1e3,
                "late_p99_ms": float(inf["delay_lateness_p99_us"]) / 1e3,
                "late_max_ms": float(inf["delay_lateness_max_us"]) / 1e3,
                "client_late_p99_ms": c["late_p99_ms"], "client_late_max_ms": c["late_max_ms"],
                "rss_peak_mb": rss_kb(kdb.pid, "VmHWM") / 1024.0,
                "io": inf.get("io_backend"),
            }
            results.append(row)
            print("  %-9s %7d replies, %d wrong, in flight max %6d, %7.0f req/s | lateness (server) "
                  "p50 %.2f p99 %.2f max %.2f ms | (client, incl. its own time) p99 %.2f max %.2f ms "
                  "| peak RSS %.1f MB" % (
                      mode, row["requests"], row["bad_replies"], row["inflight_max"], row["rps"],
                      row["late_p50_ms"], row["late_p99_ms"], row["late_max_ms"],
                      row["client_late_p99_ms"], row["client_late_max_ms"], row["rss_peak_mb"]))
    finally:
        stop(kdb)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--builddir", default=os.environ.get("KETTLE_BUILDDIR", "."))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=200000, help="requests per redis-benchmark run")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--skip-zero", action="store_true")
    ap.add_argument("--skip-inflight", action="store_true")
    ap.add_argument("--io", action="append", default=[],
                    help="I/O backend(s) for the in-flight run (repeatable; default: auto)")
    a = ap.parse_args()
    exe = os.path.join(a.builddir, "kettle-db")
    if not os.access(exe, os.X_OK):
        sys.exit("no kettle-db in %s (use --builddir)" % a.builddir)
    with open(os.path.join(a.builddir, "config.h")) as f:
        if "KT_SANITIZED 1" in f.read():
            print("warning: this build has sanitizers on: figures are not representative")
    out = {"machine": {"cpus": os.cpu_count(), "load": os.getloadavg()}}
    print("machine: %d CPUs, load average %.2f %.2f %.2f" % ((os.cpu_count(),) + os.getloadavg()))
    if not a.skip_zero:
        if not shutil.which("redis-benchmark"):
            sys.exit("redis-benchmark not installed (redis-tools)")
        out["zero_delay"] = zero_delay(exe, a.rounds, a.n)
    if not a.skip_inflight:
        load = build_load()
        out["in_flight"] = {io or "auto": in_flight(exe, load, a.rounds, io) for io in (a.io or [None])}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
