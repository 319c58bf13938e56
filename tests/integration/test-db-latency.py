#!/usr/bin/env python3
"""kettle-db's delays: each latency model's statistics on what kettle-db
schedules (`--print-delays`, exact for a seed) against its parameters;
the running server drawing that same sequence (INFO's scheduled figures)
and no client seeing a reply before its delay; proportional delay
(wait_n); MGET keys delayed concurrently; head-of-line order on one
connection; the worker slots' FIFO; seeded reproducibility; 10,000
requests in flight.

No check bounds a delay from above on the wall clock: a loaded machine
makes replies late, never early. Upper bounds are checked on the
scheduled delays, and concurrency on INFO snapshots (an INFO pipelined
behind requests is run as soon as it is read, while they are in service)."""
import math
import select
import statistics
import subprocess
import time

import harness as h

MS = 1e-3
CLOCK = 0.5 * MS  # a client's clock against the server's: same clock, coarse reads


def drawn(spec, n, seed=1234, max_delay="400ms"):
    """The first n delays (seconds) kettle-db draws for spec with seed."""
    p = subprocess.run([h.program("kettle-db"), "--latency", spec, "--seed", str(seed),
                        "--max-delay", max_delay, "--print-delays", str(n)],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p
    lines = p.stdout.decode().splitlines()
    assert lines[0].startswith("# latency ") and "seed %d" % seed in lines[0], lines[0]
    ds = [float(x) * 1e-6 for x in lines[1:]]
    assert len(ds) == n, len(ds)
    return ds


def observe(port, n, key="1", conns=150):
    """n delays, each measured on a connection with one request in flight
    (from before the send: never shorter than what the server scheduled)."""
    clients = [h.Client(port) for _ in range(conns)]
    out = []
    try:
        while len(out) < n:
            batch = clients[:min(conns, n - len(out))]
            sent = {}
            for c in batch:
                sent[c.sock] = (c, time.monotonic())
                c.send(h.encode("GET", key))
            while sent:
                ready, _, _ = select.select(list(sent), [], [], 60)
                assert ready, "no reply within 60 s"
                now = time.monotonic()
                for s in ready:
                    c, t0 = sent.pop(s)
                    assert c.read_reply() == str(key).encode()
                    out.append(now - t0)
    finally:
        for c in clients:
            c.close()
    return out


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def rank(xs, p):
    """kt_hist's percentile rank: the value of rank ceil(p/100 * n)."""
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]


def near(got, want, tol, what):
    assert abs(got - want) <= tol, "%s: got %.3f ms, want %.3f ms +-%.3f" % (
        what, got / MS, want / MS, tol / MS)


def us(inf, key):
    return float(inf[key]) * 1e-6


def check_scheduled(inf, ds):
    """INFO's scheduled delays are those of ds (max exact; percentiles
    within kt_hist's 0.4%)."""
    assert int(inf["delay_samples"]) == len(ds), (inf["delay_samples"], len(ds))
    near(us(inf, "delay_scheduled_max_us"), max(ds), 0.1e-6, "scheduled max")
    for p in ("50", "99", "999"):
        want = rank(ds, float(p) / (10 if p == "999" else 1))
        near(us(inf, "delay_scheduled_p%s_us" % p), want, 0.005 * want + 1e-6, "scheduled p" + p)
    # each actual delay is at least its scheduled one
    for p in ("p50", "p99", "max"):
        a, s = us(inf, "delay_actual_%s_us" % p), us(inf, "delay_scheduled_%s_us" % p)
        assert a >= s * 0.99 - CLOCK, (p, a, s)


def run_model(spec, n=600, max_delay="400ms"):
    """The scheduled delays ds of n requests and what a client saw, xs."""
    ds = drawn(spec, n, max_delay=max_delay)
    with h.Server("kettle-db", "--latency", spec, "--seed", "1234", "--max-delay", max_delay) as db:
        xs = observe(db.port, n)
        inf = h.info(h.Client(db.port))
        check_scheduled(inf, ds)
        # whatever the order the server took the requests in, no reply came
        # before its delay: the k-th shortest seen is at least the k-th shortest drawn
        for k, (x, d) in enumerate(zip(sorted(xs), sorted(ds))):
            assert x >= d - CLOCK, "reply %d after %.3f ms, scheduled %.3f ms" % (k, x / MS, d / MS)
        return ds, xs


