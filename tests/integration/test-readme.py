"""The README's commands work as printed: every shell block a user would
paste is taken from README.md itself and run, line by line, against the
programs just built, and each line must give what the README says.

The convention, for README writers:

- A ```sh block is run; blocks in other languages (yaml) are not.
- A block is not run when a line needs root or a running systemd, or
  builds kettle (sudo, systemctl, journalctl, apt-get, make, autoreconf,
  configure, sh scripts/...): `make check` is that build. Nor a block
  after `<!-- readme-test: skip REASON -->`.
- A block of `$ command` lines with their output is a transcript: the same
  command in a block that runs must print that output.
- Each block runs on its own, in bash at a terminal (a pseudo-terminal, so
  programs print as they do for a person), in a network namespace of its
  own (so its fixed ports, 7379 and the like, are its alone), in a
  directory that looks like the source tree with `build/` the build tree,
  and with the build tree first on PATH.
- A line ending in `&` starts a server in the background: the next line
  runs once it listens. A block stops what it started (`kill %1 ...`);
  kettle's servers must then exit with status 0.
- A line whose comment says `Ctrl-C` runs until it has printed a few
  lines, then gets a Ctrl-C and must exit with status 0.
- Every other line must exit with status 0, and the lines in CHECKS below
  must also give what their README comment says. A check whose line is no
  longer in the README fails the test, so the two cannot drift apart.

Also a helper for the blocks it runs (--listening PID, --wait-exit PID,
--until-ctrl-c -- COMMAND...).
"""
import ctypes
import fcntl
import json
import os
import pty
import re
import shlex
import signal
import socket
import struct
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import harness as h

README = os.path.join(h.SRCDIR, "README.md")
SKIP_WORDS = {"sudo", "systemctl", "journalctl", "apt-get", "make", "autoreconf"}
BLOCK_TIMEOUT = 240  # seconds: a safety net, not a measurement


# ---- reading the README ------------------------------------------------------------

class Block:
    def __init__(self, section, line, lang, lines, marker):
        self.section, self.line, self.lang, self.lines, self.marker = (
            section, line, lang, lines, marker)

    def transcript(self):
        return any(l.startswith("$ ") for l in self.lines)

    def skip_reason(self):
        if self.lang not in ("sh", "bash", "shell"):
            return "not shell"
        if self.marker and self.marker.startswith("skip"):
            return self.marker
        if self.transcript():
            return "a transcript (checked where its commands run)"
        for cmd in commands(self.lines):
            words = command_words(cmd)
            if not words:
                continue
            if words[0] in SKIP_WORDS or words[0].endswith("/configure") or (
                    words[0] == "sh" and len(words) > 1 and words[1].startswith("scripts/")):
                return "needs root or systemd, or builds kettle (%s)" % words[0]
        return None


def read_blocks():
    blocks, section, fence, marker, prev = [], [], None, None, ""
    with open(README) as f:
        for n, line in enumerate(f.read().split("\n"), 1):
            if fence is None:
                m = re.match(r"^(#+) (.*)", line)
                if m:
                    section = section[:len(m.group(1)) - 1] + [m.group(2).strip()]
                m = re.match(r"^```(\w*)\s*$", line)
                if m:
                    mk = re.match(r"^<!-- readme-test: (.*?) -->$", prev.strip())
                    fence = Block(" / ".join(section), n, m.group(1), [], mk.group(1) if mk else None)
                if line.strip():
                    prev = line
            elif line.strip() == "```":
                blocks.append(fence)
                fence = None
            else:
                fence.lines.append(line)
    return blocks


def commands(lines):
    """The commands of a block: lines without their comment, joined over
    trailing backslashes; blank and comment-only lines left out."""
    out, cur = [], ""
    for line in lines:
        cur += line
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        cmd = strip_comment(cur).strip()
        if cmd:
            out.append(cmd)
        cur = ""
    return out


