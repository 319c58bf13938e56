#!/usr/bin/env python3
"""The kettle service in Python asyncio, as a benchmark peer.

The same job as kettled: a RESP server whose GET n / MGET n... fetch each
number from the database over the network and answer when they arrive.
Written the way an asyncio programmer would: one pipelined database
connection per client connection and database server, asyncio.gather for
MGET, pipelined client requests answered in order.

    python3 kettle_asyncio.py --listen 127.0.0.1:7400 --backend 127.0.0.1:7380 [--backend ...]
"""
import argparse
import asyncio
import collections
import sys


def encode_command(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


async def read_reply(reader):
    """One RESP reply from the database, as raw bytes (passed through)."""
    line = await reader.readuntil(b"\r\n")
    t = line[:1]
    if t in (b"+", b"-", b":"):
        return line
    if t == b"$":
        n = int(line[1:-2])
        if n < 0:
            return line
        return line + await reader.readexactly(n + 2)
    if t == b"*":
        n = int(line[1:-2])
        parts = [line]
        for _ in range(max(n, 0)):
            parts.append(await read_reply(reader))
        return b"".join(parts)
    raise ValueError("bad reply from database")


class Backend:
    """A pipelined connection to one database: requests go out at once,
    replies resolve the waiting futures in order."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.pending = collections.deque()
        self.writer = None
        self.connecting = None

    async def _connect(self):
        reader, self.writer = await asyncio.open_connection(self.host, self.port)
        asyncio.ensure_future(self._read_loop(reader))

    async def _read_loop(self, reader):
        try:
            while True:
                reply = await read_reply(reader)
                fut = self.pending.popleft()
                if not fut.done():
                    fut.set_result(reply)
        except Exception as e:  # connection lost: fail every waiter
            while self.pending:
                fut = self.pending.popleft()
                if not fut.done():
                    fut.set_result(b"-ERR backend %s:%d: %s\r\n" % (
                        self.host.encode(), self.port, str(e).encode()))
            self.writer = None

    async def get(self, key):
        if self.writer is None:
            if self.connecting is None:
                self.connecting = asyncio.ensure_future(self._connect())
            try:
                await self.connecting
            finally:
                self.connecting = None
        fut = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        self.writer.write(encode_command(b"GET", key))
        return await fut

    def close(self):
        if self.writer:
            self.writer.close()


async def parse_request(reader):
    """One client request (RESP array of bulk strings or inline) or None on EOF."""
    line = await reader.readline()
    if not line:
        return None
    if line[:1] != b"*":
        return line.split()
    n = int(line[1:].strip())
    args = []
    for _ in range(n):
        hdr = await reader.readline()
        size = int(hdr[1:].strip())
        args.append((await reader.readexactly(size + 2))[:-2])
    return args


def bulk_value(reply):
    """A database reply is already RESP: an MGET element is used as is."""
    return reply


async def handle(args, backends):
    cmd = args[0].upper() if args else b""
    if cmd == b"PING":
        return b"+PONG\r\n"
    if cmd == b"GET" and len(args) == 2:
        return await backends[shard(args[1], len(backends))].get(args[1])
    if cmd == b"MGET" and len(args) >= 2:
        replies = await asyncio.gather(*(backends[shard(k, len(backends))].get(k)
                                         for k in args[1:]))
        return b"*%d\r\n" % len(replies) + b"".join(replies)
    if cmd == b"QUIT":
        return b"+OK\r\n"
    return b"-ERR unknown command or wrong number of arguments\r\n"


def shard(key, n):
    try:
        return int(key) % n
    except ValueError:
        return 0


async def serve_client(reader, writer, addrs):
    backends = [Backend(h, p) for h, p in addrs]
    replies = asyncio.Queue()

    async def writer_loop():
        while True:
            task = await replies.get()
            if task is None:
                break
            writer.write(await task)
            if replies.empty():
                await writer.drain()

    wtask = asyncio.ensure_future(writer_loop())
    try:
        while True:
            args = await parse_request(reader)
            if args is None:
                break
            if not args:
                continue
            replies.put_nowait(asyncio.ensure_future(handle(args, backends)))
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    replies.put_nowait(None)
    try:
        await wtask
    except ConnectionError:
        pass
    for b in backends:
        b.close()
    writer.close()


def hostport(s):
    host, port = s.rsplit(":", 1)
    return host.strip("[]"), int(port)


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:7400")
    ap.add_argument("--backend", action="append", default=[])
    a = ap.parse_args()
    addrs = [hostport(b) for b in (a.backend or ["127.0.0.1:7380"])]
    host, port = hostport(a.listen)
    server = await asyncio.start_server(lambda r, w: serve_client(r, w, addrs), host, port,
                                        backlog=4096)
    sock = server.sockets[0].getsockname()
    print("listening on %s:%d" % (sock[0], sock[1]), file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
