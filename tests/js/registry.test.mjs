// The registry (reactive/static/reactive/registry.js): where each subscription and stream
// resumes, which watchers an event touches, and the recent events that dedupe deliveries.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Registry } from "../../reactive/static/reactive/registry.js";
import { stableStringify } from "../../reactive/static/reactive/util.js";
import { watcher } from "./fakes.mjs";

const keyOf = (name, input) => `${name}?${stableStringify(input || {})}`;

function registry(...watchers) {
  const r = new Registry(keyOf);
  for (const w of watchers) r.watchers.add(w);
  return r;
}

test("a query watched twice is subscribed once, from the older cursor", () => {
  const fresh = watcher({ cursor: "30", specs: [{ name: "agents.getAll", input: { b: 1, a: 2 } }] });
  const older = watcher({ cursor: "9", specs: [{ name: "agents.getAll", input: { a: 2, b: 1 } }] });
  const other = watcher({ cursor: "5", specs: [{ name: "tools.getAll" }] });
  const wanted = registry(fresh, older, other).wantedQueries();
  assert.deepEqual([...wanted.keys()], ['agents.getAll?{"a":2,"b":1}', "tools.getAll?{}"]);
  const agents = wanted.get('agents.getAll?{"a":2,"b":1}');
  assert.equal(agents.cursor, "9");
  assert.deepEqual([...agents.members], [fresh, older]);
});

test("a stream resumes from the oldest cursor of its watchers; the page's organization comes first", () => {
  const r = registry(
    watcher({ tenants: ["b"], cursor: "7" }),
    watcher({ tenants: ["b"], cursor: "3" }),
    watcher({ tenants: ["b", "page"], cursor: "12" }),
    watcher({ tenants: ["refused"], cursor: "1", refused: true }),
  );
  assert.deepEqual([...r.wantedTenants("page")], [
    ["page", "12"],
    ["b", "3"],
  ]);
  assert.deepEqual([...r.wantedTenants(null)], [
    ["b", "3"],
    ["page", "12"],
  ]);
  assert.deepEqual([...r.wantedTenants("elsewhere")].map(([t]) => t), ["b", "page"]);
});

test("an event invalidates the watchers whose tags it meets, or that follow its subscription", () => {
  const byTag = watcher({ tags: ["agency.agent:id=1"] });
  const bySubscription = watcher({ tags: ["x"], specs: [{ name: "agents.getOne", input: { id: "1" } }] });
  const untouched = watcher({ tags: ["agency.tool"] });
  const r = registry(byTag, bySubscription, untouched);
  r.invalidateMatching({ id: "40", tags: ["agency.agent:id=1"] }, null);
  assert.deepEqual([byTag.invalidated, bySubscription.invalidated, untouched.invalidated], [["40"], [], []]);
  r.invalidateMatching({ id: "41", tags: [] }, 'agents.getOne?{"id":"1"}');
  assert.deepEqual(bySubscription.invalidated, ["41"]);
  r.resetKey('agents.getOne?{"id":"1"}');
  assert.deepEqual(bySubscription.invalidated, ["41", null]);
  r.invalidateAll(["agency.tool"]);
  assert.deepEqual(untouched.invalidated, [null]);
});

test("a reset of an organization refetches its watchers and those of no organization", () => {
  const mine = watcher({ tenants: ["o1"] });
  const global = watcher({ tenants: [] });
  const theirs = watcher({ tenants: ["o2"] });
  registry(mine, global, theirs).resetTenant("o1");
  assert.deepEqual([mine.invalidated, global.invalidated, theirs.invalidated], [[null], [null], []]);
});

test("an event is new once; the newest recent one after a cursor is found by tags", () => {
  const r = registry();
  assert.equal(r.remember({ id: "5", tags: ["a"] }), true);
  assert.equal(r.remember({ id: "5", tags: ["a"] }), false); // the same event over SSE and a tab
  r.remember({ id: "9", tags: ["b"] });
  r.remember({ id: "7", tags: ["a"] });
  assert.equal(r.newestMatching(new Set(["a"]), "4"), "7");
  assert.equal(r.newestMatching(new Set(["a"]), "7"), null);
  assert.equal(r.newestMatching(new Set(["c"]), "1"), null);
  assert.equal(r.newestMatching(new Set(["a"]), ""), null, "an unknown cursor compares with nothing");
  for (let i = 100; i < 1100; i += 1) r.remember({ id: String(i), tags: [] });
  assert.equal(r.remember({ id: "5", tags: ["a"] }), true, "only the last 1000 are remembered");
});
