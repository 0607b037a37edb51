// The study page's plots: optimization history, parameter importance, learning curves,
// parallel coordinates and one slice per parameter.

import { DASH, getJSON } from "./api.js";
import { $, cssVar, fill, h } from "./dom.js";
import { TRIAL_STATES, fmtAmount, fmtInt } from "./format.js";
import {
  MARK_LOOK,
  decisionMark,
  draw,
  drawCurves,
  emptyLayout,
  ensurePlotly,
  layout,
  linkPoints,
  logAxis,
  logScaleFits,
  plotText,
  rungsLogScale,
  theme,
} from "./plots.js";
import { drawParcoords } from "./parcoords.js";
import { priorHistoryTraces, priorSliceTraces, priorsLine, priorsSource } from "./study-priors.js";
import { card, metaEl } from "./widgets.js";

// The plot cards of study `studyId`, in page order, and `load(detail)` that (re)draws them.
export function studyPlots(studyId) {
  const plotlyReady = ensurePlotly();
  const sliceEls = new Map();
  const plot = (name) =>
    h("div", { id: `plot-${name}`, class: "plot", "data-testid": `plot-${name}` });
  const history = plot("history");
  const warmStart = h("div", { class: "note", "data-testid": "warm-start", hidden: true });
  const priorsOf = priorsSource(studyId);
  const curves = plot("curves");
  curves.classList.add("tall");
  const parcoords = plot("parcoords");
  const importance = plot("importance");
  const importanceNote = h("div", {
    class: "note clamp",
    "data-testid": "importance-method",
    hidden: true,
  });
  const slices = h("div", { class: "slices", "data-testid": "slices" });
  const cards = [
    card({
      title: "Optimization history",
      testid: "history",
      meta: metaEl("meta-history"),
      body: [history, warmStart],
      cls: "span-8",
    }),
    card({
      title: "Parameter importance",
      testid: "importance",
      meta: metaEl("meta-importance"),
      body: [importance, importanceNote],
      cls: "span-4",
    }),
    card({
      title: "Learning curves",
      testid: "curves",
      meta: metaEl("meta-curves"),
      body: curves,
      cls: "span-12",
    }),
    card({
      title: "Parallel coordinates",
      testid: "parcoords",
      meta: metaEl("meta-parcoords"),
      body: parcoords,
      cls: "span-12",
    }),
    card({
      title: "Slices",
      testid: "slices",
      meta: metaEl("meta-slices"),
      body: slices,
      cls: "span-12",
    }),
  ];

  async function load(d) {
    await plotlyReady;
    const t = theme();
    const base = `${DASH}/studies/${studyId}`;
    // A warm start's priors go on the history and the slices; without them those still draw.
    const priors = priorsOf(d).catch(() => null);
    await Promise.allSettled([
      section("history", async () => {
        const data = await getJSON(`${base}/history?points=2000`);
        const p = await priors;
        priorsLine(warmStart, p);
        drawHistory(history, t, d, data, p);
      }),
      section("curves", async () =>
        drawStudyCurves(curves, t, d, await getJSON(`${base}/curves?trials=200`)),
      ),
      section("parcoords", async () => {
        const p = await getJSON(`${base}/params?trials=2000`);
        drawParcoords(parcoords, t, d, p);
        drawSlices(slices, sliceEls, t, d, p, await priors);
      }),
      section("importance", async () =>
        drawImportance(importance, importanceNote, t, await getJSON(`${base}/importance`)),
      ),
    ]);
  }

  return { cards, load };
}

// A section that fails to load says so in its card's head.
function section(name, fn) {
  return fn().catch((e) => {
    const meta = $(`#meta-${name}`);
    if (meta) meta.textContent = e.status === 401 ? "" : `couldn't load: ${e.message}`;
    throw e;
  });
}

