// The embeddable clap button: <script src="https://GATEWAY/widget.js"></script> and then
// <clap-button article="ID"></clap-button> anywhere on a page of an origin the gateway lists in
// CLAP_ALLOWED_ORIGINS. A web component, no framework; it speaks docs/PROTOCOL.md like the
// article page (gateway/static/app.js) and follows the same rules for the number it shows.
//
// Identity on another site: the gateway's cookie would be a third-party cookie there, which
// browsers block. So the widget asks POST /api/session (CORS, without credentials) for a token
// and keeps it in the embedding page's localStorage, which the browser partitions by that
// page's origin: one identity per (site, browser), not shared with the gateway's own pages or
// with other sites. The token travels as ?token= on the websocket URL. Clearing the site's data
// makes a new identity (new identities are rationed per address, see PROTOCOL).
(() => {
  "use strict";
  if (customElements.get("clap-button")) return;
  const script = document.currentScript;
  const GATEWAY = new URL(script ? script.src : location.href).origin;
  const STORAGE_KEY = `clap-token@${GATEWAY}`;
  const MAX_PER_USER = 50;
  const BATCH_MS = 250;
  const RETRIED = new Set(["unavailable", "rate_limited"]);

  // One identity for every button on the page, fetched once.
  let tokenPromise = null;
  function token() {
    if (!tokenPromise) {
      let stored = null;
      try { stored = localStorage.getItem(STORAGE_KEY); } catch (_) { /* storage may be off */ }
      tokenPromise = stored
        ? Promise.resolve(stored)
        : fetch(`${GATEWAY}/api/session`, { method: "POST", credentials: "omit" })
            .then((response) => (response.ok ? response.json() : null))
            .then((doc) => {
              if (!doc) return null;
              try { localStorage.setItem(STORAGE_KEY, doc.token); } catch (_) { /* read-only then */ }
              return doc.token;
            })
            .catch(() => null);
    }
    return tokenPromise;
  }

  const STYLE = `
    :host { display: inline-flex; align-items: center; gap: 0.5rem; font-family: sans-serif; }
    button { font-size: 1.4rem; width: 2.75rem; height: 2.75rem; border-radius: 50%; border: 1px solid #ccc;
             background: white; cursor: pointer; }
    button:focus-visible { outline: 3px solid #1a5fb4; outline-offset: 2px; }
    button:disabled { opacity: 0.4; cursor: default; }
    .count { font-variant-numeric: tabular-nums; display: inline-block; min-width: 5ch; }
    .mine { color: #666; font-size: 0.8rem; font-variant-numeric: tabular-nums; display: inline-block; min-width: 9ch; }`;

  class ClapButton extends HTMLElement {
    connectedCallback() {
      if (this.shadowRoot) return;
      const root = this.attachShadow({ mode: "open" });
      root.innerHTML = `<style>${STYLE}</style>
        <button type="button" part="button" aria-label="Clap">&#128079;</button>
        <span class="count" part="count" aria-live="polite">&ndash;</span>
        <span class="mine" part="mine"></span>`;
      this.button = root.querySelector("button");
      this.countEl = root.querySelector(".count");
      this.mineEl = root.querySelector(".mine");
      this.article = this.getAttribute("article");
      this.seen = null;
      this.mine = null;
      this.buffered = 0;
      this.batches = new Map(); // id -> { count, seq: null until acked, retries, inMine }
      this.backoff = 250;
      this.button.disabled = true;
      this.button.addEventListener("click", () => this.clap());
      token().then((t) => this.connect(t));
    }

    disconnectedCallback() {
      if (this.ws) { const ws = this.ws; this.ws = null; ws.close(); }
    }

    sum(keep) {
      let n = this.buffered;
      for (const batch of this.batches.values()) if (keep(batch)) n += batch.count;
      return n;
    }

    render() {
      if (this.seen) {
        const seq = this.seen.seq;
        this.countEl.textContent = String(this.seen.total + this.sum((b) => b.seq === null || b.seq > seq));
      }
      const own = this.mine === null ? null : this.mine + this.sum((b) => !b.inMine);
      this.mineEl.textContent = own === null ? "" : `you: ${own}/${MAX_PER_USER}`;
      this.button.disabled = !this.token || own === null || own >= MAX_PER_USER;
    }

    settle() {
      for (const [id, batch] of this.batches) {
        if (batch.seq === null || !this.seen || batch.seq > this.seen.seq) continue;
        if (this.mine !== null && !batch.inMine) this.mine += batch.count;
        this.batches.delete(id);
      }
    }

    send(doc) { if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(doc)); }

    sendClap(id) { this.send({ type: "clap", article: this.article, count: this.batches.get(id).count, id }); }

    clap() {
      if (this.button.disabled) return;
      this.buffered += 1;
      this.render();
      if (!this.flushTimer) {
        this.flushTimer = setTimeout(() => {
          this.flushTimer = null;
          if (!this.buffered) return;
          const id = (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`).replace(/[^A-Za-z0-9_-]/g, "");
          this.batches.set(id, { count: this.buffered, seq: null, retries: 0, inMine: false });
          this.buffered = 0;
          this.sendClap(id);
        }, BATCH_MS);
      }
    }

    connect(t) {
      this.token = t;
      const url = new URL("/ws", GATEWAY);
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      if (t) url.searchParams.set("token", t);
      const socket = new WebSocket(url.href);
      this.ws = socket;
      socket.onopen = () => {
        this.backoff = 250;
        this.send({ type: "join", article: this.article });
        for (const [id, batch] of this.batches) if (batch.seq === null) this.sendClap(id);
      };
      socket.onmessage = (event) => {
        const msg = JSON.parse(event.data);
        if (msg.type === "count" && msg.article === this.article) {
          const newer = !this.seen || msg.epoch > this.seen.epoch || (msg.epoch === this.seen.epoch && msg.seq > this.seen.seq);
          const same = this.seen && msg.epoch === this.seen.epoch && msg.seq === this.seen.seq;
          if (newer) this.seen = { epoch: msg.epoch, seq: msg.seq, total: msg.total };
          if (typeof msg.mine === "number" && this.mine === null && (newer || same)) {
            this.mine = msg.mine;
            for (const batch of this.batches.values()) batch.inMine = batch.seq !== null && batch.seq <= msg.seq;
          }
        } else if (msg.type === "ack") {
          const batch = this.batches.get(msg.id);
          if (batch && batch.seq === null) batch.seq = msg.seq;
        } else if (msg.type === "error") {
          const batch = msg.id === undefined ? undefined : this.batches.get(msg.id);
          if (batch && batch.seq === null && RETRIED.has(msg.code)) {
            const delay = Math.min(250 * 2 ** batch.retries, 5000);
            batch.retries += 1;
            setTimeout(() => { if (this.batches.get(msg.id) === batch && batch.seq === null) this.sendClap(msg.id); },
                       delay / 2 + Math.random() * delay);
          } else if (msg.code === "unauthenticated" && batch) {
            // The stored token is no longer honoured (say, the deployment's secret changed):
            // forget it, get a new identity, reconnect and re-send this batch with it.
            try { localStorage.removeItem(STORAGE_KEY); } catch (_) { /* nothing stored then */ }
            tokenPromise = null;
            this.mine = null;
            const old = this.ws;
            this.ws = null;
            if (old) old.close();
            token().then((t) => { if (t) this.connect(t); });
          } else if (batch && batch.seq === null) {
            this.batches.delete(msg.id); // finally refused: nothing was recorded
          }
          this.dispatchEvent(new CustomEvent("clap-error", { detail: msg }));
        }
        this.settle();
        this.render();
      };
      socket.onclose = () => {
        if (this.ws !== socket) return;
        setTimeout(() => { if (this.ws === socket) this.connect(this.token); }, this.backoff / 2 + Math.random() * this.backoff);
        this.backoff = Math.min(this.backoff * 2, 5000);
      };
    }
  }

  customElements.define("clap-button", ClapButton);
})();
