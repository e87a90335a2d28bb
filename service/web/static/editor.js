"use strict";
/* The spec editor. The server is the only validator: every change is sent as
   POST /api/v1/experiments?dry_run=true; a 422's errors are shown next to the input their
   `loc` names (["body", "lr_search", "min_lr"] → the input with data-path
   "lr_search.min_lr"), or on its section or the whole form when no input matches.

   With protected writes the page asks for the API token first. The token lives in this
   closure only (not in sessionStorage, localStorage or a cookie): nothing outlives the page
   and no other page can read it; the price is typing it again after a reload. */
(function () {
  const form = document.getElementById("spec-form");
  if (!form) return;
  const protectedWrites = document.querySelector(".editor").dataset.writesProtected === "true";
  const inputs = [...form.querySelectorAll("[data-path]")];
  const validity = document.getElementById("validity");
  const estimate = document.getElementById("estimate");
  const missing = document.getElementById("missing");
  const submit = document.getElementById("submit");
  const submitNote = document.getElementById("submit-note");
  const jsonBox = document.getElementById("spec-json");
  const examples = JSON.parse(document.getElementById("examples").textContent);
  let token = null;
  let timer = null;
  let inFlight = null;
  let lastValid = false;
  let idempotency = { body: null, key: null };

  /* --- form ⇄ spec ------------------------------------------------------------------- */
  function readValue(el) {
    const kind = el.dataset.kind;
    if (kind === "choices") {
      const names = [...el.querySelectorAll("input:checked")].map((c) => c.value);
      const extra = recipesOf(el);
      const text = extra ? extra.value.trim() : "";
      if (!text) return names;
      let more;
      try { more = JSON.parse(text); } catch { more = text; } // the server says why not
      return names.concat(Array.isArray(more) ? more : [more]);
    }
    if (kind === "bool") return el.checked;
    if (kind === "choice") {
      if (el.value === "" && "nullable" in el.dataset) return null;
      return "numeric" in el.dataset ? Number(el.value) : el.value;
    }
    const text = el.value.trim();
    if (kind === "text") return el.value;
    if (kind === "numbers") { // "0.001, 0.01" → [0.001, 0.01]; a word stays for the 422
      if (text === "") return "nullable" in el.dataset ? null : []; // none, or an empty list
      return text.split(/[\s,;]+/).filter(Boolean).map((t) => (Number.isFinite(Number(t)) ? Number(t) : t));
    }
    if (text === "") return null; // nullable: none; otherwise the server names the field
    if (kind === "json") {
      try { return JSON.parse(text); } catch { return text; } // the server says why not
    }
    const n = Number(text);
    return Number.isFinite(n) ? n : text; // the server says why a text is not a number
  }

  // A choices field's JSON box for the entries that are not among its boxes (models:
  // recipes composed inline), or null.
  function recipesOf(el) {
    return form.querySelector(`[data-recipes-for="${el.dataset.path}"]`);
  }

  function collect() {
    const spec = {};
    for (const el of inputs) {
      const parts = el.dataset.path.split(".");
      let node = spec;
      for (const p of parts.slice(0, -1)) node = node[p] = node[p] || {};
      node[parts[parts.length - 1]] = readValue(el);
    }
    return spec;
  }

  function lookup(spec, path) {
    let node = spec;
    for (const p of path.split(".")) {
      if (node == null || typeof node !== "object" || !(p in node)) return undefined;
      node = node[p];
    }
    return node;
  }

  /* Fills the form from a spec; returns what no input could hold ("datasets: stripes"):
     nothing is dropped silently. */
  function fill(spec) {
    const notHeld = [];
    for (const el of inputs) {
      let value = lookup(spec, el.dataset.path);
      if (value === undefined) value = JSON.parse(el.dataset.default);
      const kind = el.dataset.kind;
      if (kind === "choices") {
        const values = Array.isArray(value) ? value : value == null ? [] : [value];
        const boxes = new Set([...el.querySelectorAll("input")].map((c) => c.value));
        const chosen = new Set(values.filter((v) => typeof v === "string" && boxes.has(v)));
        for (const c of el.querySelectorAll("input")) c.checked = chosen.has(c.value);
        const rest = values.filter((v) => !(typeof v === "string" && boxes.has(v)));
        const extra = recipesOf(el);
        if (extra) extra.value = rest.length ? JSON.stringify(rest) : "";
        else if (rest.length) notHeld.push(`${el.dataset.path}: ${rest.map((v) => JSON.stringify(v)).join(", ")}`);
      } else if (kind === "bool") {
        el.checked = Boolean(value);
      } else {
        el.value = value == null ? "" : kind === "json" ? JSON.stringify(value)
          : Array.isArray(value) ? value.join(", ") : String(value);
      }
    }
    changed();
    return notHeld;
  }

  /* --- errors -------------------------------------------------------------------------- */
  function clearErrors() {
    for (const el of form.querySelectorAll(".field-error, .group-error")) el.textContent = "";
    for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  }

  function placeError(error) {
    const path = (error.loc || []).slice(1).filter((p) => typeof p === "string");
    for (let n = path.length; n >= 0; n--) {
      const key = path.slice(0, n).join(".");
      const target = document.getElementById(`err:${key}`);
      if (!target) continue;
      const message = n < path.length ? `${path.slice(n).join(".")}: ${error.msg}` : error.msg;
      target.textContent = target.textContent ? `${target.textContent} · ${message}` : message;
      const input = inputs.find((el) => el.dataset.path === key);
      if (input) input.setAttribute("aria-invalid", "true");
      return;
    }
  }

  function showEstimate(body) {
    for (const dd of estimate.querySelectorAll("dd")) {
      const v = body.estimate[dd.dataset.key];
      dd.textContent = typeof v === "number" ? v.toLocaleString("en") : "–";
    }
    estimate.hidden = false;
    if (body.missing.length) {
      missing.hidden = false;
      missing.textContent = "Not on the API host (workers may have them, or download them): "
        + body.missing.map((m) => `${m.kind} ${m.name}`).join(", ");
    } else {
      missing.hidden = true;
    }
  }

  function setValidity(text, ok) {
    validity.textContent = text;
    validity.className = `validity ${ok === true ? "ok" : ok === false ? "bad" : ""}`;
  }

  /* --- the server ------------------------------------------------------------------------ */
  function headers() {
    const h = { "Content-Type": "application/json", Accept: "application/json" };
    if (token) h.Authorization = `Bearer ${token}`;
    return h;
  }

  function needToken(message) {
    token = null;
    const box = document.getElementById("token-box");
    if (box) {
      document.getElementById("token-error").textContent = message || "";
      document.getElementById("api-token").focus();
    }
    setValidity(message || "The API token is needed to check the spec.", false);
    submit.disabled = true;
  }

  async function validate() {
    if (protectedWrites && !token) return needToken();
    const body = JSON.stringify(collect());
    if (inFlight) inFlight.abort();
    inFlight = new AbortController();
    setValidity("Checking…");
    let r;
    try {
      r = await fetch("/api/v1/experiments?dry_run=true", {
        method: "POST", headers: headers(), body, signal: inFlight.signal, credentials: "same-origin",
      });
    } catch (e) {
      if (e.name !== "AbortError") setValidity("The server cannot be reached.", false);
      return;
    }
    if (r.status === 401 || r.status === 403) {
      shown = null; // check again once a token is given
      return needToken("The server refused this token.");
    }
    const answer = await r.json().catch(() => ({}));
    clearErrors();
    lastValid = r.status === 200;
    if (r.status === 200) {
      setValidity("Valid ✓", true);
      showEstimate(answer);
    } else if (r.status === 422) {
      const n = answer.detail.length;
      setValidity(`${n} problem${n === 1 ? "" : "s"}: see the marked fields`, false);
      estimate.hidden = true;
      answer.detail.forEach(placeError);
    } else {
      setValidity(`The server answered ${r.status}.`, false);
    }
    submit.disabled = !lastValid;
  }

  let shown = null; // the spec the last check was started for
  function changed() {
    const spec = collect();
    const text = JSON.stringify(spec);
    if (text === shown) return; // a blur's "change" after "input": nothing new to check
    shown = text;
    jsonBox.value = JSON.stringify(spec, null, 2);
    clearTimeout(timer);
    submit.disabled = true;
    timer = setTimeout(validate, 300);
  }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Array.from({ length: 32 }, () => Math.floor(Math.random() * 16).toString(16)).join("");
  }

  form.addEventListener("input", changed);
  form.addEventListener("change", changed);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (protectedWrites && !token) return needToken();
    const body = JSON.stringify(collect());
    // One key per distinct body: a retry after a lost answer cannot create it twice.
    if (idempotency.body !== body) idempotency = { body, key: newKey() };
    submit.disabled = true;
    submitNote.textContent = "Submitting…";
    const r = await fetch("/api/v1/experiments", {
      method: "POST", body, credentials: "same-origin",
      headers: { ...headers(), "Idempotency-Key": idempotency.key },
    }).catch(() => null);
    if (!r) {
      submitNote.textContent = "The server cannot be reached; try again.";
      submit.disabled = false;
      return;
    }
    const answer = await r.json().catch(() => ({}));
    if (r.status === 201 || r.status === 200) {
      submitNote.textContent = `Experiment ${answer.id} created.`;
      location.href = `/experiments/${answer.id}`;
    } else if (r.status === 401 || r.status === 403) {
      needToken("The server refused this token.");
      submitNote.textContent = "";
    } else if (r.status === 422) {
      clearErrors();
      answer.detail.forEach(placeError);
      submitNote.textContent = "Not submitted: see the marked fields.";
    } else {
      submitNote.textContent = `Not submitted: the server answered ${r.status}.`;
      submit.disabled = false;
    }
  });

  const tokenForm = document.getElementById("token-form");
  if (tokenForm) {
    tokenForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const field = document.getElementById("api-token");
      token = field.value.trim() || null;
      field.value = "";
      document.getElementById("token-error").textContent = "";
      if (token) validate();
    });
  }

  document.getElementById("load-example").addEventListener("click", () => {
    const name = document.getElementById("example").value;
    fill(name ? examples[name] : {});
  });
  document.getElementById("load-json").addEventListener("click", () => {
    const out = document.getElementById("json-error");
    try {
      const spec = JSON.parse(jsonBox.value);
      if (spec === null || typeof spec !== "object" || Array.isArray(spec)) throw new Error("a spec is a JSON object");
      const notHeld = fill(spec);
      const known = new Set(inputs.map((el) => el.dataset.path));
      const unknown = [];
      const walk = (node, prefix) => {
        for (const [k, v] of Object.entries(node)) {
          const path = prefix + k;
          if (known.has(path)) continue;
          if (v && typeof v === "object" && !Array.isArray(v)) walk(v, `${path}.`);
          else unknown.push(path);
        }
      };
      walk(spec, "");
      out.textContent = [
        unknown.length ? `Not spec fields, left out: ${unknown.join(", ")}` : "",
        notHeld.length ? `Not among the form's choices, left out: ${notHeld.join("; ")}` : "",
      ].filter(Boolean).join(" · ");
    } catch (e) {
      out.textContent = `Not loaded: ${e.message}`;
    }
  });

  // Start from the small offline example: a valid spec, checked at once.
  document.getElementById("example").value = "small";
  fill(examples.small);
  if (protectedWrites) needToken();
})();
