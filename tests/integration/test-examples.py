"""test-examples.py - the eight programs in examples/ fetch 1..200 from a real
kettle-db whose every answer takes 100 ms (`--latency "fixed 100ms"`).

What is checked needs no clock beyond the database's own delay:
  - every program exits 0, and with -v prints each of 1..200 exactly once
    (01 in order), then the report (`numbers:`, `wall:`, `cpu:`, `peak rss:`,
    `peak vsize:`, `threads:`);
  - each model's own counts are where the model puts them:
      01  one recv() per fetch, and the delays add up (wall >= 200 x 100 ms);
      02  200 threads created, the report's threads = most alive at once + 1;
      03  each wake-up serves at least one of the 2N events (connected, reply),
          and hands poll() every live socket (N the first time);
      04  every fetch needs exactly three polls that do something; the rest
          found nothing, and each round polls every pending fetch (<= N x rounds);
      05  a coroutine is resumed only when its socket is ready: exactly 3 N;
      06  one connection per fetch, or N fetches pipelined on -c C;
      07  the blocking call freezes the loop for at least the 100 ms delay, no
          tick comes meanwhile, and all N - 1 other replies wait unread;
      08  the N slices of the count add up to the primes below 1,500,000;
  - under a descriptor limit of 64, each model that needs a socket per fetch
    stops where it ran out, says so, finishes what it started, exits 1;
  - against a port where nothing listens, each exits non-zero with a message.
"""
import os
import re
import resource
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

sys.path.insert(0, os.path.join(h.SRCDIR, "examples"))
import measure  # noqa: E402  (examples/measure.py: the report's parser)

N = 200
DELAY_MS = 100
RUN_TIMEOUT = 90      # seconds per run; 01 sleeps N x 100 ms = 20 s by design
GOT = re.compile(r"^\[\s*\d+ ms\] got (\d+)$", re.M)
NAMES = ["01-blocking", "02-threads", "03-state-machines", "04-futures", "05-generators",
         "06-kettle", "07-blocked-loop", "08-work-stealing"]
_db = []


def db():
    """The shared kettle-db, started on first use."""
    if not _db:
        _db.append(h.Server("kettle-db", "--latency", "fixed %dms" % DELAY_MS))
    return _db[0]


def start(name, *args, limit_fds=None):
    """Start examples/NAME with args against kettle-db; a Popen."""
    exe = h.program(os.path.join("examples", name))

    def lower_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit_fds, limit_fds))
    return subprocess.Popen([exe] + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lower_limit if limit_fds else None)


def finish(name, p):
    """Wait for a started example: (exit status, stdout, stderr)."""
    try:
        out, err = p.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError("%s did not finish within %d s" % (name, RUN_TIMEOUT))
    for mark in h.SANITIZER_MARKS:
        assert mark not in err, "sanitizer report from %s:\n%s" % (name, err[-6000:])
    return p.returncode, out, err


def run(name, *args, **kw):
    return finish(name, start(name, *args, **kw))


def check_report(name, p, n=N):
    """The common contract of a run of 1..n with -v. Returns (report dict,
    numbers in the order printed, stdout)."""
    rc, out, err = finish(name, p)
    assert rc == 0, "%s exited %s\nstdout:\n%s\nstderr:\n%s" % (name, rc, out[-3000:], err)
    got = [int(v) for v in GOT.findall(out)]
    assert sorted(got) == list(range(1, n + 1)), \
        "%s: numbers missing or repeated: %d printed\n%s" % (name, len(got), out[-3000:])
    r = measure.parse_report(out)
    assert r["numbers"].startswith("1..%d, each once;" % n), (name, r["numbers"])
    for key in ("wall", "cpu", "peak rss", "peak vsize", "threads"):
        assert isinstance(r.get(key), int), "%s: no %r in the report:\n%s" % (name, key, out)
    assert r["peak rss"] > 0 and r["peak vsize"] >= r["peak rss"], (name, r)
    assert "failures" not in r, (name, r)
    return r, got, out


_blocking = []


def test_00_start_the_blocking_one():
    """01 sleeps 200 x 100 ms: it runs while the others are tested."""
    _blocking.append(start("01-blocking", "-v", "-n", N, db().addr))


def test_02_threads():
    r, _, out = check_report("02-threads", start("02-threads", "-v", "-n", N, db().addr))
    assert r["threads created"] == N, out
    assert 1 <= r["threads alive at once, at most"] <= N, out
    assert r["threads"] == r["threads alive at once, at most"] + 1, out
    assert r["recv() calls"] >= N, out


def test_03_state_machines():
    r, _, out = check_report("03-state-machines",
                             start("03-state-machines", "-v", "-n", N, db().addr))
    w, handed = r["loop wake-ups"], r["sockets handed to poll()"]
    assert 1 <= w <= 2 * N, "every wake-up has a ready socket:\n%s" % out
    assert N <= handed <= N * w, "every wake-up hands poll() all live sockets:\n%s" % out


