// @ts-check
/** The client's options and their defaults, and the types of what it reports (stats, events). */

/** @import { StorageLike } from "./cache.js" */
/** @import { ConnectionEvents, TransportMode } from "./connection.js" */
/** @import { Invalidation } from "./protocol.js" */
/** @import { Refusal } from "./transports.js" */

/**
 * `new ReactiveClient(options)` (docs/client.md): every key is optional.
 * @typedef {object} ClientOptions
 * @property {string | number | null} [user]  the user's id; enables persistence
 * @property {string | number | null} [organization]  the page's organization
 * @property {TransportMode} [transport]
 * @property {string} [rxPath]
 * @property {string} [eventsPath]
 * @property {string} [ackPath]
 * @property {string} [wsPath]
 * @property {string} [mePath]
 * @property {string} [logoutPath]
 * @property {string} [loginUrl]
 * @property {string} [csrfToken]
 * @property {string} [csrfCookieName]
 * @property {number} [maxEntries]
 * @property {number} [maxBytes]
 * @property {boolean} [ack]  acknowledge SSE positions
 * @property {StorageLike | null} [storage]  another Storage, or null for memory only
 * @property {TenantsOf} [tenantsOf]
 */

/**
 * Which organizations' SSE streams a query needs.
 * @typedef {(name: string, input: Record<string, unknown>, data: unknown) => string[]} TenantsOf
 */

/**
 * @typedef {object} Stats
 * @property {number} serverHits  from `X-Reactive-Cache`
 * @property {number} serverMisses
 * @property {number} localHits
 * @property {number} fetches
 * @property {number} fetchErrors
 * @property {number} notModified  conditional query fetches answered 304 (no body)
 * @property {number} events
 * @property {number} reconnects
 */

/**
 * `client.on("event")`: an invalidation received, or a reset (`id` null).
 * @typedef {(Invalidation | {id: null, tags: string[], organizationId?: string}) &
 *   {via?: string, receivedAt: number, reset?: true}} ReceivedEvent
 */

/**
 * The client's events and their details.
 * @typedef {ConnectionEvents & {
 *   event: ReceivedEvent,
 *   refused: Refusal,
 *   stats: Stats & {hitRate: number | null},
 *   fragment: {element: Element, cursor: string},
 *   logout: {fromTab: boolean},
 * }} ClientEvents
 */

export const DEFAULTS = {
  /** @type {string | number | null} */
  user: null,
  /** @type {string | number | null} */
  organization: null,
  /** @type {TransportMode} */
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

/** @type {TenantsOf} the input's organizationId, else its data's */
export function defaultTenantsOf(name, input, data) {
  if (input && input.organizationId) return [String(input.organizationId)];
  const record = /** @type {{organizationId?: unknown}} */ (data);
  if (data && !Array.isArray(data) && typeof data === "object" && record.organizationId) {
    return [String(record.organizationId)];
  }
  if (Array.isArray(data) && name.startsWith("organizations.")) {
    return data.map((o) => String(o.id)).filter(Boolean);
  }
  return [];
}
