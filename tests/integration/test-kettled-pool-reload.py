#!/usr/bin/env python3
"""Every option of kettled's backend pool changed under load, with CONFIG
SET and with a reloaded config file (SIGHUP): each reads back with CONFIG
GET, takes effect (INFO), and no request fails meanwhile."""
import os
import signal
import tempfile

import harness as h
from kdtest import Load, field, kettle_db, kettled, replicas_up

# option: (a value for CONFIG SET, CONFIG GET's answer then),
#         (its line in the reloaded file, CONFIG GET's answer then)
OPTIONS = {
    "backend-batch": (("4", "4"), ("16", "16")),
    "singleflight": (("no", "no"), ("yes", "yes")),
    "hedge-after": (("30ms", "30ms"), ("p90", "p90")),
    "hedge-max-extra": (("10%", "10%"), ("2%", "2%")),
    "backend-queue-bytes": (("8mb", "8388608"), ("16mb", str(16 << 20))),
    "backend-output-limit": (("256kb", "262144"), ("512kb", str(512 << 10))),
    "stall-factor": (("20", "20"), ("8", "8")),
    "stall-floor": (("300ms", "300ms"), ("250ms", "250ms")),
    "eject-failure-rate": (("10%", "10%"), ("20%", "20%")),
    "eject-min-requests": (("200", "200"), ("30", "30")),
    "eject-time-max": (("30s", "30000ms"), ("20s", "20000ms")),
    "health-window": (("2s", "2000ms"), ("500ms", "500ms")),
}
CHANGES = [(n, v, shown) for n, ((v, shown), _) in OPTIONS.items()]
FILE = [(n, v, shown) for n, (_, (v, shown)) in OPTIONS.items()]


def get(c, name):
    r = c.call("CONFIG", "GET", name)
    assert isinstance(r, list) and len(r) == 2, (name, r)
    return r[1].decode()


def test_every_pool_option_under_load():
    dbs = [kettle_db("--latency", "fixed 1ms") for _ in range(3)]
    conf = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False).name
    lines = "backend = %s,%s\nbackend = %s\n" % (dbs[0].addr, dbs[1].addr, dbs[2].addr)
    with open(conf, "w") as f:
        f.write(lines)
    kd = kettled("-c", conf)
    try:
        c = replicas_up(kd.port)
        load = Load(kd.port, n=4, deadline=3.0)
        try:
            load.wait_ok(50, 20, "service before the changes")
            for name, value, shown in CHANGES:
                assert c.call("CONFIG", "SET", name, value) == "OK", name
                assert get(c, name) == shown, (name, get(c, name))
                load.wait_ok(10, 20, "service after %s %s" % (name, value))
            inf = h.info(c, "backend")
            assert field(inf["group0"], "hedge_delay_us") == "30000.0", inf["group0"]
            assert float(field(inf["backend0"], "stall_threshold_ms")) >= 300, inf["backend0"]
            # the same through the file and SIGHUP
            with open(conf, "w") as f:
                f.write(lines + "".join("%s = %s\n" % (n, v) for n, v, _ in FILE))
            kd.signal(signal.SIGHUP)
            h.wait_for(lambda: get(c, "backend-batch") == "16", 10, "reloaded")
            for name, _, shown in FILE:
                assert get(c, name) == shown, (name, get(c, name))
            load.wait_ok(50, 20, "service after the reload")
            # the groups were kept: no connection was made again
            inf = h.info(c, "backend")
            assert all(field(inf["backend%d" % i], "connects") == "2" for i in range(3)), inf
        finally:
            ok, errors = load.stop()
        assert errors == 0, load.error_texts
        assert "configuration reloaded" in kd.log()
        # an invalid value is refused and changes nothing
        r = c.call("CONFIG", "SET", "hedge-after", "p100")
        assert isinstance(r, h.RespError), r
        assert get(c, "hedge-after") == "p90"
    finally:
        kd.stop()
        for d in dbs:
            d.stop()
        os.unlink(conf)


h.main(globals())
