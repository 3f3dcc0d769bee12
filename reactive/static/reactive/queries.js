// @ts-check
/** Watchers (what queries and fragments share) and queries, with their fetch state machine. */

import { ReactiveError, backoff, comparePositions, maxPos, normPos } from "./util.js";

/** @import { CacheEntry } from "./cache.js" */
/** @import { QueryResult } from "./http.js" */

/**
 * What a watcher needs from its client.
 * @typedef {object} WatcherHost
 * @property {(tags: Set<string>, cursor: string) => string | null} newestMatching  the newest
 *   recent event after `cursor` touching `tags` (checked after a first fetch)
 * @property {(error: ReactiveError) => void} fetchFailed  count a failed fetch
 * @property {() => void} sync  the subscriptions may have changed: update the connection
 */

/**
 * What a query needs from its client, besides a watcher's needs.
 * @typedef {object} QueryNeeds
 * @property {(name: string, input: Record<string, unknown>, etag: string) => Promise<QueryResult>} run
 *   fetch it, revalidating `etag` (the held result's ETag; "" fetches unconditionally)
 * @property {(name: string, input: Record<string, unknown>, data: unknown) => string[]} tenantsOf
 * @property {QueryStore} cache  where answers persist
 * @property {(organization: string, clientKey: string, entry: CacheEntry) => void} stored  tell
 *   the other tabs about a fresh answer
 * @typedef {WatcherHost & QueryNeeds} QueryHost
 */

/**
 * The part of PersistentCache a query uses.
 * @typedef {object} QueryStore
 * @property {(organization: string, clientKey: string) => CacheEntry | null} read
 * @property {(organization: string, clientKey: string, entry: CacheEntry) => void} write
 * @property {(organization: string) => void} clearOrganization
 */

/**
 * Whether two snapshots show the same thing (the same data object, the same flags).
 * @param {QuerySnapshot | undefined} a
 * @param {QuerySnapshot} b
 */
function sameSnapshot(a, b) {
  if (!a) return false;
  const keys = /** @type {(keyof QuerySnapshot)[]} */ (Object.keys(b));
  return keys.every((k) => Object.is(a[k], b[k]));
}

/**
 * A query a watcher wants the server to follow: subscribed from `cursor`.
 * @typedef {object} QuerySpec
 * @property {string} name
 * @property {Record<string, unknown>} input
 * @property {string} cursor
 */

/**
 * What `subscribe` callbacks receive (docs/client.md).
 * @typedef {object} QuerySnapshot
 * @property {unknown} data  the last answer (undefined until there is one)
 * @property {boolean} isLoading  no data yet, and no error
 * @property {boolean} isStale  data shown that may be out of date
 * @property {boolean} isFetching
 * @property {ReactiveError | null} error
 * @property {string} cursor
 * @property {number} updatedAt
 * @property {boolean} fromCache  read from storage
 */

/**
 * What both queries and fragments share: tags, tenants and a cursor to match
 * events against, and a fetch loop that honours invalidations arriving while
 * a fetch is in flight and retries failures with backoff.
 * @template {WatcherHost} [Host=WatcherHost]  what the subclass needs of its client
 */
export class Watcher {
  /** @param {Host} host */
  constructor(host) {
    this.host = host;
    /** @type {Set<string>} */
    this.tags = new Set();
    /** @type {Set<string>} */
    this.tenants = new Set();
    this.cursor = "";
    /** @type {Promise<void> | null} */
    this.inflight = null;
    /** @type {string | null} the newest event id seen while a fetch was in flight ("*": reset) */
    this.invalidatedDuring = null;
    this.stale = false;
    /** @type {ReactiveError | null} */
    this.error = null;
    this.retryAttempt = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.retryTimer = undefined;
    this.scheduled = false;
  }

  /**
   * An event (or a reset, `eventId` null) touching this watcher's data.
   * @param {string | null} eventId
   * @returns {boolean} whether it made the data stale
   */
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

  /**
   * Fetch now (or join the fetch in flight); never rejects: failures land in `error`.
   * @returns {Promise<void>}
   */
  async refresh() {
    if (this.inflight) return this.inflight;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.invalidatedDuring = null;
    const firstLoad = this.tags.size === 0;
    this.inflight = this.load()
      .then((cursor) => {
        this.error = null;
        this.retryAttempt = 0;
        // Events that arrived before this watcher knew its tags (during its first fetch)
        // count too. Only then: a cache hit may keep answering an older cursor than an
        // event its data already includes, and this must not turn into a fetch loop.
        const missed = firstLoad ? this.host.newestMatching(this.tags, cursor) : null;
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
        const error = err instanceof ReactiveError ? err : new ReactiveError(0, { message: String(err) });
        this.error = error;
        this.host.fetchFailed(error);
        this.failed(error);
        this.changed();
        if (error.status === 0 || error.status >= 500 || error.status === 429) {
          this.retryTimer = setTimeout(() => this.refresh(), backoff(this.retryAttempt++, 1000));
        }
      });
    return this.inflight;
  }

  /**
   * Fetch the data and take it in; resolves with the cursor it is now at.
   * @returns {Promise<string>}
   */
  async load() {
    throw new Error("a Watcher subclass loads its data");
  }

  /** After a reconnect or coming back online: retry what failed. */
  recover() {
    if (this.error && (this.error.status === 0 || this.error.status >= 500)) this.refresh();
  }

  /**
   * A fetch failed (after `error` is set, before `changed`).
   * @param {ReactiveError} _error
   */
  failed(_error) {}

  /** The state changed: show it. */
  changed() {}

