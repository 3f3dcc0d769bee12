// Fakes of what the client's modules get from the browser and from each other, for the
// unit tests beside this file (node --test tests/js/). Each records what it was asked.

/** localStorage: a Map, with an optional quota (in UTF-16 bytes, like browsers count). */
export class FakeStorage {
  constructor({ quota = Infinity } = {}) {
    this.map = new Map();
    this.quota = quota;
  }

  get length() {
    return this.map.size;
  }

  key(i) {
    return [...this.map.keys()][i] ?? null;
  }

  getItem(key) {
    return this.map.has(key) ? this.map.get(key) : null;
  }

  setItem(key, value) {
    const used = [...this.map].reduce((n, [k, v]) => n + (k === key ? 0 : (k.length + v.length) * 2), 0);
    if (used + (key.length + String(value).length) * 2 > this.quota) {
      throw new Error("QuotaExceededError");
    }
    this.map.set(key, String(value));
  }

  removeItem(key) {
    this.map.delete(key);
  }
}

/** A promise with its resolve and reject at hand. */
export function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Let queued microtasks and settled promises run. */
export function flush() {
  return new Promise((resolve) => setImmediate(resolve));
}

/** A WebSocket the test plays the server of. */
export class FakeWebSocket {
  static OPEN = 1;
  static instances = [];

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.instances.push(this);
  }

  static reset() {
    FakeWebSocket.instances = [];
  }

  static get last() {
    return FakeWebSocket.instances.at(-1);
  }

  send(text) {
    this.sent.push(JSON.parse(text));
  }

  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }

  // What the server does:
  accept() {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.({});
  }

  answer(message) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }

  drop(code) {
    this.readyState = 3;
    this.onclose?.({ code });
  }

  subscriptions() {
    return this.sent.filter((m) => m.type === "subscribe");
  }
}

/** An EventSource the test plays the server of. */
export class FakeEventSource {
  static instances = [];

  constructor(url) {
    this.url = new URL(url);
    this.listeners = new Map();
    this.closed = false;
    FakeEventSource.instances.push(this);
  }

  static reset() {
    FakeEventSource.instances = [];
  }

  static get last() {
    return FakeEventSource.instances.at(-1);
  }

  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }

  close() {
    this.closed = true;
  }

  // What the server (or the network) does:
  open() {
    this.onopen?.({});
  }

  event(type, data, lastEventId = "") {
    for (const fn of this.listeners.get(type) || []) fn({ data: JSON.stringify(data), lastEventId });
  }

  fail() {
    this.onerror?.({});
  }
}

/** A TransportHost (transports.js) whose wanted queries and tenants the test sets. */
export function transportHost() {
  const host = {
    queries: new Map(),
    tenants: new Map(),
    delivered: [],
    resets: [],
    acks: [],
    refusals: [],
    wantedQueries: () => host.queries,
    wantedTenants: () => host.tenants,
    deliver: (event, via, clientKey = null) => host.delivered.push({ event, via, clientKey }),
    resetKey: (clientKey) => host.resets.push({ key: clientKey }),
    resetTenant: (tenant) => host.resets.push({ tenant }),
    resetAll: (via) => host.resets.push({ all: via }),
    ack: (eventId, tenant) => host.acks.push({ eventId, tenant }),
    refused: (refusal) => host.refusals.push(refusal),
  };
  return host;
}

/** A Link (what transports tell their connection), recording the calls. */
export function link() {
  const calls = [];
  return {
    calls,
    up: (transport) => calls.push({ up: transport.kind }),
    down: (transport, wasOpen, code) => calls.push({ down: transport.kind, wasOpen, code }),
  };
}

/** A watcher as transports and the registry see one. */
export function watcher({ tags = [], tenants = [], cursor = "", specs = [], refused = false } = {}) {
  const w = {
    tags: new Set(tags),
    tenants: new Set(tenants),
    cursor,
    invalidated: [],
    recovered: 0,
    specs: () => specs.map((s) => ({ input: {}, cursor: w.cursor, ...s })),
    refused: () => refused,
    invalidate: (eventId) => w.invalidated.push(eventId),
    recover: () => {
      w.recovered += 1;
    },
  };
  return w;
}

/**
 * `fetch` the test plays the server of: each request waits until the test answers it
 * (`respond`, oldest first). Install with `mock.method(globalThis, "fetch", fake.fetch)`.
 */
export class FakeFetch {
  constructor() {
    this.requests = [];
    this.fetch = (url, init = {}) => {
      const reply = deferred();
      this.requests.push({ url: String(url), init, headers: new Headers(init.headers), ...reply });
      return reply.promise;
    };
  }

  get last() {
    return this.requests.at(-1);
  }

  /** Answer the oldest request not yet answered: a JSON `body` (none for a 304), `headers`. */
  async respond(status, body = undefined, headers = {}) {
    await flush(); // a scheduled refetch starts in a microtask
    const request = this.requests.find((r) => !r.done);
    request.done = true;
    const text = body === undefined ? null : JSON.stringify(body);
    const type = text === null ? {} : { "Content-Type": "application/json" };
    request.resolve(new Response(text, { status, headers: { ...type, ...headers } }));
    await flush();
    return request;
  }
}
