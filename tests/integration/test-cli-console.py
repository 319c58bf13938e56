"""kettle-cli as a person uses it, in a terminal (tmux: keys typed with
send-keys, the screen read with capture-pane): INFO prints as lines, `help
MGET` shows its summary, Tab completes MGE to MGET, the arguments' hint
shows while typing; `--stat` against a loaded kettled prints rising request
counts and stops cleanly on Ctrl-C; `--latency` against kettle-db with a
fixed 20 ms delay, and `--latency MGET 1 2 3` through kettled, report about
20 ms (at least 20 ms, and well under a second); `--latency-dist` draws
those round trips in the 20-30 ms range; `--latency-history` closes a range
per interval. Every wait is on what the screen shows, with a deadline as a
safety net."""
import itertools
import os
import re
import subprocess
import time

import harness as h


class Tmux:
    """One program in a tmux pane of its own server (socket), 160 x 50."""
    made = itertools.count()

    def __init__(self, cmd, env=None):
        self.sock = "kettle-test-%d-%d" % (os.getpid(), next(Tmux.made))
        self.tmux = h.need("tmux")
        e = {"TERM": "xterm-256color", "KETTLE_HISTFILE": "", "PATH": os.environ["PATH"],
             "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1")}
        e.update(env or {})
        envs = " ".join("%s='%s'" % (k, v) for k, v in e.items())
        self.run("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "160", "-y", "50",
                 "sleep 3600")
        self.run("set-option", "-g", "history-limit", "5000")
        # bash waits for the program (a Ctrl-C it handles does not end bash)
        # and shows its exit status on the screen
        self.run("respawn-pane", "-k", "-t", "t",
                 "exec env %s bash -c '%s; echo \"[exit $?]\"; exec sleep 3600'" % (envs, cmd))

    def run(self, *args):
        return subprocess.run([self.tmux, "-L", self.sock] + list(args), capture_output=True,
                              text=True, timeout=20, check=True).stdout

    def keys(self, *keys):
        self.run("send-keys", "-t", "t", *keys)

    def type(self, text):
        self.run("send-keys", "-t", "t", "-l", text)

    def screen(self):
        """The whole pane with its scrollback, wrapped lines joined."""
        return self.run("capture-pane", "-p", "-J", "-S", "-", "-t", "t")

    def wait(self, pred, what, timeout=30):
        def look():
            s = self.screen()
            for mark in h.SANITIZER_MARKS:
                assert mark not in s, s[-4000:]
            return pred(s)
        try:
            return h.wait_for(look, timeout, what)
        except AssertionError:
            raise AssertionError("%s; the screen:\n%s" % (what, self.screen()[-3000:]))

    def expect(self, text, timeout=30):
        return self.wait(lambda s: text in s, "%r on the screen" % text, timeout)

    def exit_status(self, timeout=30):
        """The program's exit status, once the screen shows it."""
        m = self.wait(lambda s: re.search(r"\[exit (\d+)\]", s), "the program to exit",
                      timeout)
        return int(m.group(1))

    def close(self):
        subprocess.run([self.tmux, "-L", self.sock, "kill-server"], capture_output=True, timeout=20)


def cli():
    return h.program("kettle-cli")


