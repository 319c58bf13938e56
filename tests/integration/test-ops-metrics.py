"""The metrics endpoint served by a real program (metrics-demo, a few
metrics of every kind): the page passes `promtool check metrics` (parse and
lint) and says what was rendered; HTTP clients get the right status for
other paths, methods and malformed requests; a scraper that never reads
a long page does not stop others from being served and is reset at the
write timeout; junk without an end gets 431 and holds nothing; past the
connection limit a scraper waits until an idle connection is closed by
the read timeout, then is served."""
import socket

import harness as h



def demo(*args):
    return h.Server(h.program("tests/integration/metrics-demo"), *args)






def test_page_passes_promtool():
    d = demo()
    r, body = h.http_get(d.port)
    assert r.status == 200, (r.status, body)
    assert r.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    assert int(r.getheader("Content-Length")) == len(body)
    text = body.decode()
    h.promtool_check(text)
    s = h.prom_samples(text)
    assert s["demo_scrapes_total"] == 1
    assert s['demo_commands_total{cmd="get"}'] == 10
    assert s['demo_commands_total{cmd="odd \\"quoted\\" \\\\ name\\nline2"}'] == 30
    assert s['demo_commands_total{cmd="caf\u00e9"}'] == 40
    assert s["demo_temperature_celsius"] == -3.25
    assert s['demo_backend_up{backend="[::1]:7380"}'] == 0
    b = 'demo_fetch_duration_seconds_bucket{backend="[::1]:7380",le="%s"}'
    assert s[b % "0.0025"] == 0 and s[b % "0.005"] == 1 and s[b % "+Inf"] == 1
    assert s['demo_fetch_duration_seconds_count{backend="[::1]:7380"}'] == 1
    assert abs(s['demo_fetch_duration_seconds_sum{backend="[::1]:7380"}'] - 0.003) < 1e-9
    assert s["process_resident_memory_bytes"] > 0
    # a second scrape sees the first counted
    _, body = h.http_get(d.port)
    assert h.prom_samples(body.decode())["demo_metrics_requests_total"] == 1
    d.stop()


def test_statuses():
    d = demo()
    r, body = h.http_get(d.port, "HEAD")
    assert r.status == 200 and body == b"" and int(r.getheader("Content-Length")) > 100
    r, body = h.http_get(d.port, path="/")
    assert r.status == 404, r.status
    r, body = h.http_get(d.port, path="/metrics?x=1")
    assert r.status == 200
    r, body = h.http_get(d.port, "POST")
    assert r.status == 405 and r.getheader("Allow") == "GET, HEAD", (r.status, r.getheaders())
    for raw, status in ((b"HELLO\r\n\r\n", 400), (b"GET /metrics HTTP/2.0\r\n\r\n", 505),
                        (b"*1\r\n$4\r\nPING\r\n\r\n", 400)):
        with socket.create_connection(("127.0.0.1", d.port), timeout=30) as s:
            s.sendall(raw)
            got = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        assert got.startswith(b"HTTP/1.1 %d " % status), (raw, got)
    d.stop()


def test_slow_scraper_and_junk():
    # a scraper asks for a page of several MiB (the first page is that
    # long) and never reads it
    d = demo("--filler", "150000", "--write-timeout", "3000")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", d.port))
    slow.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    m = d.wait_log(r"page 1: (\d+) bytes", 30)
    assert int(m.group(1)) > 3 << 20, m.group(0)
    # others are served meanwhile (the answer is queued, not written in a loop)
    r, body = h.http_get(d.port)
    s = h.prom_samples(body.decode())
    assert r.status == 200 and s["demo_scrapes_total"] == 2, body[:300]
    assert "demo_filler" not in body.decode()
    # the slow one is reset at the write timeout
    h.wait_for(lambda: h.prom_samples(h.http_get(d.port)[1].decode())["demo_metrics_timeouts_total"] >= 1,
               30, "the slow scraper's write timeout")
    slow.settimeout(30)
    got = 0
    try:
        while True:
            chunk = slow.recv(1 << 16)
            if not chunk:
                break
            got += len(chunk)
    except ConnectionResetError:
        got = -1
    assert got == -1, "expected a reset, got %d bytes and EOF" % got
    slow.close()

    # 1 MiB without a line end: 431 once past max_request, nothing kept
    rss0 = h.rss_kb(d.pid)
    with socket.create_connection(("127.0.0.1", d.port), timeout=30) as s:
        try:
            s.sendall(b"GET /" + b"a" * (1 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass
        got = s.recv(4096)
    assert got.startswith(b"HTTP/1.1 431 "), got
    # the 431 connection goes once this side has closed: a scrape then
    # finds itself alone
    h.wait_for(lambda: h.prom_samples(h.http_get(d.port)[1].decode())["demo_metrics_clients"] == 1, 20,
               "the junk connection to be closed")
    assert h.rss_kb(d.pid) - rss0 < 16 << 10
    d.stop()


def test_connection_limit():
    d = demo("--max-clients", "2", "--read-timeout", "1000")
    fds = h.fd_count(d.pid)
    idle = [socket.create_connection(("127.0.0.1", d.port), timeout=30) for _ in range(2)]
    # once both are accepted, accepting pauses (a connection accepted in the
    # same burst as the one that reached the limit would be closed at once)
    h.wait_for(lambda: h.fd_count(d.pid) == fds + 2, 20, "two connections accepted")
    third = socket.create_connection(("127.0.0.1", d.port), timeout=30)
    third.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    # the third is answered once the read timeout has closed the idle ones
    got = b""
    while True:
        chunk = third.recv(1 << 16)
        if not chunk:
            break
        got += chunk
    assert got.startswith(b"HTTP/1.1 200 "), got[:200]
    for s in idle:
        s.settimeout(30)
        try:
            assert s.recv(4096) == b"", "an idle connection got data"
        except ConnectionResetError:
            pass
        s.close()
    third.close()
    body = got.split(b"\r\n\r\n", 1)[1].decode()
    s = h.prom_samples(body)
    assert s["demo_metrics_timeouts_total"] >= 1
    assert s["demo_metrics_clients"] <= 2
    d.stop()


h.main(globals())
