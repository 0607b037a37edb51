// The study page's trials table: filtered by state, sorted, paged with cursors, exported as
// CSV.

import { API, authedLink, getJSON, query } from "./api.js";
import { fill, h } from "./dom.js";
import { TRIAL_STATES, fmtAmount, fmtParam, fmtValue } from "./format.js";
import { racedNote } from "./replicates.js";
import { Cursors, badge, card, metaEl, pager, rowLink, timeCell } from "./widgets.js";

// The card of study `studyId`'s trials; `showStudy(detail)` puts the count of each state in
// the filter and marks the best trial, `load()` reads the current page again.
export function trialsTable(studyId) {
  const state = { filter: "", order: "number", limit: 25, cursors: new Cursors(), best: null };
  const stateSelect = h("select", { "data-testid": "trials-state", "aria-label": "State" });
  const orderSelect = h(
    "select",
    { "data-testid": "trials-order", "aria-label": "Order" },
    h("option", { value: "number" }, "Number ↑"),
    h("option", { value: "-number" }, "Number ↓"),
    h("option", { value: "value" }, "Value ↑"),
    h("option", { value: "-value" }, "Value ↓"),
  );
  const sizeSelect = h(
    "select",
    { "aria-label": "Rows per page" },
    [25, 50, 100].map((n) => h("option", { value: n }, `${n} rows`)),
  );
  const thead = h("thead");
  const tbody = h("tbody");
  const tableNote = h("div", { class: "note", hidden: true });
  const table = h("table", { class: "table", "data-testid": "trials-table" }, thead, tbody);
  const pages = pager({
    testid: "trials",
    onPrev: () => state.cursors.back() && loadTable(),
    onNext: () => state.cursors.forward() && loadTable(),
  });
  const csv = authedLink(
    `${API}/studies/${studyId}/trials.csv`,
    "Export CSV",
    `study-${studyId}-trials.csv`,
  );
  csv.setAttribute("download", "");

  const setFilter = (value) => {
    state.filter = value;
    state.cursors.reset();
    loadTable();
  };
  const setOrder = (value) => {
    state.order = value;
    orderSelect.value = value;
    state.cursors.reset();
    loadTable();
  };
  stateSelect.addEventListener("change", () => setFilter(stateSelect.value));
  orderSelect.addEventListener("change", () => setOrder(orderSelect.value));
  sizeSelect.addEventListener("change", () => {
    state.limit = Number(sizeSelect.value);
    state.cursors.reset();
    loadTable();
  });

  const el = card({
    title: "Trials",
    testid: "trials",
    meta: metaEl("meta-trials"),
    tools: h(
      "div",
      { class: "tools controls" },
      h("label", {}, "State"),
      stateSelect,
      h("label", {}, "Sort"),
      orderSelect,
      sizeSelect,
      csv,
    ),
    body: h(
      "div",
      { class: "card-body flush" },
      tableNote,
      h("div", { class: "table-wrap" }, table),
      pages.el,
    ),
    cls: "span-12",
  });

  function showStudy(d) {
    const counts = d.counts || {};
    state.best = d.best ? d.best.trial_id : null;
    // state filter options with their counts
    const current = stateSelect.value;
    fill(
      stateSelect,
      h("option", { value: "" }, "All"),
      TRIAL_STATES.map((s) => h("option", { value: s }, counts[s] ? `${s} (${counts[s]})` : s)),
    );
    stateSelect.value = current || state.filter;
  }

  function renderTableHead() {
    const sortable = (label, key, cls) => {
      const active = state.order.replace("-", "") === key;
      const arrow = active ? (state.order.startsWith("-") ? "▼" : "▲") : "";
      return h(
        "th",
        {
          class: `sortable ${cls || ""}`,
          "data-sort": key,
          title: `Sort by ${key}`,
          onclick: () => setOrder(state.order === key ? `-${key}` : key),
        },
        label,
        " ",
        h("span", { class: "arrow" }, arrow),
      );
    };
    fill(
      thead,
      h(
        "tr",
        {},
        sortable("#", "number", "num"),
        h("th", {}, "State"),
        sortable("Value", "value", "num"),
        h("th", { class: "num" }, "Step"),
        h("th", { class: "num" }, "Rung"),
        h("th", { class: "num" }, "Bracket"),
        h("th", { class: "num" }, "Attempts"),
        h("th", {}, "Params"),
        h("th", {}, "Reason"),
        h("th", {}, "Updated"),
      ),
    );
  }

  let tableSeq = 0;
  async function loadTable() {
    const seq = ++tableSeq;
    renderTableHead();
    const url = `${API}/studies/${studyId}/trials${query({ state: state.filter, order: state.order, limit: state.limit, cursor: state.cursors.current })}`;
    try {
      const page = await getJSON(url);
      if (seq !== tableSeq) return; // a newer request is on its way
      state.cursors.next = page.next_cursor;
      const items = page.items || [];
      fill(
        tbody,
        items.length
          ? items.map(trialRow)
          : h(
              "tr",
              {},
              h(
                "td",
                { colspan: 10, class: "empty" },
                state.filter ? `No ${state.filter} trials.` : "No trials yet.",
              ),
            ),
      );
      pages.update(state.cursors.page, items.length, Boolean(page.next_cursor));
      tableNote.hidden = !state.order.includes("value");
      tableNote.textContent = "Sorted by value: trials without a value yet are not listed.";
      table.dataset.order = state.order;
      table.dataset.filter = state.filter;
      table.dataset.page = String(state.cursors.page);
    } catch (e) {
      if (seq === tableSeq)
        fill(
          tbody,
          h(
            "tr",
            {},
            h(
              "td",
              { colspan: 10, class: "empty error-box" },
              `Couldn't load trials: ${e.message}`,
            ),
          ),
        );
      throw e;
    }
  }

  function trialRow(t) {
    const href = `/trials/${t.id}`;
    const best = state.best === t.id;
    const params = Object.entries(t.params || {})
      .map(([k, v]) => `${k}=${fmtParam(v)}`)
      .join("  ");
    return h(
      "tr",
      {
        class: "link",
        "data-testid": "trial-row",
        "data-number": t.number,
        "data-state": t.state,
        "data-trial-id": t.id,
        onclick: rowLink(href),
      },
      h("td", { class: "num" }, h("a", { href }, `#${t.number}`)),
      h("td", {}, badge(t.state), racedNote(t)),
      h(
        "td",
        {
          class: `num ${best ? "best" : ""}`,
          "data-testid": "trial-value",
          title: best ? "best trial" : null,
        },
        fmtValue(t.value),
        // A trial evaluated on folds or seeds: its value's standard error.
        t.value_stderr === null || t.value_stderr === undefined
          ? null
          : h("span", { class: "faint" }, ` ± ${fmtValue(t.value_stderr)}`),
        best ? " ★" : null,
      ),
      h("td", { class: "num" }, fmtAmount(t.resource)),
      h("td", { class: "num" }, t.rung >= 0 ? t.rung : "—"),
      h("td", { class: "num" }, t.bracket),
      h("td", { class: "num" }, t.attempts),
      h("td", { class: "params", title: params }, params),
      h("td", { class: "reason", title: t.reason || "" }, t.reason || ""),
      h("td", {}, timeCell(t.updated_at)),
    );
  }

  return { el, showStudy, load: loadTable };
}
