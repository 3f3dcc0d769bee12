// Conditional revalidation: a query (queries.js) over the real HTTP side (http.js) and
// persisted cache (cache.js), with `fetch` faked. A refetch of a result the client holds
// sends its ETag as If-None-Match; a 304 keeps the data (docs/client.md).
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { PersistentCache } from "../../reactive/static/reactive/cache.js";
import { Http } from "../../reactive/static/reactive/http.js";
import { Query } from "../../reactive/static/reactive/queries.js";
import { ReactiveError } from "../../reactive/static/reactive/util.js";
import { FakeFetch, FakeStorage, flush } from "./fakes.mjs";

let server;
beforeEach(() => {
  mock.timers.enable({ apis: ["setTimeout", "Date"], now: 5_000 });
  mock.method(Math, "random", () => 0);
  server = new FakeFetch();
  mock.method(globalThis, "fetch", server.fetch);
});
afterEach(() => {
  mock.timers.reset();
  mock.restoreAll();
  delete globalThis.document;
});

const INPUT = { organizationId: "org1", limit: 5 };
const URL_ = "/api/rx/agents.getAll?organizationId=org1&limit=5";
const TAGS = ["agency.agent:organization_id=org1"];

/** A QueryHost running its fetches through Http, persisting into `storage`. */
function client(storage = new FakeStorage()) {
  const counts = { notModified: 0, hits: [], failures: [], shared: [], syncs: 0 };
  const http = new Http(
    { rxPath: "/api/rx/", mePath: "/api/auth/me", csrfToken: "tok", csrfCookieName: "csrftoken" },
    {
      fetched: () => {},
      cacheHeader: (header) => counts.hits.push(header),
      notModified: () => {
        counts.notModified += 1;
      },
    },
  );
  const cache = new PersistentCache({ user: "u1", storage });
  const host = {
    newestMatching: () => null,
    fetchFailed: (error) => counts.failures.push(error.status),
    sync: () => {
      counts.syncs += 1;
    },
    run: (name, input, etag) => http.conditionalQuery(name, input, etag),
    tenantsOf: () => ["org1"],
    cache,
    stored: (_org, _key, entry) => counts.shared.push(entry),
  };
  return { host, http, counts, storage, cache };
}

function query(host, input = INPUT) {
  const q = new Query(host, "agents.getAll", input, `agents.getAll?${JSON.stringify(input)}`, "org1");
  const seen = [];
  q.listen((snapshot) => seen.push(snapshot));
  return { q, seen };
}

function answer(data, cursor) {
  return { data, key: "k1", tags: TAGS, cursor };
}

function stored(storage, q) {
  return JSON.parse(storage.getItem(`rx1:u1:org1:${q.clientKey}`));
}

/** A query holding `data` with ETag "v1" at cursor 10, and what it has shown so far. */
async function loaded({ storage, etag = '"v1"' } = {}) {
  const c = client(storage);
  const { q, seen } = query(c.host);
  q.refresh();
  const body = answer([{ id: "a1", name: "Atlas" }], "10");
  await server.respond(200, body, etag ? { ETag: etag, "X-Reactive-Cache": "miss" } : {});
  return { ...c, q, seen, data: q.data }; // the object subscribers were given
}

test("the first fetch sends no If-None-Match, GETs past the HTTP cache, and keeps the ETag", async () => {
  const { q, seen, storage } = await loaded();
  assert.equal(server.requests.length, 1);
  const first = server.requests[0];
  assert.equal(first.url, URL_);
  assert.equal(first.init.method, undefined, "a GET");
  assert.equal(first.headers.has("If-None-Match"), false);
  assert.equal(first.init.cache, "no-store", "the browser's cache neither answers nor revalidates");
  assert.equal(q.etag, '"v1"');
  assert.equal(stored(storage, q).e, '"v1"', "persisted with the data");
  assert.deepEqual(seen.at(-1).data, [{ id: "a1", name: "Atlas" }]);
});

test("a refetch after an invalidation sends the ETag; a 304 keeps the data and its state", async () => {
  const { q, seen, data, storage, counts } = await loaded();
  const before = storage.getItem(`rx1:u1:org1:${q.clientKey}`);
  const shown = seen.length;
  assert.equal(q.invalidate("11"), true);
  assert.equal(seen.length, shown + 1);
  assert.equal(seen.at(-1).isStale, true, "shown as stale while it is revalidated");
  await flush();
  assert.equal(server.requests.length, 2);
  assert.equal(server.last.headers.get("If-None-Match"), '"v1"');
  assert.equal(server.last.init.cache, "no-store");

  await server.respond(304, undefined, { ETag: '"v1"', "X-Reactive-Cache": "hit" });
  // One call, clearing the stale state, with the very same data object: nothing to re-render.
  assert.equal(seen.length, shown + 2);
  const last = seen.at(-1);
  assert.equal(last.data, data);
  assert.equal(q.data, data);
  assert.deepEqual(
    [last.isStale, last.isFetching, last.isLoading, last.error, last.cursor, last.updatedAt],
    [false, false, false, null, "10", 5_000],
  );
  assert.ok(seen.slice(shown - 1).every((s) => s.data === data), "never notified with another value");
  assert.equal(q.etag, '"v1"');
  assert.equal(q.validated, true);
  assert.deepEqual(counts.failures, [], "a 304 is no error");
  assert.equal(counts.notModified, 1);
  assert.deepEqual(counts.hits, ["miss", "hit"]);
  assert.equal(storage.getItem(`rx1:u1:org1:${q.clientKey}`), before, "nothing rewritten");
  assert.equal(counts.shared.length, 1, "nothing new for the other tabs");

  // A revalidation that changes nothing shown calls nobody at all.
  q.refresh();
  assert.equal(server.last.headers.get("If-None-Match"), '"v1"');
  await server.respond(304, undefined, { ETag: '"v1"' });
  assert.equal(seen.length, shown + 2);
  assert.equal(q.data, data);
});

