"use strict";
/* The run picker: a view compares runs of one dataset. */
(function () {
  const form = document.getElementById("pick");
  if (!form) return;
  const button = form.querySelector("[data-role=view]");
  const note = form.querySelector("[data-role=pick-note]");
  const max = Number(form.dataset.max); // the server's limit of one view
  function update() {
    const picked = [...form.querySelectorAll("input[name=runs]:checked")];
    const datasets = new Set(picked.map((c) => c.dataset.dataset));
    let problem = "";
    if (datasets.size > 1) problem = "pick runs of one dataset";
    else if (picked.length > max) problem = `at most ${max} runs`;
    button.disabled = picked.length === 0 || problem !== "";
    note.textContent = problem || (picked.length ? `${picked.length} selected` : "");
  }
  form.addEventListener("change", update);
  update();
})();
