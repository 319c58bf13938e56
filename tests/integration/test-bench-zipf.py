"""kettle-bench's __zipf_int__ keys follow Zipf's law: key i comes with
probability proportional to 1/(i+1)^S over [0, -r). kettle-bench runs
`INCR k:__zipf_int__` against a real redis-server, which counts every key
exactly; the counts then pass a chi-square test against the exact
probabilities. Every run has a fixed --seed and one thread, so the keys
drawn are the same on every run: the test is deterministic, never flaky.
The same test rejects uniform keys (it can fail), and --zipf's bad values
are refused."""
import math
import subprocess

import harness as h


def bench(port, *args):
    exe = h.program("kettle-bench")
    r = subprocess.run([exe, "-p", str(port), "--quiet", "--no-validate"] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=120)
    for mark in h.SANITIZER_MARKS:
        assert mark not in r.stderr, r.stderr[-4000:]
    return r


def counts(redis, prefix, n):
    """How often each key prefix0 .. prefix{n-1} was incremented."""
    with h.Client(redis.port) as c:
        vals = c.call("MGET", *["%s%d" % (prefix, i) for i in range(n)])
        assert c.call("DEL", *["%s%d" % (prefix, i) for i in range(n)]) >= 0
    return [int(v) if v is not None else 0 for v in vals]


def zipf_pmf(n, s):
    w = [1.0 / (i + 1) ** s for i in range(n)]
    t = sum(w)
    return [x / t for x in w]


def chi_square(observed, probs):
    """(statistic, degrees of freedom), bins with fewer than 5 expected
    merged into the tail bin (the rare keys are the last ones)."""
    total = sum(observed)
    obs, exp = [], []
    tail_o = tail_e = 0.0
    for o, p in zip(observed, probs):
        e = total * p
        if e >= 5 and tail_e == 0:
            obs.append(o)
            exp.append(e)
        else:
            tail_o += o
            tail_e += e
    if tail_e > 0:
        obs.append(tail_o)
        exp.append(tail_e)
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp))
    return stat, len(obs) - 1


def critical(df, z=3.09):
    """The chi-square quantile at 0.999 (Wilson-Hilferty's approximation)."""
    a = 2.0 / (9 * df)
    return df * (1 - a + z * math.sqrt(a)) ** 3


def run_zipf(redis, keys, s, requests, seed, placeholder="__zipf_int__"):
    prefix = "z%s:%d:" % (str(s).replace(".", "_"), keys)
    r = bench(redis.port, "-c", 8, "-n", requests, "-r", keys, "--zipf", s, "--seed", seed,
              "--", "INCR", prefix + placeholder)
    assert r.returncode == 0, r.stdout + r.stderr
    got = counts(redis, prefix, keys)
    assert sum(got) == requests, (sum(got), requests)
    return got


def test_zipf_keys_follow_zipfs_law():
    redis = h.start_redis()
    for keys, s, requests, seed in ((100, 0.99, 30000, 42), (50, 1.0, 20000, 7),
                                    (1000, 1.5, 30000, 3), (20, 0.5, 20000, 9)):
        got = run_zipf(redis, keys, s, requests, seed)
        probs = zipf_pmf(keys, s)
        stat, df = chi_square(got, probs)
        print("s=%s n=%d chi2 %.1f df %d limit %.1f" % (s, keys, stat, df, critical(df)))
        assert stat < critical(df), "s=%s n=%d: chi-square %.1f over %d df (limit %.1f): %s" % (
            s, keys, stat, df, critical(df), got[:10])
        # the hottest key is key 0, at its share (4 standard deviations)
        sd = math.sqrt(requests * probs[0] * (1 - probs[0]))
        assert abs(got[0] - requests * probs[0]) < 4 * sd, (s, got[0], requests * probs[0])
        assert got[0] == max(got)
    redis.stop()


def test_the_check_rejects_uniform_keys():
    redis = h.start_redis()
    got = run_zipf(redis, 100, 0.99, 30000, 42, placeholder="__rand_int__")
    stat, df = chi_square(got, zipf_pmf(100, 0.99))
    assert stat > 10 * critical(df), (stat, df)
    redis.stop()


def test_one_key_and_a_huge_keyspace():
    redis = h.start_redis()
    assert run_zipf(redis, 1, 0.99, 500, 1) == [500]
    # a billion keys cost no set-up: the low keys still take their share
    r = bench(redis.port, "-c", 4, "-n", 20000, "-r", 10 ** 9, "--seed", 5,
              "--", "INCR", "big:__zipf_int__")
    assert r.returncode == 0, r.stderr
    got = counts(redis, "big:", 3)
    # the normalising sum: exact to 10^6, the rest as its integral
    m, s = 10 ** 6, 0.99
    total = sum(1.0 / k ** s for k in range(1, m + 1))
    total += ((10 ** 9 + 0.5) ** (1 - s) - (m + 0.5) ** (1 - s)) / (1 - s)
    for i in range(3):
        p = 1.0 / (i + 1) ** s / total
        sd = math.sqrt(20000 * p * (1 - p))
        assert abs(got[i] - 20000 * p) < 4 * sd, (i, got, 20000 * p)
    redis.stop()


def test_bad_exponents_refused():
    for bad in ("0", "-1", "abc", "101", "nan"):
        r = bench(1, "--zipf", bad, "-n", 1)
        assert r.returncode == 2 and "--zipf" in r.stderr, (bad, r.stderr)


h.main(globals())
