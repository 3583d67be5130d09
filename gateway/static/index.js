// The article list: every listed article's total, live, over one websocket.
// The server lists as many articles per page as one connection may join (16), so this page joins
// them all. It joins with "mine": false: a list has no use for the reader's own counts, and each
// would cost the gateway a store read. Totals replace the shown ones only at a newer
// (epoch, seq), as on the article page. "N reading" comes from `presence` messages; the list's
// own readers are not counted as reading the articles it lists.
(() => {
  "use strict";
  const list = document.getElementById("articles");
  const statusEl = document.getElementById("status");
  const rows = new Map();
  for (const item of list.querySelectorAll("li[data-article]")) {
    rows.set(item.dataset.article, {
      totalEl: item.querySelector(".claps-total"),
      readingEl: item.querySelector(".reading"),
      seen: item.dataset.seq === undefined ? null : { epoch: Number(item.dataset.epoch), seq: Number(item.dataset.seq) },
    });
  }
  const wsUrl = (base) => {
    const url = new URL("/ws", base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  };
  const listed = (list.dataset.gateways || "").split(/\s+/).filter(Boolean);
  const gateways = (listed.length ? listed : [location.origin]).map(wsUrl);
  let gatewayIndex = Math.floor(Math.random() * gateways.length);
  let backoff = 250;
  let ws = null;

  const newer = (seen, epoch, seq) => seen === null || epoch > seen.epoch || (epoch === seen.epoch && seq > seen.seq);

  function connect() {
    const socket = new WebSocket(gateways[gatewayIndex]);
    ws = socket;
    socket.onopen = () => {
      backoff = 250;
      statusEl.textContent = "live";
      for (const article of rows.keys()) socket.send(JSON.stringify({ type: "join", article, mine: false }));
    };
    socket.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      const row = rows.get(msg.article);
      if (!row) return;
      if (msg.type === "presence") {
        row.readingEl.textContent = msg.reading > 0 ? ` · ${msg.reading} reading` : "";
      } else if (msg.type === "count" && newer(row.seen, msg.epoch, msg.seq)) {
        row.seen = { epoch: msg.epoch, seq: msg.seq };
        row.totalEl.textContent = String(msg.total);
      }
    };
    socket.onclose = () => {
      if (ws !== socket) return;
      statusEl.textContent = "reconnecting…";
      gatewayIndex = (gatewayIndex + 1) % gateways.length;
      setTimeout(connect, backoff / 2 + Math.random() * backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
  }
  connect();
})();