def test_fixed():
    ds, xs = run_model("fixed 20ms", n=300)
    assert {round(d / MS, 6) for d in ds} == {20}, set(ds)
    assert min(xs) >= 20 * MS - CLOCK, min(xs)


def test_uniform():
    ds, xs = run_model("uniform 10ms 50ms")
    se = 40 * MS / math.sqrt(12) / math.sqrt(len(ds))
    assert 10 * MS <= min(ds) and max(ds) <= 50 * MS, (min(ds), max(ds))
    assert min(xs) >= 10 * MS - CLOCK
    near(statistics.mean(ds), 30 * MS, 4 * se, "mean")
    near(quantile(ds, 0.25), 20 * MS, 3 * MS, "p25")
    near(quantile(ds, 0.75), 40 * MS, 3 * MS, "p75")
    # the whole range is used
    assert min(ds) < 11 * MS and max(ds) > 49 * MS, (min(ds), max(ds))


def test_normal():
    ds, _ = run_model("normal 50ms 10ms")
    se = 10 * MS / math.sqrt(len(ds))
    near(statistics.mean(ds), 50 * MS, 4 * se, "mean")
    near(statistics.pstdev(ds), 10 * MS, 2 * MS, "sd")
    near(quantile(ds, 0.9), 62.8 * MS, 3 * MS, "p90")


def test_exponential():
    ds, _ = run_model("exponential 20ms")
    se = 20 * MS / math.sqrt(len(ds))
    near(statistics.mean(ds), 20 * MS, 4 * se, "mean")
    near(statistics.median(ds), 20 * MS * math.log(2), 3 * MS, "median")
    near(quantile(ds, 0.9), 20 * MS * math.log(10), 8 * MS, "p90")


def test_lognormal():
    ds, _ = run_model("lognormal 20ms 0.5")
    near(statistics.median(ds), 20 * MS, 2.5 * MS, "median")
    logs = [math.log(x) for x in ds]
    sd = statistics.pstdev(logs)
    assert 0.40 <= sd <= 0.58, "log sd %.3f, want 0.5" % sd
    # quantile 0.9: median x exp(1.2816 x sigma)
    near(quantile(ds, 0.9), 20 * MS * math.exp(1.2816 * 0.5), 6 * MS, "p90")


def test_pareto():
    ds, xs = run_model("pareto 10ms 1.5", max_delay="300ms")
    assert min(ds) >= 10 * MS and min(xs) >= 10 * MS - CLOCK
    # quantile q: scale x (1 - q)^(-1/shape)
    near(statistics.median(ds), 10 * MS * 2 ** (1 / 1.5), 2 * MS, "median")
    near(quantile(ds, 0.9), 10 * MS * 10 ** (1 / 1.5), 12 * MS, "p90")
    # the tail is heavy but capped by max-delay
    assert max(ds) >= 100 * MS
    assert max(ds) <= 300 * MS
    assert max(xs) >= 100 * MS - CLOCK


def test_print_delays():
    """--print-delays: the k-th line for key k (proportional), capped by
    max-delay; a bad model is refused."""
    def ms(xs):
        return [round(x / MS, 6) for x in xs]
    assert ms(drawn("proportional 40ms", 4)) == [40, 80, 120, 160]
    assert ms(drawn("proportional 40ms", 12, max_delay="300ms")[6:]) == [280] + [300] * 5
    assert drawn("none", 3) == [0, 0, 0]
    p = subprocess.run([h.program("kettle-db"), "--latency", "sometimes", "--print-delays", "3"],
                       capture_output=True, timeout=30)
    assert p.returncode != 0 and p.stdout == b"" and b"expected none" in p.stderr, p


def parse_info(raw):
    assert isinstance(raw, bytes), raw
    return dict(line.split(":", 1) for line in raw.decode().splitlines()
                if line and not line.startswith("#") and ":" in line)


def pipelined_info(c, cmds, sections=("stats",)):
    """(replies of cmds, INFO of sections as one dict) for cmds and INFO
    sent in one write: INFO is run as soon as it is read, so it shows the
    server right after cmds started, wherever their delays stand."""
    c.send(b"".join(h.encode(*cmd) for cmd in cmds) + b"".join(h.encode("INFO", s) for s in sections))
    replies = [c.read_reply() for _ in cmds]
    inf = {}
    for _ in sections:
        inf.update(parse_info(c.read_reply()))
    return replies, inf


