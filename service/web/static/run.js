"use strict";
/* A run's log: GET /api/v1/runs/{id}/logs from an offset; followed while the run runs. */
(function () {
  const pre = document.querySelector("pre.log");
  if (!pre) return;
  const id = pre.dataset.runId;
  let offset = 0;
  let text = "";
  // Terminal colour and cursor codes (Ray prints some) are for terminals, not this page.
  const ANSI = /\x1b\[[0-9;?]*[A-Za-z]/g;
  async function poll() {
    let body;
    try {
      body = await aelab.getJSON(`/api/v1/runs/${id}/logs?offset=${offset}`);
    } catch (e) {
      if (!text) pre.textContent = "No log is available for this run.";
      return;
    }
    const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    text += body.text.replace(ANSI, "");
    offset = body.next_offset;
    const finished = pre.dataset.live !== "true";
    pre.textContent = text || (finished ? "No log was saved for this run."
      : body.source === "none" ? "The run has not started yet." : "(empty log)");
    if (stick) pre.scrollTop = pre.scrollHeight;
    if (!body.complete && pre.dataset.live === "true") setTimeout(poll, 3000);
  }
  poll();
})();
