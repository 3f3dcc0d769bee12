// @ts-check
/** The other tabs of this browser: fresh answers, events and logouts, shared. */

import { PREFIX } from "./util.js";

/** @import { CacheEntry } from "./cache.js" */
/** @import { Invalidation } from "./protocol.js" */

const LOGOUT_KEY = `${PREFIX}logout`;

/**
 * What tabs tell each other (over a BroadcastChannel per user).
 * @typedef {{t: "event", e: Invalidation}
 *   | {t: "entry", org: string, ck: string, e: CacheEntry}
 *   | {t: "logout"}} TabMessage
 */

/** This tab's id (kept for the tab's life in sessionStorage): acknowledgements name it. */
export function tabId() {
  try {
    let id = sessionStorage.getItem("rx-client-id");
    if (!id) {
      id = `tab-${Math.random().toString(36).slice(2, 10)}`;
      sessionStorage.setItem("rx-client-id", id);
    }
    return id;
  } catch {
    return `tab-${Math.random().toString(36).slice(2, 10)}`;
  }
}

/**
 * The other tabs of this browser: a BroadcastChannel per user for fresh data,
 * events and logouts, and a localStorage marker for logouts too (a tab that
 * navigates away at once may not get its channel message out; storage events
 * always reach the other tabs).
 */
export class Tabs {
  /**
   * @param {string | number | null | undefined} user  no user: only logouts are heard
   * @param {(message: TabMessage) => void} receive  a message from another tab
   */
  constructor(user, receive) {
    /** @type {BroadcastChannel | null} */
    this.channel = null;
    if (user && typeof BroadcastChannel !== "undefined") {
      this.channel = new BroadcastChannel(`${PREFIX}${user}`);
      this.channel.onmessage = (m) => receive(m.data || {});
    }
    window.addEventListener("storage", (e) => {
      if (e.key === LOGOUT_KEY && e.newValue && user) receive({ t: "logout" });
    });
  }

  /** Tell every other tab that this browser logged out. */
  logout() {
    this.post({ t: "logout" });
    try {
      localStorage.setItem(LOGOUT_KEY, String(Date.now()));
      localStorage.removeItem(LOGOUT_KEY);
    } catch {
      /* storage disabled: the channel message is all we have */
    }
  }

  /** @param {TabMessage} message */
  post(message) {
    try {
      this.channel?.postMessage(message);
    } catch {
      /* ignore */
    }
  }

  close() {
    this.channel?.close();
  }
}
