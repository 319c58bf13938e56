"""metrics-listen in kettled and kettle-db, as Prometheus sees it.

Under a known load (GETs, MGETs, bad commands, injected error replies, a
request timeout) both daemons' pages pass `promtool check metrics`, and
their series say what happened: kettled_commands_total{cmd="get"} is the
number of GETs sent, the request latency histogram counts every request,
kettle-db served exactly the keys kettled sent, every error reply and
fault is counted on both sides. Other paths and methods get 404 and 405.
CONFIG SET metrics-listen moves the endpoint, and a new address that
cannot be bound is refused with the old endpoint kept. The alerting rules
name only series the daemons export. Then a real `prometheus` server,
started on conf/prometheus-kettle.yml (its targets and interval changed,
a temporary storage directory), scrapes both: its HTTP API reports both
targets up, the series with the values the daemons hold, and the rules
loaded. Skipped (77) without promtool or prometheus."""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import urllib.parse
import urllib.request

import harness as h

CONF = os.path.join(h.SRCDIR, "conf")


def metrics_port(proc):
    return int(proc.wait_log(r"metrics at http://127\.0\.0\.1:(\d+)/metrics").group(1))


def scrape(port):
    r, body = h.http_get(port)
    text = body.decode()
    assert r.status == 200, (r.status, text[:300])
    return text






def check_histogram(s, name, labels):
    """Buckets cumulative, +Inf equal to _count; returns _count."""
    inner = labels + "," if labels else ""
    les = [k for k in s if k.startswith(name + "_bucket{" + inner + "le=")]
    assert les, "no buckets of %s{%s}" % (name, labels)
    vals = [s[k] for k in les]  # in page order: increasing le
    assert vals == sorted(vals), (name, labels, vals)
    count = s["%s_count%s" % (name, "{%s}" % labels if labels else "")]
    assert s['%s_bucket{%sle="+Inf"}' % (name, inner)] == count
    return count


def start_pair(*kd_args):
    db = h.Server("kettle-db", "--metrics-listen", "127.0.0.1:0", "--latency", "fixed 1ms")
    kd = h.Server("kettled", "--backend", db.addr, "--metrics-listen", "127.0.0.1:0", *kd_args)
    return db, kd, metrics_port(db), metrics_port(kd)


