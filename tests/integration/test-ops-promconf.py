"""The Prometheus files in conf/: `promtool check config` accepts the
example scrape configuration (and the rule file it names), `promtool check
rules` the alerting rules, and `promtool test rules` shows each alert
firing on the series it watches, with its annotations rendered, and
staying quiet where it should: a target down, one database server down
(and all of them), request timeouts over 1% of commands, loop lag in
kettled and in kettle-db."""
import json
import os
import shutil
import subprocess
import tempfile

import harness as h

CONF = os.path.join(h.SRCDIR, "conf")
CONFIG = "prometheus-kettle.yml"
RULES = "prometheus-kettle-rules.yml"


def promtool(*args, cwd=None):
    exe = h.need("promtool")
    r = subprocess.run([exe] + list(args), capture_output=True, text=True, cwd=cwd, timeout=120)
    assert r.returncode == 0, "promtool %s (exit %d):\n%s%s" % (" ".join(args), r.returncode,
                                                                r.stdout, r.stderr)
    return r.stdout + r.stderr


def test_check_config():
    out = promtool("check", "config", os.path.join(CONF, CONFIG))
    assert "1 rule files found" in out, out
    with open(os.path.join(CONF, CONFIG)) as f:
        text = f.read()
    for target in ("127.0.0.1:9379", "127.0.0.1:9380"):
        assert target in text, target


def test_check_rules():
    out = promtool("check", "rules", os.path.join(CONF, RULES))
    assert "SUCCESS: 5 rules found" in out, out


def alert(severity, labels, summary, description):
    return {"exp_labels": dict(labels, severity=severity),
            "exp_annotations": {"summary": summary, "description": description}}


def at(eval_time, alertname, *alerts):
    """What is firing of alertname at eval_time: alerts (none: nothing)."""
    return {"eval_time": eval_time, "alertname": alertname, "exp_alerts": list(alerts)}


def rule_test(input_series, *checks):
    """One of promtool's rule tests: the series, one sample a minute, and
    the checks of what fires when."""
    return {"interval": "1m", "input_series": input_series, "alert_rule_test": list(checks)}


def test_rules_fire():
    k1 = {"job": "kettled", "instance": "k1"}
    k2 = {"job": "kettled", "instance": "k2"}
    db = {"job": "kettle-db", "instance": "d1"}

    def series(name, labels, values):
        sel = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
        return {"series": "%s{%s}" % (name, sel), "values": values}

    down_desc = ("The process is down or its loop is stalled (systemd's watchdog restarts a "
                 "stalled kettled).")
    backend_desc = ("Fetches for its keys fail at once or go to the next server on the ring "
                    "(INFO backend shows the last error).")
    tests = [
        # k1's scrapes fail from minute 1; d1 stays up
        rule_test(
            [series("up", k1, "1 0 0 0 0"), series("up", db, "1 1 1 1 1")],
            at("1m", "KettleTargetDown"),
            at("3m", "KettleTargetDown",
               alert("critical", k1, "kettled on k1 does not answer scrapes", down_desc))),
        # k1: db1 goes down at minute 1, db2 at minute 3; k2 keeps both
        rule_test(
            [series("kettled_backend_up", dict(k1, backend="db1:7380"), "1 0 0 0 0 0"),
             series("kettled_backend_up", dict(k1, backend="db2:7380"), "1 1 1 0 0 0"),
             series("kettled_backend_up", dict(k2, backend="db1:7380"), "1 1 1 1 1 1")],
            at("2m", "KettleBackendDown",
               alert("warning", dict(k1, backend="db1:7380"),
                     "kettled on k1: database db1:7380 is down", backend_desc)),
            at("2m", "KettleAllBackendsDown"),
            at("5m", "KettleAllBackendsDown",
               alert("critical", k1, "kettled on k1 has no database server up",
                     "Every fetch fails."))),
        # k1: 2 timeouts per 100 commands; k2: none
        rule_test(
            [series("kettled_commands_total", dict(k1, cmd="mget"), "0+100x20"),
             series("kettled_request_timeouts_total", k1, "0+2x20"),
             series("kettled_commands_total", dict(k2, cmd="mget"), "0+100x20"),
             series("kettled_request_timeouts_total", k2, "0+0x20")],
            at("3m", "KettleRequestTimeoutsRising"),
            at("10m", "KettleRequestTimeoutsRising",
               alert("warning", k1, "kettled on k1: 2% of requests time out",
                     "More than 1% of requests reach request-timeout: the database is "
                     "slow or overloaded."))),
        # kettled's loop runs 500 ms late; kettle-db's 10 ms (fine)
        rule_test(
            [series("kettled_loop_lag_seconds", k1, "0.5x5"),
             series("kettle_db_loop_lag_seconds", db, "0.01x5")],
            at("1m", "KettleLoopLag"),
            at("3m", "KettleLoopLag",
               alert("warning", k1, "kettled on k1: event loop 500ms late",
                     "Something blocks the loop, or the process lacks CPU: every client "
                     "waits for it."))),
    ]
    with tempfile.TemporaryDirectory(prefix="kettle-rules-") as tmp:
        shutil.copy(os.path.join(CONF, RULES), tmp)
        with open(os.path.join(tmp, "test.yml"), "w") as f:
            json.dump({"rule_files": [RULES], "evaluation_interval": "1m", "tests": tests}, f,
                      indent=1)  # JSON is YAML
        out = promtool("test", "rules", "test.yml", cwd=tmp)
        assert "SUCCESS" in out, out


h.main(globals())