def test_04_futures():
    r, _, out = check_report("04-futures", start("04-futures", "-v", "-n", N, db().addr))
    rounds, polls, futile = (r["executor rounds"], r["fetch polls"],
                             r["fetch polls that found nothing to do"])
    assert rounds >= 3, out
    assert polls - futile == 3 * N, "start, connected, reply: three useful polls each:\n" + out
    assert 3 * N <= polls <= N * rounds, "each round polls every pending fetch:\n" + out


def test_05_generators():
    r, _, out = check_report("05-generators", start("05-generators", "-v", "-n", N, db().addr))
    assert r["coroutine resumes"] == 3 * N, "start, connected, reply: three each:\n" + out
    assert 1 <= r["scheduler wake-ups"] <= 2 * N, out


def test_05_summarises_past_ten():
    rc, out, err = run("05-generators", "-n", 11, db().addr)
    assert rc == 0, err
    assert not GOT.search(out), out
    assert measure.parse_report(out)["numbers"].startswith("1..11, each once;"), out


def test_06_kettle_a_connection_per_fetch():
    r, _, out = check_report("06-kettle", start("06-kettle", "-v", "-n", N, db().addr))
    assert r["connections"] == N and r["threads"] == 1, out
    assert r["loop iterations"] >= 2, out


def test_06_kettle_pipelined():
    r, _, out = check_report("06-kettle", start("06-kettle", "-v", "-n", N, "-c", 4, db().addr))
    assert r["connections"] == 4, out


def test_07_blocked_loop():
    r, got, out = check_report("07-blocked-loop",
                               start("07-blocked-loop", "-v", "-n", N, db().addr))
    frozen = r["loop frozen"]
    assert frozen >= DELAY_MS, "the blocking call returned before the database answered:\n" + out
    assert r["longest gap between ticks"] >= frozen, "a tick came during the freeze:\n" + out
    # Replies due while the loop was frozen wait unread. How many were due
    # by the time the blocking call returned depends on the machine's load
    # (the async requests left just before it), so: some, never more.
    assert 1 <= r["replies that waited unread"] <= N - 1, out
    assert got[0] == N, "the blocking fetch returns first:\n" + out


def test_08_work_stealing():
    r, _, out = check_report("08-work-stealing",
                             start("08-work-stealing", "-v", "-n", N, "-c", 8, db().addr))
    assert r["primes below 1500000"] == 114155, out
    assert r["pieces run on the pool"] >= N, out
    assert r["pieces stolen"] <= r["pieces run on the pool"], out
    assert r["threads"] >= 3, out


def test_09_blocking_sums_the_delays():
    r, got, out = check_report("01-blocking", _blocking.pop())
    assert got == list(range(1, N + 1)), "one after another, in order"
    assert r["recv() calls"] == N, out
    assert r["wall"] >= N * DELAY_MS, "%d fetches of %d ms took %d ms:\n%s" % (
        N, DELAY_MS, r["wall"], out)


def test_descriptor_limit_stops_a_model_cleanly():
    """RLIMIT_NOFILE 64 (soft and hard): each model that needs a socket per
    fetch says where it stopped, finishes the fetches it started, exits 1.
    02's threads close their sockets as they finish, so it gets a database
    slow enough (6 s) that none finishes before the limit is reached, even
    on a loaded machine where starting threads is slow (and under the 10 s
    bound of a blocking call)."""
    slow = h.Server("kettle-db", "--latency", "fixed 6s")
    for name in NAMES[1:]:
        addr = slow.addr if name == "02-threads" else db().addr
        rc, out, err = run(name, "-v", "-n", N, addr, limit_fds=64)
        m = re.search(r"stopped at fetch (\d+) of %d: .*Too many open files" % N, err)
        assert rc == 1 and m, "%s exited %s:\n%s\n%s" % (name, rc, out[-2000:], err)
        k = int(m.group(1))
        got = sorted(int(v) for v in GOT.findall(out))
        assert 10 < k < 64 and got == list(range(1, k)), \
            "%s stopped at %d but got %r" % (name, k, got)
        r = measure.parse_report(out)
        assert r["numbers"].startswith("%d of 1..%d arrived" % (k - 1, N)), (name, r)
    slow.stop()


def test_errors_are_reported():
    """Nothing listens on the port: every example says so and exits non-zero."""
    addr = "127.0.0.1:%d" % h.free_port()
    for name in NAMES:
        rc, out, err = run(name, addr)
        assert rc != 0, "%s succeeded with nothing listening:\n%s" % (name, out)
        assert re.search(r"refused|connect", err, re.I), \
            "%s gave no clear message:\n%s" % (name, err)
    rc, out, err = run("01-blocking", "no-port-here")
    assert rc != 0 and "bad address" in err, err
    for name, args in (("03-state-machines", ["-n", "0"]), ("04-futures", ["-c", "2"]),
                       ("06-kettle", ["-n", "x"]), ("05-generators", ["a:1", "b:2"])):
        rc, out, err = run(name, *args)
        assert rc == 2 and "usage:" in err, (name, args, rc, err)


def test_zz_db_clean():
    if _db:
        _db[0].stop()


if __name__ == "__main__":
    h.main(globals())
