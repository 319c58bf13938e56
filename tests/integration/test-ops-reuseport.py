"""reuseport: two kettled on one port (`reuseport yes`, as kettled@.service
runs them) both get connections, each counting its own in INFO; stopping
one (SIGTERM) closes its listener at once and drains its own clients (a
slow request in flight is still answered), while the other's clients go on
being served and every new connection, during the drain and after it, is
served by the survivor. Without reuseport the second one cannot bind."""
import signal

import harness as h


def listeners(port):
    """TCP sockets listening on port (IPv4), from /proc/net/tcp."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                n += 1
    return n


def pid_of(c):
    return int(h.info(c, "server")["process_id"])


def test_two_instances_share_a_port():
    port = h.free_port()
    listen = "127.0.0.1:%d" % port
    # k1 answers slowly, so that its drain has a request to finish
    k1 = h.Server("kettled", "--reuseport", "yes", "--embedded-latency", "fixed 1500ms",
                  listen=listen)
    k2 = h.Server("kettled", "--reuseport", "yes", listen=listen)
    assert k1.port == k2.port == port
    assert listeners(port) == 2

    # connect until both have some (the kernel hashes each connection to
    # one of them); 400 is only a safety net
    mine = {k1.pid: [], k2.pid: []}
    for _ in range(400):
        c = h.Client(port)
        mine[pid_of(c)].append(c)
        if len(mine[k1.pid]) >= 2 and len(mine[k2.pid]) >= 2:
            break
    assert len(mine[k1.pid]) >= 2 and len(mine[k2.pid]) >= 2, {p: len(v) for p, v in mine.items()}
    for pid, cs in mine.items():
        clients = h.info(cs[0], "clients")
        assert int(clients["connected_clients"]) == len(cs), (pid, clients, len(cs))
        assert int(clients["total_connections_received"]) == len(cs)
    for c in mine[k2.pid]:
        assert c.call("GET", "42") == b"42"

    # a request in flight on k1, then SIGTERM
    slow = mine[k1.pid][0]
    slow.send(h.encode("GET", "7"))
    h.wait_for(lambda: int(h.info(mine[k1.pid][1], "clients")["blocked_clients"]) == 1, 30,
               "k1's request in flight")
    k1.signal(signal.SIGTERM)
    # its listener closes at once; the other one stays
    h.wait_for(lambda: listeners(port) == 1, 30, "k1's listener to close")
    # new connections are served by k2, while k1 drains and after
    before = int(h.info(mine[k2.pid][0], "clients")["total_connections_received"])
    fresh = []
    for i in range(20):
        c = h.Client(port)
        assert pid_of(c) == k2.pid
        assert c.call("GET", str(i)) == str(i).encode()
        fresh.append(c)
    # the drain answered k1's request, then k1 exits cleanly
    assert slow.read_reply() == b"7"
    assert k1.stop(expect=0) == 0
    # k2's clients were not touched
    for c in mine[k2.pid]:
        assert c.call("GET", "43") == b"43"
    clients = h.info(mine[k2.pid][0], "clients")
    assert int(clients["total_connections_received"]) == before + 20
    assert int(clients["connected_clients"]) == len(mine[k2.pid]) + 20
    for i in range(10):
        with h.Client(port) as c:
            assert c.call("GET", "9") == b"9"
            assert pid_of(c) == k2.pid
    for c in fresh + mine[k2.pid] + mine[k1.pid]:
        c.close()
    k2.stop()


def test_without_reuseport_the_port_is_taken():
    port = h.free_port()
    k1 = h.Server("kettled", listen="127.0.0.1:%d" % port)
    p = h.Proc([h.program("kettled"), "--listen", "127.0.0.1:%d" % port])
    assert p.wait(30) != 0
    assert "Address already in use" in p.log(), p.log()
    k1.stop()


h.main(globals())