def test_series_under_load():
    db, kd, dbm, kdm = start_pair()
    c = h.Client(kd.port)
    adm = h.Client(db.port)
    # 300 GETs pipelined, 20 MGETs of 3 keys, two bad commands
    gets = [("GET", str(i % 97)) for i in range(300)]
    replies = c.pipeline(gets + [("MGET", "1", "2", str(1000 + i)) for i in range(20)])
    assert replies[:300] == [str(i % 97).encode() for i in range(300)]
    assert isinstance(c.call("NOSUCH"), h.RespError)
    assert isinstance(c.call("GET"), h.RespError)
    # 5 error replies injected by kettle-db, one key after another
    assert adm.call("FAULT", "SET", "error", "1") == "OK"
    for i in range(5):
        assert isinstance(c.call("GET", str(5000 + i)), h.RespError)
    assert adm.call("FAULT", "CLEAR") == "OK"

    text = scrape(kdm)
    h.promtool_check(text)
    s = h.prom_samples(text)
    assert s['kettled_commands_total{cmd="get"}'] == 300 + 5  # not the one with no key
    assert s['kettled_commands_total{cmd="mget"}'] == 20
    assert s['kettled_errors_total{kind="unknown_command"}'] == 1
    assert s['kettled_errors_total{kind="arity"}'] == 1
    assert check_histogram(s, "kettled_request_duration_seconds", 'cmd="get"') == 305
    assert check_histogram(s, "kettled_request_duration_seconds", 'cmd="mget"') == 20
    assert s['kettled_request_duration_seconds_sum{cmd="get"}'] > 0
    assert s["kettled_fetches_total"] == 300 + 60 + 5
    assert s["kettled_fetch_failures_total"] == 0
    assert s["kettled_backend_error_values_total"] == 5
    assert s["kettled_connected_clients"] == 1
    assert s["kettled_blocked_clients"] == 0
    assert s["kettled_fetches_outstanding"] == 0
    assert s["kettled_backends"] == 1
    b = 'backend="%s"' % db.addr
    assert s["kettled_backend_up{%s}" % b] == 1
    assert s['kettled_backend_state{%s,state="up"}' % b] == 1
    assert s['kettled_backend_state{%s,state="down"}' % b] == 0
    assert s["kettled_backend_error_replies_total{%s}" % b] == 5
    commands = s["kettled_backend_commands_total{%s}" % b]
    keys = s["kettled_backend_keys_total{%s}" % b]
    assert check_histogram(s, "kettled_backend_fetch_duration_seconds", b) == \
        s["kettled_backend_replies_total{%s}" % b] == commands
    # singleflight may join repeated keys, batching packs them: never more
    assert 0 < commands <= keys <= 365
    assert s["kettled_singleflight_joins_total"] == 365 - keys
    assert s["kettled_backend_batches_total"] == commands
    assert s["kettled_loop_lag_seconds"] >= 0 and s["kettled_loop_lag_max_seconds"] >= 0
    assert s["process_resident_memory_bytes"] > 0
    assert s['kettled_build_info{version="0.1.0",io_backend="%s"}' % h.info(c, "server")["io_backend"]] == 1
    info = h.info(c, "loop")
    assert int(info["loop_lag_us"]) >= 0 and int(info["loop_lag_max_us"]) >= 0

    # kettle-db served exactly what kettled sent
    dtext = scrape(dbm)
    h.promtool_check(dtext)
    d = h.prom_samples(dtext)
    assert d["kettle_db_requests_served_total"] == keys
    assert d['kettle_db_commands_total{cmd="get"}'] + d['kettle_db_commands_total{cmd="mget"}'] \
        == commands
    assert d['kettle_db_faults_total{fault="error"}'] == 5
    assert d['kettle_db_fault_probability{fault="error"}'] == 0
    assert d["kettle_db_requests_in_service"] == 0 and d["kettle_db_requests_queued"] == 0
    assert check_histogram(d, "kettle_db_delay_scheduled_seconds", "") == keys
    assert d['kettle_db_delay_scheduled_seconds_bucket{le="0.0005"}'] == 0
    assert d['kettle_db_delay_scheduled_seconds_bucket{le="0.0025"}'] == keys
    assert check_histogram(d, "kettle_db_delay_lateness_seconds", "") == keys
    assert d["kettle_db_connected_clients"] == 1 + s["kettled_backend_connections{%s}" % b]
    assert int(h.info(adm, "loop")["loop_lag_us"]) >= 0
    assert "kettle_db_loop_lag_seconds" in d

    # a request timeout: kettle-db slower than request-timeout
    assert c.call("CONFIG", "SET", "request-timeout", "100ms") == "OK"
    assert adm.call("CONFIG", "SET", "latency", "fixed 3s") == "OK"
    r = c.call("GET", "7777")
    assert isinstance(r, h.RespError) and "timed out" in str(r), r
    s = h.prom_samples(scrape(kdm))
    assert s["kettled_request_timeouts_total"] == 1
    assert s["kettled_fetch_cancellations_total"] == 1
    assert s['kettled_errors_total{kind="other"}'] == 0

    # the endpoint's statuses, wired in the daemons
    for port in (kdm, dbm):
        assert h.http_get(port, path="/")[0].status == 404
        assert h.http_get(port, path="/metricsx")[0].status == 404
        assert h.http_get(port, "POST")[0].status == 405
        assert h.http_get(port, "HEAD")[0].status == 200
    assert h.prom_samples(scrape(kdm))["kettled_metrics_errors_total"] == 3
    c.close()
    adm.close()
    kd.stop()
    db.stop()


