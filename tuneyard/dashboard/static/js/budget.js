// The study page's budget card: each budget (trials, GPU-hours, wall time) used of its limit,
// the worker-hours, why no new trial starts once one is spent, a warning while no live worker
// serves the study's queue, and the best value against the GPU-hours used.

import { DASH, getJSON } from "./api.js";
import { fill, h } from "./dom.js";
import { fmtAmount, fmtDuration, fmtInt, fmtValue } from "./format.js";
import { draw, emptyLayout, ensurePlotly, layout, linkPoints, plotText, theme } from "./plots.js";
import { card, metaEl } from "./widgets.js";

// The card of study `studyId` and `load(detail)` that (re)draws it from the study's card JSON.
export function budgetPanel(studyId) {
  const plotlyReady = ensurePlotly();
  const warning = h("div", { class: "banner", "data-testid": "queue-warning", hidden: true });
  const lines = h("div", { class: "stats", "data-testid": "budget-lines" });
  const spent = h("div", { class: "note", "data-testid": "budget-spent", hidden: true });
  const plot = h("div", { id: "plot-budget", class: "plot", "data-testid": "plot-budget" });
  const el = card({
    title: "Budget",
    testid: "budget",
    meta: metaEl("meta-budget"),
    body: [h("div", { style: "padding:0 16px" }, warning), lines, spent, plot],
    cls: "span-12",
  });

  async function load(d) {
    const b = d.budget || {};
    warning.hidden = !d.queue_warning;
    warning.textContent = d.queue_warning
      ? `${d.queue_warning}: its trials wait until a worker on that queue starts`
      : "";
    fill(
      lines,
      budgetLine("Trials", b.trials, fmtInt, "trials", false),
      budgetLine("GPU-hours", b.gpu_hours, fmtHours, "gpu-hours", true),
      budgetLine("Wall time", b.wall_seconds, fmtDuration, "wall-time", true),
      h(
        "div",
        { class: "stat", "data-testid": "budget-worker-hours" },
        h("div", { class: "label" }, "Worker-hours"),
        h("div", { class: "value" }, fmtHours(b.worker_hours)),
      ),
    );
    spent.hidden = !b.spent;
    spent.textContent = b.spent ? `${b.spent}: no new trial starts` : "";
    const curve = await getJSON(`${DASH}/studies/${studyId}/budget`);
    await plotlyReady;
    drawBudget(plot, theme(), d, curve);
  }

  return { el, load };
}

function fmtHours(v) {
  if (v === null || v === undefined) return "—";
  return v >= 100 ? fmtInt(Math.round(v)) : fmtAmount(Math.round(v * 100) / 100);
}

// One budget: used, "of" its limit when it has one, and a bar of the share used (red once
// spent, for a budget that cuts a study short: all trials started is how a study ends).
function budgetLine(label, line, fmt, testid, cuts) {
  const used = line ? line.used : null;
  const limit = line ? line.limit : null;
  const share = limit ? Math.min(1, (used || 0) / limit) : null;
  const bar = h("div", { class: "bar", role: "img" });
  if (share !== null) {
    const red = cuts && share >= 1 ? "--c:var(--failed)" : "";
    bar.append(h("span", { style: `width:${(100 * share).toFixed(1)}%;${red}` }));
    bar.setAttribute("aria-label", `${Math.round(100 * share)}% used`);
  }
  return h(
    "div",
    { class: "stat", style: "min-width:170px", "data-testid": `budget-${testid}` },
    h("div", { class: "label" }, label),
    h(
      "div",
      { class: "value" },
      fmt(used),
      limit !== null ? h("small", {}, ` / ${fmt(limit)}`) : null,
    ),
    share !== null ? h("div", { style: "margin-top:6px" }, bar) : null,
  );
}

// The best value against GPU-hours: a step at each improvement, drawn on to the hours used
// so far. A study that used no GPU time is drawn against its worker-hours.
function drawBudget(el, t, d, curve) {
  const pts = curve.points || [];
  const onGpu = (curve.gpu_hours || 0) > 0;
  const key = onGpu ? "gpu_hours" : "worker_hours";
  const unit = onGpu ? "GPU-hours" : "worker-hours";
  const meta = document.getElementById("meta-budget");
  if (meta) meta.textContent = `best ${plotText(d.metric)} against ${unit} used`;
  if (!pts.length) {
    draw(el, [], emptyLayout(t, "No completed trial yet"));
    return;
  }
  const x = pts.map((p) => p[key]);
  const y = pts.map((p) => p.value);
  const total = curve[key] || 0;
  const steps = {
    type: "scatter",
    mode: "lines",
    name: "best so far",
    x: total > x[x.length - 1] ? [...x, total] : x,
    y: total > x[x.length - 1] ? [...y, y[y.length - 1]] : y,
    line: { shape: "hv", color: t.brand, width: 2 },
    hoverinfo: "skip",
  };
  const marks = {
    type: "scatter",
    mode: "markers",
    name: "improvement",
    x,
    y,
    customdata: pts.map((p) => p.trial_id),
    text: pts.map((p) => `trial #${p.number}`),
    marker: { color: t.brand, size: 7 },
    hovertemplate: `%{text}<br>${plotText(d.metric)} %{y:.5g}<br>%{x:.3g} ${unit}<extra></extra>`,
  };
  draw(
    el,
    [steps, marks],
    layout(t, {
      xaxis: { title: { text: unit }, rangemode: "tozero" },
      yaxis: { title: { text: `best ${plotText(d.metric)}` } },
      showlegend: false,
    }),
  ).then(() => linkPoints(el));
  el.dataset.best = fmtValue(y[y.length - 1]);
}