def arrival_order(clients, timeout=60):
    """Wait for one reply on each client (left unread); the indexes of the
    clients in the order their replies arrived, as groups of those whose
    replies were ready at the same poll, each with its arrival time."""
    pending = {c.sock: i for i, c in enumerate(clients)}
    groups = []
    while pending:
        ready, _, _ = select.select(list(pending), [], [], timeout)
        assert ready, "no reply within %s s" % timeout
        groups.append((time.monotonic(), sorted(pending.pop(s) for s in ready)))
    return groups


def test_proportional_and_mget():
    """The explanation's get_numbers: wait_n(n) = n x unit; fetched
    concurrently (MGET), the whole takes the longest, not the sum."""
    with h.Server("kettle-db", "--latency", "proportional 40ms") as db:
        adm = h.Client(db.port)
        # four connections: each waits its own n x unit, all at once
        cs = [h.Client(db.port) for _ in range(4)]
        keys = [25, 26, 27, 28]  # 1 s and more: time enough to see all four in service
        t0 = time.monotonic()
        for c, k in zip(cs, keys):
            c.send(h.encode("GET", k))
        h.wait_for(lambda: h.info(adm, "stats")["requests_in_service"] == "4", 30, "4 in service")
        order = []
        for t, group in arrival_order(cs):
            for i in group:
                assert cs[i].read_reply() == str(keys[i]).encode()
                assert t - t0 >= 40 * MS * keys[i] - CLOCK, (keys[i], t - t0)
                order.append(i)
        assert order == sorted(order), order  # the shorter delays first
        assert h.info(adm, "delay")["delay_scheduled_max_us"] == "1120000.0"
        c = cs[0]
        # MGET: its keys' delays run side by side (all three in service at once)
        t0 = time.monotonic()
        r, inf = pipelined_info(c, [("MGET", "1", "2", "3")])
        assert r == [[b"1", b"2", b"3"]], r
        assert inf["requests_in_service"] == "3", inf["requests_in_service"]
        assert time.monotonic() - t0 >= 120 * MS - CLOCK
        # keys answered at once (bad key, zero) do not wait: nothing scheduled
        samples = h.info(adm, "delay")["delay_samples"]
        r, inf = pipelined_info(c, [("MGET", "0", "x")])
        assert r == [[b"0", h.RespError("ERR key is not a decimal integer")]], r
        assert inf["requests_in_service"] == "0", inf
        assert h.info(adm, "delay")["delay_samples"] == samples
        # pipelined GETs due in order each leave at their own deadline; only
        # the oldest one's timer is armed (the others are chained behind it)
        t0 = time.monotonic()
        c.send(h.encode("GET", "1") + h.encode("GET", "2") + h.encode("GET", "3") +
               h.encode("INFO", "stats") + h.encode("INFO", "loop"))
        for i in (1, 2, 3):
            assert c.read_reply() == str(i).encode()
            assert time.monotonic() - t0 >= 40 * MS * i - CLOCK, i
        inf = parse_info(c.read_reply())
        assert inf["requests_in_service"] == "3", inf
        assert int(parse_info(c.read_reply())["timers_pending"]) <= 2
        # ... and the first one's reply is not held back for the next: it
        # is sent while the next (1 s later) is still in service
        st0 = h.info(adm, "stats")
        c.send(h.encode("GET", "1") + h.encode("GET", "25"))
        h.wait_for(lambda: (lambda st: int(st["replies_sent"]) >= int(st0["replies_sent"]) + 1)(
            h.info(adm, "stats")), 30, "GET 1 answered")
        st = h.info(adm, "stats")
        assert st["requests_in_service"] == "1" and \
            int(st["requests_served"]) == int(st0["requests_served"]) + 1, (st0, st)
        assert c.read_reply() == b"1" and c.read_reply() == b"25"
        # head-of-line: on one connection GET 1 waits behind GET 3
        t0 = time.monotonic()
        c.send(h.encode("GET", "3") + h.encode("GET", "1") + h.encode("PING"))
        assert c.read_reply() == b"3"
        assert c.read_reply() == b"1"
        assert c.read_reply() == "PONG"
        assert time.monotonic() - t0 >= 120 * MS - CLOCK


