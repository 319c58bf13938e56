"""kettle-cli prints replies as redis-cli does: the same commands against
one redis-server through both clients give the same text, in the standard
form (integers, nil, quoted strings with escapes, arrays numbered and
nested, empty arrays, errors) and with --raw. Where kettle-cli differs on
purpose it is checked too: an error reply goes to stderr with exit status 1.
Skipped without redis-server and redis-cli."""
import os
import subprocess
import tempfile

import harness as h

SETUP = [
    ["SET", "s", "hello world"],
    ["SET", "n", "42"],
    ["RPUSH", "l", "a", "b c", 'q"uote', "new\nline", "\x01bin", "back\\slash", "tab\there"],
    ["RPUSH", "big"] + [str(i) for i in range(12)],
    ["HSET", "hh", "f1", "v1", "f2", "v2"],
]

# deterministic read-only commands: every reply type and shape
COMMANDS = [
    ["GET", "s"],
    ["GET", "n"],
    ["GET", "missing"],
    ["STRLEN", "s"],
    ["EXISTS", "s", "n", "missing"],
    ["TYPE", "l"],
    ["PING"],
    ["ECHO", "caf\xe9 \x7f \r \a \b"],
    ["LRANGE", "l", "0", "-1"],
    ["LRANGE", "big", "0", "-1"],
    ["LRANGE", "empty", "0", "-1"],
    ["HGETALL", "hh"],
    ["MGET", "s", "missing", "n"],
    ["EVAL", "return {1,{2,'x',{}},'y',false,{{{'deep'}}}}", "0"],
    ["EVAL", "return {1,2,3,4,5,6,7,8,9,10,{1,2}}", "0"],
    ["EVAL", "return {1, redis.error_reply('MY bad')}", "0"],
    ["EVAL", "return redis.status_reply('FINE')", "0"],
    ["EVAL", "return -7", "0"],
]

ERRORS = [
    ["NOSUCHCOMMAND", "a", "b"],
    ["GET"],
    ["EVAL", "return redis.error_reply('MY bad')", "0"],
    ["LRANGE", "s", "0", "-1"],
]


MODES = ("--no-raw", "--raw")


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, timeout=30, **kw)


def kcli():
    return h.program("kettle-cli")


def kc(port, *args, **kw):
    """kettle-cli -p port with args."""
    return run([kcli(), "-p", str(port)] + list(args), **kw)


def side_by_side(port, cmds, no_raw_flag=True):
    """Each command in each output mode through redis-cli and kettle-cli
    against port: (mode, cmd, redis-cli's run, kettle-cli's run). kettle-cli
    is given --no-raw only with no_raw_flag (without, its default applies)."""
    rcli = h.need("redis-cli")
    for mode in MODES:
        for cmd in cmds:
            kmode = [mode] if no_raw_flag or mode != "--no-raw" else []
            yield mode, cmd, run([rcli, "-p", str(port), mode] + cmd), kc(port, *(kmode + cmd))


def test_standard_and_raw_match_redis_cli():
    h.need("redis-cli")
    with h.start_redis() as r:
        with h.Client(r.port) as c:
            for cmd in SETUP:
                assert not isinstance(c.call(*cmd), h.RespError)
        for mode, cmd, want, got in side_by_side(r.port, COMMANDS, no_raw_flag=False):
            assert got.returncode == 0, (cmd, got.stderr)
            assert got.stdout == want.stdout, "%s %s:\nredis-cli:  %r\nkettle-cli: %r" % (
                mode, cmd, want.stdout, got.stdout)
            assert got.stderr == b"", got.stderr


def test_error_reply_on_stderr_with_status_1():
    h.need("redis-cli")
    with h.start_redis() as r:
        with h.Client(r.port) as c:
            c.call("SET", "s", "a string")
        for mode, cmd, want, got in side_by_side(r.port, ERRORS):
            assert got.returncode == 1, (cmd, got.returncode)
            assert got.stdout == b"", got.stdout
            # the same text as redis-cli prints (to stdout, exit 0)
            assert got.stderr.strip() == want.stdout.strip(), (mode, cmd, want.stdout, got.stderr)
            if mode == "--no-raw":
                assert got.stderr.startswith(b"(error) "), got.stderr
            else:
                assert not got.stderr.startswith(b"(error)"), got.stderr


def test_text_replies_print_as_lines_like_redis_cli():
    h.need("redis-cli")
    with h.start_redis() as r:
        # deterministic text blobs: the same bytes as redis-cli, in both forms
        for mode, cmd, want, got in side_by_side(r.port, (["INFO", "keyspace"],
                                                          ["INFO", "nosuchsection"])):
            assert got.returncode == 0 and got.stdout == want.stdout, (mode, cmd, want, got)
        got = kc(r.port, "client", "info")
        assert got.returncode == 0 and got.stdout.startswith(b"id=") and got.stdout.count(b"\n") == 1
        got = kc(r.port, "INFO")
        lines = got.stdout.decode().splitlines()
        assert "# Server" in [l.strip() for l in lines] and len(lines) > 20, got.stdout[:200]
        # a text command's other replies keep the standard form
        got = kc(r.port, "CLIENT", "LIST", "NOSUCHARG")
        assert got.returncode == 1 and got.stderr.startswith(b"(error) "), got
    with h.Server("kettled") as kd:
        got = kc(kd.port, "INFO", "server")
        assert got.returncode == 0
        text = got.stdout.decode()
        assert text.startswith("# Server\r\n") and "\nserver_name:kettled\r\n" in text, text
        got = kc(kd.port, "CLIENT", "LIST")
        assert got.stdout.startswith(b"id=") and b'"' not in got.stdout, got.stdout
        # --raw keeps its meaning, the bytes as they are; a plain bulk stays quoted
        raw = kc(kd.port, "--raw", "INFO", "server")
        assert raw.stdout.startswith(b"# Server\r\n"), raw.stdout[:40]
        got = kc(kd.port, "ECHO", "a\r\nb")
        assert got.stdout == b'"a\\r\\nb"\n', got.stdout


