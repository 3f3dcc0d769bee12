// @ts-check
/** Live fragments: server-rendered HTML re-rendered by the server and morphed in place. */

import { Watcher } from "./queries.js";
import { comparePositions, normPos, parseAttr } from "./util.js";
import { Idiomorph } from "./vendor/idiomorph-0.8.0.esm.js";

/** @import { WatcherHost } from "./queries.js" */
/** @import { FragmentAnswer, FragmentQuery } from "./protocol.js" */
/** @import { ReactiveError } from "./util.js" */

/**
 * What a fragment needs from its client, besides a watcher's needs.
 * @typedef {object} FragmentNeeds
 * @property {(src: string) => Promise<FragmentAnswer>} render  fetch `data-rx-src`
 * @property {(element: Element, cursor: string) => void} rendered  the new HTML is in place
 * @typedef {WatcherHost & FragmentNeeds} FragmentHost
 */

/** @typedef {Element & {rxFragment?: LiveFragment | null}} FragmentElement */

/** @type {Record<number, string>} */
const NOTICES = {
  0: "Offline: showing the last version received.",
  401: "Your session has ended: log in again to see this.",
  403: "You do not have access to this.",
  404: "This no longer exists.",
};

/**
 * Whether a form field holds something other than its default (the user changed it).
 * @param {Node} node
 */
function isDirtyField(node) {
  if (!(node instanceof Element)) return false;
  if (node instanceof HTMLInputElement) {
    if (["checkbox", "radio"].includes(node.type)) return node.checked !== node.defaultChecked;
    if (["hidden", "submit", "button", "reset", "file"].includes(node.type)) return false;
    return node.value !== node.defaultValue;
  }
  if (node instanceof HTMLTextAreaElement) return node.value !== node.defaultValue;
  if (node instanceof HTMLSelectElement) {
    return [...node.options].some((o) => o.selected !== o.defaultSelected);
  }
  return false;
}

/**
 * Morph `el`'s content into `html`, keeping focus, selection, and every form
 * field the user has changed (an edited field keeps its value; untouched
 * fields take the server's).
 * @param {Element} el
 * @param {string} html
 */
export function morphInto(el, html) {
  Idiomorph.morph(el, html, {
    morphStyle: "innerHTML",
    ignoreActiveValue: true,
    restoreFocus: true,
    callbacks: {
      beforeNodeMorphed(oldNode) {
        if (!(oldNode instanceof Element)) return true;
        if (oldNode.hasAttribute("data-rx-keep")) return false;
        return !isDirtyField(oldNode);
      },
    },
  });
}

/**
 * A server-rendered live fragment: re-rendered by the server, morphed in place.
 * @extends {Watcher<FragmentHost>}
 */
export class LiveFragment extends Watcher {
  /**
   * @param {FragmentHost} host
   * @param {FragmentElement} el  a `[data-rx-fragment]` element
   */
  constructor(host, el) {
    super(host);
    this.el = el;
    this.src = el.getAttribute("data-rx-src") || "";
    /** @type {FragmentQuery[]} */
    this.queries = [];
    this.readAttributes();
    el.rxFragment = this;
    this.setState(el.hasAttribute("data-rx-error") ? "error" : "fresh");
  }

  readAttributes() {
    this.tags = new Set(parseAttr(this.el, "data-rx-tags", /** @type {string[]} */ ([])));
    this.tenants = new Set(parseAttr(this.el, "data-rx-tenants", /** @type {string[]} */ ([])));
    this.queries = parseAttr(this.el, "data-rx-queries", /** @type {FragmentQuery[]} */ ([]));
    this.cursor = normPos(this.el.getAttribute("data-rx-cursor"));
  }

  /** @param {"fresh" | "stale" | "error"} state */
  setState(state) {
    this.el.setAttribute("data-rx-state", state);
  }

  changed() {
    this.setState(this.error ? "error" : this.stale ? "stale" : "fresh");
  }

  async load() {
    const body = await this.host.render(this.src);
    if (this.cursor && body.cursor && comparePositions(body.cursor, this.cursor) < 0) {
      return this.cursor; // an older answer than what is shown (two fetches crossed)
    }
    morphInto(this.el, body.html);
    const attrs = {
      "data-rx-tags": JSON.stringify(body.tags),
      "data-rx-tenants": JSON.stringify(body.tenants),
      "data-rx-queries": JSON.stringify(body.queries),
      "data-rx-cursor": body.cursor || "",
    };
    for (const [name, value] of Object.entries(attrs)) this.el.setAttribute(name, value);
    this.el.removeAttribute("data-rx-error");
    this.readAttributes();
    this.host.rendered(this.el, this.cursor);
    this.host.sync();
    return this.cursor;
  }

  /** @param {ReactiveError} error */
  failed(error) {
    if (error.status === 0) return; // keep what is shown; it is retried
    this.el.setAttribute("data-rx-error", String(error.status));
    const notice = document.createElement("p");
    notice.className = "rx-notice";
    notice.textContent = NOTICES[error.status] || error.message;
    this.el.replaceChildren(notice);
  }

  specs() {
    if (!this.queries.length || this.refused()) return [];
    return this.queries.map((q) => ({ name: q.name, input: q.input || {}, cursor: this.cursor }));
  }
}
