// The query state machine (reactive/static/reactive/queries.js) with a fake client:
// each fetch is a promise the test settles, so it decides what is in flight when.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { Query } from "../../reactive/static/reactive/queries.js";
import { ReactiveError } from "../../reactive/static/reactive/util.js";
import { deferred, flush } from "./fakes.mjs";

beforeEach(() => {
  mock.timers.enable({ apis: ["setTimeout", "Date"], now: 5_000 });
  mock.method(Math, "random", () => 0); // backoff(n, base) = base * 2^n / 2
});
afterEach(() => {
  mock.timers.reset();
  mock.restoreAll();
});

/** A QueryHost whose fetches wait for the test, and whose cache holds `stored`. */
function queryHost({ stored = null, newest = () => null } = {}) {
  const host = {
    fetches: [],
    written: [],
    shared: [],
    cleared: [],
    failures: [],
    syncs: 0,
    newestMatching: (tags, cursor) => newest(tags, cursor),
    fetchFailed: (error) => host.failures.push(error.status),
    sync: () => {
      host.syncs += 1;
    },
    run: (name, input, etag) => {
      const fetch = deferred();
      host.fetches.push({ name, input, etag, ...fetch });
      return fetch.promise;
    },
    tenantsOf: (_name, input) => [input.organizationId],
    cache: {
      read: () => stored,
      write: (organization, clientKey, entry) => host.written.push({ organization, clientKey, entry }),
      clearOrganization: (organization) => host.cleared.push(organization),
    },
    stored: (organization, clientKey, entry) => host.shared.push({ organization, clientKey, entry }),
  };
  return host;
}

const INPUT = { organizationId: "org1" };

function query(host) {
  const q = new Query(host, "agents.getAll", INPUT, 'agents.getAll?{"organizationId":"org1"}', "org1");
  const seen = [];
  q.listeners.add((snapshot) => seen.push(snapshot));
  return { q, seen };
}

/** Answer the oldest fetch not yet answered (a 200, with no ETag unless given). */
async function answer(host, { data = "fresh", cursor, tags = ["agency.agent"], etag = "" }) {
  await flush(); // a scheduled refetch starts in a microtask
  const fetch = host.fetches.find((f) => !f.done);
  fetch.done = true;
  fetch.resolve({ answer: { data, cursor, tags, key: "k" }, etag });
  await flush();
}

async function fail(host, status) {
  await flush();
  const fetch = host.fetches.find((f) => !f.done);
  fetch.done = true;
  fetch.reject(new ReactiveError(status, { code: "x", message: `failed ${status}` }));
  await flush();
}

test("stored data is shown at once as stale, then revalidated, stored and shared", async () => {
  const stored = { d: "cached", t: ["agency.agent"], c: "10", k: "k", n: ["org1"], u: 1 };
  const host = queryHost({ stored });
  const { q, seen } = query(host);
  assert.deepEqual(q.snapshot(), {
    data: "cached",
    isLoading: false,
    isStale: true,
    isFetching: false,
    error: null,
    cursor: "10",
    updatedAt: 1,
    fromCache: true,
  });
  q.refresh();
  assert.equal(q.snapshot().isFetching, true);
  await answer(host, { data: "new", cursor: "12" });
  assert.equal(host.fetches.length, 1);
  assert.deepEqual(host.fetches[0].input, INPUT);
  const last = seen.at(-1);
  assert.equal(last.data, "new");
  assert.equal(last.isStale, false);
  assert.equal(last.isFetching, false);
  assert.equal(last.fromCache, false);
  assert.equal(last.cursor, "12");
  assert.equal(q.validated, true);
  const entry = { u: 5_000, d: "new", t: ["agency.agent"], c: "12", k: "k", n: ["org1"] };
  assert.deepEqual(host.written, [{ organization: "org1", clientKey: q.clientKey, entry }]);
  assert.deepEqual(host.shared, host.written);
  assert.equal(host.syncs, 1); // its tags and cursor changed: the subscriptions follow
  assert.deepEqual(q.specs(), [{ name: "agents.getAll", input: INPUT, cursor: "12" }]);
});

test("with nothing stored it is loading until the first answer", async () => {
  const host = queryHost();
  const { q } = query(host);
  assert.equal(q.snapshot().isLoading, true);
  assert.deepEqual(q.specs(), []); // no cursor yet: nothing to subscribe from
  q.refresh();
  await answer(host, { cursor: "3" });
  assert.equal(q.snapshot().isLoading, false);
});

test("an invalidation during a fetch forces another unless the answer includes the change", async () => {
  const host = queryHost();
  const { q } = query(host);
  q.refresh();
  await answer(host, { cursor: "10" });

  q.invalidate("11"); // refetch...
  await flush();
  assert.equal(host.fetches.length, 2);
  q.invalidate("15"); // ...and while that is in flight, another change
  await answer(host, { cursor: "14" }); // read before event 15
  assert.equal(host.fetches.length, 3, "the answer predates the change: fetched again");
  assert.equal(q.snapshot().isStale, true);

  q.invalidate("16");
  await answer(host, { cursor: "16" }); // read after event 16: it includes it
  await flush();
  assert.equal(host.fetches.length, 3);
  assert.equal(q.snapshot().isStale, false);
  assert.equal(q.cursor, "16");
});

