// The connection (reactive/static/reactive/connection.js): backoff that never gives up, the
// WebSocket/SSE fallback, online/offline and visibility, and, with the real WebSocket
// transport on a fake socket, resuming from the last event id after a reconnect.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { Connection } from "../../reactive/static/reactive/connection.js";
import { WebSocketTransport } from "../../reactive/static/reactive/transports.js";
import { FakeWebSocket, transportHost, watcher } from "./fakes.mjs";

beforeEach(() => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: 0 });
  mock.method(Math, "random", () => 1); // no jitter: backoff(n) = min(30 s, 500 ms * 2^n)
  FakeWebSocket.reset();
});
afterEach(() => {
  mock.timers.reset();
  mock.restoreAll();
});

/** A browser whose online state and page events the test controls. */
function environment() {
  const env = {
    isOffline: false,
    handlers: null,
    offline: () => env.isOffline,
    supports: () => true,
    watch: (handlers) => {
      env.handlers = handlers;
    },
  };
  return env;
}

/** A transport that does what the test makes it do. */
function fakeTransport(kind, link) {
  return {
    kind,
    link,
    opened: 0,
    closed: 0,
    synced: 0,
    now: 0,
    failures: 0,
    open() {
      this.opened += 1;
    },
    close() {
      this.closed += 1;
    },
    sync() {
      this.synced += 1;
    },
    reconnectNow() {
      this.now += 1;
    },
  };
}

/** A ConnectionHost recording what it is told; `make` builds the transports. */
function connectionHost(make = fakeTransport) {
  const host = {
    watchers: 1,
    made: [],
    events: [],
    reconnects: [],
    recovered: 0,
    revalidated: 0,
    watching: () => host.watchers > 0,
    transport: (kind, link) => {
      const t = make(kind, link);
      host.made.push(t);
      return t;
    },
    emit: (type, detail) => host.events.push({ type, ...detail }),
    reconnected: (count) => host.reconnects.push(count),
    recover: () => {
      host.recovered += 1;
    },
    revalidate: () => {
      host.revalidated += 1;
    },
  };
  return host;
}

function connection(host, mode = "auto") {
  const env = environment();
  const conn = new Connection(host, { mode, environment: env });
  conn.start();
  return { conn, env };
}

const retries = (host) => host.events.filter((e) => e.type === "retry").map((e) => e.in);
const states = (host) => host.events.filter((e) => e.type === "state").map((e) => e.state);

test("idle until something is watched, then connecting, then connected", () => {
  const host = connectionHost();
  host.watchers = 0;
  const { conn } = connection(host);
  conn.sync();
  assert.equal(host.made.length, 0);
  assert.equal(conn.state, "idle");
  host.watchers = 1;
  conn.sync();
  const [ws] = host.made;
  assert.equal(ws.kind, "ws");
  assert.equal(ws.opened, 1);
  assert.equal(conn.state, "connecting");
  conn.up(ws);
  assert.deepEqual(states(host), ["connecting", "connected"]);
  assert.deepEqual(host.reconnects, [], "the first connection is not a reconnect");
  conn.sync();
  assert.equal(ws.synced, 2, "once connected, sync goes to the transport");
});

test("failed attempts back off exponentially up to 30 s, and never stop", () => {
  const host = connectionHost();
  const { conn } = connection(host, "ws");
  conn.sync();
  const [ws] = host.made;
  for (let i = 0; i < 12; i += 1) {
    conn.down(ws, false);
    mock.timers.tick(retries(host).at(-1));
  }
  const capped = Array(6).fill(30_000);
  assert.deepEqual(retries(host), [500, 1000, 2000, 4000, 8000, 16_000, ...capped]);
  assert.equal(ws.opened, 13);
  assert.equal(conn.state, "connecting");
  conn.up(ws);
  conn.down(ws, true);
  assert.equal(retries(host).at(-1), 500, "a connection that worked resets the backoff");
});

test("a delay is jittered between half and all of its ceiling", () => {
  mock.method(Math, "random", () => 0);
  const host = connectionHost();
  const { conn } = connection(host, "ws");
  conn.sync();
  conn.down(host.made[0], false);
  assert.deepEqual(retries(host), [250]);
});

test("auto: SSE after two failed WebSocket attempts, WebSocket again after three SSE failures", () => {
  const host = connectionHost();
  const { conn } = connection(host);
  conn.sync();
  const [ws] = host.made;
  conn.down(ws, true); // a drop after working is not a failed attempt
  mock.timers.tick(500);
  conn.down(ws, false);
  mock.timers.tick(1000);
  assert.equal(host.made.length, 1, "one failure: WebSocket again");
  conn.down(ws, false);
  mock.timers.tick(2000);
  const sse = host.made[1];
  assert.equal(sse.kind, "sse");
  assert.equal(ws.closed, 1);
  assert.deepEqual(host.events.filter((e) => e.type === "transport").map((e) => e.transport), ["ws", "sse"]);
  const scheduled = retries(host).length;
  sse.failures = 1;
  conn.down(sse, false); // SSE streams reconnect by themselves: no reconnect of the connection
  assert.equal(retries(host).length, scheduled);
  sse.failures = 3;
  conn.down(sse, false);
  assert.equal(sse.closed, 1);
  mock.timers.tick(retries(host).at(-1));
  assert.equal(host.made[2].kind, "ws");
});