test("a 200 after a 304 replaces the data and the ETag", async () => {
  const { q, seen, storage } = await loaded();
  q.invalidate("11");
  await server.respond(304, undefined, { ETag: '"v1"' });
  q.invalidate("12");
  await flush();
  assert.equal(server.last.headers.get("If-None-Match"), '"v1"');
  const renamed = [{ id: "a1", name: "Renamed" }];
  await server.respond(200, answer(renamed, "12"), { ETag: '"v2"' });
  assert.deepEqual(seen.at(-1).data, renamed);
  assert.equal(seen.at(-1).cursor, "12");
  assert.equal(seen.at(-1).isStale, false);
  assert.equal(q.etag, '"v2"');
  assert.equal(stored(storage, q).e, '"v2"');
  assert.deepEqual(stored(storage, q).d, renamed);
  q.invalidate("13");
  await flush();
  assert.equal(server.last.headers.get("If-None-Match"), '"v2"', "the new ETag is the one sent");
});

test("a result without an ETag makes the next fetch unconditional", async () => {
  const { q, storage } = await loaded();
  q.invalidate("11");
  await server.respond(200, answer(["other"], "11")); // no ETag header
  assert.equal(q.etag, "");
  assert.equal("e" in stored(storage, q), false);
  q.invalidate("12");
  await flush();
  assert.equal(server.last.headers.has("If-None-Match"), false);

  const fresh = await loaded({ etag: "" });
  fresh.q.invalidate("11");
  await flush();
  assert.equal(server.last.headers.has("If-None-Match"), false);
});

test("stored data is revalidated with its stored ETag: after a reload a 304 costs no body", async () => {
  const storage = new FakeStorage();
  const { data } = await loaded({ storage });
  const reloaded = client(storage); // another page of the same user
  const { q, seen } = query(reloaded.host);
  assert.deepEqual([seen.at(-1).fromCache, seen.at(-1).isStale], [true, true]);
  q.refresh();
  assert.equal(server.last.headers.get("If-None-Match"), '"v1"');
  await server.respond(304, undefined, { ETag: '"v1"' });
  const last = seen.at(-1);
  assert.deepEqual([last.fromCache, last.isStale, last.error], [false, false, null]);
  assert.deepEqual(last.data, data);
  assert.equal(seen.length, 2, "shown once from storage, once confirmed");
});

test("an ETag another tab shares comes with its data, and is the one sent next", async () => {
  const { q } = await loaded();
  q.adopt({ d: ["from a tab"], t: TAGS, c: "20", k: "k1", n: ["org1"], e: '"v7"' });
  q.invalidate("21");
  await flush();
  assert.equal(server.last.headers.get("If-None-Match"), '"v7"');
});

test("an event during a conditional fetch still forces another fetch after a 304", async () => {
  const { q } = await loaded();
  q.invalidate("11");
  await flush();
  q.invalidate("15"); // arrives while the revalidation is in flight
  await server.respond(304, undefined, { ETag: '"v1"' });
  assert.equal(server.requests.length, 3, "the 304 may predate event 15");
  assert.equal(server.last.headers.get("If-None-Match"), '"v1"');
  assert.equal(q.snapshot().isStale, true);
  await server.respond(200, answer(["after 15"], "15"), { ETag: '"v3"' });
  assert.equal(q.snapshot().isStale, false);
  assert.deepEqual(q.data, ["after 15"]);
});

test("a query sent as POST (input beyond a query string) is never conditional", async () => {
  globalThis.document = { cookie: "" }; // the CSRF token comes from the options
  const c = client();
  const input = { organizationId: "org1", filter: { role: "writer" } };
  const { q } = query(c.host, input);
  q.refresh();
  await flush(); // after the CSRF token
  assert.equal(server.last.init.method, "POST");
  assert.equal(server.last.init.body, JSON.stringify(input));
  await server.respond(200, answer(["x"], "10"), { ETag: '"p1"' });
  assert.equal(q.etag, "", "an ETag it could never send back is not kept");
  q.invalidate("11");
  await flush();
  assert.equal(server.last.init.method, "POST");
  assert.equal(server.last.headers.has("If-None-Match"), false);
});

test("lists go as repeated parameters, and a 304 nobody asked for is no result", async () => {
  const { http } = client();
  const pending = http.conditionalQuery("agents.getAll", { organizationId: "o", ids: ["a", "b"] });
  assert.equal(server.last.url, "/api/rx/agents.getAll?organizationId=o&ids=a&ids=b");
  const refused = assert.rejects(pending, (err) => err instanceof ReactiveError && err.status === 0);
  await server.respond(304);
  await refused;
});
