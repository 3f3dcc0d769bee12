// @ts-check
/**
 * The wire frames the client exchanges with the server, as types (docs/protocol.md,
 * docs/api.md). Nothing runs here: the other modules import these with `@import`.
 */

// --- HTTP -----------------------------------------------------------------------------------

/**
 * A field's validation error in a 422 answer.
 * @typedef {object} FieldError
 * @property {string} field  the dotted path of the field, e.g. `data.name`
 * @property {string} message
 */

/**
 * The `error` member of an error answer (and of a WebSocket `error` message).
 * @typedef {object} ErrorDetail
 * @property {string} [code]  e.g. `invalid_input`, `forbidden`, `network`
 * @property {string} [message]
 * @property {FieldError[]} [fields]
 */

/**
 * `GET|POST /api/rx/<name>`: a query's answer (a mutation's has `data` only).
 * @typedef {object} QueryAnswer
 * @property {unknown} data
 * @property {string} key  the server's query key
 * @property {string[]} tags  what an event must touch to invalidate it
 * @property {string} cursor  the event-log position the answer was read at
 */

/**
 * `GET <data-rx-src>`: a live fragment re-rendered.
 * @typedef {object} FragmentAnswer
 * @property {string} html
 * @property {string[]} tags
 * @property {string[]} tenants
 * @property {FragmentQuery[]} queries
 * @property {string} cursor
 * @property {number} [hits]  server cache hits while rendering it
 * @property {number} [misses]
 */

/**
 * One query a fragment is rendered from (`data-rx-queries`).
 * @typedef {object} FragmentQuery
 * @property {string} name
 * @property {Record<string, unknown>} [input]
 */

/**
 * `POST /api/events/ack`.
 * @typedef {object} AckBody
 * @property {string} eventId
 * @property {string} clientId
 * @property {string | null} organizationId
 */

// --- Server-Sent Events: /api/events ----------------------------------------------------------

/**
 * The data of `event: invalidate` (its `id:` line is the same `id`).
 * @typedef {object} SseInvalidation
 * @property {string} id  the event's log position
 * @property {string} organizationId
 * @property {string[]} tags
 * @property {number} at  commit time, epoch milliseconds
 */

/**
 * The data of `event: reset`: drop the organization's cached queries and refetch.
 * @typedef {object} SseReset
 * @property {string | null} id  the position to go on from (null: the log is unreachable)
 * @property {"gap" | "unavailable"} reason
 * @property {number} at
 */

/**
 * An invalidation as the client passes it on (to its watchers, to other tabs): an SSE
 * invalidation, or a WebSocket one (whose organization the client does not learn).
 * @typedef {object} Invalidation
 * @property {string} id
 * @property {string[]} tags
 * @property {number} [at]
 * @property {string | null} [organizationId]
 */

// --- WebSocket: /ws/reactive/ -------------------------------------------------------------

/**
 * @typedef {object} WsSubscribe
 * @property {"subscribe"} type
 * @property {string} id  the client's subscription id
 * @property {string} name
 * @property {Record<string, unknown>} input
 * @property {boolean} [data]  ask for `result` messages instead of `invalidate`
 * @property {string} [since]  replay the events after this position
 */

/**
 * @typedef {{type: "unsubscribe", id: string} | {type: "ping"}} WsControl
 */

/** @typedef {WsSubscribe | WsControl} WsClientMessage  what the client sends */

/**
 * @typedef {object} WsSubscribed
 * @property {"subscribed"} type
 * @property {string} id
 * @property {string} key
 * @property {string[]} tags
 * @property {string} cursor
 * @property {unknown} [data]
 */

/**
 * @typedef {object} WsInvalidate
 * @property {"invalidate"} type
 * @property {string} id
 * @property {string} key
 * @property {string} eventId
 * @property {string[]} tags  the ones that matched
 * @property {number} at
 */

/**
 * @typedef {object} WsResult
 * @property {"result"} type
 * @property {string} id
 * @property {string} key
 * @property {unknown} data
 * @property {string} cursor
 */

/**
 * @typedef {object} WsError
 * @property {"error"} type
 * @property {string | null} id  null when the message it answers had none (a 429)
 * @property {number} status  401, 403, 404, 422 or 429
 * @property {ErrorDetail} error
 */

/**
 * @typedef {object} WsReset
 * @property {"reset"} type
 * @property {string | null} id  the subscription's, or null for all of them
 */

/**
 * @typedef {{type: "pong", cursor: string} | {type: "unsubscribed", id: string} | {type: "heartbeat"}} WsInfo
 */

/** @typedef {WsSubscribed | WsInvalidate | WsResult | WsError | WsReset | WsInfo} WsServerMessage */

export {};
