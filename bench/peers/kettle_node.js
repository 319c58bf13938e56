#!/usr/bin/env node
// The kettle service in Node.js, as a benchmark peer.
//
// The same job as kettled: a RESP server whose GET n / MGET n... fetch each
// number from the database over the network and answer when they arrive.
// Written the way a Node programmer would: one pipelined database connection
// per client connection and database server, Promise.all for MGET, pipelined
// client requests answered in order.
//
//   node kettle_node.js --listen 127.0.0.1:7401 --backend 127.0.0.1:7380 [--backend ...]
'use strict';
const net = require('net');

function hostport(s) {
  const i = s.lastIndexOf(':');
  return [s.slice(0, i).replace(/^\[|\]$/g, ''), parseInt(s.slice(i + 1), 10)];
}

const args = process.argv.slice(2);
let listen = '127.0.0.1:7401';
const backends = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--listen') listen = args[++i];
  else if (args[i] === '--backend') backends.push(hostport(args[++i]));
}
if (backends.length === 0) backends.push(['127.0.0.1', 7380]);

// Length of one complete RESP reply at buf[pos..], or -1 if incomplete.
function replyEnd(buf, pos) {
  const nl = buf.indexOf('\r\n', pos);
  if (nl < 0) return -1;
  const t = buf[pos];
  if (t === 0x2b || t === 0x2d || t === 0x3a) return nl + 2;        // + - :
  const n = parseInt(buf.toString('latin1', pos + 1, nl), 10);
  if (t === 0x24) {                                                  // $
    if (n < 0) return nl + 2;
    return buf.length >= nl + 2 + n + 2 ? nl + 2 + n + 2 : -1;
  }
  if (t === 0x2a) {                                                  // *
    let p = nl + 2;
    for (let k = 0; k < n; k++) {
      p = replyEnd(buf, p);
      if (p < 0) return -1;
    }
    return p;
  }
  throw new Error('bad reply from database');
}

class Backend {
  constructor(host, port) {
    this.pending = [];
    this.buf = Buffer.alloc(0);
    this.name = host + ':' + port;
    this.sock = net.connect(port, host);
    this.sock.setNoDelay(true);
    this.sock.on('data', (d) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      let pos = 0;
      for (;;) {
        const end = replyEnd(this.buf, pos);
        if (end < 0) break;
        this.pending.shift()(this.buf.subarray(pos, end));
        pos = end;
      }
      this.buf = pos === this.buf.length ? Buffer.alloc(0) : Buffer.from(this.buf.subarray(pos));
    });
    const fail = (e) => {
      const msg = Buffer.from('-ERR backend ' + this.name + ': ' + (e ? e.message : 'closed') + '\r\n');
      for (const r of this.pending.splice(0)) r(msg);
    };
    this.sock.on('error', fail);
    this.sock.on('close', () => fail(null));
  }
  get(key) {
    return new Promise((resolve) => {
      this.pending.push(resolve);
      this.sock.write('*2\r\n$3\r\nGET\r\n$' + Buffer.byteLength(key) + '\r\n' + key + '\r\n');
    });
  }
  close() { this.sock.destroy(); }
}

function shard(key, n) {
  const v = parseInt(key, 10);
  return Number.isNaN(v) ? 0 : ((v % n) + n) % n;
}

// One request from buf[pos..]: [args, end] or null if incomplete.
function parseRequest(buf, pos) {
  if (buf[pos] !== 0x2a) {                                           // inline
    const nl = buf.indexOf('\n', pos);
    if (nl < 0) return null;
    return [buf.toString('latin1', pos, nl).trim().split(/\s+/).filter(Boolean), nl + 1];
  }
  let nl = buf.indexOf('\r\n', pos);
  if (nl < 0) return null;
  const n = parseInt(buf.toString('latin1', pos + 1, nl), 10);
  let p = nl + 2;
  const argv = [];
  for (let k = 0; k < n; k++) {
    nl = buf.indexOf('\r\n', p);
    if (nl < 0) return null;
    const len = parseInt(buf.toString('latin1', p + 1, nl), 10);
    if (buf.length < nl + 2 + len + 2) return null;
    argv.push(buf.toString('latin1', nl + 2, nl + 2 + len));
    p = nl + 2 + len + 2;
  }
  return [argv, p];
}

async function handle(argv, dbs) {
  const cmd = (argv[0] || '').toUpperCase();
  if (cmd === 'PING') return Buffer.from('+PONG\r\n');
  if (cmd === 'GET' && argv.length === 2) return dbs[shard(argv[1], dbs.length)].get(argv[1]);
  if (cmd === 'MGET' && argv.length >= 2) {
    const items = await Promise.all(argv.slice(1).map((k) => dbs[shard(k, dbs.length)].get(k)));
    return Buffer.concat([Buffer.from('*' + items.length + '\r\n'), ...items]);
  }
  if (cmd === 'QUIT') return Buffer.from('+OK\r\n');
  return Buffer.from('-ERR unknown command or wrong number of arguments\r\n');
}

const server = net.createServer((client) => {
  client.setNoDelay(true);
  let dbs = null;
  let buf = Buffer.alloc(0);
  let chain = Promise.resolve();           // replies leave in request order
  client.on('data', (d) => {
    if (!dbs) dbs = backends.map(([h, p]) => new Backend(h, p));
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    let pos = 0;
    for (;;) {
      const r = parseRequest(buf, pos);
      if (!r) break;
      pos = r[1];
      if (r[0].length === 0) continue;
      const reply = handle(r[0], dbs);
      chain = chain.then(() => reply).then((out) => { if (!client.destroyed) client.write(out); });
    }
    buf = pos === buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(pos));
  });
  const done = () => { if (dbs) dbs.forEach((b) => b.close()); };
  client.on('close', done);
  client.on('error', () => {});
});
const [host, port] = hostport(listen);
server.listen({ host, port, backlog: 4096 }, () => {
  const a = server.address();
  process.stderr.write('listening on ' + a.address + ':' + a.port + '\n');
});
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
