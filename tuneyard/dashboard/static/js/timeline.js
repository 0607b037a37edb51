// The timeline page, at /timeline (?study=ID for one study's attempts, ?hours=N for the
// window): each worker's attempts over time, a lane per worker (a worker is one GPU or CPU
// slot; its GPUs are in the lane's label), bars coloured by how the attempt ended, the idle
// time between them as the bare track. A click on a bar opens its trial.

import { DASH, getJSON, query } from "./api.js";
import { $, fill, h } from "./dom.js";
import { fmtDuration, fmtInt, fmtTime } from "./format.js";
import { keepFresh } from "./live.js";
import { draw, emptyLayout, ensurePlotly, layout, linkPoints, plotText, theme } from "./plots.js";
import { card, metaEl } from "./widgets.js";

// Attempt states, in legend order.
const OUTCOMES = ["running", "completed", "paused", "stopped", "failed", "released"];
// The most attempts one page load draws (pages of PAGE_ROWS).
const PAGE_ROWS = 1000;
const MAX_ROWS = 5000;
const WINDOWS = [
  ["1", "last hour"],
  ["6", "last 6 hours"],
  ["24", "last 24 hours"],
  ["168", "last 7 days"],
];

export async function timelinePage(main) {
  const params = new URLSearchParams(location.search);
  const study = /^\d+$/.test(params.get("study") || "") ? Number(params.get("study")) : null;
  let hours = params.get("hours") || (study ? "" : "6");
  document.title = `Timeline${study ? ` · study ${study}` : ""} · tuneyard`;
  const plotlyReady = ensurePlotly();
  const plot = h("div", { id: "plot-timeline", class: "plot tall", "data-testid": "plot-timeline" });
  const summary = h("div", { class: "sub", "data-testid": "timeline-summary" });
  const picker = h(
    "select",
    { "data-testid": "timeline-window", "aria-label": "Time window" },
    study ? h("option", { value: "" }, "the study's lifetime") : null,
    WINDOWS.map(([v, label]) => h("option", { value: v }, label)),
  );
  picker.value = hours;
  picker.addEventListener("change", () => {
    hours = picker.value;
    const q = new URLSearchParams();
    if (study) q.set("study", String(study));
    if (hours) q.set("hours", hours);
    history.replaceState(null, "", `/timeline?${q}`);
    load();
  });
  fill(
    main,
    h(
      "div",
      { class: "crumbs" },
      study ? [h("a", { href: `/studies/${study}` }, `Study ${study}`), h("span", { class: "sep" }, "/")] : null,
      h("span", {}, "Timeline"),
    ),
    h(
      "div",
      { class: "page-head" },
      h("div", {}, h("h1", {}, study ? `Timeline of study ${study}` : "Timeline"), summary),
      h("div", { class: "tools" }, picker),
    ),
    card({
      title: "Attempts by worker",
      testid: "timeline",
      meta: metaEl("meta-timeline"),
      body: plot,
    }),
  );

  async function load() {
    const until = new Date();
    const base = { study_id: study, limit: PAGE_ROWS };
    if (hours) {
      base.since = new Date(until.getTime() - Number(hours) * 3600e3).toISOString();
      base.until = until.toISOString();
    }
    let data = null;
    const items = [];
    const workers = new Map();
    let cursor = null;
    do {
      const page = await getJSON(`${DASH}/timeline${query({ ...base, cursor })}`);
      data = data || page;
      items.push(...page.items);
      for (const w of page.workers || []) workers.set(w.name, w);
      cursor = page.next_cursor;
    } while (cursor && items.length < MAX_ROWS);
    await plotlyReady;
    drawTimeline(plot, theme(), { ...data, items, workers: [...workers.values()] }, Boolean(cursor));
    summary.textContent = `${fmtTime(data.since)} – ${fmtTime(data.until)}`;
  }
  await keepFresh(load);
}

function laneLabel(name, w) {
  const gpus = (w && w.gpus) || [];
  const parts = [name || "(no worker)"];
  if (w && w.host) parts.push(w.host);
  if (gpus.length) parts.push(gpus.map((g) => `GPU ${g.index}`).join("+"));
  return plotText(parts.join(" · "));
}

const ms = (iso) => new Date(iso).getTime();

export function drawTimeline(el, t, data, truncated) {
  const items = data.items || [];
  const lo = ms(data.since);
  const hi = Math.min(ms(data.until), ms(data.now || data.until));
  const byName = new Map((data.workers || []).map((w) => [w.name, w]));
  const lanes = [...new Set(items.map((a) => a.worker || ""))].sort();
  const label = new Map(lanes.map((n) => [n, laneLabel(n, byName.get(n))]));
  // Busy time per lane inside the window; the rest of the window is idle.
  const busy = new Map(lanes.map((n) => [n, 0]));
  const end = (a) => (a.ended_at ? ms(a.ended_at) : ms(data.now || data.until));
  for (const a of items) {
    const span = Math.max(0, Math.min(end(a), hi) - Math.max(ms(a.started_at), lo));
    busy.set(a.worker || "", busy.get(a.worker || "") + span);
  }
  const windowMs = Math.max(1, hi - lo);
  $("#meta-timeline").textContent =
    `${fmtInt(items.length)}${truncated ? "+" : ""} attempts on ${fmtInt(lanes.length)} workers` +
    (truncated ? " (the first shown)" : "") +
    " · idle time is the bare track · click a bar to open its trial";
  if (!items.length) {
    draw(el, [], emptyLayout(t, "No attempts in this window"));
    return;
  }
  const y = (n) => `${label.get(n)}<br>idle ${Math.round(100 * (1 - busy.get(n) / windowMs))}%`;
  const traces = [
    {
      type: "bar",
      orientation: "h",
      name: "idle",
      y: lanes.map(y),
      base: lanes.map(() => new Date(lo).toISOString()),
      x: lanes.map(() => windowMs),
      marker: { color: t.grid, opacity: 0.6 },
      hoverinfo: "skip",
      width: 0.7,
    },
  ];
  const stateColour = { ...t.state, released: t.muted };
  for (const state of OUTCOMES) {
    const mine = items.filter((a) => a.state === state);
    if (!mine.length) continue;
    traces.push({
      type: "bar",
      orientation: "h",
      name: state,
      y: mine.map((a) => y(a.worker || "")),
      base: mine.map((a) => a.started_at),
      x: mine.map((a) => Math.max(1000, end(a) - ms(a.started_at))),
      marker: { color: stateColour[state] || t.muted, line: { width: 0.5, color: t.surface } },
      width: 0.7,
      customdata: mine.map((a) => a.trial_id),
      text: mine.map(
        (a) =>
          `trial #${a.trial_number} (study ${a.study_id}) · attempt ${a.attempt}<br>` +
          `${a.state}, ${fmtDuration((end(a) - ms(a.started_at)) / 1000)}`,
      ),
      textposition: "none",
      hovertemplate: "%{text}<extra></extra>",
    });
  }
  el.style.height = `${Math.max(320, 56 * lanes.length + 110)}px`;
  draw(
    el,
    traces,
    layout(t, {
      barmode: "overlay",
      margin: { l: 10, r: 10, t: 10, b: 40 },
      xaxis: { type: "date", range: [new Date(lo).toISOString(), new Date(hi).toISOString()] },
      yaxis: { type: "category", automargin: true, autorange: "reversed" },
      legend: { orientation: "h", y: -0.15 },
    }),
  );
  el.dataset.attempts = String(items.length);
  el.dataset.lanes = lanes.join(",");
  linkPoints(el);
}