def strip_comment(line):
    """The line up to a # that starts a shell comment (outside quotes)."""
    q = None
    for i, c in enumerate(line):
        if q:
            if c == q:
                q = None
        elif c in "'\"":
            q = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def comment_of(line):
    return line[len(strip_comment(line)):]


def command_words(cmd):
    try:
        words = shlex.split(cmd)
    except ValueError:
        return cmd.split()
    while words and (words[0] == "time" or re.match(r"^\w+=", words[0])):
        words = words[1:]
    return words


def transcripts(blocks):
    """command -> the output lines a transcript block shows for it."""
    out = {}
    for b in blocks:
        if b.lang in ("sh", "bash", "shell") and b.transcript():
            cmd, lines = None, []
            for line in b.lines + ["$ "]:
                if line.startswith("$ "):
                    if cmd:
                        out[cmd] = "\n".join(lines).rstrip("\n")
                    cmd, lines = line[2:].strip(), []
                else:
                    lines.append(line)
    return out


# ---- running a block ---------------------------------------------------------------

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000


def enter_netns():
    """In a child: a network namespace of its own with loopback up."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(CLONE_NEWNET) != 0:
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare: no network namespace for the README's servers")
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write("0 %d 1" % uid)
        with open("/proc/self/gid_map", "w") as f:
            f.write("0 %d 1" % gid)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flags = struct.unpack("16sh", fcntl.ioctl(s, 0x8913, struct.pack("16sh", b"lo", 0)))[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sh", b"lo", flags | 1))  # SIOCSIFFLAGS: IFF_UP
    s.close()


def workdir():
    """A directory that looks like the source tree, build/ the build tree."""
    d = tempfile.mkdtemp(prefix="kettle-readme-")
    for name in os.listdir(h.SRCDIR):
        if not name.startswith((".", "build")):
            os.symlink(os.path.join(h.SRCDIR, name), os.path.join(d, name))
    os.symlink(h.BUILDDIR, os.path.join(d, "build"))
    return d


def script_for(block, logdir):
    """The block as a bash script, each line framed by markers."""
    me = "%s %s" % (shlex.quote(sys.executable), shlex.quote(os.path.abspath(__file__)))
    out = ["__kt() { printf '\\n@@kt %s\\n' \"$*\"; }", "__kt_bg="]
    for i, line in enumerate(commands(block.lines)):
        out.append("__kt line %d" % i)
        if line.endswith("&") and not line.endswith("&&"):
            # a server in the background: its output to a log, then wait until it listens
            out.append("%s >%s 2>&1 &" % (line[:-1].rstrip(), shlex.quote("%s/bg%d.log" % (logdir, i))))
            out.append("__kt_bg=\"$__kt_bg $!\"; %s --listening $! || exit 99" % me)
            out.append("__kt status %d 0" % i)
            continue
        raw = [l for l in block.lines if strip_comment(l).strip() == line]
        if raw and "Ctrl-C" in comment_of(raw[0]):
            out.append("%s --until-ctrl-c -- %s" % (me, line))
        else:
            out.append(line)
        out.append("__kt status %d $?" % i)
    out.append("__kt end")
    out.append("for p in $__kt_bg; do %s --wait-exit $p; wait $p; __kt bg $p $?; done" % me)
    return "\n".join(out) + "\n"


def clean(text):
    """Terminal output as a person reads it: no escape sequences, CRLF as
    LF, a line redrawn after CR shows its last version."""
    text = re.sub(r"\r+\n", "\n", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text))
    return "\n".join(l.rsplit("\r", 1)[-1] for l in text.split("\n"))


class Result:
    def __init__(self, cmd):
        self.cmd, self.status, self.out = cmd, None, ""

    def real(self):
        m = re.search(r"^real\s+(\d+)m([\d.]+)s$", self.out, re.M)
        assert m, "no time output for %r:\n%s" % (self.cmd, self.out)
        return int(m.group(1)) * 60 + float(m.group(2))

    def body(self):
        """The output without the `time` lines."""
        return re.sub(r"\n*real\s.*\nuser\s.*\nsys\s.*$", "", self.out.strip("\n"), flags=re.S)


def run_block(block):
    """Run a block; returns ({command: Result}, background statuses, workdir)."""
    wd = workdir()
    logdir = tempfile.mkdtemp(prefix="kettle-readme-logs-")
    path = os.path.join(logdir, "block.sh")
    with open(path, "w") as f:
        f.write(script_for(block, logdir))
    env = dict(os.environ)
    env.update(PATH="%s:%s:/usr/sbin:/sbin" % (h.BUILDDIR, os.environ.get("PATH", "/usr/bin:/bin")),
               HOME=wd, TERM="dumb", KETTLE_HISTFILE="")
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.chdir(wd)
            enter_netns()
            os.execve("/bin/bash", ["bash", path], env)
        except BaseException as e:
            os.write(2, ("cannot run the block: %s\n" % e).encode())
        os._exit(127)
    raw = h.pump(fd, time.monotonic() + BLOCK_TIMEOUT)
    if raw is None:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError("README block at line %d ran past %ds" % (block.line, BLOCK_TIMEOUT))
    os.waitpid(pid, 0)
    os.close(fd)
    text = clean(raw.decode(errors="replace"))
    for mark in h.SANITIZER_MARKS:
        assert mark not in text, "sanitizer report in the block at line %d:\n%s" % (block.line, text[-6000:])
    cmds = commands(block.lines)
    results, bg, cur = {}, {}, None
    for piece in re.split(r"\n?@@kt ", text):
        head, _, rest = piece.partition("\n")
        w = head.split()
        if w[:1] == ["line"]:
            cur = results.setdefault(cmds[int(w[1])], Result(cmds[int(w[1])]))
            cur.out = rest
        elif w[:1] == ["status"]:
            results[cmds[int(w[1])]].status = int(w[2])
            cur = None
        elif w[:1] == ["bg"]:
            bg[int(w[1])] = int(w[2])
        elif cur is not None:
            cur.out += piece
    logs = {}
    for name in os.listdir(logdir):
        if name.endswith(".log") and name.startswith("bg"):
            with open(os.path.join(logdir, name), errors="replace") as f:
                log = logs[int(name[2:-4])] = f.read()
            for mark in h.SANITIZER_MARKS:
                assert mark not in log, "sanitizer report from a server of line %d:\n%s" % (
                    block.line, log[-6000:])
    return results, bg, text, wd, [logs[k] for k in sorted(logs)]


# ---- what the README says ------------------------------------------------------------

ARRAY = '1) "1"\n2) "2"\n3) "3"'


def status0(r, all_):
    assert r.status == 0, "exit status %s" % r.status


def prints(text):
    def check(r, all_):
        status0(r, all_)
        assert r.body() == text, "printed %r, the README says %r" % (r.body(), text)
    return check


def bench_ok(lo_rps=None, hi_rps=None):
    """kettle-bench: exit 0, no error; requests/s within a wide, honest range."""
    def check(r, all_):
        status0(r, all_)
        assert re.search(r"^  errors:     0 ", r.out, re.M), r.out
        m = re.search(r"throughput: ([\d.]+) requests/s", r.out)
        rps = float(m.group(1))
        assert rps > 0 and (lo_rps is None or lo_rps < rps) and (hi_rps is None or rps < hi_rps), rps
    return check


def timed_array(at_least):
    def check(r, all_):
        status0(r, all_)
        assert r.body() == ARRAY, r.body()
        assert r.real() >= at_least, "took %.3fs, at least %.1fs is physics" % (r.real(), at_least)
    return check


def the_sum_not_the_slowest(r, all_):
    # MGETSEQ waits for the sum, 600 ms at least. That MGET fetches its keys
    # at once is shown by counters in test-kettled-basic (three fetches
    # outstanding); comparing the two times here would only measure the
    # machine's load.
    timed_array(0.6)(r, all_)


def ctrl_c_view(pattern):
    def check(r, all_):
        status0(r, all_)
        assert re.search(pattern, r.out, re.M), r.out
    return check


def one_of_them(r, all_):
    status0(r, all_)
    assert re.fullmatch(r'"[123]"', r.body()), "printed %r, not one of the numbers" % r.body()


CHECKS = {
    # the tour
    "export PATH=$PWD/build:$PATH": status0,
    "redis-cli -p 7379 MGET 1 2 3": "transcript",
    "kettle-cli MGETSEQ 1 2 3": prints(ARRAY),
    "kettle-cli MGETANY 3 1 2": one_of_them,
    "time kettle-cli -p 7389 MGET 1 2 3": timed_array(0.3),
    "time kettle-cli -p 7389 MGETSEQ 1 2 3": the_sum_not_the_slowest,
    # 50 MGETs in flight, each waiting 0.7 to 0.9 s: 55 to 70 a second, never 80
    "kettle-bench -p 7389 -c 50 -d 5 -r 10 -- MGET __rand_int__ __rand_int__ __rand_int__":
        bench_ok(20, 80),
    # kettle-db's faults
    'kettle-cli -p 7380 CONFIG SET latency "fixed 50ms"': prints("OK"),
    "kettle-cli -p 7380 FAULT SET stall 0.1": prints("OK"),
    "kettle-cli -p 7380 FAULT SET slow-accept 1 200ms": prints("OK"),
    "kettle-cli -p 7380 FAULT LIST": prints('1) "stall 0.1"\n2) "slow-accept 1 200ms"'),
    "kettle-cli -p 7380 FAULT CLEAR": prints("OK"),
    # the clients
    "kettle-bench -c 50 -P 16 -d 5 -- GET __rand_int__": bench_ok(),
    "kettle-bench -c 50 --rate 5000 -d 5 --json rate.json": bench_ok(),
    "kettle-bench --mix 'GET __rand_int__:8,MGET __rand_int__ __rand_int__:2' -n 100000": bench_ok(),
    "kettle-bench -c 50 -d 5 --json hot.json --hgrm hot.hgrm -- GET __zipf_int__": bench_ok(),
    "kettle-bench --plot rate.json hot.json --svg latency.svg": status0,
    "kettle-cli -p 7379 MGET 1 2 3": prints(ARRAY),
    "kettle-cli INFO stats": ctrl_c_view(r"^# Stats$\n^total_connections_received:\d+$"),
    "kettle-cli help MGET": ctrl_c_view(r"^  MGET key \[key \.\.\.\]$\n^  summary: Fetch several"),
    "kettle-cli --stat": ctrl_c_view(r"^ *requests +requests/s +clients .*fetches/s.*backends"
                                     r".*\n^ *\d+ +\d+ +\d+ "),
    "kettle-cli --latency MGET 1 2 3": ctrl_c_view(r"min: [\d.]+, max: [\d.]+, avg: [\d.]+ "
                                                   r"\(\d+ samples\)"),
    # scaling out
    "kettle-cli -p 7000 MGET 1 2 3": prints(ARRAY),
}

# what a block leaves in its directory
FILES = {
    "rate.json": lambda p: json.load(open(p))["errors_total"] == 0,
    "hot.hgrm": lambda p: open(p).readline().split() == ["Value", "Percentile", "TotalCount",
                                                        "1/(1-Percentile)"],
    "latency.svg": lambda p: len([e for e in ET.parse(p).getroot().iter()
                                  if e.tag.endswith("polyline")]) == 4,
}

KETTLE_SERVERS = ("kettled", "kettle-db")


def test_every_block_runs_as_printed():
    blocks = read_blocks()
    shown = transcripts(blocks)
    ran, seen, sections = [], set(), set()
    for b in blocks:
        why = b.skip_reason()
        if why:
            print("not run: README line %d (%s): %s" % (b.line, b.section, why))
            continue
        t0 = time.monotonic()
        results, bg, text, wd, logs = run_block(b)
        sections.add(b.section)
        print("ran: README line %d (%s), %d commands, %.1fs" % (
            b.line, b.section, len(results), time.monotonic() - t0))
        cmds = commands(b.lines)
        for cmd in cmds:
            r = results.get(cmd)
            assert r is not None and r.status is not None, (
                "README line %d: %r did not run to its end:\n%s" % (b.line, cmd, text[-3000:]))
            check = CHECKS.get(cmd, status0)
            seen.add(cmd)
            try:
                if check == "transcript":
                    status0(r, results)
                    assert r.body() == shown[cmd], "printed %r, the README shows %r" % (
                        r.body(), shown[cmd])
                else:
                    check(r, results)
            except AssertionError as e:
                raise AssertionError("README line %d (%s): %r: %s\noutput:\n%s" % (
                    b.line, b.section, cmd, e, r.out[-3000:]))
        # the servers it started were stopped by the block, and kettle's exited cleanly
        starts = [c for c in cmds if c.endswith("&")]
        assert len(bg) == len(starts), (bg, starts)
        for (pid, st), c, log in zip(bg.items(), starts, logs):  # in the order started
            if command_words(c)[0] in KETTLE_SERVERS:
                assert st == 0, "README line %d: %r exited %d when stopped; its log:\n%s" % (
                    b.line, c, st, log[-2000:])
        for name, ok in FILES.items():
            p = os.path.join(wd, name)
            if any(name in c for c in cmds):
                assert os.path.exists(p) and ok(p), "README line %d: %s is not right" % (b.line, name)
        ran.append(b)
    missing = set(CHECKS) - seen
    assert not missing, "checks of lines the README no longer has: %s" % sorted(missing)
    for cmd in shown:
        assert cmd in seen, "the transcript's %r runs in no block" % cmd
    for want in ("A quick tour", "kettle-db", "kettle-bench and kettle-cli",
                 "Several kettled behind HAProxy"):
        assert any(want in s for s in sections), "no block of %r ran: %s" % (want, sections)


# ---- helpers the blocks call ---------------------------------------------------------

def listening(pid):
    """Does process pid hold a listening TCP socket?"""
    try:
        inodes = set()
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        for table in ("tcp", "tcp6"):
            with open("/proc/%d/net/%s" % (pid, table)) as f:
                for line in f.readlines()[1:]:
                    w = line.split()
                    if w[3] == "0A" and w[9] in inodes:
                        return True
    except OSError:
        return False
    return False


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def helper(argv):
    if argv[0] == "--listening":
        pid = int(argv[1])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if listening(pid):
                return 0
            if not alive(pid):
                print("README test: the server (pid %d) exited before it listened" % pid)
                return 1
            time.sleep(0.02)
        print("README test: the server (pid %d) did not listen within 60s" % pid)
        return 1
    if argv[0] == "--wait-exit":
        pid = int(argv[1])
        deadline = time.monotonic() + 60
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if alive(pid):
            print("README test: pid %d was left running by the block" % pid)
            os.kill(pid, signal.SIGKILL)
            return 1
        return 0
    if argv[0] == "--until-ctrl-c":
        # the command at a terminal of its own; Ctrl-C once it has shown
        # a few lines (or refreshed its line a few times)
        cmd = argv[2:]
        pid, fd = pty.fork()
        if pid == 0:
            os.execvp(cmd[0], cmd)
        sent = []

        def each(out, chunk):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            if not sent and out.count(b"\n") + out.count(b"\r") >= 8:
                os.write(fd, b"\x03")
                sent.append(True)
        if h.pump(fd, time.monotonic() + 120, each) is None:
            os.kill(pid, signal.SIGKILL)
        _, st = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(st)
    raise SystemExit("unknown helper %s" % argv[0])


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1].startswith("--"):
    sys.exit(helper(sys.argv[1:]))

os.environ.setdefault("KETTLE_TEST_TIMEOUT", "600")
h.main(globals())
