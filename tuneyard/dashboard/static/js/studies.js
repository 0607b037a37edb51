// The studies list, at /.

import { DASH, getJSON, query } from "./api.js";
import { fill, h } from "./dom.js";
import {
  directionArrow,
  fmtAgo,
  fmtAmount,
  fmtDuration,
  fmtInt,
  fmtTime,
  fmtValue,
  secondsSince,
} from "./format.js";
import { keepFresh } from "./live.js";
import { parseTags, tagChips } from "./notes.js";
import { studyErrorLine } from "./study-outcome.js";
import { Cursors, badge, card, pager, progressBar, rowLink, stopPropagation } from "./widgets.js";

export async function studiesPage(main) {
  document.title = "Studies · tuneyard";
  let cursors = new Cursors();
  // The tag filter lives in the URL (/?tag=a&tag=b: studies with every one of them).
  let tags = new URLSearchParams(location.search).getAll("tag");
  const filter = h("input", {
    type: "search",
    class: "tags-input",
    placeholder: "filter by tag",
    value: tags.join(", "),
    "data-testid": "studies-tag-filter",
    "aria-label": "Show the studies with these tags",
  });
  const filterError = h("span", { class: "control-error", role: "alert", hidden: true });
  const filterForm = h(
    "form",
    { class: "tag-filter", "data-testid": "studies-filter" },
    filter,
    h("button", { type: "submit", class: "btn" }, "Filter"),
    filterError,
  );
  filterForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    tags = parseTags(filter.value);
    const q = new URLSearchParams();
    for (const t of tags) q.append("tag", t);
    history.replaceState(null, "", q.toString() ? `/?${q}` : "/");
    cursors = new Cursors();
    load().catch((e) => {
      filterError.textContent = e.message;
      filterError.hidden = false;
    });
  });
  const tbody = h("tbody");
  const summary = h("span", { class: "meta", "data-testid": "studies-summary" });
  const table = h(
    "table",
    { class: "table", "data-testid": "studies-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, "Study"),
        h("th", {}, "State"),
        h("th", { style: "min-width:220px" }, "Progress"),
        h("th", { style: "min-width:150px" }, "Budget used"),
        h("th", { class: "num" }, "Best value"),
        h("th", {}, "Age"),
      ),
    ),
    tbody,
  );
  const empty = h(
    "div",
    { class: "empty", hidden: true },
    h("p", { "data-testid": "studies-empty" }, "No studies yet."),
    h(
      "p",
      { class: "muted" },
      "Create one with ",
      h("code", {}, "tuneyard study create -f study.yaml"),
      " or POST it to ",
      h("a", { href: "/docs" }, "/api/v1/studies"),
      ".",
    ),
  );
  const pages = pager({
    testid: "studies",
    onPrev: () => cursors.back() && load(),
    onNext: () => cursors.forward() && load(),
  });
  fill(
    main,
    h(
      "div",
      { class: "page-head" },
      h("div", {}, h("h1", {}, "Studies"), h("div", { class: "sub" }, summary)),
      filterForm,
    ),
    card({
      title: "All studies",
      testid: "studies",
      body: h(
        "div",
        { class: "card-body flush" },
        h("div", { class: "table-wrap" }, table),
        empty,
        pages.el,
      ),
    }),
  );

  async function load() {
    const q = query({ limit: 50, cursor: cursors.current });
    const byTag = tags.map((t) => `&tag=${encodeURIComponent(t)}`).join("");
    const page = await getJSON(`${DASH}/studies${q || "?"}${byTag}`);
    filterError.hidden = true;
    table.dataset.tags = tags.join(",");
    cursors.next = page.next_cursor;
    const items = page.items || [];
    fill(tbody, items.map(studyRow));
    empty.hidden = items.length > 0 || cursors.page > 1;
    empty.firstChild.textContent = tags.length
      ? `No study carries the tag${tags.length > 1 ? "s" : ""} ${tags.join(", ")}.`
      : "No studies yet.";
    table.hidden = !empty.hidden;
    pages.update(cursors.page, items.length, Boolean(page.next_cursor));
    const running = items.filter((s) => s.state === "running").length;
    const n = `${items.length}${page.next_cursor ? "+" : ""}`;
    const tagged = tags.length ? ` tagged ${tags.join(" + ")}` : "";
    summary.textContent = `${n} ${n === "1" ? "study" : "studies"}${tagged} · ${running} running`;
  }
  await keepFresh(load);
}

function studyRow(s) {
  const counts = s.counts || {};
  const started = s.trials_started ?? Object.values(counts).reduce((a, b) => a + b, 0);
  const done = (counts.completed || 0) + (counts.stopped || 0) + (counts.failed || 0);
  const budget = s.budget || {};
  const budgetBar = h("div", { class: "bar" });
  if (budget.total) {
    budgetBar.append(
      h("span", { style: `width:${Math.min(100, (100 * (budget.used || 0)) / budget.total)}%` }),
    );
  }
  const href = `/studies/${s.id}`;
  return h(
    "tr",
    { class: "link", "data-testid": "study-row", "data-study-id": s.id, onclick: rowLink(href) },
    h(
      "td",
      {},
      h("a", { class: "name", href }, s.name),
      h("div", { class: "sub" }, `#${s.id} · ${s.metric || ""} ${directionArrow(s.direction)}`),
      s.tags && s.tags.length
        ? tagChips(s.tags, (t) => `/?tag=${encodeURIComponent(t)}`, "study-tags")
        : null,
    ),
    h("td", {}, badge(s.state), studyErrorLine(s)),
    h(
      "td",
      {},
      progressBar(counts, s.max_trials, "study-progress"),
      h(
        "div",
        { class: "bar-label" },
        h(
          "span",
          {},
          `${fmtInt(started)}${s.max_trials ? ` / ${fmtInt(s.max_trials)}` : ""} trials`,
        ),
        h(
          "span",
          {},
          `${fmtInt(done)} done${counts.running ? ` · ${counts.running} running` : ""}`,
        ),
      ),
    ),
    h(
      "td",
      {},
      budget.total ? budgetBar : null,
      h(
        "div",
        { class: "bar-label" },
        h(
          "span",
          {},
          budget.total
            ? `${fmtAmount(budget.used)} / ${fmtAmount(budget.total)}`
            : fmtAmount(budget.used),
        ),
        budget.total
          ? h("span", {}, `${Math.round((100 * (budget.used || 0)) / budget.total)}%`)
          : null,
      ),
    ),
    h(
      "td",
      { class: "num" },
      s.best
        ? [
            h("div", { class: "best" }, fmtValue(s.best.value)),
            h(
              "a",
              { class: "sub", href: `/trials/${s.best.trial_id}`, onclick: stopPropagation },
              `trial #${s.best.number}`,
            ),
          ]
        : h("span", { class: "faint" }, "—"),
    ),
    h(
      "td",
      { class: "nowrap" },
      h(
        "span",
        { title: `created ${fmtTime(s.created_at)}` },
        fmtDuration(s.age_s ?? secondsSince(s.created_at)),
      ),
      s.finished_at
        ? h("div", { class: "sub" }, `finished ${fmtAgo(secondsSince(s.finished_at))}`)
        : null,
    ),
  );
}
