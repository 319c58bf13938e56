"""harness.py - what kettle's integration tests share.

Start real programs on ephemeral loopback ports, talk RESP to them, wait on
conditions with deadlines (never sleep-and-hope), and clean up on any exit.

    import harness as h
    db = h.Server("kettle-db", "--latency", "fixed 5ms")   # waits for "listening on"
    c = h.Client(db.port)
    assert c.call("GET", "7") == b"7"
    h.wait_for(lambda: h.fd_count(db.pid) < 20, 5, "fds back to baseline")
    db.stop()          # SIGTERM, waits, checks exit 0 and no sanitizer report
    h.main(globals())  # runs every test_* function, exit 0/1 (77 via h.skip)

Programs come from $KETTLE_BUILDDIR (set by make check). Each test file is
bounded by an alarm (KETTLE_TEST_TIMEOUT, default 150 s).
"""
import atexit
import http.client
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

BUILDDIR = os.environ.get("KETTLE_BUILDDIR") or os.getcwd()
SRCDIR = os.environ.get("KETTLE_SRCDIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "==ERROR:")
_procs = []


class Skip(Exception):
    pass


def skip(reason):
    """Skip the whole file (exit 77) with a reason."""
    raise Skip(reason)


def program(name):
    """Path of a program built by the project (top of the build tree)."""
    path = os.path.join(BUILDDIR, name)
    if not os.access(path, os.X_OK):
        raise Skip("%s not built at %s" % (name, path))
    return path


def need(cmd):
    """Path of an external command, or skip the file."""
    path = shutil.which(cmd)
    if path is None:
        raise Skip("%s not installed" % cmd)
    return path


def wait_for(pred, timeout, what="condition", interval=0.01):
    """Poll pred() until it returns a true value, which is returned;
    fail with `what` when timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)
        interval = min(interval * 1.5, 0.1)


def free_port():
    """A currently free TCP port on 127.0.0.1 (for peers that cannot bind :0)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Stops:
    """What has a stop() ends a `with` block with it: for a program, the
    checks of Proc.stop (exit status, no sanitizer report)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Proc(Stops):
    """A child process with its stderr (and stdout) captured to a file."""

    def __init__(self, argv, env=None, stdin=None, preexec_fn=None):
        self.argv = [str(a) for a in argv]
        self.logfile = tempfile.NamedTemporaryFile(prefix="kettle-test-", suffix=".log", delete=False)
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        if env:
            e.update(env)
        self.p = subprocess.Popen(self.argv, stdout=self.logfile, stderr=subprocess.STDOUT,
                                  stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  env=e, preexec_fn=preexec_fn)
        self.pid = self.p.pid
        _procs.append(self)

    def log(self):
        with open(self.logfile.name, "r", errors="replace") as f:
            return f.read()

    def wait_log(self, pattern, timeout=10):
        """Wait until the output matches the regex; returns the match."""
        rx = re.compile(pattern)

        def look():
            m = rx.search(self.log())
            if m:
                return m
            if self.p.poll() is not None:
                m = rx.search(self.log())
                if m:
                    return m
                raise AssertionError("%s exited (%s) before printing /%s/:\n%s" % (
                    self.argv[0], self.p.returncode, pattern, self.log()[-3000:]))
            return None
        return wait_for(look, timeout, "/%s/ in %s output" % (pattern, os.path.basename(self.argv[0])))

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def wait(self, timeout=30):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s did not exit within %ss" % (self.argv[0], timeout))

    def stop(self, sig=None, timeout=30, expect=0):
        """Signal (default SIGTERM), wait for exit, check the exit status and
        that no sanitizer report was printed. Returns the exit status."""
        if sig is None:  # the default cannot name signal.SIGTERM: the method signal() shadows it here
            sig = signal.SIGTERM
        if self.alive():
            self.p.send_signal(sig)
        rc = self.wait(timeout)
        self.check_clean()
        if expect is not None and rc != expect:
            raise AssertionError("%s exited %s, expected %s:\n%s" % (
                self.argv[0], rc, expect, self.log()[-3000:]))
        return rc

    def check_clean(self):
        out = self.log()
        for mark in SANITIZER_MARKS:
            if mark in out:
                raise AssertionError("sanitizer report from %s:\n%s" % (self.argv[0], out[-6000:]))

    def kill(self):
        if self.alive():
            self.p.kill()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                pass


class Server(Proc):
    """Start a kettle program (or any argv[0] path) listening on an ephemeral
    port and wait for its `listening on ADDR` line. .host, .port, .addr."""

    def __init__(self, name, *args, listen="127.0.0.1:0", env=None, timeout=20, preexec_fn=None):
        path = name if os.sep in name else program(name)
        argv = [path]
        if listen is not None:
            argv += ["--listen", listen]
        argv += list(args)
        super().__init__(argv, env=env, preexec_fn=preexec_fn)
        m = self.wait_log(r"listening on (\S+):(\d+)", timeout)
        self.host, self.port = m.group(1).strip("[]"), int(m.group(2))
        self.addr = "%s:%d" % (self.host, self.port)


def run_bench(args, timeout=60):
    """Run kettle-bench --quiet --json with args; (exit status, the JSON
    report or None, stderr), after checking stderr for sanitizer reports."""
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    argv = [program("kettle-bench"), "--quiet", "--json", path] + [str(a) for a in args]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        for mark in SANITIZER_MARKS:
            assert mark not in r.stderr, r.stderr[-4000:]
        with open(path) as f:
            text = f.read()
        return r.returncode, (json.loads(text) if text else None), r.stderr
    finally:
        os.unlink(path)


def start_redis(*extra):
    """A redis-server on a free loopback port with persistence off."""
    exe = need("redis-server")
    port = free_port()
    p = Proc([exe, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
              "--daemonize", "no", "--protected-mode", "no"] + list(extra))
    p.port = port
    p.addr = "127.0.0.1:%d" % port

    def up():
        try:
            return Client(port, timeout=1).call("PING") == "PONG"
        except OSError:
            return False
    wait_for(up, 10, "redis-server to answer PING")
    return p


class RespError(Exception):
    """An error reply (returned by Client.call, not raised)."""

    def __eq__(self, other):
        return isinstance(other, RespError) and str(self) == str(other)

    def __hash__(self):
        return hash(str(self))


class Closed(Exception):
    pass


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Client:
    """A small blocking RESP2 client. Replies: simple string -> str,
    bulk -> bytes, integer -> int, array -> list, nil -> None,
    error -> RespError (returned)."""

    def __init__(self, port, host="127.0.0.1", timeout=10, unix=None):
        if unix:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(timeout)
            self.sock.connect(unix)
        else:
            self.sock = socket.create_connection((host, port), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def call(self, *args):
        self.send(encode(*args))
        return self.read_reply()

    def pipeline(self, cmds):
        self.send(b"".join(encode(*c) for c in cmds))
        return [self.read_reply() for _ in cmds]

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed("connection closed by peer")
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def read_reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RespError(rest.decode(errors="replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self.read_reply() for _ in range(n)]
        raise AssertionError("bad RESP reply line %r" % line)

    def read_raw(self, timeout=5):
        """Whatever bytes arrive (at least one) within timeout, b"" on EOF."""
        if self.buf:
            data, self.buf = self.buf, b""
            return data
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            raise AssertionError("no data within %ss" % timeout)
        return self.sock.recv(65536)

    def closed_by_peer(self, timeout=5):
        """True once the server has closed the connection (EOF or RST)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.sock], [], [], max(0, deadline - time.monotonic()))
            if not r:
                break
            try:
                if not self.sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True
        return False


