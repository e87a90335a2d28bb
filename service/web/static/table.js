"use strict";
/* Sortable tables: a header button sorts the rows by its column's data-value (numbers
   numerically, missing values last either way); pinned rows (the original images) stay. */
(function () {
  for (const table of document.querySelectorAll("table.sortable")) {
    const tbody = table.tBodies[0];
    for (const button of table.querySelectorAll("th button.sort")) {
      button.addEventListener("click", () => {
        const th = button.closest("th");
        const ascending = th.getAttribute("aria-sort") !== "ascending";
        for (const other of table.querySelectorAll("th[aria-sort]")) other.removeAttribute("aria-sort");
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        const key = button.dataset.key;
        const value = (row) => {
          const cell = key === "method" ? row.querySelector("th[data-value]")
            : row.querySelector(`td[data-col="${key}"]`);
          const raw = cell ? cell.dataset.value : "";
          if (raw === undefined || raw === "") return null;
          const n = Number(raw);
          return Number.isNaN(n) ? raw : n;
        };
        const rows = [...tbody.rows].filter((r) => !r.hasAttribute("data-pinned"));
        rows.sort((a, b) => {
          const x = value(a), y = value(b);
          if (x === null || y === null) return (x === null) - (y === null);
          const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
          return ascending ? order : -order;
        });
        for (const row of rows) tbody.appendChild(row);
      });
    }
  }
})();
