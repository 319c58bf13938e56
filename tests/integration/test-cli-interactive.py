"""kettle-cli's prompt, driven through a pseudo-terminal: commands are read
with line editing, replies printed, the history saved to the history file
(AUTH lines left out), a lost server shown as "not connected>" and
reconnected to. Skipped without redis-server (the peer)."""
import os
import tempfile

import harness as h


def env_with(home):
    e = dict(os.environ)
    e.update(HOME=home, TERM="dumb")
    e.pop("KETTLE_HISTFILE", None)
    e.setdefault("ASAN_OPTIONS", "detect_leaks=1")
    return e


def have_libedit():
    """Line editing and history come with libedit (configure's HAVE_LIBEDIT)."""
    try:
        with open(os.path.join(h.BUILDDIR, "config.h")) as f:
            return "#define HAVE_LIBEDIT 1" in f.read()
    except OSError:
        return False


def test_prompt_replies_and_history():
    exe = h.program("kettle-cli")
    r = h.start_redis()
    with tempfile.TemporaryDirectory() as home:
        with h.Pty([exe, "-p", str(r.port)], env_with(home)) as t:
            prompt = "127.0.0.1:%d> " % r.port
            t.expect(prompt)
            t.send('SET greeting "hello there"')
            t.expect("OK")
            t.expect(prompt)
            t.send("GET greeting")
            t.expect('"hello there"')
            t.send("RPUSH xs 1 2")
            t.expect("(integer) 2")
            t.send("LRANGE xs 0 -1")
            t.expect('1) "1"')
            t.expect('2) "2"')
            t.send("NOSUCH")
            t.expect("(error) ERR unknown command")
            t.send("AUTH secret-not-saved")
            t.expect("(error)")
            t.send('GET "unbalanced')
            t.expect("Invalid argument")
            t.send("quit")
            assert t.wait() == 0
        if not have_libedit():
            print("built without libedit: history not checked")
            r.stop()
            return
        hist_path = os.path.join(home, ".kettle_history")
        with open(hist_path, "rb") as f:
            hist = f.read().replace(b"\\040", b" ")  # libedit's file escapes blanks
        assert b"GET greeting" in hist and b"LRANGE xs 0 -1" in hist, hist
        assert b"secret-not-saved" not in hist, hist

        # the next session starts with that history (up arrow recalls it)
        with h.Pty([exe, "-p", str(r.port)], env_with(home)) as t:
            t.expect("> ")
            t.send("\x1b[A")  # up recalls the last line saved, NOSUCH; then Enter
            t.expect("NOSUCH")
            t.expect("(error) ERR unknown command")
            t.send("quit")
            assert t.wait() == 0
    r.stop()


def test_not_connected_then_reconnect():
    exe = h.program("kettle-cli")
    port = h.free_port()
    with tempfile.TemporaryDirectory() as home:
        with h.Pty([exe, "-p", str(port)], env_with(home)) as t:
            not_connected(t, port)


def not_connected(t, port):
    """The prompt without a server, then with one, then without again."""
    t.expect("Could not connect")
    t.expect("not connected> ")
    t.send("PING")
    t.expect("Could not connect")
    t.expect("not connected> ")
    r = h.Proc([h.need("redis-server"), "--port", port, "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no"])

    def up():
        try:
            with h.Client(port, timeout=1) as c:
                return c.call("PING") == "PONG"
        except OSError:
            return False
    h.wait_for(up, 10, "redis-server")
    t.send("ECHO back")
    t.expect('"back"')
    t.expect("127.0.0.1:%d> " % port)
    r.stop()
    h.wait_for(lambda: not up(), 10, "redis-server gone")
    t.send("PING")
    t.expect("Error: ")
    t.expect("not connected> ")
    t.send("exit")
    assert t.wait() == 0


h.main(globals())
