/**
 * The reactive browser client: a query cache kept fresh by server invalidations.
 *
 * An ES module with no build step (`<script type="module">`). It gives SPA code
 * `subscribe(name, input, callback)`, which delivers cached data at once and
 * revalidates it in the background, and keeps the server-rendered live
 * fragments of a page (`{% live_fragment %}`) fresh by morphing their new HTML
 * in place. See docs/client.md.
 *
 * - Cache: in memory, persisted in localStorage under `rx1:<user>:<organization>:`,
 *   bounded (entries and bytes, oldest evicted first), cleared on logout.
 * - Real time: a WebSocket (`/ws/reactive/`, one subscription per query), or
 *   Server-Sent Events (`/api/events`, one stream per organization) when
 *   WebSockets fail. Reconnects with jittered exponential backoff (capped at
 *   30 s) forever, resuming from the last event id seen, so nothing is missed.
 * - Freshness: an event newer than the data's cursor invalidates it; an
 *   invalidation during an in-flight fetch forces another fetch unless the
 *   answer's cursor proves it already includes the change.
 * - Tabs: share the persisted cache and tell each other over a BroadcastChannel
 *   about fresh data, events and logouts.
 */

import { Idiomorph } from "./vendor/idiomorph-0.8.0.esm.js";

export const VERSION = "1.0.0";
const PREFIX = "rx1:";
const MAX_SSE_STREAMS = 4; // browsers allow ~6 HTTP/1.1 connections per host
const WATCHDOG_MS = 45_000; // the server sends a heartbeat every 15 s without traffic
const PING_MS = 20_000;
const ACK_DELAY_MS = 5_000;
// WebSocket close codes of a refused connection (docs/protocol.md): the server
// completes the handshake and closes at once, so that a browser sees the code.
const WS_REFUSALS = { 4401: "unauthenticated", 1008: "policy" };

// --- small helpers ------------------------------------------------------------------------