def test_prompt_info_help_tab_and_hint():
    db = h.Server("kettle-db", "--latency", "fixed 1ms")
    kd = h.Server("kettled", "--backend", db.addr)
    t = Tmux("%s -p %d" % (cli(), kd.port))
    try:
        prompt = "127.0.0.1:%d> " % kd.port
        t.expect(prompt)
        t.type("INFO clients")
        t.keys("Enter")
        # lines, not one quoted string with \r\n escapes
        s = t.wait(lambda s: re.search(r"^connected_clients:\d+$", s, re.M), "INFO as lines")
        assert "# Clients\n" in t.screen() and "\\r\\n" not in t.screen()
        t.type("help MGET")
        t.keys("Enter")
        t.expect("summary: Fetch several numbers at once")
        assert re.search(r"^  MGET key \[key \.\.\.\]$", t.screen(), re.M), t.screen()
        t.expect("group: string")
        # Tab: MGE -> MGET (MGETSEQ and MGETANY share the prefix)
        t.type("MGE")
        t.keys("Tab")
        t.wait(lambda s: s.rstrip().endswith(prompt + "MGET"), "MGE completed to MGET")
        # a blank shows the arguments' hint beside the line
        t.type(" ")
        t.wait(lambda s: re.search(re.escape(prompt) + r"MGET\s+key \[key \.\.\.\]\s*$", s.rstrip()),
               "the hint of MGET's arguments")
        t.type("1 2 3")
        t.keys("Enter")
        t.expect('3) "3"')
        # the accepted line keeps no hint in the scrollback
        assert re.search("^" + re.escape(prompt) + r"MGET 1 2 3\s*$", t.screen(), re.M), t.screen()
        t.type("help")
        t.keys("Enter")
        t.expect("@string")
        assert re.search(r"^    MGETANY\s+Fetch several numbers at once and answer", t.screen(), re.M)
        t.type("quit")
        t.keys("Enter")
        assert t.exit_status() == 0
    finally:
        t.close()
    kd.stop()
    db.stop()


def test_prompt_against_redis_server():
    r = h.start_redis()
    t = Tmux("%s -p %d" % (cli(), r.port))
    try:
        t.expect("127.0.0.1:%d> " % r.port)
        # a container's subcommand completes too, in the case typed
        t.type("client li")
        t.keys("Tab")
        t.wait(lambda s: re.search(r"> client list\s", s), "client li completed")
        t.keys("Enter")
        t.wait(lambda s: re.search(r"^id=\d+ addr=", s, re.M), "CLIENT LIST as lines")
        t.type("help GET")
        t.keys("Enter")
        t.expect("summary: ")
        assert re.search(r"^  GET key$", t.screen(), re.M), t.screen()
        t.type("help NOSUCHTHING")
        t.keys("Enter")
        t.expect("No help for 'NOSUCHTHING'")
        t.type("exit")
        t.keys("Enter")
        assert t.exit_status() == 0
    finally:
        t.close()
    r.stop()


def stat_rows(screen):
    """The data rows of --stat: lists of cells."""
    return [line.split() for line in screen.splitlines() if re.match(r"^\s*\d+\s+\d+", line)]


def test_stat_against_a_loaded_kettled():
    db = h.Server("kettle-db", "--latency", "fixed 1ms")
    kd = h.Server("kettled", "--backend", db.addr)
    load = h.Proc([h.program("kettle-bench"), "-p", kd.port, "-c", 4, "-d", 120, "--quiet",
                   "--", "MGET", "__rand_int__", "__rand_int__"])
    t = Tmux("%s -p %d --stat -i 0.5" % (cli(), kd.port))
    try:
        t.expect("kettled at 127.0.0.1:%d" % kd.port)
        t.expect("requests  requests/s  clients  blocked  fetches/s")
        rows = t.wait(lambda s: len(stat_rows(s)) >= 4 and stat_rows(s), "4 lines of --stat")
        totals = [int(r[0]) for r in rows]
        assert totals == sorted(totals) and totals[-1] > totals[0], totals
        assert all(int(r[1]) > 0 for r in rows[1:]), rows       # requests/s
        assert all(int(r[2]) >= 5 for r in rows), rows           # 4 loaders and --stat
        assert all(int(r[4]) > 0 for r in rows[1:]), rows        # fetches/s
        assert all(r[8] == "1/1" for r in rows), rows            # backends up/total
        t.keys("C-c")
        assert t.exit_status() == 0
    finally:
        t.close()
        load.stop(expect=None)
    kd.stop()
    db.stop()


def stat_view(port, *texts):
    """--stat until two lines of figures under texts, then Ctrl-C."""
    t = Tmux("%s -p %d --stat -i 0.3" % (cli(), port))
    try:
        for text in texts:
            t.expect(text)
        t.wait(lambda s: len(stat_rows(s)) >= 2, "2 lines")
        t.keys("C-c")
        assert t.exit_status() == 0
    finally:
        t.close()


