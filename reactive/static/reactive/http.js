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
   * Run a query over HTTP (GET when its input fits a query string).
   * @param {string} name
   * @param {Record<string, unknown>} [input]
   * @returns {Promise<QueryAnswer>}
   */
  async query(name, input = {}) {
    const path = this.options.rxPath + encodeURIComponent(name);
    let response;
    if (isFlat(input)) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(input || {})) {
        if (v === undefined || v === null) continue;
        for (const item of Array.isArray(v) ? v : [v]) params.append(k, String(item));
      }
      const qs = params.toString();
      response = await this.fetch(qs ? `${path}?${qs}` : path, {
        headers: { Accept: "application/json" },
      });
    } else {
      response = await this.post(path, input);
    }
    this.counters.cacheHeader(response.headers.get("X-Reactive-Cache"));
    return this.json(response);
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
