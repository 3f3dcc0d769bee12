// @ts-check
/** The persisted cache: query answers kept in localStorage per user and organization. */

import { PREFIX, VERSION } from "./util.js";

/**
 * One persisted answer (short keys: they are stored many times over).
 * @typedef {object} CacheEntry
 * @property {unknown} d  the data
 * @property {string[]} [t]  its tags
 * @property {string} [c]  its cursor
 * @property {string} [k]  the server's query key
 * @property {string} [e]  its ETag, sent as `If-None-Match` to revalidate it
 * @property {string[]} [n]  its tenants (organizations)
 * @property {number} [u]  when it was written (epoch ms)
 * @property {string} [v]  the client version that wrote it
 */

/**
 * What the cache needs of a `Storage` (localStorage, or a fake).
 * @typedef {Pick<Storage, "getItem" | "setItem" | "removeItem" | "key" | "length">} StorageLike
 */

/**
 * @typedef {object} CacheOptions
 * @property {string | number | null | undefined} user  no user: nothing is persisted
 * @property {StorageLike | null} [storage]  default localStorage; null keeps nothing
 * @property {number} [maxEntries]
 * @property {number} [maxBytes]  counted as UTF-16, like browsers' quotas
 */

/**
 * localStorage entries `rx1:<user>:<organization>:<name>?<input>` holding
 * `{d: data, t: tags, c: cursor, k: key, e: ETag, n: tenants, u: written at}`. Bounded by
 * `maxEntries` and `maxBytes` per user: the least recently written go first.
 */
export class PersistentCache {
  /** @param {CacheOptions} options */
  constructor({ user, storage, maxEntries = 200, maxBytes = 2_000_000 }) {
    this.user = user ? String(user) : "";
    this.maxEntries = maxEntries;
    this.maxBytes = maxBytes;
    /** @type {StorageLike | null} */
    this.storage = null;
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

  /**
   * @param {string | null | undefined} organization
   * @param {string} clientKey
   */
  keyFor(organization, clientKey) {
    return `${this.userPrefix()}${organization || "-"}:${clientKey}`;
  }

  /**
   * The entry stored for a query, or null (a corrupt one is removed).
   * @param {string | null | undefined} organization
   * @param {string} clientKey
   * @returns {CacheEntry | null}
   */
  read(organization, clientKey) {
    if (!this.enabled || !this.storage) return null;
    const key = this.keyFor(organization, clientKey);
    try {
      const raw = this.storage.getItem(key);
      return raw ? JSON.parse(raw) : null;
    } catch {
      this.remove(key);
      return null;
    }
  }

  /**
   * Store a query's entry, evicting what the bounds require.
   * @param {string | null | undefined} organization
   * @param {string} clientKey
   * @param {CacheEntry} entry
   */
  write(organization, clientKey, entry) {
    if (!this.enabled || !this.storage) return;
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

  /** @param {string} key */
  remove(key) {
    try {
      this.storage?.removeItem(key);
    } catch {
      /* ignore */
    }
  }

  /**
   * The storage keys under `prefix` (this user's by default).
   * @param {string} [prefix]
   * @returns {string[]}
   */
  entries(prefix = this.userPrefix()) {
    /** @type {string[]} */
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

  /**
   * Evict the oldest entries beyond the bounds (or down to `keep` of them).
   * @param {string} justWritten  kept whatever its age, unless it is alone
   * @param {number} [keep]  the share of the entries to keep
   */
  trim(justWritten, keep = 1) {
    const storage = this.storage;
    if (!storage) return;
    const rows = [];
    let bytes = 0;
    for (const key of this.entries()) {
      const raw = storage.getItem(key) || "";
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

  /** @param {string} organization */
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
