"use strict";
/* Helpers shared by the pages. Reads use the session cookie (same origin). */
window.aelab = {
  loginUrl() {
    return "/login?next=" + encodeURIComponent(location.pathname + location.search);
  },
  async getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (r.status === 401) {
      location.href = this.loginUrl();
      throw new Error("login required");
    }
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return r.json();
  },
  setStatus(el, status) {
    if (!el || el.textContent === status) return;
    el.textContent = status;
    el.className = `badge s-${status}`;
  },
  finished(status) {
    return ["succeeded", "failed", "cancelled", "pruned"].includes(status);
  },
};
