// @ts-check
/** The connection: which transport, when to reconnect, and what the page's state is. */

import { backoff } from "./util.js";

/** @import { Link, Transport } from "./transports.js" */

/** @typedef {"idle" | "connecting" | "connected" | "offline"} ConnectionState */
/** @typedef {"auto" | "ws" | "sse"} TransportMode */

/**
 * The connection's events (the client re-emits them: docs/client.md).
 * @typedef {object} ConnectionEvents
 * @property {{state: ConnectionState, transport: "ws" | "sse" | null}} state
 * @property {{transport: "ws" | "sse"}} transport  a new kind of transport is in use
 * @property {{in: number, attempt: number}} retry  the next connection attempt, in ms
 */

/**
 * What the connection needs from its client.
 * @typedef {object} ConnectionHost
 * @property {() => boolean} watching  whether any watcher needs following
 * @property {(kind: "ws" | "sse", link: Link) => Transport} transport  make a transport
 * @property {<K extends keyof ConnectionEvents>(type: K, detail: ConnectionEvents[K]) => void} emit
 * @property {(count: number) => void} reconnected  up again after being down (`count`
 *   reconnects so far): retry what failed meanwhile
 * @property {() => void} recover  the browser is back online: retry what failed
 * @property {() => void} revalidate  the page came back from the back/forward cache
 */

/**
 * @typedef {object} EnvironmentHandlers
 * @property {() => void} online
 * @property {() => void} offline
 * @property {() => void} visible  the page became visible
 * @property {() => void} restored  the page came back from the back/forward cache
 */

/**
 * The browser, as far as the connection is concerned.
 * @typedef {object} Environment
 * @property {() => boolean} offline  whether the browser knows it is offline
 * @property {(kind: "ws" | "sse") => boolean} supports
 * @property {(handlers: EnvironmentHandlers) => void} watch
 */

/** @type {Environment} */
export const browserEnvironment = {
  offline: () => navigator.onLine === false,
  supports: (kind) => (kind === "ws" ? typeof WebSocket !== "undefined" : typeof EventSource !== "undefined"),
  watch({ online, offline, visible, restored }) {
    window.addEventListener("online", online);
    window.addEventListener("offline", offline);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") visible();
    });
    window.addEventListener("pageshow", (e) => {
      if (e.persisted) restored();
    });
  },
};

/**
 * Owns the transport: WebSocket first ("auto"), SSE after two WebSocket
 * failures in a row (and WebSocket again after three SSE failures). Never
 * gives up: reconnects with backoff, at once when the browser comes online or
 * the page becomes visible.
 * @implements {Link}
 */
export class Connection {
  /**
   * @param {ConnectionHost} host
   * @param {{mode?: TransportMode, environment?: Environment}} [options]
   */
  constructor(host, { mode = "auto", environment = browserEnvironment } = {}) {
    this.host = host;
    this.mode = mode;
    this.environment = environment;
    /** @type {ConnectionState} */
    this.state = "idle";
    /** @type {Transport | null} */
    this.transport = null;
    this.attempt = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    this.wsFailures = 0;
    this.started = false;
    this.everConnected = false;
    this.reconnects = 0;
  }

  start() {
    if (this.started) return;
    this.started = true;
    this.environment.watch({
      online: () => this.online(),
      offline: () => this.offline(),
      visible: () => {
        if (this.state !== "connected") this.reconnectNow();
      },
      restored: () => {
        this.reconnectNow();
        this.host.revalidate();
      },
    });
  }

  /** @returns {"ws" | "sse"} */
  chooseKind() {
    if (this.mode === "sse" || !this.environment.supports("ws")) return "sse";
    if (this.mode === "ws" || !this.environment.supports("sse")) return "ws";
    return this.wsFailures >= 2 ? "sse" : "ws";
  }

  /** @param {ConnectionState} state */
  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.host.emit("state", { state, transport: this.transport?.kind || null });
  }

  /** Open, re-subscribe or close according to the watchers (cheap; call freely). */
  sync() {
    if (!this.started) return;
    if (this.transport) this.transport.sync();
    else if (this.state === "idle" && this.host.watching()) this.connect();
    // otherwise a reconnect is scheduled, and it subscribes what is wanted then
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.environment.offline()) {
      this.setState("offline");
      this.schedule(); // the "online" event may never come: keep trying anyway
      return;
    }
    const kind = this.chooseKind();
    if (!this.transport || this.transport.kind !== kind) {
      this.transport?.close();
      this.transport = this.host.transport(kind, this);
      this.host.emit("transport", { transport: kind });
    }
    this.setState("connecting");
    this.transport.open();
    if (kind === "ws") this.transport.sync();
  }

  /** @param {Transport} transport */
  up(transport) {
    if (transport !== this.transport) return;
    const wasDown = this.everConnected && this.state !== "connected";
    this.everConnected = true;
    this.attempt = 0;
    if (transport.kind === "ws") this.wsFailures = 0;
    this.setState("connected");
    if (wasDown) {
      this.reconnects += 1;
      this.host.reconnected(this.reconnects);
    }
  }

  /**
   * @param {Transport} transport
   * @param {boolean} wasOpen  whether it had connected (else this was a failed attempt)
   */
  down(transport, wasOpen) {
    if (transport !== this.transport) return;
    if (transport.kind === "ws" && !wasOpen) this.wsFailures += 1;
    if (transport.kind === "sse" && this.mode === "auto" && transport.failures >= 3) {
      this.wsFailures = 0; // give WebSocket another chance
      transport.close();
      this.transport = null;
    }
    this.setState(this.environment.offline() ? "offline" : "connecting");
    // An SSE stream reconnects by itself (each on its own backoff).
    if (!this.transport || transport.kind === "ws") this.schedule();
  }

  schedule() {
    clearTimeout(this.timer);
    const delay = backoff(this.attempt++);
    this.host.emit("retry", { in: delay, attempt: this.attempt });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    if (!this.host.watching()) return;
    this.attempt = 0;
    if (this.transport && this.transport.kind === "sse" && this.state !== "offline") {
      this.transport.reconnectNow();
      return;
    }
    this.connect();
  }

  online() {
    this.reconnectNow();
    this.host.recover();
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