test("a reset during a fetch always fetches again", async () => {
  const host = queryHost();
  const { q } = query(host);
  q.refresh();
  q.invalidate(null);
  await answer(host, { cursor: "999" });
  assert.equal(host.fetches.length, 2);
});

test("an event the data already includes is ignored; a burst of newer ones makes one fetch", async () => {
  const host = queryHost();
  const { q } = query(host);
  q.refresh();
  await answer(host, { cursor: "20" });
  assert.equal(q.invalidate("19"), false);
  assert.equal(q.invalidate("20"), false);
  await flush();
  assert.equal(host.fetches.length, 1);
  assert.equal(q.invalidate("21"), true);
  q.invalidate("22");
  q.invalidate("23");
  await flush();
  assert.equal(host.fetches.length, 2);
});

test("positions compare as numbers of any size, not as strings", async () => {
  const host = queryHost();
  const { q } = query(host);
  q.refresh();
  await answer(host, { cursor: "99999999999999999999" });
  assert.equal(q.invalidate("099999999999999999999"), false); // the same position
  assert.equal(q.invalidate("100000000000000000000"), true); // "1…" < "9…" as strings
  await answer(host, { cursor: "100000000000000000000" });
  assert.equal(q.invalidate("99999999999999999999"), false);
});

test("events seen before the first answer knew its tags count, once", async () => {
  let asked = 0;
  const host = queryHost({
    newest: (tags, cursor) => {
      asked += 1;
      return tags.has("agency.agent") && cursor === "25" ? "30" : null;
    },
  });
  const { q } = query(host);
  q.refresh();
  await answer(host, { cursor: "25" }); // event 30 arrived during the first fetch
  assert.equal(host.fetches.length, 2);
  await answer(host, { cursor: "25" }); // a cache hit answering the same cursor again
  assert.equal(host.fetches.length, 2, "no fetch loop");
  assert.equal(asked, 1);
});

test("a network or server error is retried with backoff until it succeeds", async () => {
  const host = queryHost();
  const { q, seen } = query(host);
  q.refresh();
  await fail(host, 0);
  assert.equal(seen.at(-1).error.status, 0);
  assert.deepEqual(host.failures, [0]);
  mock.timers.tick(499);
  assert.equal(host.fetches.length, 1);
  mock.timers.tick(1); // backoff(0, 1000) with no jitter
  assert.equal(host.fetches.length, 2);
  await fail(host, 503);
  mock.timers.tick(999);
  assert.equal(host.fetches.length, 2);
  mock.timers.tick(1); // backoff(1, 1000)
  assert.equal(host.fetches.length, 3);
  await answer(host, { cursor: "5" });
  assert.equal(seen.at(-1).error, null);
  assert.equal(q.retryAttempt, 0);
});

test("a refusal drops the organization's stored entries, is not retried, and is not subscribed", async () => {
  for (const status of [401, 403]) {
    const host = queryHost({ stored: { d: "secret", t: ["agency.agent"], c: "10", n: ["org1"] } });
    const { q, seen } = query(host);
    q.refresh();
    await fail(host, status);
    assert.deepEqual(host.cleared, ["org1"]);
    assert.equal(seen.at(-1).error.status, status);
    assert.equal(q.refused(), true);
    assert.deepEqual(q.specs(), []);
    mock.timers.tick(120_000);
    assert.equal(host.fetches.length, 1);
  }
  const host = queryHost();
  const { q } = query(host);
  q.refresh();
  await fail(host, 422); // the input's fault: shown, kept, not retried
  assert.deepEqual(host.cleared, []);
  mock.timers.tick(120_000);
  assert.equal(host.fetches.length, 1);
  assert.equal(q.refused(), false);
});

test("an answer older than what another tab stored keeps the newer data", async () => {
  const host = queryHost();
  const { q } = query(host);
  q.refresh();
  await answer(host, { data: "v1", cursor: "50" });
  q.adopt({ d: "v2", t: ["agency.agent"], c: "60", n: ["org1"], u: 7 }); // from another tab
  assert.equal(q.data, "v2");
  q.adopt({ d: "v0", t: ["agency.agent"], c: "40", n: ["org1"] }); // older: ignored
  assert.equal(q.data, "v2");
  q.invalidate(null);
  await answer(host, { data: "late", cursor: "55" }); // a fetch that crossed the tab's
  assert.equal(q.data, "v2");
  assert.equal(q.cursor, "60");
  assert.equal(host.written.length, 1);
});

test("after a reconnect only failed fetches are retried", async () => {
  const host = queryHost();
  const { q } = query(host);
  q.refresh();
  await answer(host, { cursor: "1" });
  q.recover();
  await flush();
  assert.equal(host.fetches.length, 1);
  q.invalidate(null);
  await fail(host, 0);
  q.recover();
  assert.equal(host.fetches.length, 3);
});