def test_metrics_listen_moves():
    db, kd, dbm, kdm = start_pair()
    c = h.Client(kd.port)
    assert c.call("CONFIG", "GET", "metrics-listen") == [b"metrics-listen", b"127.0.0.1:0"]
    # a port taken (kettle-db's endpoint): refused, the old endpoint stays
    r = c.call("CONFIG", "SET", "metrics-listen", "127.0.0.1:%d" % dbm)
    assert isinstance(r, h.RespError) and "in use" in str(r), r
    assert "kettled_commands_total" in scrape(kdm)
    assert c.call("CONFIG", "GET", "metrics-listen") == [b"metrics-listen", b"127.0.0.1:0"]
    assert isinstance(c.call("CONFIG", "SET", "metrics-listen", "unix:/tmp/x"), h.RespError)
    # a free port: the endpoint moves there
    new = h.free_port()
    assert c.call("CONFIG", "SET", "metrics-listen", "127.0.0.1:%d" % new) == "OK"
    assert "kettled_commands_total" in scrape(new)
    try:
        h.http_get(kdm)
        assert False, "the old metrics port still answers"
    except ConnectionRefusedError:
        pass
    # a reload keeps it (the command line says :0, CONFIG SET changed it:
    # the reload puts the command line's value back and counts)
    kd.signal(signal.SIGHUP)
    kd.wait_log("configuration reloaded")
    port = int(re.findall(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", kd.log())[-1])
    s = h.prom_samples(scrape(port))
    assert s['kettled_reloads_total{result="ok"}'] == 1
    assert s['kettled_reloads_total{result="failed"}'] == 0
    assert int(h.info(c, "stats")["reloads"]) == 1
    # off
    assert c.call("CONFIG", "SET", "metrics-listen", "") == "OK"
    try:
        h.http_get(port)
        assert False, "the metrics port still answers once off"
    except ConnectionRefusedError:
        pass
    # kettle-db moves too
    adm = h.Client(db.port)
    new = h.free_port()
    assert adm.call("CONFIG", "SET", "metrics-listen", "127.0.0.1:%d" % new) == "OK"
    assert "kettle_db_requests_served_total" in scrape(new)
    adm.close()
    c.close()
    kd.stop()
    db.stop()


def test_loop_lag_seen():
    """A process stopped for a second ran its 100 ms tick at least 0.8 s late:
    INFO loop_lag_max_us and the gauges of both daemons show it."""
    import time
    db, kd, dbm, kdm = start_pair()
    with h.Client(kd.port) as c, h.Client(db.port) as adm:
        for proc, cl, port, pre in ((kd, c, kdm, "kettled"), (db, adm, dbm, "kettle_db")):
            assert int(h.info(cl, "loop")["loop_lag_max_us"]) < 800000
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(1.0)
            os.kill(proc.pid, signal.SIGCONT)
            # the tick after the stop is late by the stop, less at most one period
            h.wait_for(lambda: int(h.info(cl, "loop")["loop_lag_max_us"]) >= 800000, 30,
                       "%s's loop lag to show the stop" % pre)
            s = h.prom_samples(scrape(port))
            assert s[pre + "_loop_lag_max_seconds"] >= 0.8
            assert s[pre + "_loop_lag_seconds"] > 0
    kd.stop()
    db.stop()


def rule_series():
    with open(os.path.join(CONF, "prometheus-kettle-rules.yml")) as f:
        text = f.read()
    # the expressions only (not the comments above them)
    exprs = "".join(re.findall(r"(?ms)^\s*expr:(.*?)(?=^\s*(?:for|labels):)", text))
    return set(re.findall(r"\b(kettled_[a-z_]+|kettle_db_[a-z_]+)", exprs))


def test_rules_name_exported_series():
    names = rule_series()
    assert {"kettled_backend_up", "kettled_request_timeouts_total", "kettled_commands_total",
            "kettled_loop_lag_seconds", "kettle_db_loop_lag_seconds"} <= names, names
    db, kd, dbm, kdm = start_pair()
    exported = set(h.PROM_SAMPLE.match(line).group(1) for text in (scrape(kdm), scrape(dbm))
                   for line in text.splitlines() if line and not line.startswith("#"))
    assert names <= exported, names - exported
    kd.stop()
    db.stop()


def api(port, path, **params):
    url = "http://127.0.0.1:%d/api/v1/%s" % (port, path)
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as r:
        doc = json.load(r)
    assert doc["status"] == "success", doc
    return doc["data"]


def test_prometheus_scrapes_both():
    prom = h.need("prometheus")
    db, kd, dbm, kdm = start_pair()
    with h.Client(kd.port) as c:
        c.pipeline([("GET", str(i)) for i in range(123)])
    with open(os.path.join(CONF, "prometheus-kettle.yml")) as f:
        conf = f.read()
    # the shipped configuration, its targets on this test's ports, scraped every second
    for old, new in (("127.0.0.1:9379", "127.0.0.1:%d" % kdm),
                     ("127.0.0.1:9380", "127.0.0.1:%d" % dbm),
                     ("scrape_interval: 15s", "scrape_interval: 1s"),
                     ("evaluation_interval: 15s", "evaluation_interval: 1s")):
        assert old in conf, old
        conf = conf.replace(old, new)
    web = h.free_port()
    with tempfile.TemporaryDirectory(prefix="kettle-prometheus-") as tmp:
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            f.write(conf)
        shutil.copy(os.path.join(CONF, "prometheus-kettle-rules.yml"), tmp)
        p = h.Proc([prom, "--config.file=" + os.path.join(tmp, "prometheus.yml"),
                    "--storage.tsdb.path=" + os.path.join(tmp, "data"),
                    "--web.listen-address=127.0.0.1:%d" % web, "--log.level=warn"])

        def targets_up():
            assert p.alive(), "prometheus exited:\n" + p.log()[-3000:]
            try:
                active = api(web, "targets")["activeTargets"]
            except OSError:
                return False
            health = {t["labels"]["job"]: t["health"] for t in active}
            for t in active:
                assert t["health"] != "down", t
            return health == {"kettled": "up", "kettle-db": "up"} and active
        active = h.wait_for(targets_up, 120, "prometheus to scrape both targets")
        assert {t["scrapeUrl"] for t in active} == {"http://127.0.0.1:%d/metrics" % kdm,
                                                    "http://127.0.0.1:%d/metrics" % dbm}

        def value(query):
            res = api(web, "query", query=query)["result"]
            return float(res[0]["value"][1]) if len(res) == 1 else None

        def have(query, want):
            def look():
                assert p.alive(), "prometheus exited:\n" + p.log()[-3000:]
                return value(query) == want
            h.wait_for(look, 60, "%s == %s in prometheus" % (query, want))
        have('kettled_commands_total{cmd="get",job="kettled"}', 123)
        have('kettled_request_duration_seconds_count{cmd="get"}', 123)
        have('kettled_backend_up{backend="%s"}' % db.addr, 1)
        have('up{job="kettle-db"}', 1)
        have("kettle_db_requests_served_total", value(
            'kettled_backend_keys_total{backend="%s"}' % db.addr))
        assert value("kettled_loop_lag_seconds") is not None
        assert value("kettle_db_loop_lag_seconds") is not None
        # the rules are loaded and evaluate
        groups = api(web, "rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 5 and {r["name"] for r in rules} >= {"KettleBackendDown", "KettleLoopLag"}

        def evaluated():
            rs = [r for g in api(web, "rules")["groups"] for r in g["rules"]]
            return all(r["health"] == "ok" for r in rs)
        h.wait_for(evaluated, 60, "the rules to be evaluated")
        firing = [a for a in api(web, "alerts")["alerts"] if a["state"] == "firing"]
        assert firing == [], firing
        p.stop(expect=0)
    kd.stop()
    db.stop()


h.main(globals())
