// @ts-check
/** Small helpers every other module uses: positions, backoff, errors, events. */

/** @import { ErrorDetail, FieldError } from "./protocol.js" */

export const VERSION = "1.0.0";
/** The namespace of everything the client keeps in localStorage and BroadcastChannels. */
export const PREFIX = "rx1:";

/**
 * JSON with sorted keys: one input, one cache key, whatever its key order.
 * @param {unknown} value
 * @returns {string}
 */
export function stableStringify(value) {
  if (value === undefined) return "null";
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(",")}]`;
  const record = /** @type {Record<string, unknown>} */ (value);
  const keys = Object.keys(record)
    .filter((k) => record[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${stableStringify(record[k])}`).join(",")}}`;
}

/**
 * An event-log position as a canonical decimal string ("" when unknown or malformed).
 * @param {unknown} p
 * @returns {string}
 */
export function normPos(p) {
  const s = p == null ? "" : String(p);
  return /^\d+$/.test(s) ? s.replace(/^0+(?=\d)/, "") : "";
}

/**
 * Compare two event-log positions (decimal strings, exact at any size); unknown is lowest.
 * @param {unknown} a
 * @param {unknown} b
 * @returns {number}
 */
export function comparePositions(a, b) {
  const x = normPos(a);
  const y = normPos(b);
  if (x.length !== y.length) return x.length - y.length;
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * The later of two positions (normalized).
 * @param {unknown} a
 * @param {unknown} b
 * @returns {string}
 */
export function maxPos(a, b) {
  return comparePositions(a, b) >= 0 ? normPos(a) : normPos(b);
}

/**
 * A reconnect delay: exponential from `base`, capped at `max`, with jitter (50-100 %).
 * @param {number} attempt  0 for the first retry
 * @param {number} [base]  milliseconds
 * @param {number} [max]  milliseconds
 * @returns {number}
 */
export function backoff(attempt, base = 500, max = 30_000) {
  const ceiling = Math.min(max, base * 2 ** Math.min(attempt, 16));
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}

/**
 * @param {string} name
 * @returns {string}
 */
export function readCookie(name) {
  const match = document.cookie.match(new RegExp(`(?:^|; )${name}=([^;]*)`));
  return match ? decodeURIComponent(match[1]) : "";
}

/**
 * An element's attribute as JSON, or `fallback` when absent or malformed.
 * @template T
 * @param {Element} el
 * @param {string} name
 * @param {T} fallback
 * @returns {T}
 */
export function parseAttr(el, name, fallback) {
  try {
    const raw = el.getAttribute(name);
    return raw ? JSON.parse(raw) : fallback;
  } catch {
    return fallback;
  }
}

/**
 * Whether an input fits a query string (scalars, or lists of scalars).
 * @param {Record<string, unknown> | null | undefined} input
 * @returns {boolean}
 */
export function isFlat(input) {
  /** @param {unknown} v */
  const ok = (v) => v === null || ["string", "number", "boolean"].includes(typeof v);
  return Object.values(input || {}).every(
    (v) => v === undefined || ok(v) || (Array.isArray(v) && v.every(ok)),
  );
}

/**
 * @param {Set<string>} set
 * @param {Iterable<string> | null | undefined} list
 * @returns {boolean}
 */
export function intersects(set, list) {
  for (const item of list || []) if (set.has(item)) return true;
  return false;
}

/** An error answered by the API: `status`, `code`, `message` and `fields` (422). */
export class ReactiveError extends Error {
  /**
   * @param {number} status  the HTTP status, 0 for a network error
   * @param {ErrorDetail} [error]  the answer's `error` member
   */
  constructor(status, error = {}) {
    super(error.message || `HTTP ${status}`);
    this.name = "ReactiveError";
    /** @type {number} */
    this.status = status;
    /** @type {string} */
    this.code = error.code || (status === 0 ? "network" : "error");
    /** @type {FieldError[]} */
    this.fields = error.fields || [];
  }
}

/**
 * Named events with listeners that cannot break each other.
 * @template {Record<string, unknown>} Events  event name -> its detail
 */
export class Emitter {
  constructor() {
    /** @type {Map<keyof Events, Set<(detail: any) => void>>} */
    this.handlers = new Map();
  }

  /**
   * Call `fn` on every `type` event; returns the function that stops it.
   * @template {keyof Events} K
   * @param {K} type
   * @param {(detail: Events[K]) => void} fn
   * @returns {() => void}
   */
  on(type, fn) {
    let set = this.handlers.get(type);
    if (!set) this.handlers.set(type, (set = new Set()));
    set.add(fn);
    return () => this.handlers.get(type)?.delete(fn);
  }

  /**
   * @template {keyof Events} K
   * @param {K} type
   * @param {Events[K]} detail
   */
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
