"""kettle-bench checks every reply: against a RESP server written here that
is wrong on purpose (GET n answered n+1, error replies, MGET arrays with
error elements, a wrong PONG, stalls, closed connections), each kind of
fault is counted exactly as often as the server committed it. A partial
MGET (error elements, every value right) is an error, never a mismatch,
also through kettled in front of a faulty kettle-db. Also the JSON
report's schema, the CSV report, --max-errors and the exit status."""
import collections
import csv
import io
import json
import os
import socket
import subprocess
import tempfile
import threading
import time

import harness as h


class FakeServer(h.Stops):
    """A threaded RESP server answering PING, GET n and MGET. decide(cmd,
    n) picks what to do with key n: "ok", "wrong" (n+1), "error1",
    "error2", "stall" (never answer), "close" (close the connection), "pang"
    (PING answered +PANG). Every fault it commits is counted in .counts."""

    def __init__(self, decide):
        self.decide = decide
        self.counts = collections.Counter()
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] += n

    def stop(self):
        self.closed = True
        self.sock.close()
        for c in list(self.conns):
            try:
                c.close()
            except OSError:
                pass

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _parse(buf):
        """One request (a RESP array of bulks) from buf: (args, rest) or None."""
        if not buf:
            return None
        if not buf.startswith(b"*"):
            raise ValueError("not an array")
        i = buf.find(b"\r\n")
        if i < 0:
            return None
        n, pos, args = int(buf[1:i]), i + 2, []
        for _ in range(n):
            j = buf.find(b"\r\n", pos)
            if j < 0:
                return None
            ln = int(buf[pos + 1:j])
            if len(buf) < j + 2 + ln + 2:
                return None
            args.append(buf[j + 2:j + 2 + ln])
            pos = j + 2 + ln + 2
        return args, buf[pos:]

    @staticmethod
    def _value(n, wrong):
        """The bulk answering key n (n+1 when wrong)."""
        v = str(n + 1 if wrong else n).encode()
        return b"$%d\r\n%s\r\n" % (len(v), v)

    def _serve(self, c):
        buf = b""
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
                out = []
                while True:
                    r = self._parse(buf)
                    if r is None:
                        break
                    args, buf = r
                    cmd = args[0].upper().decode()
                    if cmd == "PING":
                        if self.decide("PING", None) == "pang":
                            self.count("pang")
                            out.append(b"+PANG\r\n")
                        else:
                            out.append(b"+PONG\r\n")
                        continue
                    if cmd == "MGET":
                        parts, bad, failed = [], False, 0
                        for a in args[1:]:
                            what = self.decide("GET", int(a))
                            if what == "error1":
                                failed += 1
                                parts.append(b"-ERR boom\r\n")
                                continue
                            parts.append(self._value(int(a), what == "wrong"))
                            bad = bad or what == "wrong"
                        if bad:
                            self.count("wrong")
                        elif failed:
                            self.count("partial")
                        if failed:
                            self.count("element ERR boom", failed)
                        out.append(b"*%d\r\n" % len(parts) + b"".join(parts))
                        continue
                    n = int(args[1])
                    what = self.decide("GET", n)
                    if what == "stall":
                        self.count("stall")
                        c.sendall(b"".join(out))
                        out = []
                        # answer nothing more on this connection: wait for the reset
                        while c.recv(65536):
                            pass
                        return
                    if what == "close":
                        self.count("close")
                        c.sendall(b"".join(out))
                        return
                    if what == "error1":
                        self.count("ERR boom")
                        out.append(b"-ERR boom\r\n")
                    elif what == "error2":
                        self.count("WRONGTYPE nope")
                        out.append(b"-WRONGTYPE nope\r\n")
                    else:
                        if what == "wrong":
                            self.count("wrong")
                        out.append(self._value(n, what == "wrong"))
                if out:
                    c.sendall(b"".join(out))
        except (OSError, ValueError):
            return
        finally:
            c.close()