def test_stat_against_kettle_db_and_redis():
    db = h.Server("kettle-db", "--latency", "fixed 1ms")
    stat_view(db.port, "kettle-db at", "requests  requests/s  in-service   queued  faults/s  clients")
    db.stop()
    r = h.start_redis()
    stat_view(r.port, "redis-server at",
              "requests  requests/s  clients  blocked   memory     keys  connections/s")
    r.stop()


LATENCY = r"min: ([\d.]+), max: ([\d.]+), avg: ([\d.]+) \((\d+) samples\)"


def latency_view(port, args, samples=30):
    """Run kettle-cli --latency ARGS until `samples`, Ctrl-C; (min, max, avg)."""
    t = Tmux("%s -p %d %s" % (cli(), port, args))
    try:
        def enough(s):
            m = re.findall(LATENCY, s)
            return m and int(m[-1][3]) >= samples and m
        enough_ = t.wait(enough, "%d samples" % samples, timeout=60)
        t.keys("C-c")
        assert t.exit_status() == 0
        last = re.findall(LATENCY, t.screen())[-1]
        assert int(last[3]) >= int(enough_[-1][3])
        return float(last[0]), float(last[1]), float(last[2])
    finally:
        t.close()


def test_latency_reports_the_databases_delay():
    db = h.Server("kettle-db", "--latency", "fixed 20ms")
    kd = h.Server("kettled", "--backend", db.addr)
    # GET waits for the delay: at least 20 ms each, and nowhere near a second
    mn, mx, avg = latency_view(db.port, "--latency GET 7")
    assert 19.9 <= mn <= avg <= mx and avg < 1000, (mn, mx, avg)
    # PING is answered at once
    mn, mx, avg = latency_view(db.port, "--latency")
    assert mn < 20, (mn, mx, avg)
    # through kettled: the three fetches at once, so one delay, not three
    mn, mx, avg = latency_view(kd.port, "--latency MGET 1 2 3")
    assert 19.9 <= mn <= avg <= mx and avg < 1000, (mn, mx, avg)
    kd.stop()
    db.stop()


def test_latency_dist_and_history():
    db = h.Server("kettle-db", "--latency", "fixed 20ms")
    t = Tmux("%s -p %d --latency-dist -i 0.5 GET 3" % (cli(), db.port))
    try:
        t.expect("up to 10 20 30 40 50 ms")
        row = r"^(.*)  avg ([\d.]+) ms \((\d+) samples\)$"
        rows = t.wait(lambda s: len(re.findall(row, s, re.M)) >= 3 and re.findall(row, s, re.M),
                      "3 rows of the distribution")
        for chars, avg, n in rows:
            plain = re.sub(r"\x1b\[[0-9;]*m", "", chars)
            # every round trip took 20 ms or more: nothing in the ranges below
            assert set(plain.replace(" ", "")) <= set("CDEFGHIJKLMNOP?"), repr(plain)
            assert "C" in plain or float(avg) > 30, (plain, avg)
        t.keys("C-c")
        assert t.exit_status() == 0
    finally:
        t.close()
    t = Tmux("%s -p %d --latency-history -i 0.5 GET 3" % (cli(), db.port))
    try:
        ranges = t.wait(lambda s: len(re.findall(LATENCY + r" -- ([\d.]+) seconds range", s)) >= 2
                        and re.findall(LATENCY + r" -- ([\d.]+) seconds range", s), "2 ranges")
        for mn, mx, avg, n, secs in ranges:
            assert float(mn) >= 19.9 and int(n) > 0 and float(secs) >= 0.5, ranges
        t.keys("C-c")
        assert t.exit_status() == 0
    finally:
        t.close()
    db.stop()


def test_an_error_reply_ends_latency():
    db = h.Server("kettle-db")
    r = subprocess.run([cli(), "-p", str(db.port), "--latency", "NOSUCHCOMMAND"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "unknown command" in r.stderr, r
    r = subprocess.run([cli(), "-p", str(db.port), "--stat", "GET", "1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--stat takes no command" in r.stderr
    for bad in ("0", "-1", "x"):
        r = subprocess.run([cli(), "--latency", "-i", bad], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2 and "-i" in r.stderr, r
    db.stop()


h.main(globals())