function drawHistory(el, t, d, data, priors) {
  const pts = data.points || [];
  const before = priorHistoryTraces(priors, d.metric);
  $("#meta-history").textContent = data.downsampled
    ? `${fmtInt(pts.length)} of ${fmtInt(data.total)} trials shown (best and worst per bucket)`
    : `${fmtInt(data.total ?? pts.length)} finished trials`;
  if (!pts.length && !before.length) {
    draw(el, [], emptyLayout(t, "No finished trials yet"));
    return;
  }
  const traces = [...before];
  for (const s of TRIAL_STATES) {
    const mine = pts.filter((p) => p.state === s);
    if (!mine.length) continue;
    traces.push({
      type: "scatter",
      mode: "markers",
      name: s,
      x: mine.map((p) => p.number),
      y: mine.map((p) => p.value),
      marker: { color: t.state[s], size: 6, opacity: s === "completed" ? 0.9 : 0.55 },
      hovertemplate: `trial #%{x}<br>${plotText(d.metric)} %{y:.5g}<extra>${s}</extra>`,
    });
  }
  const best = data.best || [];
  if (best.length && pts.length) {
    const last = Math.max(...pts.map((p) => p.number));
    const bx = best.map((b) => b.number);
    const by = best.map((b) => b.value);
    if (bx[bx.length - 1] < last) {
      bx.push(last);
      by.push(by[by.length - 1]);
    }
    traces.push({
      type: "scatter",
      mode: "lines",
      name: "best so far",
      x: bx,
      y: by,
      line: { shape: "hv", color: t.brand, width: 2.2 },
      hovertemplate: `best so far %{y:.5g}<extra></extra>`,
    });
  }
  draw(
    el,
    traces,
    layout(t, {
      xaxis: { title: { text: "trial number" }, rangemode: "tozero" },
      yaxis: {
        title: { text: `${plotText(d.metric)} ${d.direction === "maximize" ? "↑" : "↓"}` },
        type: logScaleFits([...pts.map((p) => p.value), ...before.flatMap((tr) => tr.y)])
          ? "log"
          : "linear",
      },
    }),
  );
}

// Every trial's curve (up to the number asked for) with the decisions taken on it.
function drawStudyCurves(el, t, d, data) {
  const trials = data.trials || [];
  const rungs = data.rungs || d.rungs || [];
  $("#meta-curves").textContent =
    data.total && data.shown < data.total
      ? `${fmtInt(data.shown)} of ${fmtInt(data.total)} trials (best, active and a spread of the rest) · click a curve to open its trial`
      : `${fmtInt(trials.length)} trials · click a curve to open its trial`;
  if (!trials.length) {
    draw(el, [], emptyLayout(t, "No reports yet"));
    return;
  }
  // Stopped trials first so the survivors are drawn on top.
  const rank = { stopped: 0, failed: 1, queued: 2, completed: 3, paused: 4, running: 5 };
  const sorted = [...trials].sort(
    (a, b) => (rank[a.state] ?? 9) - (rank[b.state] ?? 9) || a.number - b.number,
  );
  // The legend entry of each state goes on a curve with a line where there is one.
  const legendOf = new Map();
  for (const tr of sorted) {
    const prev = legendOf.get(tr.state);
    if (!prev || (prev.steps.length < 2 && tr.steps.length > 1)) legendOf.set(tr.state, tr);
  }
  const traces = sorted.map((tr) => {
    const first = legendOf.get(tr.state) === tr;
    const faded = tr.state === "stopped" || tr.state === "failed";
    return {
      type: "scatter",
      mode: tr.steps.length > 1 ? "lines" : "markers",
      name: `${tr.state} trials`,
      legendgroup: tr.state,
      showlegend: first,
      x: tr.steps,
      y: tr.values,
      opacity: faded ? 0.5 : 0.95,
      line: { color: t.state[tr.state] || t.muted, width: faded ? 1 : 1.8 },
      marker: { color: t.state[tr.state] || t.muted, size: 5 },
      customdata: tr.steps.map(() => tr.id),
      hovertemplate: `trial #${tr.number}<br>step %{x}<br>${plotText(d.metric)} %{y:.5g}<extra>${tr.state}</extra>`,
    };
  });
  // The server places each mark at its step; it goes on the curve's value there.
  const marks = trials.flatMap((tr) =>
    (tr.marks || []).map((m) => {
      const text = `trial #${tr.number}: ${m.reason || m.kind}`;
      return decisionMark(m.kind, m.step, tr.steps, tr.values, text, tr.id);
    }),
  );
  const allSteps = trials.flatMap((tr) => tr.steps);
  const logX = logScaleFits([...allSteps, ...rungs]) || rungsLogScale(rungs);
  drawCurves(el, t, {
    curves: traces,
    marks: marks.filter(Boolean),
    look: MARK_LOOK.study,
    metric: d.metric,
    rungs,
    logX,
    logY: logScaleFits(trials.flatMap((tr) => tr.values)),
    rungAmounts: true,
  });
  linkPoints(el);
}