def bench(port, *args, json_out=True, timeout=60):
    """Run kettle-bench; returns (exit status, JSON report or None, stdout, stderr)."""
    exe = h.program("kettle-bench")
    path = None
    argv = [exe, "-p", str(port), "--quiet"]
    if json_out:
        fd, path = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        argv += ["--json", path]
    argv += [str(a) for a in args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    for mark in h.SANITIZER_MARKS:
        assert mark not in r.stderr, r.stderr[-4000:]
    report = None
    if path:
        try:
            with open(path) as f:
                text = f.read()
            report = json.loads(text) if text else None
        finally:
            os.unlink(path)
    return r.returncode, report, r.stdout, r.stderr


def check_schema(j):
    """The JSON report's documented shape."""
    for k in ("tool", "version", "parameters", "requests", "sent", "duration_s",
              "requests_per_sec", "latency_ms", "errors", "errors_total", "lost", "unsent",
              "histogram", "interrupted", "connections_opened", "warmup_requests"):
        assert k in j, "missing %s in %s" % (k, sorted(j))
    assert j["tool"] == "kettle-bench"
    p = j["parameters"]
    for k in ("target", "connections", "pipeline", "threads", "requests", "duration_s", "mode",
              "rate", "warmup_s", "ramp_s", "timeout_s", "keyspace", "seed", "validate",
              "max_errors", "io", "commands"):
        assert k in p, "missing parameters.%s" % k
    assert p["mode"] in ("closed", "open")
    assert all(set(c) == {"command", "weight"} for c in p["commands"])
    lat = j["latency_ms"]
    keys = ["min", "p50", "p90", "p99", "p99.9", "p99.99", "max"]
    for k in keys + ["mean"]:
        assert isinstance(lat[k], (int, float)) and lat[k] >= 0, (k, lat)
    vals = [lat[k] for k in keys]
    assert vals == sorted(vals), "percentiles not monotonic: %s" % lat
    e = j["errors"]
    assert set(e) == {"mismatch", "error_replies", "partial_replies", "error_elements",
                      "timeouts", "connection"}, e
    assert isinstance(e["error_replies"], dict) and isinstance(e["error_elements"], dict)
    # one error per request: a partial reply counts once, whatever its error elements
    total = (e["mismatch"] + sum(e["error_replies"].values()) + e["partial_replies"]
             + e["timeouts"] + e["connection"])
    assert total == j["errors_total"], (total, j["errors_total"])
    assert sum(e["error_elements"].values()) >= e["partial_replies"]
    hist = j["histogram"]
    assert hist["unit"] == "ns"
    buckets = hist["buckets"]
    assert all(b["count"] > 0 and b["lo"] <= b["hi"] for b in buckets)
    assert [b["lo"] for b in buckets] == sorted(b["lo"] for b in buckets)
    assert sum(b["count"] for b in buckets) == j["requests"], "histogram counts != requests"
    if buckets:
        # min and max lie in the first and last buckets
        assert buckets[0]["lo"] <= lat["min"] * 1e6 <= buckets[0]["hi"] + 1
        assert buckets[-1]["lo"] <= lat["max"] * 1e6 + 1


def by_key(mod, table):
    return lambda cmd, n: table.get(n % mod, "ok") if n is not None else "ok"


def test_correct_server_passes_and_json_schema():
    with FakeServer(lambda cmd, n: "ok") as srv:
        rc, j, out, err = bench(srv.port, "-c", 4, "-n", 500, "-P", 2, "-r", 100, "--seed", 7)
        assert rc == 0, err
        check_schema(j)
        assert j["requests"] == 500 and j["errors_total"] == 0, j
        p = j["parameters"]
        assert p["connections"] == 4 and p["pipeline"] == 2 and p["requests"] == 500
        assert p["keyspace"] == 100 and p["seed"] == 7 and p["validate"] is True
        assert p["commands"] == [{"command": "GET __rand_int__", "weight": 1}]
        assert j["requests_per_sec"] > 0
        assert "throughput:" in out and "p99.99" in out


def test_csv_report():
    with FakeServer(lambda cmd, n: "ok") as srv:
        rc, _, out, err = bench(srv.port, "-c", 2, "-n", 200, "--csv", json_out=False)
        assert rc == 0, err
        rows = list(csv.DictReader(io.StringIO(out)))
        assert len(rows) == 1, out
        row = rows[0]
        assert int(row["requests"]) == 200 and int(row["errors"]) == 0
        for k in ("p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "p99.99_ms", "max_ms", "requests_per_sec"):
            assert float(row[k]) >= 0, (k, row)


def test_wrong_values_and_error_replies_counted():
    with FakeServer(by_key(10, {3: "wrong", 7: "error1", 9: "error2"})) as srv:
        rc, j, out, err = bench(srv.port, "-c", 4, "-n", 600, "-r", 100, "--seed", 1)
        assert rc == 1, "exit status %d despite wrong replies" % rc
        check_schema(j)
        e = j["errors"]
        assert srv.counts["wrong"] > 0
        assert e["mismatch"] == srv.counts["wrong"], (e, srv.counts)
        want = {k: srv.counts[k] for k in ("ERR boom", "WRONGTYPE nope") if srv.counts[k]}
        assert e["error_replies"] == want, (e, srv.counts)
        assert e["timeouts"] == 0 and e["connection"] == 0
        assert j["requests"] == 600
        assert "wrong reply: GET" in err, err


def test_mget_array_checked():
    with FakeServer(by_key(10, {3: "wrong"})) as srv:
        rc, j, _, err = bench(srv.port, "-c", 3, "-n", 300, "-r", 100, "--seed", 2,
                              "--", "MGET", "__rand_int__", "__rand_int__", "__rand_int__")
        assert rc == 1
        assert srv.counts["wrong"] > 0
        assert j["errors"]["mismatch"] == srv.counts["wrong"], (j["errors"], srv.counts)


def test_mget_error_elements_are_errors_not_mismatches():
    # keys ending in 7 fail (an error element), keys ending in 3 are wrong
    with FakeServer(by_key(10, {3: "wrong", 7: "error1"})) as srv:
        rc, j, out, err = bench(srv.port, "-c", 3, "-n", 400, "-r", 100, "--seed", 5,
                                "--", "MGET", "__rand_int__", "__rand_int__", "__rand_int__")
        assert rc == 1
        check_schema(j)
        e = j["errors"]
        assert srv.counts["partial"] > 0 and srv.counts["wrong"] > 0, srv.counts
        # a reply with a wrong value is a mismatch even beside an error element
        assert e["mismatch"] == srv.counts["wrong"], (e, srv.counts)
        assert e["partial_replies"] == srv.counts["partial"], (e, srv.counts)
        elements = e["error_elements"]
        assert elements == {"ERR boom": srv.counts["element ERR boom"]}, (e, srv.counts)
        assert e["error_replies"] == {}
        assert "partial replies %d" % srv.counts["partial"] in out, out


def test_partial_mget_through_kettled_from_faulty_kettle_db():
    db = h.Server("kettle-db", "--latency", "fixed 1ms", "--seed", "11")
    # one fetch per database request (no batching, no joining), so that
    # each injected error is exactly one failed key
    kd = h.Server("kettled", "--backend", db.addr, "--backend-batch", "1",
                  "--singleflight", "no")
    with h.Client(db.port) as admin:
        assert admin.call("FAULT", "SET", "error", "0.05") == "OK"
        rc, j, out, err = bench(kd.port, "-c", 4, "-n", 1500, "--seed", 6,
                                "--", "MGET", "__rand_int__", "__rand_int__", "__rand_int__")
        faults = int(h.info(admin, "faults")["fault_error_count"])
    assert rc == 1, out + err
    check_schema(j)
    e = j["errors"]
    assert e["mismatch"] == 0, e
    assert e["partial_replies"] > 0 and j["errors_total"] > 0, e
    # each failed fetch is one error element naming the injected error
    assert sum(e["error_elements"].values()) == faults, (e, faults)
    assert all("injected fault" in t for t in e["error_elements"]), e
    kd.stop()
    db.stop()


def test_no_validate_still_counts_errors_and_pong():
    with FakeServer(by_key(10, {3: "wrong", 7: "error1"})) as srv:
        rc, j, _, _ = bench(srv.port, "-c", 2, "-n", 300, "-r", 100, "--no-validate",
                            "--max-errors", 1000000)
        assert rc == 0
        assert j["parameters"]["validate"] is False
        assert j["errors"]["mismatch"] == 0
        assert j["errors"]["error_replies"] == {"ERR boom": srv.counts["ERR boom"]}
    state = {"n": 0}

    def pang(cmd, n):
        state["n"] += 1
        return "pang" if cmd == "PING" and state["n"] % 5 == 0 else "ok"
    with FakeServer(pang) as srv:
        rc, j, _, _ = bench(srv.port, "-c", 1, "-n", 100, "--no-validate", "--", "PING")
        assert rc == 1
        assert srv.counts["pang"] == 20
        assert j["errors"]["mismatch"] == 20, j["errors"]


def test_max_errors_sets_exit_status():
    with FakeServer(by_key(10, {3: "error1"})) as srv:
        rc, j, _, _ = bench(srv.port, "-c", 2, "-n", 300, "-r", 100, "--seed", 3)
        k = j["errors_total"]
        assert rc == 1 and k > 0
        rc, j2, _, _ = bench(srv.port, "-c", 2, "-n", 300, "-r", 100, "--seed", 3,
                             "--max-errors", k + 1000)
        assert rc == 0 and j2["errors_total"] > 0


def test_timeouts_and_connection_failures_counted_apart():
    with FakeServer(by_key(50, {5: "stall", 25: "close"})) as srv:
        rc, j, _, err = bench(srv.port, "-c", 2, "-n", 300, "-r", 50, "--seed", 4,
                              "--timeout", "300ms")
        assert rc == 1
        e = j["errors"]
        assert srv.counts["stall"] > 0 and srv.counts["close"] > 0, srv.counts
        assert e["timeouts"] == srv.counts["stall"], (e, srv.counts)
        assert e["connection"] == srv.counts["close"], (e, srv.counts)
        assert e["mismatch"] == 0 and e["error_replies"] == {}
        assert j["lost"] == srv.counts["close"]
        # each failure reconnects, unless it was the run's last request
        failures = srv.counts["stall"] + srv.counts["close"]
        assert 2 + failures - 2 <= j["connections_opened"] <= 2 + failures, j


def test_refused_connection():
    port = h.free_port()
    rc, j, _, err = bench(port, "-c", 3, "-n", 10)
    assert rc == 1
    assert j["errors"]["connection"] == 3 and j["requests"] == 0, j
    assert "could not connect" in err, err


def test_progress_line_only_on_a_terminal():
    import pty
    srv = FakeServer(lambda cmd, n: "ok")
    try:
        argv = [h.program("kettle-bench"), "-p", str(srv.port), "-c", "2", "-d", "1.5",
                "--rate", "200"]
        # stderr a pipe: no progress line
        rc, _, out, err = bench(srv.port, "-c", 2, "-d", 1.5, "--rate", 200, json_out=False)
        assert rc == 0 and "requests/s  p50" not in err, err
        # stderr a terminal: one line a second, rewritten in place
        pid, fd = pty.fork()
        if pid == 0:
            try:
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        text = h.pump(fd, time.monotonic() + 60)
        assert text is not None, "kettle-bench still running after 60 s"
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        assert os.waitstatus_to_exitcode(status) == 0, text
        assert b"\r    1s" in text and b"requests/s  p50" in text, text
        assert b"throughput:" in text
    finally:
        srv.stop()


def test_usage_errors():
    exe = h.program("kettle-bench")
    for args in (["-n", "10", "-d", "1"], ["-c", "0"], ["--rate", "-5"], ["--mix", "GET x:0"],
                 ["--bogus"], ["--mix", 'GET "unbalanced']):
        r = subprocess.run([exe] + args, capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stderr.strip(), args
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "--rate" in r.stdout and "__seq_int__" in r.stdout


def test_mix_weights_and_seq_keys():
    seen = collections.Counter()
    keys = []
    lock = threading.Lock()

    def record(cmd, n):
        with lock:
            seen[cmd] += 1
            if cmd == "GET":
                keys.append(n)
        return "ok"
    with FakeServer(record) as srv:
        rc, j, _, err = bench(srv.port, "-c", 1, "-n", 1000, "-r", 1000000,
                              "--mix", "GET __seq_int__:3, PING:1")
        assert rc == 0, err
        assert [c["weight"] for c in j["parameters"]["commands"]] == [3, 1]
        # 3:1 within a generous margin (1000 draws)
        assert 650 <= seen["GET"] <= 850, seen
        assert keys == sorted(keys) and len(set(keys)) == len(keys), "__seq_int__ not a sequence"


h.main(globals())
