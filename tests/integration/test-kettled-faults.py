#!/usr/bin/env python3
"""kettled in front of a faulty kettle-db: each fault (error, stall, close,
reset, garbage, cut, trickle, refuse, stop-reading, slow-accept) under
load. Every request gets its value or a clear error (none hangs), the
daemon stays up, its descriptors come back to the baseline, and service
resumes once the fault is cleared."""
import harness as h
from kdtest import E, Load, kettle_db, kettled

TIMEOUT = 0.6  # request-timeout
SLACK = 0.9    # scheduling under ASan on a shared machine


class Rig(h.Stops):
    def __init__(self, *kd_args):
        self.db = kettle_db("--latency", "fixed 2ms")
        self.kd = kettled("--backend", self.db.addr, "--request-timeout", "%dms" % (TIMEOUT * 1000),
                          "--backend-timeout", "300ms", "--backend-retry-min", "10ms",
                          "--backend-retry-max", "100ms", "--eject-after", "0",
                          "--backend-connections", "2", "--stall-floor", "300ms", *kd_args)
        self.adm = h.Client(self.db.port)
        self.c = h.Client(self.kd.port)
        # (the first fetches may meet the short backend timeouts on a busy machine)
        h.wait_for(lambda: self.c.call("GET", "1") == b"1", 30, "a first value")
        h.wait_for(lambda: "connections=2/2" in h.info(self.c, "backend")["backend0"], 5,
                   "both backend connections up")
        self.base = h.fd_count(self.kd.pid)

    def fault(self, *spec):
        assert self.adm.call("FAULT", "SET", *spec) == "OK", spec

    def round(self, specs, errors=True, server_named=True):
        """Load, set the faults, see their effect, clear, see recovery."""
        load = Load(self.kd.port, n=4, deadline=TIMEOUT + SLACK)
        try:
            load.wait_ok(10, 10, "service before the fault")
            for spec in specs:
                self.fault(*spec)
            if errors:
                load.wait_errors(4, 15, "errors under %s" % (specs,))
            else:
                load.wait_ok(30, 15, "service under %s" % (specs,))
            assert self.adm.call("FAULT", "CLEAR") == "OK"
            load.wait_ok(30, 15, "service after clearing %s" % (specs,))
        finally:
            ok, err = load.stop()
        if errors and server_named:
            assert any(self.db.addr in t for t in load.error_texts), load.error_texts
        assert self.kd.alive()
        assert self.c.call("PING") == "PONG"
        h.wait_for(lambda: h.fd_count(self.kd.pid) <= self.base, 10,
                   "descriptors back to %d (now %d)" % (self.base, h.fd_count(self.kd.pid)))
        return load

    def stop(self):
        self.kd.stop()
        self.db.stop()


def rig_test(specs, texts=(), then=None, **round_kw):
    """A test: kettled under load meets the faults specs (Rig.round); one
    of its error replies holds one of texts, when given; then(r, load)
    checks more."""
    def run():
        with Rig() as r:
            load = r.round(specs, **round_kw)
            if texts:
                assert any(x in t for t in load.error_texts for x in texts), load.error_texts
            if then:
                then(r, load)
    return run


def _injected(r, load):
    assert any(t.startswith("ERR injected fault") for t in load.error_texts), load.error_texts
    assert int(h.info(r.c, "stats")["errors_backend"]) > 0


def _stalls_counted(r, load):
    inf = h.info(r.c, "backend")["backend0"]
    assert "stalls=0," not in inf, inf


def _no_timeouts(r, load):
    assert h.info(r.c, "stats")["request_timeouts"] == "0"


test_error = rig_test([("error", "0.5")], server_named=False, then=_injected)
test_stall = rig_test([("stall", "0.2")], then=_stalls_counted)
test_close = rig_test([("close", "0.3")], ["connection closed by the server"])
test_reset = rig_test([("reset", "0.3")])
test_garbage = rig_test([("garbage", "0.3")], ["malformed reply"])
test_cut = rig_test([("cut", "0.3", "3")], ["no reply within 300 ms"])
# slow replies, well inside the deadlines: everything still succeeds
test_trickle = rig_test([("trickle", "1", "2", "5ms")], errors=False, then=_no_timeouts)
# connections die and cannot come back while the server refuses
test_refuse = rig_test([("refuse", "1"), ("close", "1")], ["Connection refused", "is down"])
test_stop_reading = rig_test([("stop-reading", "1", "all")])
test_slow_accept = rig_test([("slow-accept", "1", "200ms"), ("reset", "0.3")])


def test_ejection_and_return():
    """eject-after failures in a row take a server off the ring for
    eject-time: its keys go to the other server meanwhile, then it is tried
    again and serves its keys again. The last server standing is never
    ejected: its fetches fail at once while it is down."""
    dbs = [kettle_db("--latency", "none"), kettle_db("--latency", "none")]
    kd = kettled("--backend", dbs[0].addr, "--backend", dbs[1].addr, "--eject-after", "2",
                 "--eject-time", "700ms", "--backend-retry-min", "10ms",
                 "--backend-retry-max", "20ms", "--backend-connections", "1")
    try:
        c = h.Client(kd.port)
        adms = [h.Client(d.port) for d in dbs]
        adm = adms[0]
        keys = [str(i) for i in range(40)]
        assert c.call("MGET", *keys) == [k.encode() for k in keys]
        on0 = [k for k in keys if _served_by(c, adms, k) == 0]
        assert on0, "no key on the first server"
        assert adm.call("FAULT", "SET", "refuse", "1") == "OK"
        assert adm.call("FAULT", "SET", "reset", "1") == "OK"
        r = c.call("GET", on0[0])
        assert isinstance(r, E) and dbs[0].addr in str(r), r
        h.wait_for(lambda: "state=ejected" in h.info(c, "backend")["backend0"], 5, "ejection")
        assert c.call("MGET", *on0) == [k.encode() for k in on0]  # served by the other
        assert _served_by(c, adms, on0[0]) == 1
        assert adm.call("FAULT", "CLEAR") == "OK"
        h.wait_for(lambda: "state=up" in h.info(c, "backend")["backend0"] and
                   _served_by(c, adms, on0[0]) == 0, 5, "back after eject-time")
        inf = h.info(c, "backend")["backend0"]
        assert "ejections=1" in inf, inf
        # alone: never ejected
        assert c.call("CONFIG", "SET", "backend", dbs[0].addr) == "OK"
        assert adm.call("FAULT", "SET", "refuse", "1") == "OK"
        assert adm.call("FAULT", "SET", "reset", "1") == "OK"
        for _ in range(10):
            r = c.call("GET", "1")
            assert isinstance(r, E) and dbs[0].addr in str(r), r
        assert "state=ejected" not in h.info(c, "backend")["backend0"]
        assert adm.call("FAULT", "CLEAR") == "OK"
        h.wait_for(lambda: c.call("GET", "2") == b"2", 5, "service once the server is back")
    finally:
        kd.stop()
        for d in dbs:
            d.stop()


def _served_by(c, adms, key):
    """Which database answered key: the one whose served count moves."""
    before = [int(h.info(a)["requests_served"]) for a in adms]
    assert c.call("GET", key) == key.encode()
    after = [int(h.info(a)["requests_served"]) for a in adms]
    moved = [i for i in range(len(adms)) if after[i] > before[i]]
    assert len(moved) == 1, (before, after)
    return moved[0]


h.main(globals())
