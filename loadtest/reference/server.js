// The ideal reference for `python -m loadtest hot`: the clap service's public contract
// (docs/PROTOCOL.md) served from memory by one Node process with the `ws` package.
//
// What it keeps: the websocket contract (join -> count at once, clap -> ack or error, count
// frames with article/total/seq/epoch/delta/at), one announcement per article per 100 ms window,
// the per-user cap of 50, idempotency by clap id, and log-derived positions: every article has
// an in-memory log, a clap's ack carries `seq` = its offset + 1, and a total's `seq` = the offset
// of the newest clap it includes + 1.
// What it leaves out, on purpose: durability (nothing is written anywhere), several processes,
// rate limits, the catalogue (any well-formed article is served) and pages. It is the fastest
// honest server of the same contract on this machine, the yardstick the gateway is measured
// against.
//
//   node server.js --port 8200 [--host 127.0.0.1] [--window-ms 100] [--max-lifetime-s 1800]
'use strict';

const http = require('http');
const crypto = require('crypto');
const { WebSocketServer, WebSocket } = require('ws');

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const HOST = args.host || '127.0.0.1';
const PORT = Number(args.port || 8200);
const WINDOW_MS = Number(args['window-ms'] || 100);
const MAX_LIFETIME_S = Number(args['max-lifetime-s'] || 1800);
const EPOCH = 1;
const USER_CAP = 50;
const MAX_MESSAGE = 1024;
const WRITE_BUFFER_HIGH = 64 * 1024;
const ID = /^[A-Za-z0-9_-]{1,64}$/;

// article -> {offset, total, seq, at, delta, users: Map(user -> {claps, ids:Set}), readers:Set, frame, changed}
const articles = new Map();
const tokens = new Map(); // token -> user
let framesWritten = 0;
let announcements = 0;

function articleOf(id) {
  let a = articles.get(id);
  if (!a) {
    a = { offset: 0, total: 0, seq: 0, at: 0, delta: 0, users: new Map(), readers: new Set(), changed: false };
    articles.set(id, a);
  }
  return a;
}

function countFrame(id, a, delta) {
  return Buffer.from(JSON.stringify({
    v: 1, type: 'count', article: id, total: a.total, delta, seq: a.seq, epoch: a.seq ? EPOCH : 0, at: a.at,
  }));
}

function sendJson(ws, doc) {
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(doc));
}

function refuse(ws, code, message, id) {
  const doc = { type: 'error', code, message };
  if (typeof id === 'string' && ID.test(id)) doc.id = id;
  sendJson(ws, doc);
}

function onClap(ws, doc) {
  const id = doc.id;
  if (typeof id !== 'string' || !ID.test(id) || typeof doc.article !== 'string' || !ID.test(doc.article)) {
    return refuse(ws, 'bad_request', 'article and id must match [A-Za-z0-9_-]{1,64}', id);
  }
  if (!Number.isInteger(doc.count) || doc.count < 1 || doc.count > 50) {
    return refuse(ws, 'bad_count', 'count must be an integer 1..50', id);
  }
  if (ws.user === null) return refuse(ws, 'unauthenticated', 'clapping needs a session token', id);
  const a = articleOf(doc.article);
  // The log: this clap is event `offset`; it is in every total from seq = offset + 1 on.
  const offset = a.offset++;
  let mine = a.users.get(ws.user);
  if (!mine) a.users.set(ws.user, (mine = { claps: 0, ids: new Set() }));
  if (!mine.ids.has(id)) {
    mine.ids.add(id);
    const counted = Math.min(doc.count, USER_CAP - mine.claps);
    mine.claps += counted;
    a.total += counted;
    a.delta += counted;
  }
  a.seq = offset + 1;
  a.at = Date.now();
  a.changed = true;
  sendJson(ws, { type: 'ack', id, seq: offset + 1 });
}

function onMessage(ws, raw, isBinary) {
  if (isBinary) return refuse(ws, 'bad_request', 'send JSON text frames, not binary');
  let doc;
  try {
    doc = JSON.parse(raw);
  } catch {
    return refuse(ws, 'bad_request', 'not JSON');
  }
  if (doc === null || typeof doc !== 'object') return refuse(ws, 'bad_request', 'not a JSON object');
  if (doc.type === 'clap') return onClap(ws, doc);
  if (doc.type !== 'join' && doc.type !== 'leave') return refuse(ws, 'bad_request', 'unknown type');
  if (typeof doc.article !== 'string' || !ID.test(doc.article)) {
    return refuse(ws, 'bad_request', 'article must match [A-Za-z0-9_-]{1,64}');
  }
  const a = articleOf(doc.article);
  if (doc.type === 'join') {
    a.readers.add(ws);
    ws.rooms.add(a);
    ws.send(countFrame(doc.article, a, 0), { binary: false });
  } else {
    a.readers.delete(ws);
    ws.rooms.delete(a);
  }
}