def test_help_one_shot():
    with h.Server("kettled") as kd:
        got = kc(kd.port, "help", "MGET")
        assert got.returncode == 0, got
        assert got.stdout.startswith(b"\n  MGET key [key ...]\n  summary: Fetch several numbers"), got.stdout
        got = kc(kd.port, "help", "NOSUCH")
        assert got.returncode == 1 and b"No help for 'NOSUCH'" in got.stdout, got
        got = kc(kd.port, "help", "@string")
        assert b"  GET key\n" in got.stdout and b"  MGETSEQ key [key ...]" in got.stdout, got.stdout
    with h.start_redis() as r:
        got = kc(r.port, "help", "set")
        assert got.stdout.startswith(b"\n  SET key value [NX | XX] [GET] [EX seconds | PX"), got.stdout
        assert b"group: string" in got.stdout


def test_connection_failure():
    port = h.free_port()
    got = kc(port, "PING")
    assert got.returncode == 1
    assert b"Could not connect to 127.0.0.1:%d" % port in got.stderr, got.stderr
    assert got.stdout == b""
    got = run([kcli(), "-h", "no-such-host.invalid", "PING"])
    assert got.returncode == 1 and got.stderr, got
    got = kc("notaport", "PING")
    assert got.returncode == 2


def test_auth_and_unix_socket():
    h.need("redis-cli")
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "r.sock")
        port = h.free_port()
        r = h.Proc([h.need("redis-server"), "--port", port, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--requirepass", "s3cret", "--unixsocket", sock])

        def up():
            try:
                with h.Client(port, timeout=1) as c:
                    return c.call("AUTH", "s3cret") == "OK"
            except OSError:
                return False
        with r:
            h.wait_for(up, 10, "redis-server with a password")
            got = kc(port, "-a", "s3cret", "PING")
            assert got.returncode == 0 and got.stdout == b"PONG\n", got
            got = kc(port, "-a", "wrong", "PING")
            assert got.returncode == 1 and b"AUTH failed" in got.stderr, got
            got = kc(port, "PING")
            assert got.returncode == 1 and got.stderr.startswith(b"(error) NOAUTH"), got
            got = run([kcli(), "-s", sock, "-a", "s3cret", "ECHO", "via unix"])
            assert got.returncode == 0 and got.stdout == b'"via unix"\n', got


def test_commands_from_stdin():
    rcli = h.need("redis-cli")
    with h.start_redis() as r:
        lines = b'SET k "two words"\nGET k\nRPUSH q 1 2 3\nLRANGE q 0 -1\n\nGET nothing\nECHO "a\\tb\\x41"\n'
        want = run([rcli, "-p", str(r.port), "--no-raw"], input=lines)
        kc(r.port, "DEL", "k", "q")
        got = kc(r.port, input=lines)
        assert got.returncode == 0, got.stderr
        assert got.stdout == want.stdout, (want.stdout, got.stdout)
        # a failing line makes the status 1, the other lines still run
        got = kc(r.port, input=b"NOSUCH\nPING\n")
        assert got.returncode == 1
        assert got.stdout.endswith(b"PONG\n") and b"(error) ERR unknown command" in got.stdout
        got = kc(r.port, input=b'GET "unbalanced\nPING\n')
        assert got.returncode == 1 and b"Invalid argument" in got.stderr
        assert got.stdout == b"PONG\n"


def test_against_kettle_db():
    if not os.access(os.path.join(h.BUILDDIR, "kettle-db"), os.X_OK):
        print("kettle-db not built: part skipped")
        return
    with h.Server("kettle-db", "--latency", "none") as db:
        got = kc(db.port, "MGET", "1", "2", "3")
        assert got.returncode == 0 and got.stdout == b'1) "1"\n2) "2"\n3) "3"\n', got
        got = kc(db.port, "--raw", "GET", "7")
        assert got.stdout == b"7\n", got


def test_against_kettled():
    if not os.access(os.path.join(h.BUILDDIR, "kettled"), os.X_OK):
        print("kettled not built: part skipped")
        return
    with h.Server("kettled") as kd:
        got = kc(kd.port, "MGET", "1", "2", "3")
        assert got.returncode == 0 and got.stdout == b'1) "1"\n2) "2"\n3) "3"\n', got
        got = kc(kd.port, "--raw", "MGET", "4", "5")
        assert got.returncode == 0 and got.stdout == b"4\n5\n", got
        got = kc(kd.port, "NOSUCHCOMMAND")
        assert got.returncode == 1 and got.stderr.startswith(b"(error) ERR"), got


h.main(globals())
