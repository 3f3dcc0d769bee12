// @ts-check
/** The HTTP side of the client: queries, mutations and the CSRF token (docs/api.md). */

import { ReactiveError, isFlat, readCookie } from "./util.js";

/** @import { AckBody, ErrorDetail, QueryAnswer } from "./protocol.js" */

const ACK_DELAY_MS = 5_000;

/**
 * @typedef {object} HttpOptions
 * @property {string} rxPath  where functions are called: `<rxPath><name>`
 * @property {string} mePath  fetched for a CSRF cookie when there is none
 * @property {string} csrfToken  used when the cookie cannot be read
 * @property {string} csrfCookieName
 */

/**
 * What the HTTP side reports to its client.
 * @typedef {object} HttpCounters
 * @property {() => void} fetched  a request leaves
 * @property {(header: string | null) => void} cacheHeader  a query's `X-Reactive-Cache`
 * @property {() => void} notModified  a conditional query was answered 304
 */

/**
 * A query fetched, perhaps conditionally (`Http.conditionalQuery`): the answer and its
 * `ETag` (200), or, for a GET sent with `If-None-Match`, no answer (304 Not Modified:
 * the data held for that ETag is still the result; keep it).
 * @typedef {object} QueryResult
 * @property {QueryAnswer | null} answer  null only for a 304 to a conditional request
 * @property {string} etag  the result's ETag, sent back as `If-None-Match` next time ("": none,
 *   the next fetch is unconditional)
 */

/** Requests to the API, with the session cookie, answers checked and errors as ReactiveErrors. */
export class Http {
  /**
   * @param {HttpOptions} options  read at each request (the client's options object)
   * @param {HttpCounters} counters
   */
  constructor(options, counters) {
    this.options = options;
    this.counters = counters;
  }

  /**
   * `fetch` with the session cookie; a network failure rejects with a status 0 ReactiveError.
   * @param {string} url
   * @param {RequestInit} [init]
   * @returns {Promise<Response>}
   */
  async fetch(url, init = {}) {
    this.counters.fetched();
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin", ...init });
    } catch (err) {
      const message = /** @type {{message?: unknown}} */ (err).message;
      throw new ReactiveError(0, { code: "network", message: String(message || err) });
    }
    return response;
  }

  /**
   * The JSON body of a successful answer; else a ReactiveError from its `error` member.
   * @param {Response} response
   * @returns {Promise<any>}
   */
  async json(response) {
    /** @type {any} */
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      throw new ReactiveError(response.status, /** @type {ErrorDetail} */ (body?.error || {}));
    }
    if (body === null) throw new ReactiveError(0, { message: "Unreadable answer." });
    return body;
  }

  /** @returns {Promise<string>} the CSRF token (fetching `mePath` for its cookie if needed) */
  async csrf() {
    let token = readCookie(this.options.csrfCookieName) || this.options.csrfToken;
    if (!token) {
      await this.fetch(this.options.mePath);
      token = readCookie(this.options.csrfCookieName);
    }
    return token;
  }

  /**
   * POST `body` as JSON with the CSRF token.
   * @param {string} url
   * @param {unknown} body
   * @returns {Promise<Response>}
   */
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

  /**
   * The GET URL of a query, or null when its input does not fit a query string (nested
   * objects): scalars as parameters, lists as repeated ones (reactive/http.py `query_input`).
   * @param {string} name
   * @param {Record<string, unknown>} [input]
   * @returns {string | null}
   */
  queryUrl(name, input = {}) {
    if (!isFlat(input)) return null;
    const path = this.options.rxPath + encodeURIComponent(name);
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(input || {})) {
      if (v === undefined || v === null) continue;
      for (const item of Array.isArray(v) ? v : [v]) params.append(k, String(item));
    }
    const qs = params.toString();
    return qs ? `${path}?${qs}` : path;
  }

  /**
   * Run a query over HTTP, revalidating `etag` (the ETag of the result held) when given.
   *
   * GET when the input fits a query string, with `If-None-Match: <etag>`: a 304 resolves
   * with `answer` null (never an error, never an empty result). Else POST, which is never
   * conditional: HTTP answers a POST's failed `If-None-Match` with 412, not 304.
   * @param {string} name
   * @param {Record<string, unknown>} [input]
   * @param {string} [etag]  "" for an unconditional fetch
   * @returns {Promise<QueryResult>}
   */
  async conditionalQuery(name, input = {}, etag = "") {
    const url = this.queryUrl(name, input);
    if (url === null) {
      const response = await this.post(this.options.rxPath + encodeURIComponent(name), input);
      this.counters.cacheHeader(response.headers.get("X-Reactive-Cache"));
      return { answer: await this.json(response), etag: "" };
    }
    /** @type {Record<string, string>} */
    const headers = { Accept: "application/json" };
    if (etag) headers["If-None-Match"] = etag;
    // "no-store": the client's own cache (cache.js) is the only one, and it revalidates
    // itself. With the default mode the browser would keep its own copy of every answer
    // (private data, on disk, past a logout) and could revalidate that copy on its own,
    // handing us a 200 rebuilt from it where the server said 304, or answering from it
    // without asking. Bypassing the HTTP cache, the server's 304 reaches us as a 304.
    const response = await this.fetch(url, { headers, cache: "no-store" });
    this.counters.cacheHeader(response.headers.get("X-Reactive-Cache"));
    if (response.status === 304) {
      // Not Modified has no body. Unasked for (no If-None-Match), it cannot be used.
      if (!etag) throw new ReactiveError(0, { message: "Unreadable answer (304 unasked)." });
      this.counters.notModified();
      return { answer: null, etag: response.headers.get("ETag") || etag };
    }
    const answer = /** @type {QueryAnswer} */ (await this.json(response));
    return { answer, etag: response.headers.get("ETag") || "" };
  }

  /**
   * Run a query over HTTP (GET when its input fits a query string), unconditionally.
   * @param {string} name
   * @param {Record<string, unknown>} [input]
   * @returns {Promise<QueryAnswer>}
   */
  async query(name, input = {}) {
    const { answer } = await this.conditionalQuery(name, input);
    return /** @type {QueryAnswer} */ (answer); // unconditional: never a 304
  }

  /**
   * Call a mutation; resolves with its data, rejects with a ReactiveError.
   * @param {string} name
   * @param {unknown} [input]
   * @returns {Promise<unknown>}
   */
  async mutate(name, input = {}) {
    const response = await this.post(this.options.rxPath + encodeURIComponent(name), input);
    const body = await this.json(response);
    return body.data;
  }
}

/** Posts a stream's newest position to `ackPath` (docs/protocol.md), at most every 5 s. */
export class Acknowledger {
  /**
   * @param {Pick<Http, "post">} http
   * @param {{ack: boolean, ackPath: string}} options
   * @param {string} clientId  this tab's
   */
  constructor(http, options, clientId) {
    this.http = http;
    this.options = options;
    this.clientId = clientId;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.timer = null;
    /** @type {AckBody | null} */
    this.latest = null;
  }

  /**
   * @param {string} eventId
   * @param {string} tenant
   */
  schedule(eventId, tenant) {
    if (!this.options.ack || !eventId) return;
    this.latest = { eventId, clientId: this.clientId, organizationId: tenant };
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.http.post(this.options.ackPath, this.latest).catch(() => {});
    }, ACK_DELAY_MS);
  }
}