  /** Whether the server refused the last fetch (401/403/404): do not subscribe then. */
  refused() {
    return Boolean(this.error && [401, 403, 404].includes(this.error.status));
  }

  /**
   * The queries the server should follow for this watcher.
   * @returns {QuerySpec[]}
   */
  specs() {
    return [];
  }
}

/**
 * One query (name + input) and its subscribers.
 * @extends {Watcher<QueryHost>}
 */
export class Query extends Watcher {
  /**
   * @param {QueryHost} host
   * @param {string} name
   * @param {Record<string, unknown> | null | undefined} input
   * @param {string} clientKey  the name and the input as sorted JSON
   * @param {string} organization  the cache namespace
   */
  constructor(host, name, input, clientKey, organization) {
    super(host);
    this.name = name;
    this.input = input || {};
    this.clientKey = clientKey;
    this.organization = organization;
    /** @type {Set<(snapshot: QuerySnapshot) => void>} */
    this.listeners = new Set();
    /** @type {WeakMap<(snapshot: QuerySnapshot) => void, QuerySnapshot>} what each was shown last */
    this.shown = new WeakMap();
    /** @type {unknown} */
    this.data = undefined;
    this.key = "";
    this.etag = ""; // the ETag of `data`, sent as If-None-Match to revalidate it ("": none)
    this.updatedAt = 0;
    this.fromStorage = false;
    this.validated = false; // fetched (or kept fresh by events) since it was last watched
    const stored = host.cache.read(organization, clientKey);
    if (stored) this.apply(stored, true);
  }

  /**
   * @param {CacheEntry} entry
   * @param {boolean} [fromStorage]  shown at once, revalidated in the background
   */
  apply(entry, fromStorage = false) {
    this.data = entry.d;
    this.tags = new Set(entry.t || []);
    this.tenants = new Set(entry.n || []);
    this.cursor = normPos(entry.c);
    this.key = entry.k || "";
    this.etag = entry.e || "";
    this.updatedAt = entry.u || Date.now();
    this.fromStorage = fromStorage;
    if (fromStorage) this.stale = true;
  }

  /** @returns {CacheEntry} */
  entry() {
    const { updatedAt: u, data: d, cursor: c, key: k } = this;
    const entry = { u, d, t: [...this.tags], c, k, n: [...this.tenants] };
    return this.etag ? { ...entry, e: this.etag } : entry;
  }

  /** @returns {QuerySnapshot} */
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

  /**
   * Add a subscriber and call it at once (synchronously) with the snapshot now.
   * @param {(snapshot: QuerySnapshot) => void} fn
   */
  listen(fn) {
    this.listeners.add(fn);
    const snap = this.snapshot();
    this.shown.set(fn, snap);
    fn(snap);
  }

  /** Tell each subscriber the snapshot, unless it shows what that subscriber was shown last. */
  changed() {
    const snap = this.snapshot();
    for (const fn of [...this.listeners]) {
      if (sameSnapshot(this.shown.get(fn), snap)) continue; // say, a 304 that changed nothing shown
      this.shown.set(fn, snap);
      try {
        fn(snap);
      } catch (err) {
        console.error("reactive: subscriber failed", err);
      }
    }
  }

  async load() {
    // Revalidate what is held: its ETag goes as If-None-Match, and a 304 keeps it.
    const held = this.data !== undefined ? this.etag : "";
    const { answer: body, etag } = await this.host.run(this.name, this.input, held);
    if (!body) return this.notModified();
    const tenants = this.host.tenantsOf(this.name, this.input, body.data);
    if (this.cursor && body.cursor && comparePositions(body.cursor, this.cursor) < 0) {
      this.validated = true;
      return this.cursor; // another tab already stored something newer
    }
    this.apply({ d: body.data, t: body.tags, c: body.cursor, k: body.key, n: tenants, e: etag });
    this.validated = true;
    this.host.cache.write(this.organization, this.clientKey, this.entry());
    this.host.stored(this.organization, this.clientKey, this.entry());
    this.host.sync();
    return this.cursor;
  }

  /**
   * A 304 Not Modified: the data held is still the result. It stays as it is: the same
   * object (a renderer comparing data by identity does nothing), with its cursor (the
   * one the 200 of this ETag carried: the server's answer for this ETag is that same
   * entry), tags, key, ETag and `updatedAt` (when the data was received). Nothing is
   * stored or told to the other tabs: they hold it already. It is known fresh now:
   * `refresh` clears the stale state (or fetches again if an event came during the
   * fetch and the cursor does not cover it), and subscribers hear of it only if their
   * snapshot changes (`isStale`, `isFetching`, `error`, `fromCache`).
   * @returns {string} the cursor
   */
  notModified() {
    if (this.error && [401, 403].includes(this.error.status)) {
      this.host.cache.write(this.organization, this.clientKey, this.entry()); // dropped by `failed`
    }
    this.fromStorage = false; // the server vouched for it
    this.validated = true;
    return this.cursor;
  }

  /** @param {ReactiveError} error */
  failed(error) {
    if (error.status === 403 || error.status === 401) {
      this.host.cache.clearOrganization(this.organization); // access lost: drop what we kept
    }
  }

  /**
   * Fresher data from another tab.
   * @param {CacheEntry} entry
   */
  adopt(entry) {
    if (this.cursor && comparePositions(entry.c, this.cursor) <= 0) return;
    this.apply(entry);
    if (!this.inflight) this.stale = false;
    this.changed();
    this.host.sync();
  }

  specs() {
    if (!this.cursor || this.refused()) return [];
    return [{ name: this.name, input: this.input, cursor: this.cursor }];
  }
}
