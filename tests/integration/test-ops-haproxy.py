"""conf/haproxy-kettled.cfg works: HAProxy started from it (its ports
replaced by ephemeral ones, its maxconn lowered) spreads connections over two kettled, and when
one is stopped every new connection is served by the other.

Skipped (77) without haproxy."""
import os
import re
import signal
import tempfile

import harness as h


def config(front, backends):
    with open(os.path.join(h.SRCDIR, "conf", "haproxy-kettled.cfg")) as f:
        text = f.read()
    text, n = re.subn(r"(?m)^(\s*bind )127\.0\.0\.1:\d+", r"\g<1>127.0.0.1:%d" % front, text)
    assert n == 1, "no bind line"
    # the global maxconn wants 2 x 20000 descriptors: more than a test may have
    text, n = re.subn(r"(?m)^(\s*maxconn )\d+", r"\g<1>1000", text)
    assert n == 1, "no global maxconn line"
    servers = iter(backends)
    text, n = re.subn(r"(?m)^(\s*server \S+ )127\.0\.0\.1:\d+",
                      lambda m: "%s%s" % (m.group(1), next(servers)), text)
    assert n == len(backends), "expected %d server lines, found %d" % (len(backends), n)
    return text


def served_by(port):
    """The process_id of the kettled that serves a new connection."""
    with h.Client(port) as c:
        assert c.call("GET", 5) == b"5"
        return int(h.info(c, "server")["process_id"])


def test_haproxy_example():
    exe = h.need("haproxy")
    k1 = h.Server("kettled")
    k2 = h.Server("kettled")
    front = h.free_port()
    with tempfile.TemporaryDirectory(prefix="kettle-haproxy-") as tmp:
        cfg = os.path.join(tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(config(front, [k1.addr, k2.addr]))
        hp = h.Proc([exe, "-db", "-f", cfg])

        def up():
            assert hp.alive(), "haproxy exited:\n" + hp.log()
            try:
                h.Client(front, timeout=1).close()
                return True
            except OSError:
                return False
        h.wait_for(up, 20, "haproxy to accept")

        # leastconn: connections held open at once go to both instances
        held = [h.Client(front) for _ in range(4)]
        pids = set()
        for c in held:
            assert c.call("PING") == "PONG"
            pids.add(int(h.info(c, "server")["process_id"]))
        assert pids == {k1.pid, k2.pid}, pids
        for c in held:
            c.close()

        # one instance stops: every new connection lands on the other
        k1.stop()
        for _ in range(6):
            assert served_by(front) == k2.pid
        hp.stop(signal.SIGTERM, expect=None)
        k2.stop()


h.main(globals())
