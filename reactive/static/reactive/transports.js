// @ts-check
/** The real-time transports: a WebSocket (one subscription per query) and SSE (a stream per organization). */

import { backoff, comparePositions, maxPos } from "./util.js";

/** @import { Invalidation, SseInvalidation } from "./protocol.js" */
/** @import { WsClientMessage, WsServerMessage, WsSubscribe } from "./protocol.js" */
/** @import { Watcher } from "./queries.js" */

const MAX_SSE_STREAMS = 4; // browsers allow ~6 HTTP/1.1 connections per host
const WATCHDOG_MS = 45_000; // the server sends a heartbeat every 15 s without traffic
const PING_MS = 20_000;
// WebSocket close codes of a refused connection (docs/protocol.md): the server
// completes the handshake and closes at once, so that a browser sees the code.
/** @type {Record<number, "unauthenticated" | "policy">} */
const WS_REFUSALS = { 4401: "unauthenticated", 1008: "policy" };

/**
 * A query the watchers want followed: from the oldest cursor among them.
 * @typedef {object} WantedQuery
 * @property {string} name
 * @property {Record<string, unknown>} input
 * @property {string} cursor
 * @property {Set<Watcher>} members
 */

/**
 * `client.on("refused")`: the server refused the WebSocket (docs/protocol.md).
 * @typedef {object} Refusal
 * @property {"ws"} transport
 * @property {number} code  4401 or 1008
 * @property {"unauthenticated" | "policy"} reason
 */

/**
 * What a transport needs from its client.
 * @typedef {object} TransportHost
 * @property {() => Map<string, WantedQuery>} wantedQueries  clientKey -> the query to subscribe
 * @property {() => Map<string, string>} wantedTenants  tenant -> where its stream resumes
 * @property {(event: Invalidation, via: "ws" | "sse", clientKey?: string | null) => void} deliver
 * @property {(clientKey: string) => void} resetKey  refetch one query's watchers
 * @property {(tenant: string) => void} resetTenant  refetch one organization's watchers
 * @property {(via: "ws") => void} resetAll  refetch everything
 * @property {(eventId: string, tenant: string) => void} ack  acknowledge a position (SSE)
 * @property {(refusal: Refusal) => void} refused
 */

/**
 * What a transport tells its connection.
 * @typedef {object} Link
 * @property {(transport: Transport) => void} up  connected (the server answered)
 * @property {(transport: Transport, wasOpen: boolean, code?: number) => void} down
 */

/** @typedef {WebSocketTransport | SseTransport} Transport */

/**
 * A subscription the WebSocket keeps.
 * @typedef {object} WsSubscription
 * @property {string} id
 * @property {string} name
 * @property {Record<string, unknown>} input
 * @property {string} since  where it resumes: the newest event seen, else its cursor
 * @property {Set<Watcher>} members
 */

/**
 * @typedef {object} WsOptions
 * @property {() => string} url  the ws:// or wss:// address, asked at each open
 * @property {typeof WebSocket} [WebSocket]  default the browser's
 */

/** The WebSocket transport: one subscription per query, resumed with `since` after reconnects. */
export class WebSocketTransport {
  /**
   * @param {TransportHost} host
   * @param {Link} link
   * @param {WsOptions} options
   */
  constructor(host, link, { url, WebSocket: Socket = globalThis.WebSocket }) {
    this.host = host;
    this.link = link;
    this.url = url;
    this.Socket = Socket;
    /** @type {"ws"} */
    this.kind = "ws";
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {Map<string, WsSubscription>} clientKey -> subscription */
    this.subs = new Map();
    /** @type {Map<string, string>} subscription id -> clientKey */
    this.byId = new Map();
    this.counter = 0;
    this.opened = false;
    this.lastMessage = 0;
    /** @type {ReturnType<typeof setInterval>[]} */
    this.timers = [];
  }

  open() {
    this.close();
    this.opened = false;
    /** @type {WebSocket} */
    let ws;
    try {
      ws = new this.Socket(this.url());
    } catch {
      queueMicrotask(() => this.link.down(this, false));
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
        this.link.up(this);
      }
      /** @type {WsServerMessage} */
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
      if (reason) this.host.refused({ transport: "ws", code: e.code, reason });
      this.link.down(this, this.opened, e.code);
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
    return Boolean(this.ws && this.ws.readyState === this.Socket.OPEN);
  }

  /** @param {WsClientMessage} message */
  send(message) {
    if (this.isOpen) this.ws?.send(JSON.stringify(message));
  }

  /** @param {WsSubscription} sub */
  sendSubscribe(sub) {
    /** @type {WsSubscribe} */
    const message = { type: "subscribe", id: sub.id, name: sub.name, input: sub.input };
    if (sub.since) message.since = sub.since;
    this.send(message);
  }

