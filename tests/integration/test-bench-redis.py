"""kettle-bench against a real redis-server: GET n validated where key n
holds n, a missing key caught as a wrong reply, other commands with
--no-validate, a unix socket, several threads and pipelining. Skipped
without redis-server."""
import os
import tempfile

import harness as h


def bench(*args, timeout=60):
    return h.run_bench(args, timeout=timeout)


def redis_with_numbers(n, *extra):
    r = h.start_redis(*extra)
    with h.Client(r.port) as c:
        for lo in range(0, n, 500):
            assert all(x == "OK" for x in c.pipeline(
                [("SET", i, i) for i in range(lo, min(n, lo + 500))]))
    return r


def test_get_validated_against_redis():
    with redis_with_numbers(1000) as r:
        rc, j, err = bench("-p", r.port, "-c", 10, "-n", 5000, "-P", 4, "-t", 2, "-r", 1000)
        assert rc == 0, err
        assert j["requests"] == 5000 and j["errors_total"] == 0, j
        rc, j, err = bench("-h", "localhost", "-p", r.port, "-c", 4, "-n", 1000,
                           "--", "MGET", "__rand_int__", "__rand_int__", "__seq_int__")
        assert rc == 0 and j["errors_total"] == 0, err
        # keys past 999 are missing: nil is not the number asked for
        rc, j, err = bench("-p", r.port, "-c", 4, "-n", 1000, "-r", 2000, "--seed", 9)
        assert rc == 1
        assert 300 < j["errors"]["mismatch"] < 700, j["errors"]
        assert "wrong reply: GET" in err and "(nil)" in err, err


def test_other_commands_without_validation():
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "redis.sock")
        with h.start_redis("--unixsocket", sock) as r:
            rc, j, err = bench("-s", sock, "-c", 5, "-n", 2000, "--no-validate",
                               "--mix", "SET k:__rand_int__ v:2,INCR counter:1,PING:1")
            assert rc == 0, err
            assert j["errors_total"] == 0 and j["requests"] == 2000
            assert j["parameters"]["target"] == sock
            with h.Client(r.port) as c:
                n = int(c.call("GET", "counter"))
                assert 300 < n < 700, n
                c.call("SET", "str", "a string")
            rc, j, err = bench("-p", r.port, "-c", 2, "-n", 200, "--", "LPUSH", "str", "x")
            assert rc == 1 and j["errors"]["error_replies"], j["errors"]
            assert list(j["errors"]["error_replies"]) == [
                "WRONGTYPE Operation against a key holding the wrong kind of value"]


h.main(globals())
