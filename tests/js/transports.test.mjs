// The transports (reactive/static/reactive/transports.js) against fake sockets and streams:
// subscriptions, resuming from the last event id, refusals, resets, the watchdog.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { SseTransport, WebSocketTransport } from "../../reactive/static/reactive/transports.js";
import { FakeEventSource, FakeWebSocket, link, transportHost, watcher } from "./fakes.mjs";

beforeEach(() => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: 0 });
  mock.method(Math, "random", () => 0);
  FakeWebSocket.reset();
  FakeEventSource.reset();
});
afterEach(() => {
  mock.timers.reset();
  mock.restoreAll();
});

const AGENTS = 'agents.getAll?{"organizationId":"o1"}';

function wanted(host, clientKey, cursor, members = [watcher({ cursor })]) {
  const [name] = clientKey.split("?");
  host.queries.set(clientKey, { name, input: { organizationId: "o1" }, cursor, members: new Set(members) });
}

function webSocket() {
  const host = transportHost();
  const links = link();
  const options = { url: () => "ws://h/ws/reactive/", WebSocket: FakeWebSocket };
  const transport = new WebSocketTransport(host, links, options);
  return { host, links, transport };
}

test("each wanted query is subscribed from its cursor; up at the server's first answer", () => {
  const { host, links, transport } = webSocket();
  wanted(host, AGENTS, "10");
  transport.open();
  transport.sync();
  const ws = FakeWebSocket.last;
  assert.equal(ws.url, "ws://h/ws/reactive/");
  assert.deepEqual(ws.sent, []); // nothing is sent before the socket opens
  ws.accept();
  assert.deepEqual(ws.sent, [
    { type: "ping" },
    { type: "subscribe", id: "q1", name: "agents.getAll", input: { organizationId: "o1" }, since: "10" },
  ]);
  assert.deepEqual(links.calls, [], "the handshake alone is not a connection");
  ws.answer({ type: "pong", cursor: "12" });
  ws.answer({ type: "subscribed", id: "q1", key: "k", tags: [], cursor: "12" });
  assert.deepEqual(links.calls, [{ up: "ws" }]);
});

test("after a drop, the reopened socket resumes each subscription from the last event seen", () => {
  const { host, links, transport } = webSocket();
  wanted(host, AGENTS, "10");
  transport.open();
  transport.sync();
  const first = FakeWebSocket.last;
  first.accept();
  first.answer({ type: "subscribed", id: "q1", key: "k", tags: [], cursor: "10" });
  first.answer({ type: "invalidate", id: "q1", key: "k", eventId: "17", tags: ["t"], at: 5 });
  first.answer({ type: "invalidate", id: "q1", key: "k", eventId: "15", tags: ["t"], at: 4 }); // late
  assert.deepEqual(host.delivered[0], {
    event: { id: "17", tags: ["t"], at: 5, organizationId: null },
    via: "ws",
    clientKey: AGENTS,
  });
  first.drop(1012); // the server restarts
  assert.deepEqual(links.calls.at(-1), { down: "ws", wasOpen: true, code: 1012 });

  transport.open(); // the connection's reconnect
  const second = FakeWebSocket.last;
  assert.notEqual(second, first);
  second.accept();
  assert.deepEqual(second.subscriptions(), [
    { type: "subscribe", id: "q1", name: "agents.getAll", input: { organizationId: "o1" }, since: "17" },
  ]);
});

test("a refused connection is a failed attempt, and says why", () => {
  for (const [code, reason] of [
    [4401, "unauthenticated"],
    [1008, "policy"],
  ]) {
    const { host, links, transport } = webSocket();
    transport.open();
    FakeWebSocket.last.accept();
    FakeWebSocket.last.drop(code); // accepted, then closed at once
    assert.deepEqual(host.refusals, [{ transport: "ws", code, reason }]);
    assert.deepEqual(links.calls, [{ down: "ws", wasOpen: false, code }]);
  }
  const { host, links, transport } = webSocket();
  transport.open();
  FakeWebSocket.last.drop(1006); // the network: no refusal
  assert.deepEqual(host.refusals, []);
  assert.deepEqual(links.calls, [{ down: "ws", wasOpen: false, code: 1006 }]);
});

test("resets refetch, and a refused subscription is dropped and refetched", () => {
  const { host, transport } = webSocket();
  wanted(host, AGENTS, "10");
  transport.open();
  transport.sync();
  const ws = FakeWebSocket.last;
  ws.accept();
  ws.answer({ type: "reset", id: "q1" });
  ws.answer({ type: "reset", id: null });
  ws.answer({ type: "reset", id: "unknown" });
  assert.deepEqual(host.resets, [{ key: AGENTS }, { all: "ws" }]);
  ws.answer({ type: "error", id: "q1", status: 403, error: { code: "forbidden" } });
  assert.deepEqual(host.resets.at(-1), { key: AGENTS });
  assert.equal(transport.subs.has(AGENTS), false);
  ws.answer({ type: "invalidate", id: "q1", key: "k", eventId: "20", tags: [], at: 1 });
  assert.deepEqual(host.delivered, [], "no events for a dropped subscription");
  ws.answer({ type: "error", id: null, status: 429, error: { code: "rate_limited" } }); // ignored
  assert.equal(host.resets.length, 3);
});