// One announcement per article per window, to every reader of it: the same bytes to each. A pass
// writes PASS_CHUNK frames, then lets the event loop turn before the next chunk: Node accepts one
// connection per turn, so a pass that outlasts the window written in one go (5,000 readers on a
// slow sitting) left new users' connections queued for seconds while readers got their frames.
const PASS_CHUNK = 250;

function announce(done) {
  const work = [];
  for (const [id, a] of articles) {
    if (!a.changed) continue;
    a.changed = false;
    work.push([countFrame(id, a, a.delta), [...a.readers]]);
    a.delta = 0;
    announcements++;
  }
  let item = 0;
  let next = 0;
  function chunk() {
    let budget = PASS_CHUNK;
    while (item < work.length && budget > 0) {
      const [frame, readers] = work[item];
      for (; next < readers.length && budget > 0; next++, budget--) {
        const ws = readers[next];
        // A reader whose socket is not draining skips this total; the next one is absolute.
        if (ws.readyState === WebSocket.OPEN && ws.bufferedAmount < WRITE_BUFFER_HIGH) {
          ws.send(frame, { binary: false });
          framesWritten++;
        }
      }
      if (next >= readers.length) {
        item++;
        next = 0;
      }
    }
    if (item < work.length) setImmediate(chunk);
    else done();
  }
  chunk();
}

function json(res, status, doc, headers = {}) {
  const body = JSON.stringify(doc);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body),
    Connection: 'close', ...headers });
  res.end(body);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const claps = url.pathname.match(/^\/api\/articles\/([^/]+)\/claps$/);
  if (req.method === 'POST' && url.pathname === '/api/session') {
    const user = 'u' + crypto.randomBytes(8).toString('hex');
    const token = crypto.randomBytes(16).toString('hex');
    tokens.set(token, user);
    return json(res, 200, { user, token }, { 'Set-Cookie': `clap_token=${token}; Path=/; HttpOnly` });
  }
  if (req.method === 'GET' && claps) {
    if (!ID.test(claps[1])) return json(res, 400, { error: 'bad_request', message: 'bad article id' });
    const a = articles.get(claps[1]);
    return json(res, 200, { article: claps[1], total: a ? a.total : 0, seq: a ? a.seq : 0, epoch: a && a.seq ? EPOCH : 0 });
  }
  if (req.method === 'GET' && url.pathname === '/api/claps') {
    // Many totals at once, as the gateway answers them (docs/PROTOCOL.md); the reference has no
    // catalogue, so nothing is ever not found.
    const asked = [...new Set(url.searchParams.getAll('articles').join(',').split(',').filter(Boolean))];
    if (!asked.length || asked.length > 100 || !asked.every((id) => ID.test(id))) {
      return json(res, 400, { error: 'bad_request', message: '1 to 100 valid article ids' });
    }
    const totals = asked.map((id) => {
      const a = articles.get(id);
      return { article: id, total: a ? a.total : 0, seq: a ? a.seq : 0, epoch: a && a.seq ? EPOCH : 0 };
    });
    return json(res, 200, { totals, not_found: [] });
  }
  const admin = url.pathname.match(/^\/api\/admin\/articles\/([^/]+)$/);
  if (req.method === 'PUT' && admin) {
    // The catalogue is left out: any well-formed article is served. Accepting the load tool's
    // publication keeps one way of starting a run for every server.
    if (!ID.test(admin[1])) return json(res, 400, { error: 'bad_request', message: 'bad article id' });
    return json(res, 200, { id: admin[1], title: url.searchParams.get('title') || admin[1] });
  }
  if (req.method === 'GET' && url.pathname === '/healthz') {
    return json(res, 200, { status: 'ok', gateway: 'reference', mode: 'reference', connections: wss.clients.size,
      rooms: articles.size });
  }
  if (req.method === 'GET' && url.pathname === '/stats') {
    return json(res, 200, { frames_written: framesWritten, announcements, connections: wss.clients.size });
  }
  return json(res, 404, { error: 'not_found', message: `nothing at ${url.pathname}` });
});

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_MESSAGE });

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname !== '/ws') {
    socket.destroy();
    return;
  }
  const token = url.searchParams.get('token');
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.user = (token && tokens.get(token)) || null;
    ws.rooms = new Set();
    ws.on('message', (raw, isBinary) => onMessage(ws, raw, isBinary));
    ws.on('close', () => {
      for (const a of ws.rooms) a.readers.delete(ws);
      ws.rooms.clear();
    });
    ws.on('error', () => {});
  });
});

// A fixed cadence: the period is the window, not the window plus the work.
let nextTick = Date.now() + WINDOW_MS;
function tick() {
  announce(() => {
    nextTick = Math.max(nextTick + WINDOW_MS, Date.now());
    setTimeout(tick, nextTick - Date.now());
  });
}

server.listen(PORT, HOST, () => {
  console.log(`reference ready at http://${HOST}:${PORT}/ (window ${WINDOW_MS} ms)`);
  setTimeout(tick, WINDOW_MS);
});

function stop() {
  for (const ws of wss.clients) ws.terminate();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
setTimeout(stop, MAX_LIFETIME_S * 1000).unref();
