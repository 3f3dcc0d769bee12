// @ts-check
/**
 * The reactive browser client: a query cache kept fresh by server invalidations.
 *
 * ES modules with no build step (`<script type="module">`). This one is the entry
 * point: the public API (re-exported from the modules below) and `start()`, which
 * runs the page's client. SPA code gets `subscribe(name, input, callback)`, which
 * delivers cached data at once and revalidates it in the background; the
 * server-rendered live fragments of a page (`{% live_fragment %}`) are kept fresh
 * by morphing their new HTML in place. See docs/client.md.
 *
 * - reactive-client.js: ReactiveClient, which wires the parts below together.
 * - cache.js: the persisted cache, in localStorage under `rx1:<user>:<organization>:`,
 *   bounded (entries and bytes, oldest evicted first), cleared on logout.
 * - queries.js, fragments.js, registry.js: freshness. An event newer than the data's
 *   cursor invalidates it; an invalidation during an in-flight fetch forces another
 *   fetch unless the answer's cursor proves it already includes the change.
 * - transports.js, connection.js: a WebSocket (`/ws/reactive/`, one subscription per
 *   query), or Server-Sent Events (`/api/events`, one stream per organization) when
 *   WebSockets fail. Reconnects with jittered exponential backoff (capped at 30 s)
 *   forever, resuming from the last event id seen, so nothing is missed.
 * - tabs.js: tabs share the persisted cache and tell each other over a
 *   BroadcastChannel about fresh data, events and logouts.
 * - http.js (requests), config.js (options, event types), protocol.js (wire frames),
 *   util.js (helpers).
 */

import { ReactiveClient } from "./reactive-client.js";
import { parseAttr } from "./util.js";

export { PersistentCache } from "./cache.js";
export { morphInto } from "./fragments.js";
export { ReactiveClient } from "./reactive-client.js";
export { ReactiveError, VERSION, backoff, comparePositions, stableStringify } from "./util.js";

/** @import { ClientOptions } from "./config.js" */

// --- page integration ---------------------------------------------------------------------------------

/**
 * The configuration `{% reactive_client %}` renders into `<script id="rx-config">`.
 * @returns {Record<string, any>}
 */
function readConfig() {
  const el = document.getElementById("rx-config");
  if (!el) return {};
  try {
    return JSON.parse(el.textContent || "");
  } catch {
    return {};
  }
}

/**
 * Show the connection state on `<html data-rx-state data-rx-transport>` and `[data-rx-status]`.
 * @param {ReactiveClient} client
 */
function showState(client) {
  const render = () => {
    const state = client.state;
    document.documentElement.setAttribute("data-rx-state", state);
    document.documentElement.setAttribute("data-rx-transport", client.transport || "");
    const label = {
      connected: "Live",
      connecting: "Reconnecting…",
      offline: "Offline",
      idle: "Idle",
    }[state];
    for (const el of document.querySelectorAll("[data-rx-status]")) {
      el.textContent = label || state;
      if (el instanceof HTMLElement) {
        el.title = client.transport ? `${label} (${client.transport === "ws" ? "WebSocket" : "SSE"})` : label;
      }
    }
  };
  client.on("state", render);
  client.on("transport", render);
  render();
}

/**
 * `[data-rx-mutate]` buttons call their mutation; `form[data-rx-logout]` clears the cache.
 * @param {ReactiveClient} client
 */
function enhanceActions(client) {
  // <button data-rx-mutate="agents.update" data-rx-input='{"id":…}' data-rx-confirm="…">
  document.addEventListener("click", async (e) => {
    const target = /** @type {Element | null} */ (e.target);
    const button = target?.closest?.("[data-rx-mutate]");
    if (!button) return;
    e.preventDefault();
    const question = button.getAttribute("data-rx-confirm");
    if (question && !window.confirm(question)) return;
    const control = /** @type {HTMLButtonElement} */ (button);
    control.disabled = true;
    try {
      const name = button.getAttribute("data-rx-mutate") || "";
      await client.mutate(name, parseAttr(button, "data-rx-input", {}));
    } catch (err) {
      window.alert((err instanceof Error && err.message) || "That did not work.");
    } finally {
      control.disabled = false;
    }
  });
  // <form data-rx-logout>: clear the cache before the logout request leaves. The other
  // tabs hear of it from the page the logout lands on (below), once the session is gone.
  document.addEventListener(
    "submit",
    (e) => {
      const target = /** @type {Element | null} */ (e.target);
      if (target?.matches?.("form[data-rx-logout]")) client.forget();
    },
    true,
  );
}

/** @type {ReactiveClient | null} */
let current = null;

/**
 * Start the page's client (once): configuration from `<script id="rx-config">`
 * (the `{% reactive_client %}` tag), live fragments mounted, the connection
 * state shown on `<html data-rx-state>` and `[data-rx-status]`.
 * @param {ClientOptions} [config]
 * @returns {ReactiveClient}
 */
export function start(config = readConfig()) {
  if (current) return current;
  const client = new ReactiveClient(config);
  current = client;
  /** @type {any} */ (window).reactive = client;
  if (!config.user) {
    // A page rendered without a user means this browser has no session: nothing of
    // anyone's stays behind, and the tabs still showing a user's pages are told.
    client.cache.clearAll();
    client.tabs.logout();
  }
  showState(client);
  enhanceActions(client);
  client.on("logout", () => {
    if (client.options.loginUrl) window.location.assign(client.options.loginUrl);
  });
  const mount = () => client.mountFragments(document);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mount);
  else mount();
  return client;
}

/**
 * The page's client, once `start()` ran (null before).
 * @returns {ReactiveClient | null}
 */
export function getClient() {
  return current;
}