# ---- raw sockets, for bytes the Client would not send or read ----


def raw(port, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until_closed(s, timeout=5):
    """(bytes received, "eof" | "reset") once the server ends the connection."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], max(0, deadline - time.monotonic()))
        if not r:
            break
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return data, "reset"
        if not chunk:
            return data, "eof"
        data += chunk
    raise AssertionError("connection still open after %ss; got %r" % (timeout, data[-300:]))


def read_n(s, n, timeout=5):
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < n:
        r, _, _ = select.select([s], [], [], max(0, deadline - time.monotonic()))
        assert r, "only %r of %d bytes within %ss" % (data[-200:], n, timeout)
        chunk = s.recv(n - len(data))
        assert chunk, "closed after %r" % data[-200:]
        data += chunk
    return data


def still_open(s, t=0.3):
    """Nothing but silence for t seconds (not closed)."""
    r, _, _ = select.select([s], [], [], t)
    if r:
        try:
            got = s.recv(65536, socket.MSG_PEEK)
        except ConnectionResetError:
            got = "RST"
        raise AssertionError("expected silence, got %r" % (got[:200],))


def pump(fd, deadline, each=None):
    """What a pseudo-terminal's program prints until it closes it (None
    past the deadline); each(chunk_so_far, chunk) is called as it comes."""
    out = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if not r:
            if each:
                each(out, b"")
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            return out
        out += chunk
        if each:
            each(out, chunk)
    return None


class Pty:
    """A program on a pseudo-terminal: .send() a line (ended with eol, the
    Enter key: "\\r" for a line editor, "\\n" otherwise), .expect() text in
    the output within timeout seconds (the text and all before it are
    consumed and returned), .wait() for the exit, .kill() at the end (or
    at the end of a `with` block)."""

    def __init__(self, argv, env, eol="\r", timeout=10):
        self.name = os.path.basename(argv[0])
        self.eol = eol.encode()
        self.timeout = timeout
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.out = b""
        self.reaped = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()

    def send(self, line):
        os.write(self.fd, line.encode() + self.eol)

    def expect(self, text, timeout=None):
        want = text.encode()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while want not in self.out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r in the output:\n%r" % (text, self.out[-2000:]))
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError("%s ended before %r:\n%r" % (self.name, text,
                                                                      self.out[-2000:]))
                self.out += chunk
        i = self.out.index(want) + len(want)
        before, self.out = self.out[:i], self.out[i:]
        return before

    def wait(self, timeout=None):
        """The exit code, once the program has exited by itself."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            # drain so that the child never blocks writing to the terminal
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if r:
                try:
                    os.read(self.fd, 65536)
                except OSError:
                    pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.reaped = True
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        self.kill()
        raise AssertionError("%s did not exit" % self.name)

    def kill(self):
        """SIGKILL unless it has exited already; reap it, close the terminal."""
        if not self.reaped:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
            self.reaped = True
            os.close(self.fd)


