"""test-examples.py - every program in examples/ fetches 1, 2 and 3 from a
real kettle-db in proportional latency mode (GET n answers after n x 100 ms).

Properties, with wide margins (not timings):
  - each example exits 0, prints `got 1`, `got 2`, `got 3` (in order for the
    blocking one, as a set for the others) and a `total: N ms` line;
  - the blocking one takes at least the sum of the delays (600 ms);
  - every concurrent one finishes its fetches well under the sum (< 500 ms);
  - 07's ticker shows the stall (a gap of at least 250 ms between ticks) and
    the reply to 1, due after 100 ms, is read only after the stall;
  - 08's reactor ticks while the pool computes, and the results are right;
  - against a port where nothing listens, each exits non-zero with a message.
"""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

SUM_MS = 600          # 100 + 200 + 300
CONCURRENT_MAX_MS = 500
RUN_TIMEOUT = 30      # seconds per example run (the examples give up after 10 s)

GOT = re.compile(r"^\[\s*(\d+) ms\] got (\d+)\b", re.M)
TOTAL = re.compile(r"^total: (\d+) ms", re.M)

NAMES = ["01-blocking", "02-threads", "03-state-machines", "04-futures", "05-generators",
         "06-kettle", "07-blocked-loop", "08-work-stealing"]
_db = []


def db():
    """The shared kettle-db, started on first use."""
    if not _db:
        _db.append(h.Server("kettle-db", "--latency", "proportional 100ms"))
    return _db[0]


def run(name, addr):
    """Run examples/NAME against addr: (exit status, stdout, stderr, wall ms)."""
    exe = h.program(os.path.join("examples", name))
    t0 = time.monotonic()
    try:
        p = subprocess.run([exe, addr], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError("%s did not finish within %d s" % (name, RUN_TIMEOUT))
    wall = (time.monotonic() - t0) * 1000
    for mark in h.SANITIZER_MARKS:
        assert mark not in p.stderr, "sanitizer report from %s:\n%s" % (name, p.stderr[-6000:])
    return p.returncode, p.stdout, p.stderr, wall


def fetch_ok(name):
    """Run an example against kettle-db and check the common contract.
    Returns (got: list of (ms, n) in print order, total ms, stdout)."""
    rc, out, err, wall = run(name, db().addr)
    assert rc == 0, "%s exited %s\nstdout:\n%s\nstderr:\n%s" % (name, rc, out, err)
    got = [(int(ms), int(n)) for ms, n in GOT.findall(out)]
    assert sorted(n for _, n in got) == [1, 2, 3], "%s printed %r:\n%s" % (name, got, out)
    m = TOTAL.search(out)
    assert m, "%s printed no total:\n%s" % (name, out)
    total = int(m.group(1))
    assert total <= wall + 50, "%s: total %d ms but ran %.0f ms" % (name, total, wall)
    return got, total, out


def concurrent(name):
    got, total, out = fetch_ok(name)
    last = max(ms for ms, _ in got)
    assert last < CONCURRENT_MAX_MS, \
        "%s: the last number came at %d ms, not well under the %d ms sum:\n%s" % (
            name, last, SUM_MS, out)
    return got, total, out


def test_01_blocking_sums_the_delays():
    t0 = time.monotonic()
    got, total, out = fetch_ok("01-blocking")
    wall = (time.monotonic() - t0) * 1000
    assert [n for _, n in got] == [1, 2, 3], out
    assert total >= SUM_MS and wall >= SUM_MS, \
        "blocking fetches took %d ms (wall %.0f), less than the %d ms sum:\n%s" % (
            total, wall, SUM_MS, out)


def test_02_threads():
    _, total, out = concurrent("02-threads")
    assert total < CONCURRENT_MAX_MS, out
    assert re.search(r"address space \+\d+ KiB, resident \+\d+ KiB", out), out


def test_03_state_machines():
    _, total, out = concurrent("03-state-machines")
    assert total < CONCURRENT_MAX_MS, out


def test_04_futures():
    _, total, out = concurrent("04-futures")
    assert total < CONCURRENT_MAX_MS, out


def test_05_generators():
    _, total, out = concurrent("05-generators")
    assert total < CONCURRENT_MAX_MS, out


def test_06_kettle():
    _, total, out = concurrent("06-kettle")
    assert total < CONCURRENT_MAX_MS, out


def test_07_blocked_loop_shows_the_stall():
    got, total, out = concurrent("07-blocked-loop")
    assert total < CONCURRENT_MAX_MS, out
    m = re.search(r"^longest gap between ticks: (\d+) ms", out, re.M)
    assert m and int(m.group(1)) >= 250, "no stall visible:\n%s" % out
    # 1 is answered after 100 ms but read only once the blocking call (300 ms) returns.
    t1 = [ms for ms, n in got if n == 1][0]
    assert t1 >= 250, "1 was read at %d ms, during the stall?\n%s" % (t1, out)


def test_08_work_stealing_keeps_the_reactor_ticking():
    _, _, out = concurrent("08-work-stealing")
    results = dict((int(n), int(k)) for n, k in
                   re.findall(r"^\[\s*\d+ ms\] result for (\d+): (\d+) primes", out, re.M))
    assert results == {1: 41538, 2: 78498, 3: 114155}, out
    m = re.search(r"^ticks while jobs ran: (\d+)", out, re.M)
    assert m and int(m.group(1)) >= 1, "the reactor did not tick while the pool worked:\n%s" % out
    ran = [int(x) for x in re.findall(r"^worker \d+: ran (\d+) pieces", out, re.M)]
    assert len(ran) >= 2 and sum(ran) > 3, out


def test_errors_are_reported():
    """Nothing listens on the port: every example says so and exits non-zero."""
    addr = "127.0.0.1:%d" % h.free_port()
    for name in NAMES:
        rc, out, err, _ = run(name, addr)
        assert rc != 0, "%s succeeded with nothing listening:\n%s" % (name, out)
        assert re.search(r"refused|connect", err, re.I), \
            "%s gave no clear message:\n%s" % (name, err)
    rc, out, err, _ = run("01-blocking", "no-port-here")
    assert rc != 0 and "bad address" in err, err


def test_zz_db_clean():
    if _db:
        _db[0].stop()


if __name__ == "__main__":
    h.main(globals())
