#!/usr/bin/env python3
"""measure.py - run the eight examples at growing N against a kettle-db of its
own and print the tables of examples/README.md.

    python3 examples/measure.py [--builddir DIR] [--sizes 3,1000,10000,50000]
                                [--latency SPEC] [--repeat R] [--blocking-max N]
                                [--only 03,06]

Run it from a build tree (or give --builddir); build without sanitizers
(`../configure` alone) or the figures measure the sanitizers. It starts
`kettle-db --latency "fixed 100ms"` (or SPEC) on a free port, raises the
soft descriptor limit to the hard one for itself and its children, and
runs each model R times per N: the tables show medians, and the wall
time's range. Before a run it waits until the TIME_WAIT sockets of the
runs before, plus the N connections to come, fit in half the ephemeral
port range, so that connect() never hunts for a free port. A size is left
out when the descriptor limit cannot hold it (each of the N connections
is a descriptor in the example and another in kettle-db); 01 needs one
connection, but N x 100 ms: --blocking-max caps the N it is run at.
"""
import argparse
import functools
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

print = functools.partial(print, flush=True)  # noqa: A001  (progress as it comes)

# (label, program, extra arguments, environment, how to show the model's counts)
MODELS = [
    ("01 blocking", "01-blocking", [], {},
     lambda r: "%s recv() calls" % fmt(r.get("recv() calls"))),
    ("02 threads", "02-threads", [], {},
     lambda r: "%s threads alive at once" % fmt(r.get("threads alive at once, at most"))),
    ("03 state machines", "03-state-machines", [], {},
     lambda r: "%s wake-ups, %s sockets handed to poll()" % (
         fmt(r.get("loop wake-ups")), fmt(r.get("sockets handed to poll()")))),
    ("04 futures", "04-futures", [], {},
     lambda r: "%s rounds, %s polls (%s found nothing)" % (
         fmt(r.get("executor rounds")), fmt(r.get("fetch polls")),
         fmt(r.get("fetch polls that found nothing to do")))),
    ("05 generators", "05-generators", [], {},
     lambda r: "%s resumes, %s wake-ups" % (fmt(r.get("coroutine resumes")),
                                           fmt(r.get("scheduler wake-ups")))),
    ("06 kettle", "06-kettle", [], {},
     lambda r: "%s loop iterations" % fmt(r.get("loop iterations"))),
    ("06 kettle, epoll", "06-kettle", [], {"KETTLE_IO": "epoll"},
     lambda r: "%s loop iterations" % fmt(r.get("loop iterations"))),
    ("06 kettle -c 2", "06-kettle", ["-c", "2"], {},
     lambda r: "%s loop iterations" % fmt(r.get("loop iterations"))),
    ("07 blocked loop", "07-blocked-loop", [], {},
     lambda r: "frozen %s ms, %s replies waited" % (fmt(r.get("loop frozen")),
                                                   fmt(r.get("replies that waited unread")))),
    ("08 work stealing", "08-work-stealing", [], {},
     lambda r: "%s pieces, %s stolen" % (fmt(r.get("pieces run on the pool")),
                                         fmt(r.get("pieces stolen")))),
    ("08 work stealing -c 2", "08-work-stealing", ["-c", "2"], {},
     lambda r: "%s pieces, %s stolen" % (fmt(r.get("pieces run on the pool")),
                                         fmt(r.get("pieces stolen")))),
]

LINE = re.compile(r"^([a-z][^:\[]*): (.*)$")
INT = re.compile(r"^-?\d+")


def parse_report(out):
    """The closing report every example prints (example.h): `key: value`
    lines. A value that starts with a number becomes that int ("cpu: 85 ms
    (user 20 ms, ...)" -> 85); `numbers` stays text."""
    r = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        key, value = m.group(1), m.group(2)
        n = INT.match(value)
        r[key] = int(n.group(0)) if n and key != "numbers" else value
    return r


def fmt(v):
    return "{:,}".format(v) if isinstance(v, int) else "?"


def time_wait():
    """Sockets in TIME_WAIT on this machine (/proc/net/sockstat)."""
    with open("/proc/net/sockstat") as f:
        m = re.search(r"\btw (\d+)", f.read())
    return int(m.group(1)) if m else 0


def ephemeral_ports():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        lo, hi = (int(x) for x in f.read().split())
    return hi - lo + 1