function drawSlices(slices, sliceEls, t, d, data, priors) {
  const space = data.space || d.space || [];
  const trials = (data.trials || []).filter((tr) => typeof tr.value === "number");
  $("#meta-slices").textContent =
    `value against each parameter · ${fmtInt(trials.length)} trials · colour: trial number (later is stronger)`;
  const wanted = new Set(space.map((s) => s.name));
  for (const [name, wrap] of sliceEls) {
    if (!wanted.has(name)) {
      wrap.remove();
      sliceEls.delete(name);
    }
  }
  if (!space.length) {
    fill(slices, h("p", { class: "empty" }, "No parameters"));
    return;
  }
  const maxNumber = Math.max(1, ...trials.map((tr) => tr.number));
  const logY = logScaleFits(trials.map((tr) => tr.value));
  space.forEach((spec, i) => {
    let wrap = sliceEls.get(spec.name);
    if (!wrap) {
      wrap = h(
        "div",
        { class: "slice-wrap" },
        h("h3", {}, spec.name),
        h("div", {
          class: "plot slice",
          id: `plot-slice-${i}`,
          "data-testid": "plot-slice",
          "data-param": spec.name,
        }),
      );
      sliceEls.set(spec.name, wrap);
      slices.append(wrap);
    }
    const el = $(".plot", wrap);
    const mine = trials.filter((tr) => (tr.params || {})[spec.name] !== undefined);
    const xs = mine.map((tr) => tr.params[spec.name]);
    const ys = mine.map((tr) => tr.value);
    const categorical = spec.type === "categorical" || Boolean(spec.choices);
    const marker = {
      color: mine.map((tr) => tr.number),
      cmin: 0,
      cmax: maxNumber,
      colorscale: t.scale,
      size: 6,
      opacity: 0.8,
    };
    const trace = categorical
      ? {
          type: "box",
          x: xs.map(plotText),
          y: ys,
          boxpoints: "all",
          jitter: 0.45,
          pointpos: 0,
          fillcolor: "rgba(0,0,0,0)",
          line: { color: t.axis, width: 1 },
          marker: { ...marker, color: t.brand, opacity: 0.55 },
        }
      : {
          type: "scatter",
          mode: "markers",
          x: xs,
          y: ys,
          marker,
        };
    trace.customdata = mine.map((tr) => tr.id);
    trace.text = mine.map((tr) => `#${tr.number}`);
    trace.hovertemplate = `trial %{text}<br>${plotText(spec.name)} %{x}<br>${plotText(d.metric)} %{y:.5g}<extra></extra>`;
    draw(
      el,
      [trace, ...priorSliceTraces(priors, spec.name, d.metric, categorical)],
      layout(t, {
        showlegend: false,
        margin: { l: 52, r: 10, t: 6, b: 38 },
        xaxis: categorical
          ? {
              type: "category",
              categoryorder: "array",
              categoryarray: (spec.choices || []).map(plotText),
            }
          : spec.log
            ? logAxis([spec.low, spec.high])
            : { type: "linear" },
        yaxis: { title: { text: plotText(d.metric) }, type: logY ? "log" : "linear" },
      }),
    );
    linkPoints(el);
  });
}

function drawImportance(el, importanceNote, t, data) {
  const params = [...(data.params || [])].sort((a, b) => a.importance - b.importance);
  const parts = [];
  if (data.rung !== null && data.rung !== undefined)
    parts.push(`rung ${data.rung} (step ${fmtAmount(data.resource)})`);
  else if (data.trials_used) parts.push("final values");
  if (data.trials_used) parts.push(`${fmtInt(data.trials_used)} trials`);
  const meta = $("#meta-importance");
  meta.textContent = parts.join(" · ");
  meta.dataset.rung = data.rung ?? "";
  meta.dataset.trials = data.trials_used ?? 0;
  // Which values and why (the highest rung enough trials reached), then the method.
  const note = [data.basis, data.method].filter(Boolean).join(". ");
  importanceNote.textContent = note;
  importanceNote.title = note;
  importanceNote.hidden = !note;
  if (!params.length || params.every((p) => !p.importance)) {
    importanceNote.hidden = true;
    draw(el, [], emptyLayout(t, "Needs more finished trials"));
    return;
  }
  const total = params.reduce((n, p) => n + Math.max(0, p.importance), 0) || 1;
  draw(
    el,
    [
      {
        type: "bar",
        orientation: "h",
        x: params.map((p) => p.importance),
        y: params.map((p) => plotText(p.name)),
        text: params.map((p) => `${Math.round((100 * Math.max(0, p.importance)) / total)}%`),
        textposition: "outside",
        cliponaxis: false,
        marker: { color: t.brand, opacity: 0.85 },
        hovertemplate: "%{y}: %{x:.3g}<extra></extra>",
      },
    ],
    layout(t, {
      showlegend: false,
      margin: { l: 10, r: 40, t: 10, b: 40 },
      xaxis: { title: { text: "importance" }, rangemode: "tozero" },
      yaxis: { automargin: true, tickfont: { family: cssVar("--mono"), size: 12 } },
      bargap: 0.35,
    }),
  );
}
