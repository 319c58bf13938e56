#!/usr/bin/env python3
"""kettle-db's delays as a client sees them: each latency model's sample
statistics against its parameters (seeded; bounds of several standard
errors plus the client's own overhead), proportional delay (wait_n), MGET
keys delayed independently, head-of-line order on one connection, the
worker slots' FIFO, seeded reproducibility, and 10,000 requests in flight."""
import math
import select
import statistics
import time

import harness as h

MS = 1e-3
OVERHEAD = 4 * MS  # what the client and a sanitized server may add to a delay


def observe(port, n, key="1", conns=150):
    """n delays, each measured on a connection with one request in flight."""
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
                ready, _, _ = select.select(list(sent), [], [], 15)
                assert ready, "no reply within 15 s"
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


def near(got, want, low, high, what):
    assert want - low <= got <= want + high, "%s: got %.2f ms, want %.2f ms (-%.2f/+%.2f)" % (
        what, got / MS, want / MS, low / MS, high / MS)


def run_model(spec, n=600, max_delay="400ms"):
    db = h.Server("kettle-db", "--latency", spec, "--seed", "1234", "--max-delay", max_delay)
    try:
        xs = observe(db.port, n)
        inf = h.info(h.Client(db.port))
        assert int(inf["delay_samples"]) == n, inf["delay_samples"]
        # the server's own accuracy figures stay sane
        assert float(inf["delay_lateness_p50_us"]) < 5000, inf["delay_lateness_p50_us"]
        return xs, inf
    finally:
        db.stop()


def test_fixed():
    xs, inf = run_model("fixed 20ms", n=300)
    assert min(xs) >= 20 * MS - 0.5 * MS, min(xs)
    near(statistics.median(xs), 20 * MS, 0, OVERHEAD, "median")
    assert abs(float(inf["delay_scheduled_max_us"]) - 20000) < 1


def test_uniform():
    xs, _ = run_model("uniform 10ms 50ms")
    se = 40 * MS / math.sqrt(12) / math.sqrt(len(xs))
    assert min(xs) >= 10 * MS - 0.5 * MS
    assert quantile(xs, 0.99) <= 50 * MS + OVERHEAD
    near(statistics.mean(xs), 30 * MS, 4 * se, 4 * se + OVERHEAD, "mean")
    near(quantile(xs, 0.25), 20 * MS, 3 * MS, 3 * MS + OVERHEAD, "p25")
    near(quantile(xs, 0.75), 40 * MS, 3 * MS, 3 * MS + OVERHEAD, "p75")


def test_normal():
    xs, _ = run_model("normal 50ms 10ms")
    se = 10 * MS / math.sqrt(len(xs))
    near(statistics.mean(xs), 50 * MS, 4 * se, 4 * se + OVERHEAD, "mean")
    near(statistics.pstdev(xs), 10 * MS, 2 * MS, 2 * MS + OVERHEAD, "sd")
    near(quantile(xs, 0.9), 62.8 * MS, 3 * MS, 3 * MS + OVERHEAD, "p90")


def test_exponential():
    xs, _ = run_model("exponential 20ms")
    se = 20 * MS / math.sqrt(len(xs))
    near(statistics.mean(xs), 20 * MS, 4 * se, 4 * se + OVERHEAD, "mean")
    near(statistics.median(xs), 20 * MS * math.log(2), 3 * MS, 3 * MS + OVERHEAD, "median")
    near(quantile(xs, 0.9), 20 * MS * math.log(10), 8 * MS, 8 * MS + OVERHEAD, "p90")


def test_lognormal():
    xs, _ = run_model("lognormal 20ms 0.5")
    near(statistics.median(xs), 20 * MS, 2.5 * MS, 2.5 * MS + OVERHEAD, "median")
    logs = [math.log(x) for x in xs]
    sd = statistics.pstdev(logs)
    assert 0.40 <= sd <= 0.58, "log sd %.3f, want 0.5" % sd
    # quantile 0.9: median x exp(1.2816 x sigma)
    near(quantile(xs, 0.9), 20 * MS * math.exp(1.2816 * 0.5), 6 * MS, 6 * MS + OVERHEAD, "p90")


def test_pareto():
    xs, inf = run_model("pareto 10ms 1.5", max_delay="300ms")
    assert min(xs) >= 10 * MS - 0.5 * MS
    # quantile q: scale x (1 - q)^(-1/shape)
    near(statistics.median(xs), 10 * MS * 2 ** (1 / 1.5), 2 * MS, 2 * MS + OVERHEAD, "median")
    near(quantile(xs, 0.9), 10 * MS * 10 ** (1 / 1.5), 12 * MS, 12 * MS + OVERHEAD, "p90")
    # the tail is heavy but capped by max-delay
    assert max(xs) >= 100 * MS
    assert float(inf["delay_scheduled_max_us"]) <= 300000


