#!/usr/bin/env python3
"""bench/faults.py - kettled in front of two kettle-db shards while one of
them fails: throughput every 250 ms, and the share of MGETs that came back
partial (an error element in place of a value).

    bench/faults.py                       # stall 0.05, cut 1, stop-reading all, close 0.05
    bench/faults.py "stall 0.05"          # one fault
    bench/faults.py --before 3 --during 8 --clients 64 "close 0.05"
    bench/faults.py --kettled-arg=--eject-failure-rate=10% "stall 0.05"
    bench/faults.py --shards 1 none       # what one kettle-db carries alone

For each fault: fresh servers (kettle-db --latency "fixed 1ms", kettled with
the two as shards), a closed-loop load of MGET k1 k2 k3 over random keys
from --clients connections (bench/bench-faults-load, built with the tree), `before` seconds fault-free, the fault set on
the first kettle-db through FAULT SET (its admin commands) for `during`
seconds, then cleared ("none": no fault; --shards N: N kettle-db, the
fault on the first). Printed: one line per 250 ms (requests/s, partial
share, error replies), then the fault-free rate, when throughput was back
to 80% of it for good, the throughput in the first 2 s of the fault and
from 2 s after its start as shares of the fault-free rate, the partial share from the ejection on,
and kettled's INFO lines for the faulty server.

Environment: KETTLE_BUILDDIR (default ./build, then the current directory).
This is a benchmark, not a test: it reports, it asserts nothing. The load
client runs on the same machine as the servers.
"""
import argparse
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(HERE)
INTERVAL = 0.25
# a free port and a RESP client as the integration tests have them
sys.path.insert(0, os.path.join(TOP, "tests", "integration"))
from harness import Client, Closed, free_port  # noqa: E402
_spec = importlib.util.spec_from_file_location("bench_db", os.path.join(HERE, "bench-db.py"))
bench_db = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_db)  # stop


def builddir():
    for d in (os.environ.get("KETTLE_BUILDDIR"), os.path.join(TOP, "build"), os.getcwd()):
        if d and os.access(os.path.join(d, "kettled"), os.X_OK):
            return os.path.abspath(d)
    sys.exit("bench/faults.py: build kettle first or set KETTLE_BUILDDIR")


def start(argv, port):
    log = tempfile.TemporaryFile()
    p = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if p.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return p, log
        except OSError:
            time.sleep(0.05)
    log.seek(0)
    raise RuntimeError("%s did not start: %s" % (argv[0], log.read()[-1000:]))


