// @ts-check
/** ReactiveClient: the cache, the watchers and the connection, wired together (see client.js). */

import { PersistentCache } from "./cache.js";
import { DEFAULTS, defaultTenantsOf } from "./config.js";
import { Connection } from "./connection.js";
import { LiveFragment } from "./fragments.js";
import { Acknowledger, Http } from "./http.js";
import { Query } from "./queries.js";
import { Registry } from "./registry.js";
import { Tabs, tabId } from "./tabs.js";
import { SseTransport, WebSocketTransport } from "./transports.js";
import { Emitter, stableStringify } from "./util.js";

/** @import { ClientEvents, ClientOptions, Stats, TenantsOf } from "./config.js" */
/** @import { ConnectionEvents, ConnectionHost } from "./connection.js" */
/** @import { FragmentElement, FragmentHost } from "./fragments.js" */
/** @import { FragmentAnswer, Invalidation } from "./protocol.js" */
/** @import { QueryHost, QuerySnapshot, WatcherHost } from "./queries.js" */
/** @import { TabMessage } from "./tabs.js" */
/** @import { TransportHost } from "./transports.js" */

/**
 * `path` as an absolute URL of this page's server (`ws:`/`wss:` when `socket`).
 * @param {string} path
 * @param {boolean} [socket]
 */
