// The article page's live clap counter (docs/PROTOCOL.md is the contract it speaks).
// - Totals from the server replace the shown one only when their (epoch, seq) is newer, so the
//   server's part of the number never moves backwards.
// - The number shown is the server's total plus every own clap not yet in it: claps not yet
//   sent, sent but not acked, and acked at a seq above the total's (an ack's seq says "in every
//   total at this seq or above"). So it does not dip between a send and the total that counts it.
// - "you: n/50" comes from the server: the count answering a join carries `mine`, this reader's
//   counted claps on the article. The page takes the first one it gets and adds each of its own
//   batches that was not in it, once. Later answers (after a reconnect) are not taken: a batch
//   re-sent after a lost ack is acked at its second position, so the page could not tell whether
//   the server's number already holds it. Nothing is kept in the browser's storage, so the
//   number is right on every device and after every load.
// - A clap batch keeps its id until it is acked or finally refused: `unavailable` and
//   `rate_limited` are retried with backoff, and a reconnect re-sends every unacked batch, all
//   with the same id (the server counts an id once).
// - The page lists the gateways it may use; after a close the next one is tried, with jitter.
// - Undo takes back every clap this reader has counted here. It travels like a batch whose
//   count is minus "mine" (so the number drops at once and settles at the total that holds
//   it), with its own id, retried and re-sent the same way. It is offered only when nothing of
//   this reader is in flight, so it is ordered after every own batch. The page takes it that the
//   undo took everything back ("you: 0/50"); the one case where it did not, an undo past the
//   fifth on one article, shows right on the next load (the total is the server's either way).
// - "N reading now" comes from `presence` messages: readers of this article on every gateway.
// - "catching up…" beside the count while a `counting` message says the count is catching up
//   (claps are acked but not yet counted: the processor is down or replaying), gone when one
//   says live. A new connection starts without it: its gateway tells it again if need be.
// - "+N" beside the count shows what others just clapped: a count's `delta` minus the own
//   batches it brought in. "N in the last minute" sums the positive deltas of the counts this
//   page received over a sliding minute (since the page loaded; the first count after each
//   connect only catches up, its delta is not a new clap).
(() => {
  "use strict";
  const MAX_PER_USER = 50;
  const BATCH_MS = 250;
  const RETRIED = new Set(["unavailable", "rate_limited"]);
  const root = document.getElementById("article");
  const article = root.dataset.article;
  const countEl = document.getElementById("count");
  const mineEl = document.getElementById("mine");
  const statusEl = document.getElementById("status");
  const button = document.getElementById("clap");
  const undoButton = document.getElementById("undo");
  const burstEl = document.getElementById("burst");
  const minuteEl = document.getElementById("minute");
  const readingEl = document.getElementById("reading");
  const countingEl = document.getElementById("counting");
  const MINUTE_MS = 60_000;

  const wsUrl = (base) => {
    const url = new URL("/ws", base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  };
  const listed = (root.dataset.gateways || "").split(/\s+/).filter(Boolean);
  const gateways = (listed.length ? listed : [location.origin]).map(wsUrl);
  // Readers of one page spread over the gateways rather than all starting at the first.
  let gatewayIndex = Math.floor(Math.random() * gateways.length);

  let seen = { epoch: Number(root.dataset.epoch), seq: Number(root.dataset.seq), total: Number(root.dataset.total) };
  let mine = null;           // the server's count of this reader's claps, plus own batches since
  let buffered = 0;          // clicks not yet sent
  let flushTimer = null;
  const batches = new Map(); // id -> { count, seq: null until acked, retries, inMine }
  let ws = null;
  let backoff = 250;
  let catchingUp = true;       // the first count after a connect is not news
  const recent = [];           // [ms, claps] of the counts received in the last minute
  let burstTimer = null;

  const newer = (epoch, seq) => epoch > seen.epoch || (epoch === seen.epoch && seq > seen.seq);
  const notIn = (seq) => (batch) => batch.seq === null || batch.seq > seq;
  const sum = (keep) => {
    let n = buffered;
    for (const batch of batches.values()) if (keep(batch)) n += batch.count;
    return n;
  };
  const mineNow = () => (mine === null ? null : mine + sum((batch) => !batch.inMine));
  const undoing = () => [...batches.values()].some((batch) => batch.undo);
  const inFlight = () => buffered > 0 || [...batches.values()].some((batch) => batch.seq === null);

  function render() {
    countEl.textContent = String(seen.total + sum(notIn(seen.seq)));
    const own = mineNow();
    mineEl.textContent = own === null ? "" : `you: ${own}/${MAX_PER_USER}`;
    const pendingUndo = [...batches.values()].some((batch) => batch.undo && batch.seq === null);
    button.disabled = (own !== null && own >= MAX_PER_USER) || pendingUndo;
    undoButton.disabled = own === null || own <= 0 || inFlight() || undoing();
    const now = Date.now();
    while (recent.length && recent[0][0] <= now - MINUTE_MS) recent.shift();
    minuteEl.textContent = `${recent.reduce((n, [, claps]) => n + claps, 0)} in the last minute`;
  }

  function showBurst(claps) {
    burstEl.textContent = `+${claps}`;
    burstEl.classList.add("shown");
    clearTimeout(burstTimer);
    burstTimer = setTimeout(() => burstEl.classList.remove("shown"), 1500);
  }

  // An acked batch that the total includes needs no tracking: it moves into `mine` if that does
  // not hold it yet. With `mine` still unknown it is simply dropped: the join answer that brings
  // `mine` is never older than the total shown, so it holds the batch.
  // Returns the own claps that the total now holds for the first time (for "+N": not news).
  function settle() {
    let own = 0;
    for (const [id, batch] of batches) {
      if (batch.seq === null || batch.seq > seen.seq) continue;
      if (mine !== null && !batch.inMine) mine += batch.count;
      if (!batch.undo) own += batch.count;
      batches.delete(id);
    }
    return own;
  }

  function takeMine(count, seq) {
    mine = count;
    for (const batch of batches.values()) batch.inMine = batch.seq !== null && batch.seq <= seq;
  }

  const newId = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`).replace(/[^A-Za-z0-9_-]/g, "");
  const send = (doc) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(doc)); };
  const sendClap = (id) => {
    const batch = batches.get(id);
    send(batch.undo ? { type: "undo", article, id } : { type: "clap", article, count: batch.count, id });
  };

  function flush() {
    flushTimer = null;
    if (!buffered) return;
    const id = newId();
    batches.set(id, { count: buffered, seq: null, retries: 0, inMine: false });
    buffered = 0;
    sendClap(id);
  }

  undoButton.addEventListener("click", () => {
    const own = mineNow();
    if (undoButton.disabled || own === null || own <= 0) return;
    const id = newId();
    batches.set(id, { count: -own, seq: null, retries: 0, inMine: false, undo: true });
    sendClap(id);
    render();
  });

  button.addEventListener("click", () => {
    const own = mineNow();
    if (button.disabled || (own !== null && own >= MAX_PER_USER)) return;
    buffered += 1;
    render();
    if (!flushTimer) flushTimer = setTimeout(flush, BATCH_MS);
  });

  function refused(msg) {
    const batch = msg.id === undefined ? undefined : batches.get(msg.id);
    if (batch && batch.seq === null && RETRIED.has(msg.code)) {
      // Same id: if the first try did reach the log after all, the server still counts it once.
      const delay = Math.min(250 * 2 ** batch.retries, 5000);
      batch.retries += 1;
      setTimeout(() => { if (batches.get(msg.id) === batch && batch.seq === null) sendClap(msg.id); }, delay / 2 + Math.random() * delay);
      statusEl.textContent = "retrying…";
      return;
    }
    if (batch && batch.seq === null) batches.delete(msg.id); // a final refusal: nothing was recorded
    statusEl.textContent = `error: ${msg.message}`;
    render();
  }

  function connect() {
    const socket = new WebSocket(gateways[gatewayIndex]);
    ws = socket;
    socket.onopen = () => {
      backoff = 250;
      catchingUp = true;
      statusEl.textContent = "live";
      countingEl.textContent = "";
      send({ type: "join", article });
      for (const [id, batch] of batches) if (batch.seq === null) sendClap(id);
    };
    socket.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "count" && msg.article === article) {
        const stale = !newer(msg.epoch, msg.seq) && !(msg.epoch === seen.epoch && msg.seq === seen.seq);
        const news = newer(msg.epoch, msg.seq) && !catchingUp;
        if (newer(msg.epoch, msg.seq)) seen = { epoch: msg.epoch, seq: msg.seq, total: msg.total };
        catchingUp = false;
        // A join answer older than what this page shows (a lagging gateway) may lack own claps.
        if (typeof msg.mine === "number" && mine === null && !stale) takeMine(msg.mine, msg.seq);
        const own = settle();
        if (news && msg.delta > 0) {
          recent.push([Date.now(), msg.delta]);
          if (msg.delta > own) showBurst(msg.delta - own);
        }
        render();
      } else if (msg.type === "counting" && msg.article === article) {
        countingEl.textContent = msg.state === "catching_up" ? "catching up…" : "";
      } else if (msg.type === "presence" && msg.article === article) {
        readingEl.textContent = `${msg.reading} reading now ·`;
      } else if (msg.type === "ack") {
        const batch = batches.get(msg.id);
        if (batch && batch.seq === null) batch.seq = msg.seq;
        settle();
        render();
        if (statusEl.textContent !== "live") statusEl.textContent = "live";
      } else if (msg.type === "error") {
        refused(msg);
      }
    };
    socket.onclose = () => {
      if (ws !== socket) return;
      statusEl.textContent = "reconnecting…";
      gatewayIndex = (gatewayIndex + 1) % gateways.length;
      // Jitter spreads the reconnects of a whole gateway's readers when it goes away.
      setTimeout(connect, backoff / 2 + Math.random() * backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
  }
  render();
  connect();
  setInterval(render, 5000); // the last minute slides on even when nobody claps
})();
