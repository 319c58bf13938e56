"""kdtest.py - what kettled's integration tests share beyond harness.py:
starting kettled and kettle-db, a threaded load whose every request must
end (a value or an error), the raw-socket helpers (from harness.py), and
fields of INFO's key=value lines."""
import threading
import time

import harness as h
from harness import raw, read_n, read_until_closed, still_open  # noqa: F401 (for the tests)

E = h.RespError


def kettled(*args, **kw):
    """kettled on an ephemeral port (waits for its `listening on` line)."""
    return h.Server("kettled", *args, **kw)


def kettle_db(*args, **kw):
    return h.Server("kettle-db", "--seed", "7", *args, **kw)


def field(line, key):
    """The value of key in an INFO line of key=value pairs ("state=up,...")."""
    return line.split(key + "=")[1].split(",")[0]


def replicas_up(port, n=2, group="group0", timeout=30):
    """A client of kettled at port, once n replicas of group are live."""
    c = h.Client(port)
    h.wait_for(lambda: "live=%d," % n in h.info(c, "backend")[group], timeout, "%d replicas up" % n)
    return c


HANG = 30.0  # beyond its deadline, how long a request may go unanswered before it counts as hung


class Load(h.Stops):
    """n client threads, each sending requests one after another until
    stop(); every reply must be the right value or an error reply, and
    must come at all: a request still unanswered HANG seconds past
    `deadline` (the daemon's request-timeout plus its slack) is a
    problem. Its time is not checked otherwise: on a loaded machine any
    reply may be late. Results are counted."""

    def __init__(self, port, n=4, deadline=3.0, mget=True):
        self.port, self.deadline, self.mget = port, deadline, mget
        self.ok = self.errors = 0
        self.problems = []
        self.error_texts = set()
        self.lock = threading.Lock()
        self.running = True
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, i):
        k = 0
        c = None
        while self.running:
            try:
                if c is None:
                    c = h.Client(self.port, timeout=self.deadline + HANG)
                k += 1
                keys = [str((i * 1000 + k * 7 + j) % 5000) for j in range(3)]
                if self.mget and k % 2 == 0:
                    r = c.call("MGET", *keys)
                    want = [x.encode() for x in keys]
                else:
                    r = c.call("GET", keys[0])
                    want = keys[0].encode()
                with self.lock:
                    if r == want:
                        self.ok += 1
                    elif isinstance(r, E):
                        self.errors += 1
                        self.error_texts.add(str(r)[:80])
                    elif isinstance(r, list) and len(r) == 3 and all(
                            x == w or isinstance(x, E) for x, w in zip(r, want)):
                        if any(isinstance(x, E) for x in r):
                            self.errors += 1
                            self.error_texts.update(str(x)[:80] for x in r if isinstance(x, E))
                        else:
                            self.ok += 1
                    else:
                        self.problems.append("wrong reply %r to %r" % (r, keys))
            except (OSError, h.Closed) as e:
                with self.lock:
                    self.problems.append("client %d: %s" % (i, e))
                c = None
                time.sleep(0.05)
        if c:
            c.close()

    def counts(self):
        with self.lock:
            return self.ok, self.errors

    def wait_ok(self, n, timeout, what="successful replies"):
        base = self.counts()[0]
        h.wait_for(lambda: self.counts()[0] >= base + n, timeout, what)

    def wait_errors(self, n, timeout, what="error replies"):
        base = self.counts()[1]
        h.wait_for(lambda: self.counts()[1] >= base + n, timeout, what)

    def stop(self):
        self.running = False
        for t in self.threads:
            t.join(self.deadline + HANG + 5)
        assert not self.problems, self.problems[:10]
        return self.counts()