def command(*args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def admin(sock, *args):
    """One command on a blocking connection; the whole reply must be +OK."""
    sock.sendall(command(*[x.encode() for x in args]))
    got = b""
    while not got.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    if not got.startswith(b"+OK"):
        raise RuntimeError("%s: %r" % (" ".join(args), got))


def info_lines(port, prefix):
    """The lines of kettled's INFO backend starting with prefix."""
    try:
        with Client(port) as c:
            got = c.call("INFO", "backend")
    except (OSError, Closed, ValueError, AssertionError) as e:  # refused, cut, not RESP
        return ["(INFO failed: %s)" % e]
    if not isinstance(got, bytes):
        return ["(INFO failed: %r)" % (got,)]
    return [l for l in got.decode(errors="replace").splitlines() if l.startswith(prefix)]


def run_fault(B, fault, a):
    procs = []
    try:
        ports = [free_port() for _ in range(a.shards)]
        for p in ports:
            procs.append(start([os.path.join(B, "kettle-db"), "--listen", "127.0.0.1:%d" % p,
                                "--latency", a.latency, "--log-level", "warning"], p))
        kp = free_port()
        argv = [os.path.join(B, "kettled"), "--listen", "127.0.0.1:%d" % kp, "--log-level", "notice"]
        for p in ports:
            argv += ["--backend", "127.0.0.1:%d" % p]
        argv += a.kettled_arg
        kd, kdlog = start(argv, kp)
        procs.append((kd, kdlog))
        total = a.before + a.during + a.after
        load = subprocess.Popen([os.path.join(B, "bench", "bench-faults-load"), str(kp),
                                 str(a.clients), str(a.keys), str(int(total + 0.999)),
                                 str(int(INTERVAL * 1000))],
                                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        procs.append((load, None))
        # one admin connection sets and clears the fault: stop-reading
        # spares the connection that set it, not new ones
        adm = socket.create_connection(("127.0.0.1", ports[0]), 10)
        # the load's first line is its time zero: the fault is timed from
        # it, not from the start of the program (which may take a while)
        if not load.stdout.readline():
            raise RuntimeError("bench-faults-load did not start")
        t_start = time.monotonic()
        time.sleep(a.before)
        t_fault = time.monotonic() - t_start
        wall_fault = time.time()
        if fault != "none":
            admin(adm, "FAULT", "SET", *fault.split())
        time.sleep(a.during)
        t_clear = time.monotonic() - t_start
        if fault != "none":
            admin(adm, "FAULT", "CLEAR")
        adm.close()
        out, _ = load.communicate(timeout=a.after + 30)
        rows = [tuple(int(x) for x in line.split()) for line in out.splitlines() if line.strip()]
        rows = [r for r in rows if r[0] > 0]
        ej_lines = info_lines(kp, "backend0:")
        kdlog.seek(0)
        log = kdlog.read().decode(errors="replace").splitlines()
        report(fault, rows, t_fault, t_clear, ej_lines, log, wall_fault, a.shards)
    finally:
        for p, _ in reversed(procs):
            bench_db.stop(p)


def log_time(line):
    """The wall-clock time of a log line ("2026-12-02 19:00:16.124 ...")."""
    try:
        stamp = " ".join(line.split()[:2])
        base = time.mktime(time.strptime(stamp.split(".")[0], "%Y-%m-%d %H:%M:%S"))
        return base + float("0." + stamp.split(".")[1])
    except (ValueError, IndexError):
        return None


def report(fault, lines, t_fault, t_clear, ej_lines, log, wall_fault, shards):
    print("## FAULT SET %s on one of %d kettle-db shards (set at %.2f s, cleared at %.2f s)\n"
          % (fault, shards, t_fault, t_clear))
    rows = []
    print("| t (s) | requests/s | partial % | error replies |")
    print("|---:|---:|---:|---:|")
    for ms, ok, partial, err, wrong in lines:
        t = ms / 1000.0 - INTERVAL  # the interval that ended at ms
        n = ok + partial + err + wrong
        rows.append((t, n / INTERVAL, partial, n, wrong))
        mark = " (fault)" if t_fault <= t < t_clear else ""
        print("| %.2f%s | %.0f | %.1f | %d |" % (t, mark, n / INTERVAL,
                                                  100.0 * partial / n if n else 0, err))
    base = sorted(rps for t, rps, _, _, _ in rows if 0.5 <= t and t + INTERVAL <= t_fault)
    base_rps = base[len(base) // 2] if base else 0
    during = [(t, rps, p, n, w) for t, rps, p, n, w in rows if t_fault <= t and t + INTERVAL <= t_clear]
    back = None
    for k in range(len(during)):
        if all(rps >= 0.8 * base_rps for _, rps, _, _, _ in during[k:]):
            back = during[k][0] - t_fault
            break
    early = [rps for t, rps, _, _, _ in rows if t_fault - INTERVAL / 2 <= t < t_fault + 2 - INTERVAL / 2]
    early_rps = sum(early) / len(early) if early else 0
    late = [(rps, p, n) for t, rps, p, n, _ in during if t >= t_fault + 2]
    late_rps = sum(x[0] for x in late) / len(late) if late else 0
    ej_at = None
    for line in log:
        if "ejected for" in line:
            ej_at = line
            break
    wrong = sum(w for *_, w in rows)
    print()
    print("- fault-free rate (median of the 250 ms intervals before the fault): %.0f requests/s"
          % base_rps)
    print("- back to >= 80%% of it for good: %s" % ("%.2f s after the fault's start" % back
                                                  if back is not None else "never during the fault"))
    print("- in the first 2 s of the fault (the intervals starting within them): %.0f requests/s, "
          "%.0f%% of fault-free" % (early_rps, 100.0 * early_rps / base_rps if base_rps else 0))
    print("- from 2 s after the fault's start to its end: %.0f requests/s, %.0f%% of fault-free"
          % (late_rps, 100.0 * late_rps / base_rps if base_rps else 0))
    p2 = sum(x[1] for x in late)
    n2 = sum(x[2] for x in late)
    print("- partial MGETs from 2 s after the fault's start to its end: %.2f%% (%d of %d)"
          % (100.0 * p2 / n2 if n2 else 0, p2, n2))
    print("- wrong values: %d" % wrong)
    at = log_time(ej_at) if ej_at else None
    print("- kettled's first ejection: %s%s" % (
        "%.2f s after the fault's start: " % (at - wall_fault) if at else "",
        ej_at.strip() if ej_at else "none"))
    for l in ej_lines:
        fields = dict(kv.split("=", 1) for kv in l.split(":", 1)[1].split(",") if "=" in kv)
        print("- INFO %s: state=%s ejections=%s (consecutive %s, rate %s, probe %s) stalls=%s "
              "conn_failures=%s cause=%s" % (
                  l.split(":")[0], fields.get("state"), fields.get("ejections"),
                  fields.get("ejections_consecutive"), fields.get("ejections_rate"),
                  fields.get("ejections_probe"), fields.get("stalls"), fields.get("conn_failures"),
                  fields.get("eject_cause")))
    print()
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description="kettled under one failing kettle-db shard",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("faults", nargs="*",
                    default=["stall 0.05", "cut 1", "stop-reading 1 all", "close 0.05"])
    ap.add_argument("--before", type=float, default=3, help="seconds fault-free (default 3)")
    ap.add_argument("--during", type=float, default=8, help="seconds of fault (default 8)")
    ap.add_argument("--after", type=float, default=2, help="seconds after clearing (default 2)")
    ap.add_argument("--clients", type=int, default=50, help="connections (default 50)")
    ap.add_argument("--keys", type=int, default=3, help="keys per MGET (default 3)")
    ap.add_argument("--shards", type=int, default=2, help="kettle-db servers (default 2)")
    ap.add_argument("--latency", default="fixed 1ms", help="kettle-db --latency (default fixed 1ms)")
    ap.add_argument("--kettled-arg", action="append", default=[],
                    help="an extra kettled argument (repeatable), e.g. --kettled-arg=--stall-floor=100ms")
    a = ap.parse_args()
    extra = []
    for x in a.kettled_arg:
        extra += x.split("=", 1) if x.startswith("--") and "=" in x else [x]
    a.kettled_arg = extra
    B = builddir()
    print("bench/faults.py %s, %d CPUs, kettled %s, %d clients x MGET of %d keys, kettle-db %s\n"
          % (time.strftime("%Y-%m-%d %H:%M:%S"), os.cpu_count(), " ".join(a.kettled_arg) or
             "(defaults)", a.clients, a.keys, a.latency))
    for f in a.faults:
        run_fault(B, f, a)


if __name__ == "__main__":
    main()