def test_proportional_and_mget():
    """The explanation's get_numbers: wait_n(n) = n x unit; fetched
    concurrently (MGET), the whole takes the longest, not the sum."""
    db = h.Server("kettle-db", "--latency", "proportional 40ms")
    try:
        cs = [h.Client(db.port) for _ in range(4)]
        t0 = time.monotonic()
        for i, c in enumerate(cs):
            c.send(h.encode("GET", i + 1))
        for i, c in enumerate(cs):
            assert c.read_reply() == str(i + 1).encode()
            near(time.monotonic() - t0, 40 * MS * (i + 1), 1 * MS, 15 * MS, "GET %d" % (i + 1))
        c = cs[0]
        t0 = time.monotonic()
        assert c.call("MGET", "1", "2", "3") == [b"1", b"2", b"3"]
        near(time.monotonic() - t0, 120 * MS, 1 * MS, 20 * MS, "MGET 1 2 3")
        # keys answered at once (bad key, zero) do not wait
        t0 = time.monotonic()
        assert c.call("MGET", "0", "x") == [b"0", h.RespError("ERR key is not a decimal integer")]
        assert time.monotonic() - t0 < 30 * MS
        # pipelined GETs due in order each leave at their own deadline; only
        # the oldest one's timer is armed (the others are chained behind it)
        t0 = time.monotonic()
        c.send(h.encode("GET", "1") + h.encode("GET", "2") + h.encode("GET", "3"))
        h.wait_for(lambda: h.info(cs[1], "stats")["requests_in_service"] == "3", 5, "3 in service")
        assert int(h.info(cs[1], "loop")["timers_pending"]) <= 2
        for i in (1, 2, 3):
            assert c.read_reply() == str(i).encode()
            near(time.monotonic() - t0, 40 * MS * i, 1 * MS, 15 * MS, "pipelined GET %d" % i)
        # head-of-line: on one connection GET 1 waits behind GET 3
        t0 = time.monotonic()
        c.send(h.encode("GET", "3") + h.encode("GET", "1") + h.encode("PING"))
        assert c.read_reply() == b"3"
        assert c.read_reply() == b"1"
        assert c.read_reply() == "PONG"
        assert time.monotonic() - t0 >= 120 * MS - 1 * MS
    finally:
        db.stop()


def owed(c):
    inf = h.info(c, "stats")
    return int(inf["requests_in_service"]) + int(inf["requests_queued"])


def test_workers_fifo():
    db = h.Server("kettle-db", "--latency", "fixed 150ms", "--workers", "2")
    try:
        adm = h.Client(db.port)
        cs = [h.Client(db.port) for _ in range(5)]
        t0 = time.monotonic()
        for i, c in enumerate(cs):
            c.send(h.encode("GET", i))
            # one at a time, so that the FIFO order is the send order
            h.wait_for(lambda: owed(adm) == i + 1, 5, "request %d to arrive" % i)
        inf = h.info(adm, "stats")
        assert inf["requests_in_service"] == "2" and inf["requests_queued"] == "3", inf
        done = []
        for i, c in enumerate(cs):
            assert c.read_reply() == str(i).encode()
            done.append(time.monotonic() - t0)
        # slots: 0,1 end at 150 ms; 2,3 at 300 ms; 4 at 450 ms
        for i, t in enumerate(done):
            near(t, 150 * MS * (i // 2 + 1), 5 * MS, 60 * MS, "request %d" % i)
        # at run time: unlimited workers start everything queued at once
        for c in cs:
            c.send(h.encode("GET", 1))
        h.wait_for(lambda: h.info(adm, "stats")["requests_queued"] == "3", 5, "3 queued")
        t0 = time.monotonic()
        assert adm.call("CONFIG", "SET", "workers", "0") == "OK"
        for c in cs:
            assert c.read_reply() == b"1"
        assert time.monotonic() - t0 < 250 * MS
    finally:
        db.stop()


def test_seed_reproducible():
    def run(seed):
        db = h.Server("kettle-db", "--latency", "exponential 1ms", "--seed", str(seed))
        try:
            c = h.Client(db.port)
            for i in range(150):
                assert c.call("GET", i) == str(i).encode()
            inf = h.info(c, "delay")
            return tuple(inf[k] for k in ("delay_scheduled_p50_us", "delay_scheduled_p99_us",
                                          "delay_scheduled_max_us"))
        finally:
            db.stop()
    a, b, c = run(7), run(7), run(8)
    assert a == b, (a, b)
    assert a != c, (a, c)


def test_ten_thousand_in_flight():
    db = h.Server("kettle-db", "--latency", "fixed 300ms")
    try:
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
    finally:
        db.stop()


if __name__ == "__main__":
    h.main(globals())
