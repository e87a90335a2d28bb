"use strict";
/* Live progress: unfinished experiments on the page poll GET /api/v1/experiments/{id}
   and update each run's status, phase, epoch/total and Ray job link in place. */
(function () {
  const POLL_MS = 3000;
  const cards = [...document.querySelectorAll("[data-experiment-id][data-live]")];
  if (!cards.length) return;
  const onExperimentPage = location.pathname.startsWith("/experiments/");

  function updateRun(li, run) {
    aelab.setStatus(li.querySelector("[data-role=status]"), run.status);
    li.querySelector("[data-role=phase]").textContent = run.phase || "";
    const bar = li.querySelector("[data-role=bar]");
    bar.max = run.epochs_total;
    bar.value = run.epoch;
    li.querySelector("[data-role=epochs]").textContent = `${run.epoch}/${run.epochs_total}`;
    const ray = li.querySelector("[data-role=ray]");
    if (ray && run.links.ray_job) {
      ray.href = run.links.ray_job;
      ray.hidden = false;
    }
    let error = li.querySelector("[data-role=error]");
    if (run.error && !error) {
      error = document.createElement("span");
      error.className = "error";
      error.dataset.role = "error";
      li.appendChild(error);
    }
    if (error) error.textContent = run.error || "";
  }

  async function refresh(card) {
    const exp = await aelab.getJSON(`/api/v1/experiments/${card.dataset.experimentId}`);
    aelab.setStatus(card.querySelector(".exp-head [data-role=status]"), exp.status);
    for (const run of exp.runs) {
      const li = card.querySelector(`.run[data-run-id="${run.id}"]`);
      if (li) updateRun(li, run);
    }
    return aelab.finished(exp.status);
  }

  let live = cards;
  async function tick() {
    if (!document.hidden) {
      const done = await Promise.all(live.map((c) => refresh(c).catch(() => false)));
      if (onExperimentPage && done.some(Boolean)) {
        location.reload(); // the results table and its links are the server's to render
        return;
      }
      live = live.filter((_, i) => !done[i]);
    }
    if (live.length) setTimeout(tick, POLL_MS);
  }
  setTimeout(tick, POLL_MS);
})();