test("unwanted queries are unsubscribed; a joining watcher with older data replays from its cursor", () => {
  const { host, transport } = webSocket();
  const a = watcher({ cursor: "30" });
  wanted(host, AGENTS, "30", [a]);
  wanted(host, "tools.getAll?{}", "30");
  transport.open();
  const ws = FakeWebSocket.last;
  ws.accept();
  transport.sync();
  ws.sent = [];
  const older = watcher({ cursor: "20" });
  wanted(host, AGENTS, "20", [a, older]);
  host.queries.delete("tools.getAll?{}");
  transport.sync();
  assert.deepEqual(ws.sent, [
    { type: "subscribe", id: "q1", name: "agents.getAll", input: { organizationId: "o1" }, since: "20" },
    { type: "unsubscribe", id: "q2" },
  ]);
  ws.sent = [];
  transport.sync(); // nothing changed: nothing sent
  assert.deepEqual(ws.sent, []);
});

test("a socket that hears nothing for 45 s is closed; otherwise it pings every 20 s", () => {
  const { transport } = webSocket();
  transport.open();
  const ws = FakeWebSocket.last;
  ws.accept();
  ws.answer({ type: "pong", cursor: "1" });
  ws.sent = [];
  mock.timers.tick(20_000);
  assert.deepEqual(ws.sent, [{ type: "ping" }]);
  ws.answer({ type: "heartbeat" });
  mock.timers.tick(40_000); // 40 s after the heartbeat: still alive
  assert.equal(ws.closedWith, null);
  mock.timers.tick(20_000); // 60 s of silence
  assert.deepEqual(ws.closedWith, { code: 4000, reason: "watchdog" });
});

function sse() {
  const host = transportHost();
  const links = link();
  const options = { url: () => "http://h/api/events", EventSource: FakeEventSource };
  const transport = new SseTransport(host, links, options);
  return { host, links, transport };
}

test("one stream per organization from its cursor, the first four only", () => {
  const { host, links, transport } = sse();
  for (const [tenant, cursor] of [["page", "5"], ["b", ""], ["c", "7"], ["d", "8"], ["e", "9"]]) {
    host.tenants.set(tenant, cursor);
  }
  transport.open();
  const urls = FakeEventSource.instances.map((es) => Object.fromEntries(es.url.searchParams));
  assert.deepEqual(urls, [
    { organizationId: "page", since: "5" },
    { organizationId: "b" },
    { organizationId: "c", since: "7" },
    { organizationId: "d", since: "8" },
  ]);
  FakeEventSource.instances.slice(0, 3).forEach((es) => es.open());
  assert.deepEqual(links.calls, [], "up once every stream is open");
  FakeEventSource.instances[3].open();
  assert.deepEqual(links.calls, [{ up: "sse" }]);
  host.tenants.delete("c");
  transport.sync();
  assert.equal(FakeEventSource.instances[2].closed, true);
  assert.equal(FakeEventSource.instances[4].url.searchParams.get("organizationId"), "e");
});

test("with nothing to follow, SSE is up at once", () => {
  const { links, transport } = sse();
  transport.open();
  assert.deepEqual(links.calls, [{ up: "sse" }]);
  assert.equal(FakeEventSource.instances.length, 0);
});

test("a dropped stream reconnects by itself with backoff, from the last event id seen", () => {
  const { host, links, transport } = sse();
  host.tenants.set("o1", "10");
  transport.open();
  const first = FakeEventSource.last;
  first.open();
  const event = { id: "21", organizationId: "o1", tags: ["t"], at: 3 };
  first.event("invalidate", event, "21");
  first.event("invalidate", { ...event, id: "20" }, "20"); // the position never goes back
  assert.deepEqual(host.delivered[0], { event, via: "sse", clientKey: null });
  assert.deepEqual(host.acks.at(-1), { eventId: "21", tenant: "o1" });
  first.fail();
  assert.equal(first.closed, true);
  assert.deepEqual(links.calls.at(-1), { down: "sse", wasOpen: true, code: undefined });
  mock.timers.tick(249); // backoff(0) with no jitter: 250 ms
  assert.equal(FakeEventSource.instances.length, 1);
  mock.timers.tick(1);
  const second = FakeEventSource.last;
  assert.equal(second.url.searchParams.get("since"), "21");

  second.fail(); // failed before opening: counted, and the backoff grows
  second.fail();
  assert.equal(transport.failures, 2);
  assert.equal(transport.streams.get("o1").attempt, 3);
  transport.reconnectNow(); // online again: at once, backoff reset
  assert.equal(FakeEventSource.instances.length, 3);
  FakeEventSource.last.open();
  assert.equal(transport.failures, 0);
  assert.equal(transport.streams.get("o1").attempt, 0);
});

test("reset and forbidden refetch the organization; a reset moves the position", () => {
  const { host, transport } = sse();
  host.tenants.set("o1", "10");
  transport.open();
  const es = FakeEventSource.last;
  es.open();
  es.event("reset", { id: "50", reason: "gap", at: 1 }, "50");
  es.event("forbidden", {});
  assert.deepEqual(host.resets, [{ tenant: "o1" }, { tenant: "o1" }]);
  es.fail();
  mock.timers.tick(250);
  assert.equal(FakeEventSource.last.url.searchParams.get("since"), "50");
});