  /** Subscribe the queries the watchers need; unsubscribe the rest. */
  sync() {
    const wanted = this.host.wantedQueries();
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

  /** @param {WsServerMessage} msg */
  handle(msg) {
    const id = /** @type {{id?: string | null}} */ (msg).id;
    const clientKey = id == null ? null : this.byId.get(id);
    const sub = clientKey ? this.subs.get(clientKey) : null;
    switch (msg.type) {
      case "subscribed":
        if (sub && msg.cursor && !sub.since) sub.since = msg.cursor;
        break;
      case "invalidate":
        if (!sub) break;
        sub.since = maxPos(sub.since, msg.eventId);
        this.host.deliver(
          { id: msg.eventId, tags: msg.tags, at: msg.at, organizationId: null },
          "ws",
          clientKey,
        );
        break;
      case "reset":
        if (msg.id == null) this.host.resetAll("ws");
        else if (clientKey) this.host.resetKey(clientKey);
        break;
      case "error":
        if (sub && clientKey && [401, 403, 404].includes(msg.status)) {
          this.subs.delete(clientKey);
          this.byId.delete(sub.id);
          this.host.resetKey(clientKey); // refetch: shows the error (or recovers)
        }
        break;
      default:
        break;
    }
  }
}

/**
 * One organization's stream.
 * @typedef {object} SseStream
 * @property {EventSource} [es]
 * @property {string} last  the newest event id seen (where a reconnect resumes)
 * @property {number} attempt  reconnects since it was last open
 * @property {ReturnType<typeof setTimeout>} [timer]
 * @property {boolean} open
 */

/**
 * @typedef {object} SseOptions
 * @property {() => string} url  the absolute address of the events endpoint
 * @property {typeof EventSource} [EventSource]  default the browser's
 */

/** The SSE transport: one EventSource per organization, resumed with `since`. */
export class SseTransport {
  /**
   * @param {TransportHost} host
   * @param {Link} link
   * @param {SseOptions} options
   */
  constructor(host, link, { url, EventSource: Source = globalThis.EventSource }) {
    this.host = host;
    this.link = link;
    this.url = url;
    this.Source = Source;
    /** @type {"sse"} */
    this.kind = "sse";
    /** @type {Map<string, SseStream>} tenant -> its stream */
    this.streams = new Map();
    this.failures = 0; // connections that failed before opening, in a row
  }

  open() {
    this.sync();
    if (!this.streams.size) this.link.up(this); // nothing to follow yet
  }

  close() {
    for (const tenant of [...this.streams.keys()]) this.stop(tenant);
  }

  /** @param {string} tenant */
  stop(tenant) {
    const stream = this.streams.get(tenant);
    if (!stream) return;
    clearTimeout(stream.timer);
    stream.es?.close();
    this.streams.delete(tenant);
  }

  /** Follow the organizations the watchers need (at most four); stop the rest. */
  sync() {
    const wanted = this.host.wantedTenants(); // tenant -> oldest cursor
    const tenants = [...wanted.keys()].slice(0, MAX_SSE_STREAMS);
    for (const tenant of tenants) {
      if (!this.streams.has(tenant)) {
        this.streams.set(tenant, { last: wanted.get(tenant) || "", attempt: 0, open: false });
        this.connect(tenant);
      }
    }
    for (const tenant of [...this.streams.keys()]) if (!tenants.includes(tenant)) this.stop(tenant);
  }

  get isOpen() {
    return [...this.streams.values()].every((s) => s.open);
  }

  /** @param {string} tenant */
  connect(tenant) {
    const stream = this.streams.get(tenant);
    if (!stream) return;
    const url = new URL(this.url());
    url.searchParams.set("organizationId", tenant);
    if (stream.last) url.searchParams.set("since", stream.last);
    const es = new this.Source(url.href);
    stream.es = es;
    es.onopen = () => {
      stream.open = true;
      stream.attempt = 0;
      this.failures = 0;
      if (this.isOpen) this.link.up(this);
    };
    /** @param {MessageEvent} e */
    const remember = (e) => {
      if (e.lastEventId) stream.last = maxPos(stream.last, e.lastEventId);
    };
    es.addEventListener("invalidate", (e) => {
      remember(e);
      try {
        this.host.deliver(/** @type {SseInvalidation} */ (JSON.parse(e.data)), "sse");
      } catch {
        /* ignore */
      }
      this.host.ack(stream.last, tenant);
    });
    es.addEventListener("reset", (e) => {
      remember(e);
      this.host.resetTenant(tenant);
    });
    es.addEventListener("forbidden", () => this.host.resetTenant(tenant));
    es.onerror = () => {
      // Our own reconnect (EventSource gives up on HTTP errors): backoff, resume from `last`.
      es.close();
      const wasOpen = stream.open;
      stream.open = false;
      if (!wasOpen) this.failures += 1;
      this.link.down(this, wasOpen);
      clearTimeout(stream.timer);
      stream.timer = setTimeout(() => this.connect(tenant), backoff(stream.attempt++));
    };
  }

  /** Reconnect the streams that are down now, not at their backoff. */
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