def http_get(port, method="GET", path="/metrics"):
    """One HTTP request to 127.0.0.1:port: (the response, its body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r, body


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kb(pid, field="VmRSS"):
    """A size from /proc/PID/status in kB: the resident set, or another
    field such as VmHWM (its peak)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """utime+stime of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def info(client, section=None):
    """INFO parsed into a dict of key -> str."""
    raw = client.call("INFO", section) if section else client.call("INFO")
    assert isinstance(raw, bytes), raw
    out = {}
    for line in raw.decode().splitlines():
        if line and not line.startswith("#") and ":" in line:
            k, v = line.split(":", 1)
            out[k] = v
    return out


def _cleanup():
    for p in _procs:
        p.kill()
        try:
            os.unlink(p.logfile.name)
        except OSError:
            pass


atexit.register(_cleanup)



# ---- Prometheus text format ---------------------------------------------

PROM_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$')


def prom_samples(text):
    """{name{labels}: value} of every sample line of a /metrics page."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            m = PROM_SAMPLE.match(line)
            assert m, "not a sample line: %r" % line
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def promtool_check(text):
    """promtool check metrics passes on the page, silently."""
    exe = need("promtool")
    r = subprocess.run([exe, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
        "promtool check metrics (exit %d):\n%s%s" % (r.returncode, r.stdout, r.stderr)


def main(ns):
    """Run every test_* function of the module namespace, in file order;
    print one line each and a summary; exit 0, 1, or 77 when skipped."""
    timeout = int(os.environ.get("KETTLE_TEST_TIMEOUT", "150"))

    def on_alarm(sig, frame):
        raise AssertionError("test file exceeded %ds" % timeout)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(timeout)
    only = sys.argv[1:]
    tests = [(n, f) for n, f in ns.items() if n.startswith("test_") and callable(f)
             and (not only or n in only)]
    passed = failed = 0
    try:
        for name, fn in tests:
            t0 = time.monotonic()
            try:
                fn()
                passed += 1
                print("ok   %s (%.2fs)" % (name, time.monotonic() - t0), flush=True)
            except Skip:
                raise
            except Exception:
                failed += 1
                print("FAIL %s (%.2fs)" % (name, time.monotonic() - t0), flush=True)
                traceback.print_exc()
                sys.stdout.flush()
    except Skip as e:
        if failed or passed:
            # A skip is a statement about the whole file, made before any
            # test ran: one raised later would hide what already ran (and
            # a failure must never turn into a skip).
            failed += 1
            print("FAIL %s: skipped after %d test(s) ran: %s" % (name, passed + failed - 1, e))
        else:
            print("SKIP: %s" % e)
            _cleanup()
            os._exit(77)
    for p in _procs:
        if not p.alive():
            try:
                p.check_clean()
            except AssertionError as e:
                failed += 1
                print("FAIL sanitizer: %s" % e)
    print("%d passed, %d failed" % (passed, failed))
    _cleanup()
    sys.stdout.flush()
    os._exit(1 if failed else 0)
