// A real EventSource client (the npm package `eventsource`, as in browsers) for
// tests/system/test_eventsource.py. Usage:
//   node eventsource_client.mjs <events url> <api token> <node_modules dir> [lifetime s]
// Prints one JSON object a line: {kind: "connect", lastEventId} for every request
// the EventSource makes (it reconnects by itself), "open", "error", and
// {kind: "event", type, id, data} for invalidate, reset and forbidden events.
// Exits when its stdin closes (the test is done) or after `lifetime` seconds.
import { createRequire } from "node:module";
import { join } from "node:path";

const [url, token, modules, lifetime = "120"] = process.argv.slice(2);
const require = createRequire(join(modules, "resolve-from-here.js"));
const { EventSource } = require("eventsource");
const out = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

out({ kind: "version", version: require("eventsource/package.json").version });
const es = new EventSource(url, {
  // Browsers send the session cookie; a script authenticates with its token.
  fetch: (input, init) => {
    out({ kind: "connect", lastEventId: init.headers["Last-Event-ID"] ?? null });
    return fetch(input, { ...init, headers: { ...init.headers, Authorization: `Bearer ${token}` } });
  },
});
es.onopen = () => out({ kind: "open" });
es.onerror = (e) => out({ kind: "error", message: e.message ?? null, code: e.code ?? null });
for (const type of ["invalidate", "reset", "forbidden"]) {
  es.addEventListener(type, (e) => out({ kind: "event", type, id: e.lastEventId, data: JSON.parse(e.data) }));
}
process.stdin.on("end", () => {
  es.close();
  process.exit(0);
});
process.stdin.resume();
setTimeout(() => {
  es.close();
  out({ kind: "timeout" });
  process.exit(2);
}, Number(lifetime) * 1000).unref();
