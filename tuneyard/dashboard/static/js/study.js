// The study page, at /studies/{id}: its head, its plots and its trials, kept up to date from
// the study's event stream.

import { API, DASH, getJSON } from "./api.js";
import { studyControls } from "./controls.js";
import { $, fill, h } from "./dom.js";
import {
  TRIAL_STATES,
  directionArrow,
  fmtAgo,
  fmtAmount,
  fmtInt,
  fmtTime,
  fmtValue,
  secondsSince,
} from "./format.js";
import { budgetPanel } from "./budget.js";
import { coalesce, watchStudy } from "./live.js";
import { notesCard } from "./notes.js";
import { populationPanel } from "./population.js";
import { clearBanner, showBanner } from "./status.js";
import { outcomePanel } from "./study-outcome.js";
import { frontStat, paretoPanel } from "./study-pareto.js";
import { studyPlots } from "./study-plots.js";
import { trialsTable } from "./study-trials.js";
import { badge, progressBar } from "./widgets.js";

export async function studyPage(main, studyId) {
  const state = { detail: null, version: null };
  const head = h("div", { class: "page-head", "data-testid": "study-head" });
  const crumbs = h(
    "div",
    { class: "crumbs" },
    h("a", { href: "/" }, "Studies"),
    h("span", { class: "sep" }, "/"),
    h("span", { id: "crumb-name" }, `Study ${studyId}`),
  );
  const plots = studyPlots(studyId);
  const population = populationPanel(studyId);
  const pareto = paretoPanel(studyId);
  const trials = trialsTable(studyId);
  const budget = budgetPanel(studyId);
  const controls = studyControls(studyId, () => refresh(0));
  const notes = notesCard({ path: `${API}/studies/${studyId}/notes`, what: "study" });
  const timeline = h(
    "a",
    { class: "btn", href: `/timeline?study=${studyId}`, "data-testid": "study-timeline" },
    "Timeline",
  );
  fill(
    main,
    crumbs,
    head,
    h("div", { class: "actions-bar" }, controls.el, timeline),
    h(
      "div",
      { class: "grid" },
      notes.el,
      pareto.cards,
      population.cards,
      plots.cards,
      budget.el,
      trials.el,
    ),
  );

  async function loadDetail() {
    const d = await getJSON(`${DASH}/studies/${studyId}`);
    state.detail = d;
    state.version = d.version ?? null;
    renderHead(head, d, pareto.summary());
    controls.update(d);
    notes.show(d);
    trials.showStudy(d);
    return d;
  }

  const refresh = coalesce(async () => {
    try {
      const d = await loadDetail();
      await Promise.allSettled([
        pareto.load(d),
        population.load(d),
        plots.load(d),
        budget.load(d),
        trials.load(),
      ]);
      clearBanner();
    } catch (e) {
      if (e.status === 404 && !state.detail) {
        fill(
          main,
          h(
            "div",
            { class: "empty" },
            h("h1", {}, "Study not found"),
            h(
              "p",
              { class: "muted" },
              `There is no study ${studyId}. `,
              h("a", { href: "/" }, "All studies"),
            ),
          ),
        );
        return;
      }
      if (e.status !== 401) showBanner(`Couldn't refresh: ${e.message}`);
    }
  }, 1000);

  watchStudy(studyId, (data) => {
    if (data && state.version !== null && data.version === state.version) return;
    refresh(300);
  });
  refresh(0);
}

// The study's name, state, dates, counts and its best value, trials and budget so far.
function renderHead(head, d, front) {
  document.title = `${d.name} · tuneyard`;
  $("#crumb-name").textContent = d.name;
  const counts = d.counts || {};
  const budget = d.budget || {};
  fill(
    head,
    h(
      "div",
      {},
      h(
        "div",
        { class: "title" },
        h("h1", { "data-testid": "study-name" }, d.name),
        badge(d.state),
      ),
      h(
        "div",
        { class: "sub" },
        h("span", {}, `#${d.id}`),
        h(
          "span",
          { "data-testid": "study-objectives" },
          (d.objectives && d.objectives.length ? d.objectives : [d])
            .map((o) => `${o.metric} ${directionArrow(o.direction)}`)
            .join(" · "),
        ),
        h(
          "span",
          { title: fmtTime(d.created_at) },
          `created ${fmtAgo(secondsSince(d.created_at))}`,
        ),
        d.finished_at
          ? h(
              "span",
              { title: fmtTime(d.finished_at) },
              `finished ${fmtAgo(secondsSince(d.finished_at))}`,
            )
          : null,
      ),
      h(
        "div",
        { class: "legend", style: "margin-top:8px" },
        TRIAL_STATES.filter((s) => counts[s]).map((s) =>
          h(
            "span",
            { class: `s-${s}`, "data-testid": `count-${s}` },
            h("i"),
            `${counts[s]} ${s}`,
          ),
        ),
      ),
      outcomePanel(d),
    ),
    h(
      "div",
      { class: "stats" },
      // Several objectives have no one best trial: the front's size and hypervolume instead.
      d.pareto && d.objectives.length > 1
        ? h(
            "div",
            { class: "stat" },
            h("div", { class: "label" }, "Pareto front"),
            h("div", { class: "value", "data-testid": "stat-front" }, frontStat(front)),
          )
        : stat(
            "Best",
            d.best ? fmtValue(d.best.value) : "—",
            d.best ? h("a", { href: `/trials/${d.best.trial_id}` }, ` #${d.best.number}`) : null,
          ),
      stat(
        "Trials",
        fmtInt(d.trials_started),
        d.max_trials ? ` / ${fmtInt(d.max_trials)}` : null,
      ),
      stat(
        "Budget used",
        fmtAmount(budget.used),
        budget.total ? ` / ${fmtAmount(budget.total)}` : null,
      ),
      h(
        "div",
        { class: "stat", style: "min-width:200px" },
        h("div", { class: "label" }, "Progress"),
        h("div", { style: "margin-top:9px" }, progressBar(counts, d.max_trials)),
      ),
    ),
  );
}

function stat(label, value, small) {
  return h(
    "div",
    { class: "stat" },
    h("div", { class: "label" }, label),
    h("div", { class: "value" }, value, small ? h("small", {}, small) : null),
  );
}
