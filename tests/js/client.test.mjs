// The entry module (reactive/static/reactive/client.js) keeps the public API of the
// single-file client: the same names, each the very object its module defines.
import assert from "node:assert/strict";
import { test } from "node:test";

import * as cache from "../../reactive/static/reactive/cache.js";
import * as client from "../../reactive/static/reactive/client.js";
import * as fragments from "../../reactive/static/reactive/fragments.js";
import * as reactiveClient from "../../reactive/static/reactive/reactive-client.js";
import * as util from "../../reactive/static/reactive/util.js";

test("client.js exports the documented names", () => {
  assert.deepEqual(Object.keys(client).sort(), [
    "PersistentCache",
    "ReactiveClient",
    "ReactiveError",
    "VERSION",
    "backoff",
    "comparePositions",
    "getClient",
    "morphInto",
    "stableStringify",
    "start",
  ]);
  assert.equal(client.PersistentCache, cache.PersistentCache);
  assert.equal(client.ReactiveClient, reactiveClient.ReactiveClient);
  assert.equal(client.morphInto, fragments.morphInto);
  assert.equal(client.ReactiveError, util.ReactiveError);
  assert.equal(client.getClient(), null, "no client before start()");
});

test("one input is one cache key, whatever its key order; positions compare exactly", () => {
  const input = { b: [1, { d: 1, c: 2 }], a: "x", z: undefined };
  assert.equal(client.stableStringify(input), '{"a":"x","b":[1,{"c":2,"d":1}]}');
  assert.equal(client.comparePositions("10", "9") > 0, true);
  assert.equal(client.comparePositions("0010", "10"), 0);
  assert.equal(client.comparePositions("", "1") < 0, true, "unknown is lowest");
  const fields = [{ field: "name", message: "Required." }];
  const error = new client.ReactiveError(422, { code: "invalid_input", message: "Bad.", fields });
  assert.deepEqual(
    [error.status, error.code, error.message, error.fields],
    [422, "invalid_input", "Bad.", fields],
  );
  assert.equal(new client.ReactiveError(0).code, "network");
});
