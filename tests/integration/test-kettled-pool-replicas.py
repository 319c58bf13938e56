#!/usr/bin/env python3
"""kettled with a group of kettle-db replicas (one backend line, addresses
separated by commas): one replica killed and restarted under load without
a failed request, hedged reads around a replica that stalls, and the hedge
budget running out."""
import signal
import threading
import time

import harness as h
from kdtest import E, Load, field, kettle_db, kettled, replicas_up


def test_replica_killed_and_restarted():
    a, b = kettle_db("--latency", "fixed 2ms"), kettle_db("--latency", "fixed 2ms")
    kd = kettled("--backend", "%s,%s" % (a.addr, b.addr), "--backend-retry-min", "20ms",
                 "--backend-retry-max", "100ms", "--eject-time", "200ms", "--request-timeout", "3s")
    try:
        c = replicas_up(kd.port)
        load = Load(kd.port, n=4, deadline=3.5)
        try:
            load.wait_ok(50, 20, "service with both replicas")
            a.stop(sig=signal.SIGKILL, expect=None)
            load.wait_ok(100, 20, "service with one replica")
            inf = h.info(c, "backend")
            assert field(inf["backend0"], "state") != "up", inf
            a2 = kettle_db("--latency", "fixed 2ms", listen=a.addr)
            h.wait_for(lambda: field(h.info(c, "backend")["backend0"], "state") == "up", 20,
                       "the restarted replica back")
            served = int(field(h.info(c, "backend")["backend0"], "replies"))
            h.wait_for(lambda: int(field(h.info(c, "backend")["backend0"], "replies")) > served + 20,
                       20, "the restarted replica serving")
            load.wait_ok(50, 20, "service after the restart")
        finally:
            ok, errors = load.stop()
        # a fetch lost with the killed replica was retried on the other one
        assert errors == 0, load.error_texts
        a2.stop()
    finally:
        kd.stop()
        b.stop()


def timed_calls(port, n, cmds):
    """n clients, each sending cmds in turn; (reply, seconds) for each."""
    out, lock = [], threading.Lock()

    def run():
        with h.Client(port, timeout=30) as cl:
            for cmd in cmds:
                t0 = time.monotonic()
                r = cl.call(*cmd)
                with lock:
                    out.append((cmd, r, time.monotonic() - t0))
    ts = [threading.Thread(target=run) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return out


def test_hedge_around_a_stalled_replica():
    """One replica never answers: every fetch is hedged to the other after
    hedge-after and answered by it (the stall watchdog is kept out of the
    way: without hedging, nothing would come back before request-timeout)."""
    a, b = kettle_db("--latency", "fixed 5ms"), kettle_db("--latency", "fixed 5ms")
    kd = kettled("--backend", "%s,%s" % (a.addr, b.addr), "--hedge-after", "50ms",
                 "--hedge-max-extra", "100%", "--backend-timeout", "60s", "--stall-floor", "60s",
                 "--request-timeout", "30s", "--eject-after", "0", "--eject-failure-rate", "0")
    try:
        c = replicas_up(kd.port)
        assert h.Client(a.port).call("FAULT", "SET", "stall", "1") == "OK"
        cmds = [("GET", str(k)) for k in range(20)] + [("MGET", "31", "32", "33")] * 5
        got = timed_calls(kd.port, 6, cmds)
        for cmd, r, took in got:
            want = [x.encode() for x in cmd[1:]] if cmd[0] == "MGET" else cmd[1].encode()
            # answered, and before request-timeout (30 s) would have: by the other replica
            assert r == want, (cmd, r)
        g = h.info(c, "backend")["group0"]
        assert int(field(g, "hedges_won")) > 0 and field(g, "hedge_budget_exhausted") == "0", g
        slow = h.info(c, "backend")["backend0"]
        assert int(field(slow, "hedges_won")) == 0, slow
    finally:
        kd.stop()
        a.stop()
        b.stop()


def test_hedge_budget_exhausted():
    """With no budget left, a fetch on the stalled replica is not hedged: it
    waits for its deadline."""
    a, b = kettle_db("--latency", "fixed 5ms"), kettle_db("--latency", "fixed 5ms")
    kd = kettled("--backend", "%s,%s" % (a.addr, b.addr), "--hedge-after", "20ms",
                 "--hedge-max-extra", "1%", "--backend-timeout", "60s", "--stall-floor", "60s",
                 "--request-timeout", "500ms")
    try:
        c = replicas_up(kd.port)
        assert h.Client(a.port).call("FAULT", "SET", "stall", "1") == "OK"
        # both idle: the first replica gets it, and 1% of one fetch is no hedge
        r = c.call("GET", "5")
        assert str(r).startswith("ERR request timed out"), r
        g = h.info(c, "backend")["group0"]
        assert field(g, "hedges") == "0" and field(g, "hedge_budget_exhausted") == "1", g
        # its load now steers the next fetches to the other replica
        assert c.call("GET", "6") == b"6"
        assert c.call("CONFIG", "SET", "hedge-max-extra", "100%") == "OK"
        assert c.call("CONFIG", "GET", "hedge-max-extra") == [b"hedge-max-extra", b"100%"]
    finally:
        kd.stop()
        a.stop()
        b.stop()


h.main(globals())