function absolute(path, socket = false) {
  const url = new URL(path, window.location.href);
  if (socket) url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** @extends {Emitter<ClientEvents>} */
export class ReactiveClient extends Emitter {
  /**
   * @param {ClientOptions} options `user` (id; enables persistence), `organization` (the page's),
   *   `transport` ("auto" | "ws" | "sse"), paths (`rxPath`, `eventsPath`, `wsPath`, ...),
   *   `csrfToken`, `maxEntries`, `maxBytes`, `storage`, `tenantsOf(name, input, data)`.
   */
  constructor(options = {}) {
    super();
    /** @type {typeof DEFAULTS & ClientOptions} */
    this.options = { ...DEFAULTS, ...options };
    /** @type {TenantsOf} */
    this.tenantsOf = this.options.tenantsOf || defaultTenantsOf;
    this.cache = new PersistentCache({
      user: this.options.user,
      storage: this.options.storage,
      maxEntries: this.options.maxEntries,
      maxBytes: this.options.maxBytes,
    });
    /** @type {Map<string, Query>} clientKey -> Query */
    this.queries = new Map();
    this.registry = new Registry((name, input) => this.clientKey(name, input));
    this.watchers = this.registry.watchers; // active queries and fragments
    /** @type {Stats} */
    this.stats = {
      serverHits: 0,
      serverMisses: 0,
      localHits: 0,
      fetches: 0,
      fetchErrors: 0,
      notModified: 0,
      events: 0,
      reconnects: 0,
    };
    this.loggedOut = false;
    this.clientId = tabId();
    this.http = new Http(this.options, {
      fetched: () => {
        this.stats.fetches += 1;
      },
      cacheHeader: (header) => this.count(header),
      notModified: () => {
        this.stats.notModified += 1;
        this.emitStats();
      },
    });
    this.acks = new Acknowledger(this.http, this.options, this.clientId);
    /** @type {WatcherHost} */
    const watcherHost = {
      newestMatching: (tags, cursor) => this.registry.newestMatching(tags, cursor),
      fetchFailed: () => {
        this.stats.fetchErrors += 1;
        this.emitStats();
      },
      sync: () => this.connection.sync(),
    };
    /** @type {QueryHost} */
    this.queryHost = {
      ...watcherHost,
      run: (name, input, etag) => this.http.conditionalQuery(name, input, etag),
      tenantsOf: (name, input, data) => this.tenantsOf(name, input, data),
      cache: this.cache,
      stored: (org, ck, e) => this.tabs.post({ t: "entry", org, ck, e }),
    };
    /** @type {FragmentHost} */
    this.fragmentHost = {
      ...watcherHost,
      render: async (src) => {
        const response = await this.http.fetch(src, { headers: { Accept: "application/json" } });
        /** @type {FragmentAnswer} */
        const body = await this.http.json(response);
        this.countMany(body.hits || 0, body.misses || 0);
        return body;
      },
      rendered: (element, cursor) => this.emit("fragment", { element, cursor }),
    };
    /** @type {TransportHost} */
    const transportHost = {
      wantedQueries: () => this.registry.wantedQueries(),
      // The page's organization first: it is never the one dropped by the stream cap.
      wantedTenants: () => {
        const page = this.options.organization;
        return this.registry.wantedTenants(page ? String(page) : null);
      },
      deliver: (event, via, clientKey) => this.deliver(event, via, clientKey),
      resetKey: (clientKey) => this.registry.resetKey(clientKey),
      resetTenant: (tenant) => this.resetTenant(tenant),
      resetAll: (via) => this.resetAll(via),
      ack: (eventId, tenant) => this.acks.schedule(eventId, tenant),
      refused: (refusal) => this.emit("refused", refusal),
    };
    /** @type {ConnectionHost} */
    const connectionHost = {
      watching: () => this.watchers.size > 0,
      transport: (kind, link) =>
        kind === "ws"
          ? new WebSocketTransport(transportHost, link, { url: () => absolute(this.options.wsPath, true) })
          : new SseTransport(transportHost, link, { url: () => absolute(this.options.eventsPath) }),
      emit: (type, detail) => this.emit(/** @type {keyof ConnectionEvents} */ (type), detail),
      reconnected: (count) => {
        this.stats.reconnects = count;
        this.emitStats();
        this.registry.recoverAll();
      },
      recover: () => this.registry.recoverAll(),
      revalidate: () => this.registry.invalidateAll(),
    };
    this.tabs = new Tabs(this.options.user, (message) => this.fromTab(message));
    this.connection = new Connection(connectionHost, { mode: this.options.transport || "auto" });
    this.connection.start();
  }

  // -- stats -----------------------------------------------------------------------------

  /** @returns {number | null} the share of server cache hits, null before any */
  get hitRate() {
    const total = this.stats.serverHits + this.stats.serverMisses;
    return total ? this.stats.serverHits / total : null;
  }

  get state() {
    return this.connection.state;
  }

  /** @returns {"ws" | "sse" | null} */
  get transport() {
    return this.connection.transport?.kind || null;
  }

  /**
   * Count one answer's `X-Reactive-Cache` header.
   * @param {string | null} header
   */
  count(header) {
    if (header === "hit") this.countMany(1, 0);
    else if (header === "miss") this.countMany(0, 1);
  }

  /**
   * @param {number} hits
   * @param {number} misses
   */
  countMany(hits, misses) {
    this.stats.serverHits += hits;
    this.stats.serverMisses += misses;
    this.emitStats();
  }

  emitStats() {
    this.emit("stats", { ...this.stats, hitRate: this.hitRate });
  }

  // -- HTTP (http.js) ----------------------------------------------------------------------------

  /**
   * Run a query over HTTP (GET when its input fits a query string); `{data, key, tags, cursor}`.
   * @param {string} name
   * @param {Record<string, unknown>} [input]
   */
  query(name, input = {}) {
    return this.http.query(name, input);
  }

  /**
   * Call a mutation with the CSRF token; resolves with its data, rejects with a ReactiveError.
   * @param {string} name
   * @param {unknown} [input]
   */
  mutate(name, input = {}) {
    return this.http.mutate(name, input);
  }

  // -- queries ------------------------------------------------------------------------------------

  /**
   * @param {string} name
   * @param {unknown} input
   */
  clientKey(name, input) {
    return `${name}?${stableStringify(input || {})}`;
  }

  /** @param {Record<string, unknown> | null | undefined} input */
  organizationOf(input) {
    return (input && input.organizationId) || this.options.organization || "-";
  }

  /**
   * The query of `name` and `input` (made on first use).
   * @param {string} name
   * @param {Record<string, unknown>} [input]
   */
  getQuery(name, input = {}) {
    const clientKey = this.clientKey(name, input);
    let q = this.queries.get(clientKey);
    if (!q) {
      q = new Query(this.queryHost, name, input, clientKey, String(this.organizationOf(input)));
      this.queries.set(clientKey, q);
    }
    return q;
  }

  /**
   * Watch a query: `callback({data, isLoading, isStale, isFetching, error})` runs at once
   * with what the cache holds (memory or localStorage), then on every change. Data
   * not known fresh is revalidated in the background. Returns the unsubscribe function.
   * @param {string} name
   * @param {Record<string, unknown> | null | undefined} input
   * @param {(snapshot: QuerySnapshot) => void} callback
   * @returns {() => void}
   */
  subscribe(name, input, callback) {
    const q = this.getQuery(name, input || {});
    this.watchers.add(q);
    if (q.data !== undefined) {
      this.stats.localHits += 1;
      this.emitStats();
    }
    q.listen(callback);
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

  /**
   * The data of a query once (from cache when fresh, else fetched).
   * @param {string} name
   * @param {Record<string, unknown>} [input]
   * @returns {Promise<unknown>}
   */
  fetchQuery(name, input = {}) {
    const q = this.getQuery(name, input);
    if (q.validated && !q.stale && q.data !== undefined) return Promise.resolve(q.data);
    return q.refresh().then(() => {
      if (q.error) throw q.error;
      return q.data;
    });
  }

  /**
   * Refetch every watched query and fragment whose tags intersect `tags` (all if none).
   * @param {string[] | null} [tags]
   */
  invalidate(tags = null) {
    this.registry.invalidateAll(tags);
  }

  // -- events ---------------------------------------------------------------------------------------

  /**
   * An invalidation event. From SSE or another tab, every watcher whose tags it
   * touches is invalidated; from a WebSocket subscription (`clientKey`), the
   * watchers of that query.
   * @param {Invalidation} event
   * @param {"ws" | "sse" | "tab"} via
   * @param {string | null} [clientKey]
   */
  deliver(event, via, clientKey = null) {
    if (!event || !event.id) return;
    if (this.registry.remember(event)) {
      this.stats.events += 1;
      this.emit("event", { ...event, via, receivedAt: Date.now() });
      this.emitStats();
      if (via !== "tab") this.tabs.post({ t: "event", e: event });
    }
    this.registry.invalidateMatching(event, clientKey);
  }

  /** @param {string} tenant */
  resetTenant(tenant) {
    this.emit("event", { id: null, organizationId: tenant, tags: [], reset: true, receivedAt: Date.now() });
    this.registry.resetTenant(tenant);
  }

  /** @param {string} via */
  resetAll(via) {
    this.emit("event", { id: null, tags: [], reset: true, via, receivedAt: Date.now() });
    this.registry.invalidateAll();
  }

  /** @param {TabMessage} message */
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

  /**
   * Make every `[data-rx-fragment]` under `root` live; returns the fragments mounted.
   * @param {ParentNode} [root]
   */
  mountFragments(root = document) {
    const mounted = [];
    for (const el of root.querySelectorAll("[data-rx-fragment]")) {
      if (/** @type {FragmentElement} */ (el).rxFragment) continue;
      const f = new LiveFragment(this.fragmentHost, el);
      this.watchers.add(f);
      mounted.push(f);
    }
    this.connection.sync();
    return mounted;
  }

  /**
   * Stop keeping a fragment element live (before removing it from the page).
   * @param {FragmentElement} el
   */
  unmountFragment(el) {
    if (el.rxFragment) {
      this.watchers.delete(el.rxFragment);
      el.rxFragment = null;
      this.connection.sync();
    }
  }

  // -- identity -------------------------------------------------------------------------------------

  /** Drop every persisted and in-memory entry of this tab, and stop following. */
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

  /**
   * Log out through the API, clear the cache everywhere, then go to `redirect` if given.
   * @param {{redirect?: string}} [options]
   */
  async logout({ redirect = this.options.loginUrl } = {}) {
    try {
      await this.http.post(this.options.logoutPath, {});
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
