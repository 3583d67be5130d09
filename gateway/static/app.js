// The article page's live clap counter.
// - The count rendered by the server came from the durable store; live totals replace it only
//   when their (epoch, seq) is newer, so the number never moves backwards.
// - Rapid clicks are batched client-side into one clap message per 250 ms.
// - A batch keeps its id until acked and is re-sent with the same id after a reconnect, so a
//   lost ack never counts twice (the server de-duplicates by id).
(() => {
  "use strict";
  const MAX_PER_USER = 50;
  const BATCH_MS = 250;
  const root = document.getElementById("article");
  const article = root.dataset.article;
  const countEl = document.getElementById("count");
  const mineEl = document.getElementById("mine");
  const statusEl = document.getElementById("status");
  const button = document.getElementById("clap");
  let seen = [Number(root.dataset.epoch), Number(root.dataset.seq)];
  const mineKey = `claps:${article}`;
  let mine = Number(localStorage.getItem(mineKey) || 0);
  let buffered = 0;          // clicks not yet sent
  let flushTimer = null;
  const unacked = new Map(); // clap id -> count, sent but not acked
  let ws = null;
  let backoff = 250;

  const newer = (epoch, seq) => epoch > seen[0] || (epoch === seen[0] && seq > seen[1]);
  const showMine = () => {
    mineEl.textContent = mine ? `you: ${mine}/${MAX_PER_USER}` : "";
    button.disabled = mine >= MAX_PER_USER;
  };
  const newId = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`).replace(/[^A-Za-z0-9_-]/g, "");
  const send = (doc) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(doc)); };
  const sendClap = (id, count) => send({ type: "clap", article, count, id });

  function flush() {
    flushTimer = null;
    if (!buffered) return;
    const id = newId();
    unacked.set(id, buffered);
    sendClap(id, buffered);
    buffered = 0;
  }

  button.addEventListener("click", () => {
    if (mine >= MAX_PER_USER) return;
    mine += 1; buffered += 1;
    localStorage.setItem(mineKey, String(mine));
    showMine();
    // Optimistic: the reader sees their own clap at once; the next total from the server,
    // which includes it, replaces this.
    countEl.textContent = String(Number(countEl.textContent) + 1);
    if (!flushTimer) flushTimer = setTimeout(flush, BATCH_MS);
  });

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${scheme}://${location.host}/ws`);
    ws.onopen = () => {
      backoff = 250;
      statusEl.textContent = "live";
      send({ type: "join", article });
      for (const [id, count] of unacked) sendClap(id, count);
    };
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.type === "count" && msg.article === article && newer(msg.epoch, msg.seq)) {
        seen = [msg.epoch, msg.seq];
        countEl.textContent = String(msg.total + buffered);
      } else if (msg.type === "ack") {
        unacked.delete(msg.id);
      } else if (msg.type === "error") {
        if (msg.id) unacked.delete(msg.id);
        statusEl.textContent = `error: ${msg.message}`;
      }
    };
    ws.onclose = () => {
      statusEl.textContent = "reconnecting…";
      // Jitter spreads the reconnects of a whole gateway's readers when it goes away.
      setTimeout(connect, backoff / 2 + Math.random() * backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
  }
  showMine();
  connect();
})();
