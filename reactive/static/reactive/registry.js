// @ts-check
/** The active watchers, the recent events, and which watchers an event touches. */

import { comparePositions, intersects, maxPos, normPos } from "./util.js";

/** @import { Invalidation } from "./protocol.js" */
/** @import { Watcher } from "./queries.js" */
/** @import { WantedQuery } from "./transports.js" */

const RECENT_EVENTS = 1000; // remembered to dedupe across transports and tabs

/** The watchers a client keeps fresh (queries with subscribers, mounted fragments). */
export class Registry {
  /** @param {(name: string, input: unknown) => string} keyOf  a query's client key */
  constructor(keyOf) {
    this.keyOf = keyOf;
    /** @type {Set<Watcher>} */
    this.watchers = new Set();
    /** @type {Set<string>} recent event ids */
    this.seen = new Set();
    /** @type {Invalidation[]} the same events, oldest first */
    this.seenOrder = [];
  }

  /**
   * @param {Invalidation} event
   * @returns {boolean} whether it is new (not seen over another transport or tab)
   */
  remember(event) {
    if (this.seen.has(event.id)) return false;
    this.seen.add(event.id);
    this.seenOrder.push(event);
    if (this.seenOrder.length > RECENT_EVENTS) {
      this.seen.delete(/** @type {Invalidation} */ (this.seenOrder.shift()).id);
    }
    return true;
  }

  /**
   * The newest recent event after `cursor` whose tags intersect `tags` (or null).
   * @param {Set<string>} tags
   * @param {string} cursor
   * @returns {string | null}
   */
  newestMatching(tags, cursor) {
    if (!normPos(cursor)) return null; // unknown position: nothing to compare with
    /** @type {string | null} */
    let newest = null;
    for (const event of this.seenOrder) {
      if (comparePositions(event.id, cursor) > 0 && intersects(tags, event.tags)) {
        newest = maxPos(newest, event.id);
      }
    }
    return newest;
  }

  /** @returns {Map<string, WantedQuery>} clientKey -> {name, input, cursor (the oldest), members} */
  wantedQueries() {
    /** @type {Map<string, WantedQuery>} */
    const wanted = new Map();
    for (const w of this.watchers) {
      for (const spec of w.specs()) {
        const key = this.keyOf(spec.name, spec.input);
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

  /**
   * Tenant -> the oldest cursor of the watchers that follow it (where its stream resumes).
   * @param {string | null} page  the page's organization: first, so the stream cap never drops it
   * @returns {Map<string, string>}
   */
  wantedTenants(page) {
    /** @type {Map<string, string>} */
    const wanted = new Map();
    for (const w of this.watchers) {
      if (w.refused()) continue;
      for (const t of w.tenants) {
        const prev = wanted.get(t);
        if (prev === undefined || comparePositions(w.cursor, prev) < 0) wanted.set(t, w.cursor);
      }
    }
    const first = page === null ? undefined : wanted.get(page);
    if (page === null || first === undefined) return wanted;
    return new Map([[page, first], ...[...wanted].filter(([t]) => t !== page)]);
  }

  /**
   * @param {Watcher} watcher
   * @param {string} clientKey
   */
  follows(watcher, clientKey) {
    return watcher.specs().some((s) => this.keyOf(s.name, s.input) === clientKey);
  }

  /**
   * Invalidate the watchers an event touches: by tags, and from a WebSocket
   * subscription (`clientKey`) the watchers of that query too.
   * @param {Invalidation} event
   * @param {string | null} clientKey
   */
  invalidateMatching(event, clientKey) {
    for (const w of this.watchers) {
      const hit = clientKey
        ? this.follows(w, clientKey) || intersects(w.tags, event.tags)
        : intersects(w.tags, event.tags);
      if (hit) w.invalidate(event.id);
    }
  }

  /** @param {string} clientKey  refetch the watchers of this query */
  resetKey(clientKey) {
    for (const w of this.watchers) if (this.follows(w, clientKey)) w.invalidate(null);
  }

  /** @param {string} tenant  refetch its watchers (and those of no known organization) */
  resetTenant(tenant) {
    for (const w of this.watchers) if (w.tenants.has(tenant) || !w.tenants.size) w.invalidate(null);
  }

  /** @param {Iterable<string> | null} [tags]  refetch the watchers they meet (all without) */
  invalidateAll(tags = null) {
    for (const w of this.watchers) if (!tags || intersects(w.tags, tags)) w.invalidate(null);
  }

  /** After a reconnect: retry fetches that failed while the connection was down. */
  recoverAll() {
    for (const w of this.watchers) w.recover();
  }
}
