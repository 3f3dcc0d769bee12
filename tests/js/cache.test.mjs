// PersistentCache (reactive/static/reactive/cache.js) over a fake localStorage.
import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { PersistentCache } from "../../reactive/static/reactive/cache.js";
import { FakeStorage } from "./fakes.mjs";

beforeEach(() => mock.timers.enable({ apis: ["Date"], now: 1_000_000 }));
afterEach(() => mock.timers.reset());

/** Write `count` entries a millisecond apart (the cache evicts the least recently written). */
function writeMany(cache, count, make = (i) => ({ d: i, t: [], c: String(i) })) {
  for (let i = 0; i < count; i += 1) {
    cache.write("org1", `q${i}`, make(i));
    mock.timers.tick(1);
  }
}

function keys(storage, prefix = "") {
  return [...storage.map.keys()].filter((k) => k.startsWith(prefix)).sort();
}

test("an entry reads back under its user and organization, with its write time and version", () => {
  const storage = new FakeStorage();
  const cache = new PersistentCache({ user: 7, storage });
  cache.write("org1", 'agents.getAll?{"limit":5}', { d: [1, 2], t: ["agency.agent"], c: "42", k: "key" });
  assert.deepEqual(keys(storage), ['rx1:7:org1:agents.getAll?{"limit":5}']);
  assert.deepEqual(cache.read("org1", 'agents.getAll?{"limit":5}'), {
    u: 1_000_000,
    d: [1, 2],
    t: ["agency.agent"],
    c: "42",
    k: "key",
    v: "1.0.0",
  });
  assert.equal(cache.read("org2", 'agents.getAll?{"limit":5}'), null);
  assert.equal(new PersistentCache({ user: 8, storage }).read("org1", 'agents.getAll?{"limit":5}'), null);
});

test("at most maxEntries per user: the least recently written go first", () => {
  const storage = new FakeStorage();
  const cache = new PersistentCache({ user: "u1", storage, maxEntries: 3 });
  const other = new PersistentCache({ user: "u2", storage, maxEntries: 3 });
  other.write("org1", "q0", { d: "theirs" });
  writeMany(cache, 5);
  assert.deepEqual(keys(storage, "rx1:u1:"), ["rx1:u1:org1:q2", "rx1:u1:org1:q3", "rx1:u1:org1:q4"]);
  assert.equal(other.read("org1", "q0").d, "theirs"); // another user's entries are not counted
  cache.write("org1", "q2", { d: "again" }); // rewritten: now the most recent
  cache.write("org1", "q9", { d: 9 });
  assert.deepEqual(keys(storage, "rx1:u1:"), ["rx1:u1:org1:q2", "rx1:u1:org1:q4", "rx1:u1:org1:q9"]);
});

test("at most maxBytes per user, and an entry over a quarter of it is not kept", () => {
  const storage = new FakeStorage();
  const cache = new PersistentCache({ user: "u3", storage, maxBytes: 20_000 });
  writeMany(cache, 10, () => ({ d: "x".repeat(1500) }));
  const bytes = keys(storage).reduce((n, k) => n + (k.length + storage.getItem(k).length) * 2, 0);
  assert.ok(bytes <= 20_000, bytes);
  assert.equal(keys(storage).length, 6); // ~3 KB each
  assert.ok(cache.read("org1", "q9"), "the newest is kept");
  assert.equal(cache.read("org1", "q0"), null, "the oldest went first");
  cache.write("org1", "big", { d: "x".repeat(3000) });
  assert.equal(cache.read("org1", "big"), null);
});

test("a full storage quota evicts half of the entries and keeps the new one", () => {
  const storage = new FakeStorage({ quota: 8_000 });
  const cache = new PersistentCache({ user: "u", storage });
  writeMany(cache, 4, () => ({ d: "y".repeat(800) })); // ~1.7 KB each: 4 fit
  assert.equal(keys(storage).length, 4);
  cache.write("org1", "new", { d: "z".repeat(800) });
  assert.deepEqual(keys(storage), ["rx1:u:org1:new", "rx1:u:org1:q2", "rx1:u:org1:q3"]);
});

test("a corrupt entry reads as nothing and is removed", () => {
  const storage = new FakeStorage();
  storage.setItem("rx1:u:org1:q", "{not json");
  const cache = new PersistentCache({ user: "u", storage });
  assert.equal(cache.read("org1", "q"), null);
  assert.deepEqual(keys(storage), []);
});

test("clearing drops an organization's, a user's or every user's entries, and nothing else", () => {
  const storage = new FakeStorage();
  storage.setItem("unrelated", "1");
  const u1 = new PersistentCache({ user: "u1", storage });
  const u2 = new PersistentCache({ user: "u2", storage });
  u1.write("a", "q", { d: 1 });
  u1.write("b", "q", { d: 2 });
  u2.write("a", "q", { d: 3 });
  u1.clearOrganization("a");
  assert.deepEqual(keys(storage, "rx1:"), ["rx1:u1:b:q", "rx1:u2:a:q"]);
  u1.clearUser();
  assert.deepEqual(keys(storage, "rx1:"), ["rx1:u2:a:q"]);
  u1.write("b", "q", { d: 2 });
  u1.clearAll(); // logout: nobody's entries stay behind
  assert.deepEqual(keys(storage), ["unrelated"]);
});

test("without a user, or without storage, nothing is persisted", () => {
  const storage = new FakeStorage();
  const anonymous = new PersistentCache({ user: null, storage });
  anonymous.write("org1", "q", { d: 1 });
  assert.equal(anonymous.read("org1", "q"), null);
  assert.equal(storage.length, 0);
  const memoryOnly = new PersistentCache({ user: "u", storage: null });
  assert.equal(memoryOnly.enabled, false);
  memoryOnly.write("org1", "q", { d: 1 }); // no error
  assert.equal(memoryOnly.read("org1", "q"), null);
  // No localStorage at all (here: no window; in a browser: storage disabled).
  assert.equal(new PersistentCache({ user: "u" }).enabled, false);
});