test("forced transports never fall back", () => {
  const host = connectionHost();
  const { conn } = connection(host, "sse");
  conn.sync();
  const [sse] = host.made;
  assert.equal(sse.kind, "sse");
  sse.failures = 5;
  conn.down(sse, false);
  assert.equal(sse.closed, 0);
  assert.equal(host.made.length, 1);
});

test("up again after being down counts a reconnect and retries what failed", () => {
  const host = connectionHost();
  const { conn } = connection(host);
  conn.sync();
  const [ws] = host.made;
  conn.up(ws);
  conn.down(ws, true);
  mock.timers.tick(500);
  conn.up(ws);
  conn.down(ws, true);
  mock.timers.tick(500);
  conn.up(ws);
  assert.deepEqual(host.reconnects, [1, 2]);
  conn.up(fakeTransport("ws")); // a stale transport's news is ignored
  assert.deepEqual(host.reconnects, [1, 2]);
});

test("offline closes at once; online reconnects at once and retries failed fetches", () => {
  const host = connectionHost();
  const { conn, env } = connection(host);
  conn.sync();
  const [ws] = host.made;
  conn.up(ws);
  env.isOffline = true;
  env.handlers.offline();
  assert.equal(ws.closed, 1);
  assert.equal(conn.state, "offline");
  mock.timers.tick(retries(host).at(-1)); // still offline: keeps trying, stays offline
  assert.equal(host.made.length, 1);
  assert.equal(conn.state, "offline");
  env.isOffline = false;
  env.handlers.online();
  assert.equal(host.made.length, 2);
  assert.equal(host.made[1].opened, 1);
  assert.equal(host.recovered, 1);
  conn.up(host.made[1]);
  assert.deepEqual(host.reconnects, [1]);
});

test("a page made visible reconnects at once; restored from the back/forward cache, it refetches", () => {
  const host = connectionHost();
  const { conn, env } = connection(host, "ws");
  conn.sync();
  const [ws] = host.made;
  conn.down(ws, false);
  conn.down(ws, false); // the next attempt is in a second
  env.handlers.visible();
  assert.equal(ws.opened, 2, "at once, not after the backoff");
  conn.up(ws);
  env.handlers.visible(); // already connected: nothing to do
  assert.equal(ws.opened, 2);
  env.handlers.restored();
  assert.equal(ws.opened, 3);
  assert.equal(host.revalidated, 1);
});

test("over SSE, reconnecting at once goes to the streams", () => {
  const host = connectionHost();
  const { conn, env } = connection(host, "sse");
  conn.sync();
  env.handlers.visible();
  assert.equal(host.made[0].now, 1);
  assert.equal(host.made.length, 1);
});

test("stop closes the transport and cancels the reconnect", () => {
  const host = connectionHost();
  const { conn } = connection(host);
  conn.sync();
  const [ws] = host.made;
  conn.down(ws, false);
  conn.stop();
  assert.equal(ws.closed, 1);
  assert.equal(conn.state, "idle");
  mock.timers.tick(60_000);
  assert.equal(ws.opened, 1);
});

test("with the WebSocket transport: a reconnect resumes every query from the last event id", () => {
  const tHost = transportHost();
  const members = new Set([watcher({ cursor: "100" })]);
  tHost.queries.set("a?{}", { name: "a", input: {}, cursor: "100", members });
  tHost.queries.set("b?{}", { name: "b", input: {}, cursor: "100", members });
  const host = connectionHost(
    (kind, link) => new WebSocketTransport(tHost, link, { url: () => "ws://h/", WebSocket: FakeWebSocket }),
  );
  const { conn } = connection(host, "ws");
  conn.sync();
  const first = FakeWebSocket.last;
  first.accept();
  first.answer({ type: "pong", cursor: "100" });
  assert.equal(conn.state, "connected");
  first.answer({ type: "invalidate", id: "q1", key: "a", eventId: "104", tags: [], at: 1 });
  first.answer({ type: "invalidate", id: "q2", key: "b", eventId: "102", tags: [], at: 1 });
  first.drop(1006);
  assert.equal(conn.state, "connecting");
  mock.timers.tick(499);
  assert.equal(FakeWebSocket.instances.length, 1);
  mock.timers.tick(1);
  const second = FakeWebSocket.last;
  second.accept();
  second.answer({ type: "pong", cursor: "110" });
  assert.deepEqual(
    second.subscriptions().map((m) => [m.id, m.name, m.since]),
    [["q1", "a", "104"], ["q2", "b", "102"]],
  );
  assert.equal(conn.state, "connected");
  assert.deepEqual(host.reconnects, [1]);
});