def owed(c):
    inf = h.info(c, "stats")
    return int(inf["requests_in_service"]) + int(inf["requests_queued"])


def test_workers_fifo():
    with h.Server("kettle-db", "--latency", "fixed 150ms", "--workers", "2") as db:
        adm = h.Client(db.port)
        cs = [h.Client(db.port) for _ in range(5)]
        t0 = time.monotonic()
        for i, c in enumerate(cs):
            c.send(h.encode("GET", i))
            # one at a time, so that the FIFO order is the send order
            h.wait_for(lambda: owed(adm) == i + 1, 5, "request %d to arrive" % i)
        inf = h.info(adm, "stats")
        assert inf["requests_in_service"] == "2" and inf["requests_queued"] == "3", inf
        # slots: 0,1 end at 150 ms; 2,3 at 300 ms; 4 at 450 ms - and in that order
        done = []
        for t, group in arrival_order(cs):
            for i in group:
                assert cs[i].read_reply() == str(i).encode()
                assert t - t0 >= 150 * MS * (i // 2 + 1) - CLOCK, (i, t - t0)
                done.append(i // 2)
        assert done == sorted(done), done
        # each waited its 150 ms in service (the queue does not count)
        inf = h.info(adm, "delay")
        assert inf["delay_samples"] == "5" and inf["delay_scheduled_max_us"] == "150000.0", inf
        # at run time: unlimited workers start everything queued at once
        for c in cs:
            c.send(h.encode("GET", 1))
        h.wait_for(lambda: h.info(adm, "stats")["requests_queued"] == "3", 5, "3 queued")
        r, inf = pipelined_info(adm, [("CONFIG", "SET", "workers", "0")])
        assert r == ["OK"]
        assert inf["requests_queued"] == "0" and inf["requests_in_service"] == "5", inf
        for c in cs:
            assert c.read_reply() == b"1"


def test_seed_reproducible():
    """A seed fixes the sequence of delays: the same seed draws the same
    one (which is what --print-delays shows), another seed another."""
    def run(seed):
        with h.Server("kettle-db", "--latency", "exponential 1ms", "--seed", str(seed)) as db:
            c = h.Client(db.port)
            for i in range(150):
                assert c.call("GET", i) == str(i).encode()
            inf = h.info(c, "delay")
            check_scheduled(inf, drawn("exponential 1ms", 150, seed=seed, max_delay="60s"))
            return tuple(inf[k] for k in ("delay_scheduled_p50_us", "delay_scheduled_p99_us",
                                          "delay_scheduled_max_us"))
    a, b, c = run(7), run(7), run(8)
    assert a == b, (a, b)
    assert a != c, (a, c)
    assert drawn("pareto 10ms 1.5", 50, seed=7) == drawn("pareto 10ms 1.5", 50, seed=7)
    assert drawn("pareto 10ms 1.5", 50, seed=7) != drawn("pareto 10ms 1.5", 50, seed=8)


def test_ten_thousand_in_flight():
    with h.Server("kettle-db", "--latency", "fixed 300ms") as db:
        cs = [h.Client(db.port) for _ in range(20)]
        adm = h.Client(db.port)
        for j, c in enumerate(cs):
            c.send(b"".join(h.encode("GET", j * 1000 + i) for i in range(500)))
        h.wait_for(lambda: int(h.info(adm, "stats")["requests_served"]) +
                   int(h.info(adm, "stats")["requests_in_service"]) >= 10000, 20, "10,000 requests")
        # one armed timer per connection: the rest are chained behind it
        assert int(h.info(adm, "loop")["timers_pending"]) <= 25
        for j, c in enumerate(cs):
            for i in range(500):
                assert c.read_reply() == str(j * 1000 + i).encode()
        inf = h.info(adm)
        assert int(inf["requests_served"]) == 10000
        assert float(inf["delay_scheduled_p50_us"]) == 300000.0 or \
            abs(float(inf["delay_scheduled_p50_us"]) - 300000) < 300000 * 0.005


if __name__ == "__main__":
    h.main(globals())