/** JSON with sorted keys: one input, one cache key, whatever its key order. */
export function stableStringify(value) {
  if (value === undefined) return "null";
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(",")}]`;
  const keys = Object.keys(value)
    .filter((k) => value[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${stableStringify(value[k])}`).join(",")}}`;
}

function normPos(p) {
  const s = p == null ? "" : String(p);
  return /^\d+$/.test(s) ? s.replace(/^0+(?=\d)/, "") : "";
}

/** Compare two event-log positions (decimal strings, exact at any size); unknown is lowest. */
export function comparePositions(a, b) {
  const x = normPos(a);
  const y = normPos(b);
  if (x.length !== y.length) return x.length - y.length;
  return x < y ? -1 : x > y ? 1 : 0;
}

function maxPos(a, b) {
  return comparePositions(a, b) >= 0 ? normPos(a) : normPos(b);
}

/** A reconnect delay: exponential from `base`, capped at `max`, with jitter (50-100 %). */
export function backoff(attempt, base = 500, max = 30_000) {
  const ceiling = Math.min(max, base * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}

function readCookie(name) {
  const match = document.cookie.match(new RegExp(`(?:^|; )${name}=([^;]*)`));
  return match ? decodeURIComponent(match[1]) : "";
}

function parseAttr(el, name, fallback) {
  try {
    const raw = el.getAttribute(name);
    return raw ? JSON.parse(raw) : fallback;
  } catch {
    return fallback;
  }
}

function isFlat(input) {
  const ok = (v) => v === null || ["string", "number", "boolean"].includes(typeof v);
  return Object.values(input || {}).every(
    (v) => v === undefined || ok(v) || (Array.isArray(v) && v.every(ok)),
  );
}

function intersects(set, list) {
  for (const item of list || []) if (set.has(item)) return true;
  return false;
}

/** An error answered by the API: `status`, `code`, `message` and `fields` (422). */
export class ReactiveError extends Error {
  constructor(status, error = {}) {
    super(error.message || `HTTP ${status}`);
    this.name = "ReactiveError";
    this.status = status;
    this.code = error.code || (status === 0 ? "network" : "error");
    this.fields = error.fields || [];
  }
}

class Emitter {
  constructor() {
    this.handlers = new Map();
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(fn);
    return () => this.handlers.get(type)?.delete(fn);
  }

  emit(type, detail) {
    for (const fn of this.handlers.get(type) || []) {
      try {
        fn(detail);
      } catch (err) {
        console.error("reactive: listener failed", err);
      }
    }
  }
}

// --- the persisted cache --------------------------------------------------------------------

/**
 * localStorage entries `rx1:<user>:<organization>:<name>?<input>` holding
 * `{d: data, t: tags, c: cursor, k: key, n: tenants, u: written at}`. Bounded by
 * `maxEntries` and `maxBytes` per user: the least recently written go first.
 */
export class PersistentCache {
  constructor({ user, storage, maxEntries = 200, maxBytes = 2_000_000 }) {
    this.user = user ? String(user) : "";
    this.maxEntries = maxEntries;
    this.maxBytes = maxBytes;
    try {
      this.storage = storage === undefined ? window.localStorage : storage;
    } catch {
      this.storage = null; // storage disabled by the browser
    }
    this.enabled = Boolean(this.user && this.storage);
  }

  userPrefix() {
    return `${PREFIX}${this.user}:`;
  }

  keyFor(organization, clientKey) {
    return `${this.userPrefix()}${organization || "-"}:${clientKey}`;
  }

  read(organization, clientKey) {
    if (!this.enabled) return null;
    const key = this.keyFor(organization, clientKey);
    try {
      const raw = this.storage.getItem(key);
      return raw ? JSON.parse(raw) : null;
    } catch {
      this.remove(key);
      return null;
    }
  }

  write(organization, clientKey, entry) {
    if (!this.enabled) return;
    const key = this.keyFor(organization, clientKey);
    const value = JSON.stringify({ u: Date.now(), ...entry, v: VERSION });
    if (value.length * 2 > this.maxBytes / 4) return; // too big to be worth a slot
    for (let attempt = 0; attempt < 2; attempt += 1) {
      try {
        this.storage.setItem(key, value);
        this.trim(key);
        return;
      } catch {
        this.trim(key, 0.5); // quota exceeded: free half and retry once
      }
    }
  }

  remove(key) {
    try {
      this.storage?.removeItem(key);
    } catch {
      /* ignore */
    }
  }

  entries(prefix = this.userPrefix()) {
    const found = [];
    if (!this.storage) return found;
    try {
      for (let i = 0; i < this.storage.length; i += 1) {
        const key = this.storage.key(i);
        if (key && key.startsWith(prefix)) found.push(key);
      }
    } catch {
      /* ignore */
    }
    return found;
  }

  /** Evict the oldest entries beyond the bounds (or down to `keep` of them). */
  trim(justWritten, keep = 1) {
    const rows = [];
    let bytes = 0;
    for (const key of this.entries()) {
      const raw = this.storage.getItem(key) || "";
      const match = /^\{"u":(\d+)/.exec(raw); // written first, so no full parse is needed
      const written = match ? Number(match[1]) : 0;
      const size = (key.length + raw.length) * 2;
      bytes += size;
      rows.push({ key, written: key === justWritten ? Infinity : written, size });
    }
    rows.sort((a, b) => a.written - b.written);
    const limit = Math.min(this.maxEntries, Math.ceil(rows.length * keep));
    let count = rows.length;
    for (const row of rows) {
      if (count <= limit && bytes <= this.maxBytes) break;
      if (row.written === Infinity && count > 1) continue;
      this.remove(row.key);
      count -= 1;
      bytes -= row.size;
    }
  }

  clearOrganization(organization) {
    for (const key of this.entries(`${this.userPrefix()}${organization}:`)) this.remove(key);
  }

  clearUser() {
    for (const key of this.entries()) this.remove(key);
  }

  /** Remove every user's entries (logout, or a page seen while logged out). */
  clearAll() {
    for (const key of this.entries(PREFIX)) this.remove(key);
  }
}

// --- watchers: queries and fragments ----------------------------------------------------------

/**
 * What both queries and fragments share: tags, tenants and a cursor to match
 * events against, and a fetch loop that honours invalidations arriving while
 * a fetch is in flight and retries failures with backoff.
 */
class Watcher {
  constructor(client) {
    this.client = client;
    this.tags = new Set();
    this.tenants = new Set();
    this.cursor = "";
    this.inflight = null;
    this.invalidatedDuring = null; // newest event id seen while a fetch was in flight ("*": reset)
    this.stale = false;
    this.error = null;
    this.retryAttempt = 0;
    this.retryTimer = null;
    this.scheduled = false;
  }

  /** An event (or a reset, `eventId` null) touching this watcher's data. */
  invalidate(eventId) {
    if (eventId && this.cursor && comparePositions(eventId, this.cursor) <= 0) return false;
    this.stale = true;
    if (this.inflight && this.invalidatedDuring !== "*") {
      this.invalidatedDuring = eventId ? maxPos(this.invalidatedDuring, eventId) : "*";
    }
    this.changed();
    this.schedule();
    return true;
  }

  /** Fetch soon (coalescing bursts of events into one fetch). */
  schedule() {
    if (this.scheduled || this.inflight) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.refresh();
    });
  }

  async refresh() {
    if (this.inflight) return this.inflight;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.invalidatedDuring = null;
    const firstLoad = this.tags.size === 0;
    this.inflight = this.load()
      .then((cursor) => {
        this.error = null;
        this.retryAttempt = 0;
        // Events that arrived before this watcher knew its tags (during its first fetch)
        // count too. Only then: a cache hit may keep answering an older cursor than an
        // event its data already includes, and this must not turn into a fetch loop.
        const missed = firstLoad ? this.client.newestMatching(this.tags, cursor) : null;
        const during = this.invalidatedDuring;
        const newer = during === "*" ? "*" : missed ? maxPos(during, missed) : during;
        this.invalidatedDuring = null;
        this.inflight = null;
        // Invalidated while in flight: the answer may predate the change unless its
        // cursor proves otherwise ("*" = a reset, always refetch).
        if (newer && (newer === "*" || !cursor || comparePositions(cursor, newer) < 0)) {
          this.stale = true;
          this.changed();
          this.schedule();
        } else {
          this.stale = false;
          this.changed();
        }
      })
      .catch((err) => {
        this.inflight = null;
        this.invalidatedDuring = null;
        this.error = err instanceof ReactiveError ? err : new ReactiveError(0, { message: String(err) });
        this.client.stats.fetchErrors += 1;
        this.client.emitStats();
        this.failed(this.error);
        this.changed();
        if (this.error.status === 0 || this.error.status >= 500 || this.error.status === 429) {
          this.retryTimer = setTimeout(() => this.refresh(), backoff(this.retryAttempt++, 1000));
        }
      });
    return this.inflight;
  }

  /** After a reconnect or coming back online: retry what failed. */
  recover() {
    if (this.error && (this.error.status === 0 || this.error.status >= 500)) this.refresh();
  }

  failed() {}

  changed() {}

  /** Whether the server refused the last fetch (401/403/404): do not subscribe then. */
  refused() {
    return Boolean(this.error && [401, 403, 404].includes(this.error.status));
  }

  specs() {
    return [];
  }
}

/** One query (name + input) and its subscribers. */
class Query extends Watcher {
  constructor(client, name, input, clientKey, organization) {
    super(client);
    this.name = name;
    this.input = input || {};
    this.clientKey = clientKey;
    this.organization = organization;
    this.listeners = new Set();
    this.data = undefined;
    this.key = "";
    this.updatedAt = 0;
    this.fromStorage = false;
    this.validated = false; // fetched (or kept fresh by events) since it was last watched
    const stored = client.cache.read(organization, clientKey);
    if (stored) this.apply(stored, true);
  }

  apply(entry, fromStorage = false) {
    this.data = entry.d;
    this.tags = new Set(entry.t || []);
    this.tenants = new Set(entry.n || []);
    this.cursor = normPos(entry.c);
    this.key = entry.k || "";
    this.updatedAt = entry.u || Date.now();
    this.fromStorage = fromStorage;
    if (fromStorage) this.stale = true; // shown at once, revalidated in the background
  }

  entry() {
    return { u: this.updatedAt, d: this.data, t: [...this.tags], c: this.cursor, k: this.key, n: [...this.tenants] };
  }

  snapshot() {
    return {
      data: this.data,
      isLoading: this.data === undefined && !this.error,
      isStale: this.data !== undefined && (this.stale || Boolean(this.inflight)),
      isFetching: Boolean(this.inflight),
      error: this.error,
      cursor: this.cursor,
      updatedAt: this.updatedAt,
      fromCache: this.fromStorage,
    };
  }

  changed() {
    const snap = this.snapshot();
    for (const fn of [...this.listeners]) {
      try {
        fn(snap);
      } catch (err) {
        console.error("reactive: subscriber failed", err);
      }
    }
  }

  async load() {
    const body = await this.client.query(this.name, this.input);
    const tenants = this.client.tenantsOf(this.name, this.input, body.data);
    if (this.cursor && body.cursor && comparePositions(body.cursor, this.cursor) < 0) {
      this.validated = true;
      return this.cursor; // another tab already stored something newer
    }
    this.apply({ d: body.data, t: body.tags, c: body.cursor, k: body.key, n: tenants });
    this.validated = true;
    this.client.cache.write(this.organization, this.clientKey, this.entry());
    this.client.tabs.post({ t: "entry", org: this.organization, ck: this.clientKey, e: this.entry() });
    this.client.connection.sync();
    return this.cursor;
  }

  failed(error) {
    if (error.status === 403 || error.status === 401) {
      this.client.cache.clearOrganization(this.organization); // access lost: drop what we kept
    }
  }

  /** Fresher data from another tab. */
  adopt(entry) {
    if (this.cursor && comparePositions(entry.c, this.cursor) <= 0) return;
    this.apply(entry);
    if (!this.inflight) this.stale = false;
    this.changed();
    this.client.connection.sync();
  }

  specs() {
    if (!this.cursor || this.refused()) return [];
    return [{ name: this.name, input: this.input, cursor: this.cursor }];
  }
}

const NOTICES = {
  0: "Offline: showing the last version received.",
  401: "Your session has ended: log in again to see this.",
  403: "You do not have access to this.",
  404: "This no longer exists.",
};

function isDirtyField(node) {
  if (!(node instanceof Element)) return false;
  if (node instanceof HTMLInputElement) {
    if (["checkbox", "radio"].includes(node.type)) return node.checked !== node.defaultChecked;
    if (["hidden", "submit", "button", "reset", "file"].includes(node.type)) return false;
    return node.value !== node.defaultValue;
  }
  if (node instanceof HTMLTextAreaElement) return node.value !== node.defaultValue;
  if (node instanceof HTMLSelectElement) {
    return [...node.options].some((o) => o.selected !== o.defaultSelected);
  }
  return false;
}

/**
 * Morph `el`'s content into `html`, keeping focus, selection, and every form
 * field the user has changed (an edited field keeps its value; untouched
 * fields take the server's).
 */
export function morphInto(el, html) {
  Idiomorph.morph(el, html, {
    morphStyle: "innerHTML",
    ignoreActiveValue: true,
    restoreFocus: true,
    callbacks: {
      beforeNodeMorphed(oldNode) {
        if (!(oldNode instanceof Element)) return true;
        if (oldNode.hasAttribute("data-rx-keep")) return false;
        return !isDirtyField(oldNode);
      },
    },
  });
}

/** A server-rendered live fragment: re-rendered by the server, morphed in place. */
class LiveFragment extends Watcher {
  constructor(client, el) {
    super(client);
    this.el = el;
    this.src = el.getAttribute("data-rx-src");
    this.readAttributes();
    el.rxFragment = this;
    this.setState(el.hasAttribute("data-rx-error") ? "error" : "fresh");
  }

  readAttributes() {
    this.tags = new Set(parseAttr(this.el, "data-rx-tags", []));
    this.tenants = new Set(parseAttr(this.el, "data-rx-tenants", []));
    this.queries = parseAttr(this.el, "data-rx-queries", []);
    this.cursor = normPos(this.el.getAttribute("data-rx-cursor"));
  }

  setState(state) {
    this.el.setAttribute("data-rx-state", state);
  }

  changed() {
    this.setState(this.error ? "error" : this.stale ? "stale" : "fresh");
  }

  async load() {
    const response = await this.client.fetch(this.src, { headers: { Accept: "application/json" } });
    const body = await this.client.json(response);
    this.client.countMany(body.hits || 0, body.misses || 0);
    if (this.cursor && body.cursor && comparePositions(body.cursor, this.cursor) < 0) {
      return this.cursor; // an older answer than what is shown (two fetches crossed)
    }
    morphInto(this.el, body.html);
    const attrs = {
      "data-rx-tags": JSON.stringify(body.tags),
      "data-rx-tenants": JSON.stringify(body.tenants),
      "data-rx-queries": JSON.stringify(body.queries),
      "data-rx-cursor": body.cursor || "",
    };
    for (const [name, value] of Object.entries(attrs)) this.el.setAttribute(name, value);
    this.el.removeAttribute("data-rx-error");
    this.readAttributes();
    this.client.emit("fragment", { element: this.el, cursor: this.cursor });
    this.client.connection.sync();
    return this.cursor;
  }

  failed(error) {
    if (error.status === 0) return; // keep what is shown; it is retried
    this.el.setAttribute("data-rx-error", String(error.status));
    const notice = document.createElement("p");
    notice.className = "rx-notice";
    notice.textContent = NOTICES[error.status] || error.message;
    this.el.replaceChildren(notice);
  }

  specs() {
    if (!this.queries.length || this.refused()) return [];
    return this.queries.map((q) => ({ name: q.name, input: q.input || {}, cursor: this.cursor }));
  }
}

// --- transports ---------------------------------------------------------------------------------

/** The WebSocket transport: one subscription per query, resumed with `since` after reconnects. */
class WebSocketTransport {
  constructor(client, connection) {
    this.client = client;
    this.connection = connection;
    this.kind = "ws";
    this.ws = null;
    this.subs = new Map(); // clientKey -> {id, name, input, since}
    this.byId = new Map(); // subscription id -> clientKey
    this.counter = 0;
    this.opened = false;
    this.timers = [];
  }

  url() {
    const base = new URL(this.client.options.wsPath, window.location.href);
    base.protocol = base.protocol === "https:" ? "wss:" : "ws:";
    return base.href;
  }

  open() {
    this.close();
    this.opened = false;
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (err) {
      queueMicrotask(() => this.connection.down(this, false));
      return;
    }
    this.ws = ws;
    this.lastMessage = Date.now();
    ws.onopen = () => {
      if (ws !== this.ws) return;
      // Up at the server's first answer, not at the handshake: a refused
      // connection (4401, 1008) opens and closes at once, and counts as a failure.
      this.send({ type: "ping" });
      for (const sub of this.subs.values()) this.sendSubscribe(sub);
      this.timers.push(
        setInterval(() => {
          if (Date.now() - this.lastMessage > WATCHDOG_MS) ws.close(4000, "watchdog");
          else this.send({ type: "ping" });
        }, PING_MS),
      );
    };
    ws.onmessage = (m) => {
      if (ws !== this.ws) return;
      this.lastMessage = Date.now();
      if (!this.opened) {
        this.opened = true;
        this.connection.up(this);
      }
      let msg;
      try {
        msg = JSON.parse(m.data);
      } catch {
        return;
      }
      this.handle(msg);
    };
    ws.onclose = (e) => {
      if (ws !== this.ws) return;
      this.stopTimers();
      this.ws = null;
      const reason = WS_REFUSALS[e.code];
      if (reason) this.client.emit("refused", { transport: "ws", code: e.code, reason });
      this.connection.down(this, this.opened, e.code);
    };
  }

  stopTimers() {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
  }

  close() {
    this.stopTimers();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try {
        ws.close(1000, "closing");
      } catch {
        /* ignore */
      }
    }
  }

  get isOpen() {
    return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN);
  }

  send(message) {
    if (this.isOpen) this.ws.send(JSON.stringify(message));
  }

  sendSubscribe(sub) {
    const message = { type: "subscribe", id: sub.id, name: sub.name, input: sub.input };
    if (sub.since) message.since = sub.since;
    this.send(message);
  }

  /** Subscribe the queries the watchers need; unsubscribe the rest. */
  sync() {
    const wanted = this.client.wantedQueries();
    for (const [clientKey, spec] of wanted) {
      const sub = this.subs.get(clientKey);
      if (!sub) {
        const created = {
          id: `q${++this.counter}`,
          name: spec.name,
          input: spec.input,
          since: spec.cursor,
          members: new Set(spec.members),
        };
        this.subs.set(clientKey, created);
        this.byId.set(created.id, clientKey);
        this.sendSubscribe(created);
        continue;
      }
      // A watcher with older data joined: replay from its cursor. (Only on joining: a
      // member's refetch may answer an older cursor than an event it already includes.)
      const joined = [...spec.members].filter((w) => !sub.members.has(w));
      sub.members = new Set(spec.members);
      const oldest = joined.map((w) => w.cursor).sort(comparePositions)[0];
      if (oldest && comparePositions(oldest, sub.since) < 0) {
        sub.since = oldest;
        this.sendSubscribe(sub);
      }
    }
    for (const [clientKey, sub] of this.subs) {
      if (!wanted.has(clientKey)) {
        this.subs.delete(clientKey);
        this.byId.delete(sub.id);
        this.send({ type: "unsubscribe", id: sub.id });
      }
    }
  }

  handle(msg) {
    const clientKey = msg.id == null ? null : this.byId.get(msg.id);
    const sub = clientKey ? this.subs.get(clientKey) : null;
    switch (msg.type) {
      case "subscribed":
        if (sub && msg.cursor && !sub.since) sub.since = msg.cursor;
        break;
      case "invalidate":
        if (!sub) break;
        sub.since = maxPos(sub.since, msg.eventId);
        this.client.deliver(
          { id: msg.eventId, tags: msg.tags, at: msg.at, organizationId: null },
          "ws",
          clientKey,
        );
        break;
      case "reset":
        if (msg.id == null) this.client.resetAll("ws");
        else if (clientKey) this.client.resetKey(clientKey);
        break;
      case "error":
        if (sub && [401, 403, 404].includes(msg.status)) {
          this.subs.delete(clientKey);
          this.byId.delete(msg.id);
          this.client.resetKey(clientKey); // refetch: shows the error (or recovers)
        }
        break;
      default:
        break;
    }
  }
}

/** The SSE transport: one EventSource per organization, resumed with `since`. */
class SseTransport {
  constructor(client, connection) {
    this.client = client;
    this.connection = connection;
    this.kind = "sse";
    this.streams = new Map(); // tenant -> {es, last, attempt, timer, open}
    this.failures = 0;
  }

  open() {
    this.sync();
    if (!this.streams.size) this.connection.up(this); // nothing to follow yet
  }

  close() {
    for (const tenant of [...this.streams.keys()]) this.stop(tenant);
  }

  stop(tenant) {
    const stream = this.streams.get(tenant);
    if (!stream) return;
    clearTimeout(stream.timer);
    stream.es?.close();
    this.streams.delete(tenant);
  }

  sync() {
    const wanted = this.client.wantedTenants(); // tenant -> oldest cursor
    const tenants = [...wanted.keys()].slice(0, MAX_SSE_STREAMS);
    for (const tenant of tenants) {
      if (!this.streams.has(tenant)) {
        this.streams.set(tenant, { last: wanted.get(tenant), attempt: 0, open: false });
        this.connect(tenant);
      }
    }
    for (const tenant of [...this.streams.keys()]) if (!tenants.includes(tenant)) this.stop(tenant);
  }

  get isOpen() {
    return [...this.streams.values()].every((s) => s.open);
  }

  connect(tenant) {
    const stream = this.streams.get(tenant);
    if (!stream) return;
    const url = new URL(this.client.options.eventsPath, window.location.href);
    url.searchParams.set("organizationId", tenant);
    if (stream.last) url.searchParams.set("since", stream.last);
    const es = new EventSource(url.href);
    stream.es = es;
    es.onopen = () => {
      stream.open = true;
      stream.attempt = 0;
      this.failures = 0;
      if (this.isOpen) this.connection.up(this);
    };
    const remember = (e) => {
      if (e.lastEventId) stream.last = maxPos(stream.last, e.lastEventId);
    };
    es.addEventListener("invalidate", (e) => {
      remember(e);
      try {
        this.client.deliver(JSON.parse(e.data), "sse");
      } catch {
        /* ignore */
      }
      this.client.scheduleAck(stream.last, tenant);
    });
    es.addEventListener("reset", (e) => {
      remember(e);
      this.client.resetTenant(tenant);
    });
    es.addEventListener("forbidden", () => this.client.resetTenant(tenant));
    es.onerror = () => {
      // Our own reconnect (EventSource gives up on HTTP errors): backoff, resume from `last`.
      es.close();
      const wasOpen = stream.open;
      stream.open = false;
      if (!wasOpen) this.failures += 1;
      this.connection.down(this, wasOpen);
      clearTimeout(stream.timer);
      stream.timer = setTimeout(() => this.connect(tenant), backoff(stream.attempt++));
    };
  }

  reconnectNow() {
    for (const [tenant, stream] of this.streams) {
      if (!stream.open) {
        clearTimeout(stream.timer);
        stream.es?.close();
        stream.attempt = 0;
        this.connect(tenant);
      }
    }
  }
}

/**
 * Owns the transport: WebSocket first ("auto"), SSE after two WebSocket
 * failures in a row (and WebSocket again after three SSE failures). Never
 * gives up: reconnects with backoff, at once when the browser comes online or
 * the page becomes visible.
 */
class Connection {
  constructor(client) {
    this.client = client;
    this.mode = client.options.transport || "auto";
    this.state = "idle";
    this.transport = null;
    this.attempt = 0;
    this.timer = null;
    this.wsFailures = 0;
    this.started = false;
    this.reconnects = 0;
  }

  hasWatchers() {
    return this.client.watchers.size > 0;
  }

  start() {
    if (this.started) return;
    this.started = true;
    window.addEventListener("online", () => this.online());
    window.addEventListener("offline", () => this.offline());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.state !== "connected") this.reconnectNow();
    });
    window.addEventListener("pageshow", (e) => {
      if (e.persisted) {
        this.reconnectNow();
        this.client.revalidateAll();
      }
    });
  }

  chooseKind() {
    if (this.mode === "sse" || typeof WebSocket === "undefined") return "sse";
    if (this.mode === "ws" || typeof EventSource === "undefined") return "ws";
    return this.wsFailures >= 2 ? "sse" : "ws";
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.client.emit("state", { state, transport: this.transport?.kind || null });
  }

  /** Open, re-subscribe or close according to the watchers (cheap; call freely). */
  sync() {
    if (!this.started) return;
    if (this.transport) this.transport.sync();
    else if (this.state === "idle" && this.hasWatchers()) this.connect();
    // otherwise a reconnect is scheduled, and it subscribes what is wanted then
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    if (navigator.onLine === false) {
      this.setState("offline");
      this.schedule(); // the "online" event may never come: keep trying anyway
      return;
    }
    const kind = this.chooseKind();
    if (!this.transport || this.transport.kind !== kind) {
      this.transport?.close();
      this.transport =
        kind === "ws" ? new WebSocketTransport(this.client, this) : new SseTransport(this.client, this);
      this.client.emit("transport", { transport: kind });
    }
    this.setState("connecting");
    this.transport.open();
    if (kind === "ws") this.transport.sync();
  }

  up(transport) {
    if (transport !== this.transport) return;
    const wasDown = this.everConnected && this.state !== "connected";
    this.everConnected = true;
    this.attempt = 0;
    if (transport.kind === "ws") this.wsFailures = 0;
    this.setState("connected");
    if (wasDown) {
      this.reconnects += 1;
      this.client.stats.reconnects = this.reconnects;
      this.client.emitStats();
      this.client.recoverAll();
    }
  }

  down(transport, wasOpen) {
    if (transport !== this.transport) return;
    if (transport.kind === "ws" && !wasOpen) this.wsFailures += 1;
    if (transport.kind === "sse" && this.mode === "auto" && transport.failures >= 3) {
      this.wsFailures = 0; // give WebSocket another chance
      transport.close();
      this.transport = null;
    }
    this.setState(navigator.onLine === false ? "offline" : "connecting");
    if (!this.transport || transport.kind === "ws") this.schedule();
  }

  schedule() {
    clearTimeout(this.timer);
    const delay = backoff(this.attempt++);
    this.client.emit("retry", { in: delay, attempt: this.attempt });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    if (!this.hasWatchers()) return;
    this.attempt = 0;
    if (this.transport && this.transport.kind === "sse" && this.state !== "offline") {
      this.transport.reconnectNow();
      return;
    }
    this.connect();
  }

  online() {
    this.reconnectNow();
    this.client.recoverAll();
  }

  offline() {
    // Close now rather than wait for timeouts; reconnect (and replay) when back.
    this.transport?.close();
    this.transport = null;
    clearTimeout(this.timer);
    this.setState("offline");
    this.schedule();
  }

  stop() {
    clearTimeout(this.timer);
    this.transport?.close();
    this.transport = null;
    this.setState("idle");
  }
}

// --- tabs -------------------------------------------------------------------------------------------

const LOGOUT_KEY = `${PREFIX}logout`;

/**
 * The other tabs of this browser: a BroadcastChannel per user for fresh data,
 * events and logouts, and a localStorage marker for logouts too (a tab that
 * navigates away at once may not get its channel message out; storage events
 * always reach the other tabs).
 */
class Tabs {
  constructor(client) {
    this.client = client;
    this.channel = null;
    if (client.options.user && typeof BroadcastChannel !== "undefined") {
      this.channel = new BroadcastChannel(`${PREFIX}${client.options.user}`);
      this.channel.onmessage = (m) => client.fromTab(m.data || {});
    }
    window.addEventListener("storage", (e) => {
      if (e.key === LOGOUT_KEY && e.newValue && client.options.user) client.fromTab({ t: "logout" });
    });
  }

  /** Tell every other tab that this browser logged out. */
  logout() {
    this.post({ t: "logout" });
    try {
      localStorage.setItem(LOGOUT_KEY, String(Date.now()));
      localStorage.removeItem(LOGOUT_KEY);
    } catch {
      /* storage disabled: the channel message is all we have */
    }
  }

  post(message) {
    try {
      this.channel?.postMessage(message);
    } catch {
      /* ignore */
    }
  }

  close() {
    this.channel?.close();
  }
}

// --- the client -----------------------------------------------------------------------------------

const DEFAULTS = {
  user: null,
  organization: null,
  transport: "auto",
  rxPath: "/api/rx/",
  eventsPath: "/api/events",
  ackPath: "/api/events/ack",
  wsPath: "/ws/reactive/",
  mePath: "/api/auth/me",
  logoutPath: "/api/auth/logout",
  loginUrl: "",
  csrfToken: "",
  csrfCookieName: "csrftoken",
  maxEntries: 200,
  maxBytes: 2_000_000,
  ack: true,
};

/** The default tenant(s) of a query: its input's organizationId, else its data's. */
function defaultTenantsOf(name, input, data) {
  if (input && input.organizationId) return [String(input.organizationId)];
  if (data && !Array.isArray(data) && typeof data === "object" && data.organizationId) {
    return [String(data.organizationId)];
  }
  if (Array.isArray(data) && name.startsWith("organizations.")) {
    return data.map((o) => String(o.id)).filter(Boolean);
  }
  return [];
}

export class ReactiveClient extends Emitter {
  /**
   * @param {object} options `user` (id; enables persistence), `organization` (the page's),
   *   `transport` ("auto" | "ws" | "sse"), paths (`rxPath`, `eventsPath`, `wsPath`, ...),
   *   `csrfToken`, `maxEntries`, `maxBytes`, `storage`, `tenantsOf(name, input, data)`.
   */
  constructor(options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    this.tenantsOf = this.options.tenantsOf || defaultTenantsOf;
    this.cache = new PersistentCache({
      user: this.options.user,
      storage: this.options.storage,
      maxEntries: this.options.maxEntries,
      maxBytes: this.options.maxBytes,
    });
    this.queries = new Map(); // clientKey -> Query
    this.watchers = new Set(); // active queries and fragments
    this.seen = new Set(); // recent event ids (dedupe across transports and tabs)
    this.seenOrder = [];
    this.stats = {
      serverHits: 0,
      serverMisses: 0,
      localHits: 0,
      fetches: 0,
      fetchErrors: 0,
      events: 0,
      reconnects: 0,
    };
    this.clientId = this.tabId();
    this.tabs = new Tabs(this);
    this.connection = new Connection(this);
    this.connection.start();
  }

  tabId() {
    try {
      let id = sessionStorage.getItem("rx-client-id");
      if (!id) {
        id = `tab-${Math.random().toString(36).slice(2, 10)}`;
        sessionStorage.setItem("rx-client-id", id);
      }
      return id;
    } catch {
      return `tab-${Math.random().toString(36).slice(2, 10)}`;
    }
  }

  // -- stats -----------------------------------------------------------------------------

  get hitRate() {
    const total = this.stats.serverHits + this.stats.serverMisses;
    return total ? this.stats.serverHits / total : null;
  }

  get state() {
    return this.connection.state;
  }

  get transport() {
    return this.connection.transport?.kind || null;
  }

  /** Count one answer's `X-Reactive-Cache` header. */
  count(header) {
    if (header === "hit") this.countMany(1, 0);
    else if (header === "miss") this.countMany(0, 1);
  }

  countMany(hits, misses) {
    this.stats.serverHits += hits;
    this.stats.serverMisses += misses;
    this.emitStats();
  }

  emitStats() {
    this.emit("stats", { ...this.stats, hitRate: this.hitRate });
  }

  // -- HTTP ------------------------------------------------------------------------------------

  async fetch(url, init = {}) {
    this.stats.fetches += 1;
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin", ...init });
    } catch (err) {
      throw new ReactiveError(0, { code: "network", message: String(err.message || err) });
    }
    return response;
  }

  async json(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) throw new ReactiveError(response.status, body?.error || {});
    if (body === null) throw new ReactiveError(0, { message: "Unreadable answer." });
    return body;
  }

  async csrf() {
    let token = readCookie(this.options.csrfCookieName) || this.options.csrfToken;
    if (!token) {
      await this.fetch(this.options.mePath);
      token = readCookie(this.options.csrfCookieName);
    }
    return token;
  }

  async post(url, body) {
    return this.fetch(url, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRFToken": await this.csrf(),
      },
      body: JSON.stringify(body ?? {}),
    });
  }

  /** Run a query over HTTP (GET when its input fits a query string); `{data, key, tags, cursor}`. */
  async query(name, input = {}) {
    const path = this.options.rxPath + encodeURIComponent(name);
    let response;
    if (isFlat(input)) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(input || {})) {
        if (v === undefined || v === null) continue;
        for (const item of Array.isArray(v) ? v : [v]) params.append(k, String(item));
      }
      const qs = params.toString();
      response = await this.fetch(qs ? `${path}?${qs}` : path, {
        headers: { Accept: "application/json" },
      });
    } else {
      response = await this.post(path, input);
    }
    this.count(response.headers.get("X-Reactive-Cache"));
    return this.json(response);
  }

  /** Call a mutation with the CSRF token; resolves with its data, rejects with a ReactiveError. */
  async mutate(name, input = {}) {
    const response = await this.post(this.options.rxPath + encodeURIComponent(name), input);
    const body = await this.json(response);
    return body.data;
  }

  // -- queries ------------------------------------------------------------------------------------

  clientKey(name, input) {
    return `${name}?${stableStringify(input || {})}`;
  }

  organizationOf(input) {
    return (input && input.organizationId) || this.options.organization || "-";
  }

  getQuery(name, input = {}) {
    const clientKey = this.clientKey(name, input);
    let q = this.queries.get(clientKey);
    if (!q) {
      q = new Query(this, name, input, clientKey, String(this.organizationOf(input)));
      this.queries.set(clientKey, q);
    }
    return q;
  }

  /**
   * Watch a query: `callback({data, isLoading, isStale, isFetching, error})` runs at once
   * with what the cache holds (memory or localStorage), then on every change. Data
   * not known fresh is revalidated in the background. Returns the unsubscribe function.
   */
  subscribe(name, input, callback) {
    const q = this.getQuery(name, input || {});
    q.listeners.add(callback);
    this.watchers.add(q);
    if (q.data !== undefined) {
      this.stats.localHits += 1;
      this.emitStats();
    }
    callback(q.snapshot());
    if (!q.validated && !q.inflight) q.refresh();
    this.connection.sync();
    return () => {
      q.listeners.delete(callback);
      if (!q.listeners.size) {
        this.watchers.delete(q);
        q.validated = false; // nobody keeps it fresh any more
        this.connection.sync();
      }
    };
  }

  /** The data of a query once (from cache when fresh, else fetched). */
  fetchQuery(name, input = {}) {
    const q = this.getQuery(name, input);
    if (q.validated && !q.stale && q.data !== undefined) return Promise.resolve(q.data);
    return q.refresh().then(() => {
      if (q.error) throw q.error;
      return q.data;
    });
  }

  /** Refetch every watched query and fragment whose tags intersect `tags` (all if none). */
  invalidate(tags = null) {
    for (const w of this.watchers) if (!tags || intersects(w.tags, tags)) w.invalidate(null);
  }

  // -- what the transports need ------------------------------------------------------------------

  /** clientKey -> {name, input, cursor (the oldest), members (the watchers)}. */
  wantedQueries() {
    const wanted = new Map();
    for (const w of this.watchers) {
      for (const spec of w.specs()) {
        const key = this.clientKey(spec.name, spec.input);
        const prev = wanted.get(key);
        if (!prev) wanted.set(key, { ...spec, members: new Set([w]) });
        else {
          prev.members.add(w);
          if (comparePositions(spec.cursor, prev.cursor) < 0) prev.cursor = spec.cursor;
        }
      }
    }
    return wanted;
  }

  /** tenant -> the oldest cursor of the watchers that follow it (where its stream resumes). */
  wantedTenants() {
    const wanted = new Map();
    for (const w of this.watchers) {
      if (w.refused()) continue;
      for (const t of w.tenants) {
        const prev = wanted.get(t);
        if (prev === undefined || comparePositions(w.cursor, prev) < 0) wanted.set(t, w.cursor);
      }
    }
    // The page's organization first: it is never the one dropped by the stream cap.
    const page = this.options.organization ? String(this.options.organization) : null;
    if (!page || !wanted.has(page)) return wanted;
    return new Map([[page, wanted.get(page)], ...[...wanted].filter(([t]) => t !== page)]);
  }

  // -- events ---------------------------------------------------------------------------------------

  remember(event) {
    if (this.seen.has(event.id)) return false;
    this.seen.add(event.id);
    this.seenOrder.push(event);
    if (this.seenOrder.length > 1000) this.seen.delete(this.seenOrder.shift().id);
    return true;
  }

  /** The newest recent event after `cursor` whose tags intersect `tags` (or null). */
  newestMatching(tags, cursor) {
    if (!normPos(cursor)) return null; // unknown position: nothing to compare with
    let newest = null;
    for (const event of this.seenOrder) {
      if (comparePositions(event.id, cursor) > 0 && intersects(tags, event.tags)) {
        newest = maxPos(newest, event.id);
      }
    }
    return newest;
  }

  /**
   * An invalidation event. From SSE or another tab, every watcher whose tags it
   * touches is invalidated; from a WebSocket subscription (`clientKey`), the
   * watchers of that query.
   */
  deliver(event, via, clientKey = null) {
    if (!event || !event.id) return;
    if (this.remember(event)) {
      this.stats.events += 1;
      this.emit("event", { ...event, via, receivedAt: Date.now() });
      this.emitStats();
      if (via !== "tab") this.tabs.post({ t: "event", e: event });
    }
    for (const w of this.watchers) {
      const hit = clientKey
        ? w.specs().some((s) => this.clientKey(s.name, s.input) === clientKey) ||
          intersects(w.tags, event.tags)
        : intersects(w.tags, event.tags);
      if (hit) w.invalidate(event.id);
    }
  }

  resetKey(clientKey) {
    for (const w of this.watchers) {
      if (w.specs().some((s) => this.clientKey(s.name, s.input) === clientKey)) w.invalidate(null);
    }
  }

  resetTenant(tenant) {
    this.emit("event", { id: null, organizationId: tenant, tags: [], reset: true, receivedAt: Date.now() });
    for (const w of this.watchers) if (w.tenants.has(tenant) || !w.tenants.size) w.invalidate(null);
  }

  resetAll(via) {
    this.emit("event", { id: null, tags: [], reset: true, via, receivedAt: Date.now() });
    for (const w of this.watchers) w.invalidate(null);
  }

  /** After a reconnect: retry fetches that failed while the connection was down. */
  recoverAll() {
    for (const w of this.watchers) w.recover();
  }

  revalidateAll() {
    for (const w of this.watchers) w.invalidate(null);
  }

  scheduleAck(eventId, tenant) {
    if (!this.options.ack || !eventId) return;
    this.ackLatest = { eventId, organizationId: tenant };
    if (this.ackTimer) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      const { eventId: id, organizationId } = this.ackLatest;
      this.post(this.options.ackPath, { eventId: id, clientId: this.clientId, organizationId }).catch(
        () => {},
      );
    }, ACK_DELAY_MS);
  }

  fromTab(message) {
    if (message.t === "event") this.deliver(message.e, "tab");
    else if (message.t === "entry") this.queries.get(message.ck)?.adopt(message.e);
    else if (message.t === "logout" && !this.loggedOut) {
      this.loggedOut = true;
      this.forget();
      this.emit("logout", { fromTab: true });
    }
  }

  // -- live fragments -------------------------------------------------------------------------------

  /** Make every `[data-rx-fragment]` under `root` live; returns the fragments mounted. */
  mountFragments(root = document) {
    const mounted = [];
    for (const el of root.querySelectorAll("[data-rx-fragment]")) {
      if (el.rxFragment) continue;
      const f = new LiveFragment(this, el);
      this.watchers.add(f);
      mounted.push(f);
    }
    this.connection.sync();
    return mounted;
  }

  /** Stop keeping a fragment element live (before removing it from the page). */
  unmountFragment(el) {
    if (el.rxFragment) {
      this.watchers.delete(el.rxFragment);
      el.rxFragment = null;
      this.connection.sync();
    }
  }

  // -- identity -------------------------------------------------------------------------------------

  forget() {
    this.cache.clearAll();
    this.queries.clear();
    this.watchers.clear();
    this.connection.stop();
  }

  /** Drop every persisted and in-memory entry, in every tab of this browser. */
  clearCache() {
    this.tabs.logout();
    this.forget();
  }

  /** Log out through the API, clear the cache everywhere, then go to `redirect` if given. */
  async logout({ redirect = this.options.loginUrl } = {}) {
    try {
      await this.post(this.options.logoutPath, {});
    } finally {
      this.clearCache();
      if (redirect) window.location.assign(redirect);
    }
  }

  close() {
    this.connection.stop();
    this.tabs.close();
  }
}

// --- page integration ---------------------------------------------------------------------------------

let current = null;

function readConfig() {
  const el = document.getElementById("rx-config");
  if (!el) return {};
  try {
    return JSON.parse(el.textContent);
  } catch {
    return {};
  }
}

function showState(client) {
  const render = () => {
    const state = client.state;
    document.documentElement.setAttribute("data-rx-state", state);
    document.documentElement.setAttribute("data-rx-transport", client.transport || "");
    const label = {
      connected: "Live",
      connecting: "Reconnecting…",
      offline: "Offline",
      idle: "Idle",
    }[state];
    for (const el of document.querySelectorAll("[data-rx-status]")) {
      el.textContent = label || state;
      el.title = client.transport ? `${label} (${client.transport === "ws" ? "WebSocket" : "SSE"})` : label;
    }
  };
  client.on("state", render);
  client.on("transport", render);
  render();
}

function enhanceActions(client) {
  // <button data-rx-mutate="agents.update" data-rx-input='{"id":…}' data-rx-confirm="…">
  document.addEventListener("click", async (e) => {
    const button = e.target.closest?.("[data-rx-mutate]");
    if (!button) return;
    e.preventDefault();
    const question = button.getAttribute("data-rx-confirm");
    if (question && !window.confirm(question)) return;
    button.disabled = true;
    try {
      await client.mutate(button.getAttribute("data-rx-mutate"), parseAttr(button, "data-rx-input", {}));
    } catch (err) {
      window.alert(err.message || "That did not work.");
    } finally {
      button.disabled = false;
    }
  });
  // <form data-rx-logout>: clear the cache before the logout request leaves. The other
  // tabs hear of it from the page the logout lands on (below), once the session is gone.
  document.addEventListener(
    "submit",
    (e) => {
      if (e.target.matches?.("form[data-rx-logout]")) client.forget();
    },
    true,
  );
}

/**
 * Start the page's client (once): configuration from `<script id="rx-config">`
 * (the `{% reactive_client %}` tag), live fragments mounted, the connection
 * state shown on `<html data-rx-state>` and `[data-rx-status]`.
 */
export function start(config = readConfig()) {
  if (current) return current;
  const client = new ReactiveClient(config);
  current = client;
  window.reactive = client;
  if (!config.user) {
    // A page rendered without a user means this browser has no session: nothing of
    // anyone's stays behind, and the tabs still showing a user's pages are told.
    client.cache.clearAll();
    client.tabs.logout();
  }
  showState(client);
  enhanceActions(client);
  client.on("logout", () => {
    if (client.options.loginUrl) window.location.assign(client.options.loginUrl);
  });
  const mount = () => client.mountFragments(document);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mount);
  else mount();
  return client;
}

/** The page's client, once `start()` ran (null before). */
export function getClient() {
  return current;
}