def wait_ports_free(n, deadline_s=90):
    """Wait (at most deadline_s) until the TIME_WAIT sockets and the n new
    connections together take at most half the ephemeral ports: past that,
    connect() searches longer for a free port."""
    t0 = time.monotonic()
    while time_wait() + n > ephemeral_ports() // 2 and time.monotonic() - t0 < deadline_s:
        time.sleep(1)


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def start_db(builddir, latency, log):
    """kettle-db on a free port, allowed as many clients as there are
    descriptors, logging into the file log. Returns (Popen, "127.0.0.1:PORT")."""
    exe = os.path.join(builddir, "kettle-db")
    p = subprocess.Popen([exe, "--listen", "127.0.0.1:0", "--latency", latency,
                          "--maxclients", "1000000"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and p.poll() is None:
        with open(log.name) as f:
            m = re.search(r"listening on (\S+:\d+)", f.read())
        if m:
            return p, m.group(1)
        time.sleep(0.05)
    p.kill()
    sys.exit("kettle-db did not start; its log: %s" % log.name)


def run_one(builddir, prog, args, env, n, addr):
    """One run: the parsed report, plus `stopped` (the example's own words)
    when it could not reach n."""
    exe = os.path.join(builddir, "examples", prog)
    p = subprocess.run([exe, "-n", str(n)] + args + [addr], capture_output=True, text=True,
                       env=dict(os.environ, **env), timeout=max(120, n // 5))
    r = parse_report(p.stdout)
    r["rc"] = p.returncode
    m = re.search(r"^stopped at .*$", p.stderr, re.M)
    if p.returncode != 0:
        r["stopped"] = m.group(0) if m else (p.stderr.strip().splitlines() or ["failed"])[-1]
    return r


def median_report(runs):
    """Each number the median of the runs; wall as (median, min, max)."""
    out = dict(runs[0])
    for key, v in runs[0].items():
        if isinstance(v, int) and all(isinstance(r.get(key), int) for r in runs):
            out[key] = int(statistics.median(r[key] for r in runs))
    walls = [r["wall"] for r in runs if isinstance(r.get("wall"), int)]
    out["wall range"] = (min(walls), max(walls)) if walls else None
    return out


def kib(v):
    if not isinstance(v, int):
        return "?"
    return "%.1f GiB" % (v / 1048576) if v >= 1048576 else \
        "%.1f MiB" % (v / 1024) if v >= 10240 else "%d KiB" % v


def table(n, rows, base):
    """A markdown table for one N. base: label -> the N = 3 report."""
    print("\nN = %s%s\n" % ("{:,}".format(n), "" if n > 3 else " (the explanation's get_numbers())"))
    print("| model | wall ms | CPU ms | peak RSS | peak vsize | threads | the model's counts "
          "| CPU per fetch | RSS per fetch |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for label, r, counts in rows:
        if r is None:
            print("| %s | not run | | | | | | | |" % label)
            continue
        if "stopped" in r:
            print("| %s | %s | | | | | %s | | |" % (label, fmt(r.get("wall")), r["stopped"]))
            continue
        lo, hi = r["wall range"] or (None, None)
        wall = fmt(r["wall"]) + ("" if lo == hi else " (%s–%s)" % (fmt(lo), fmt(hi)))
        per_cpu = "%.0f µs" % (r["cpu"] * 1000 / n) if n > 3 else ""
        b = base.get(label)
        per_rss = ("%.1f KiB" % ((r["peak rss"] - b["peak rss"]) / (n - 3))
                   if n > 3 and b and isinstance(b.get("peak rss"), int) else "")
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, wall, fmt(r.get("cpu")), kib(r.get("peak rss")), kib(r.get("peak vsize")),
            fmt(r.get("threads")), counts(r), per_cpu, per_rss))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--builddir", default=os.environ.get("KETTLE_BUILDDIR", os.getcwd()))
    ap.add_argument("--sizes", default="3,1000,10000,50000")
    ap.add_argument("--latency", default="fixed 100ms", help="kettle-db's --latency")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--blocking-max", type=int, default=10000,
                    help="run 01 (N x 100 ms) only up to this N")
    ap.add_argument("--only", default="", help="comma-separated labels prefixes, e.g. 03,06")
    a = ap.parse_args()

    limit = raise_fd_limit()
    sizes = [int(s) for s in a.sizes.split(",")]
    fits = [n for n in sizes if n + 100 <= limit]
    log = tempfile.NamedTemporaryFile(prefix="kettle-db-", suffix=".log")
    db, addr = start_db(a.builddir, a.latency, log)
    print("kettle-db --latency %r at %s; descriptor limit %d (hard); %d runs each; "
          "load average %.1f at the start" % (a.latency, addr, limit, a.repeat, os.getloadavg()[0]))
    models = [m for m in MODELS if not a.only or
              any(m[0].startswith(p) for p in a.only.split(","))]
    base = {}
    try:
        for n in fits:
            rows = []
            for label, prog, args, env, counts in models:
                if prog == "01-blocking" and n > a.blocking_max:
                    rows.append((label, None, counts))
                    continue
                runs = []
                for _ in range(a.repeat if prog != "01-blocking" or n < 1000 else 1):
                    wait_ports_free(n)
                    print("  %s, N = %d ..." % (label, n), file=sys.stderr, flush=True)
                    runs.append(run_one(a.builddir, prog, args, env, n, addr))
                    if "stopped" in runs[-1]:
                        break
                r = median_report(runs)
                if n == 3:
                    base[label] = r
                rows.append((label, r, counts))
            table(n, rows, base)
    finally:
        db.terminate()
        db.wait()
    for n in sizes:
        if n not in fits:
            print("\nN = {:,}: not run. Every model but 01 holds a connection per fetch, a "
                  "descriptor in the example and one in kettle-db, and the hard descriptor "
                  "limit here (RLIMIT_NOFILE) is {:,}; 01 would take N x 100 ms.".format(n, limit))
    print("\nload average %.1f at the end" % os.getloadavg()[0])


if __name__ == "__main__":
    main()
