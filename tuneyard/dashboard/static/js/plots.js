// Plotly: loaded on first use, themed from the page's CSS, fed only escaped text. The learning
// curves and the decision marks on them are drawn here for both the study and the trial page.

import { cssVar, h } from "./dom.js";
import { TRIAL_STATES, fmtAmount } from "./format.js";

// Decisions drawn on learning curves, by kind.
const MARKS = {
  pause: { symbol: "diamond", color: "--paused" },
  promote: { symbol: "triangle-up", color: "--running" },
  stop: { symbol: "x", color: "--failed" },
  complete: { symbol: "star", color: "--completed" },
  fail: { symbol: "x-thin-open", color: "--failed" },
  release: { symbol: "circle-open", color: "--stopped" },
  retry: { symbol: "circle-open", color: "--stopped" },
};

let plotlyLoading = null;

export function ensurePlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyLoading) {
    plotlyLoading = new Promise((resolve, reject) => {
      const s = h("script", { src: document.body.dataset.plotly });
      s.onload = () => resolve(window.Plotly);
      s.onerror = () => reject(new Error("plotly.js could not be loaded"));
      document.head.append(s);
    });
  }
  return plotlyLoading;
}

export function theme() {
  return {
    text: cssVar("--text"),
    muted: cssVar("--muted"),
    grid: cssVar("--grid"),
    axis: cssVar("--axis"),
    brand: cssVar("--brand"),
    surface: cssVar("--surface"),
    font: cssVar("--font"),
    // From faint to strong on this theme's background.
    scale: [
      [0, cssVar("--scale-0")],
      [0.5, cssVar("--scale-1")],
      [1, cssVar("--scale-2")],
    ],
    state: Object.fromEntries(TRIAL_STATES.map((s) => [s, cssVar(`--${s}`)])),
  };
}

function axis(t, extra) {
  return {
    gridcolor: t.grid,
    zerolinecolor: t.grid,
    linecolor: t.axis,
    tickcolor: t.axis,
    automargin: true,
    title: { font: { size: 12, color: t.muted } },
    ...extra,
  };
}

export function layout(t, extra) {
  const base = {
    margin: { l: 56, r: 16, t: 10, b: 44 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    font: { family: t.font, size: 12, color: t.text },
    hoverlabel: { font: { family: t.font, size: 12 } },
    hovermode: "closest",
    showlegend: true,
    legend: { orientation: "h", x: 0, y: 1.0, yanchor: "bottom", font: { size: 11.5 } },
    // Keeps zoom and legend toggles across live updates.
    uirevision: "keep",
  };
  const out = { ...base, ...extra };
  out.xaxis = axis(t, extra.xaxis || {});
  out.yaxis = axis(t, extra.yaxis || {});
  return out;
}

// Plotly reads every string it draws (trace and legend names, axis titles, tick labels, hover
// text, annotations) as HTML-like markup: <a href> becomes a link, <b> bold, <br> a break.
// Each string taken from a study's data (choices, names, reasons) goes through plotText, so
// it is drawn as written and nothing in it is markup.
export function plotText(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

const PLOT_CONFIG = {
  displaylogo: false,
  responsive: true,
  modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d", "toggleSpikelines"],
};

export function emptyLayout(t, message) {
  return layout(t, {
    xaxis: { visible: false },
    yaxis: { visible: false },
    showlegend: false,
    annotations: [
      {
        text: message,
        showarrow: false,
        xref: "paper",
        yref: "paper",
        x: 0.5,
        y: 0.5,
        font: { size: 13, color: t.muted },
      },
    ],
  });
}

// Draws (or updates in place) a figure; `data-points` tells how many points it holds.
export function draw(el, data, lay) {
  const count = (tr) => (tr.x ? tr.x.length : tr.dimensions ? tr.dimensions[0].values.length : 0);
  el.dataset.points = String(data.reduce((n, tr) => n + count(tr), 0));
  return window.Plotly.react(el, data, lay, PLOT_CONFIG);
}

// Click a point that carries a trial id (customdata) to open the trial.
export function linkPoints(el) {
  if (el.dataset.linked) return;
  el.dataset.linked = "1";
  el.on("plotly_click", (ev) => {
    const id = ev.points && ev.points[0] && ev.points[0].customdata;
    if (typeof id === "number") location.assign(`/trials/${id}`);
  });
}

// A log x axis ticked at the rung levels (1, 3, 9, 27) rather than at 1, 2, 5, 10.
function stepAxis(logX, rungs) {
  const out = { title: { text: "step (resource)" }, type: logX ? "log" : "linear" };
  if (logX && rungs.length) {
    out.tickvals = rungs;
    out.ticktext = rungs.map(fmtAmount);
  }
  return out;
}

// Decades only on a log axis spanning several: no 2s and 5s between them.
export function logAxis(values) {
  const v = values.filter((x) => typeof x === "number" && x > 0);
  if (v.length < 2) return { type: "log" };
  return Math.log10(Math.max(...v) / Math.min(...v)) >= 2
    ? { type: "log", dtick: 1 }
    : { type: "log" };
}

export function logScaleFits(values) {
  const v = values.filter((x) => typeof x === "number" && Number.isFinite(x));
  if (v.length < 2 || v.some((x) => x <= 0)) return false;
  return Math.max(...v) / Math.min(...v) >= 100;
}

function valueAt(steps, values, step) {
  let found = null;
  for (let i = 0; i < steps.length; i += 1) {
    if (steps[i] <= step + 1e-9 && values[i] !== null) found = values[i];
  }
  return found;
}

// ---------------------------------------------------------------------------------------
// Learning curves and the decisions taken on them, for the study page and the trial page.

// Log steps when the rungs are a geometric ladder spanning a factor of 9 or more (1, 3, 9, 27).
export function rungsLogScale(rungs) {
  return rungs.length > 2 && rungs[0] > 0 && rungs[rungs.length - 1] / rungs[0] >= 9;
}

// A decision placed on a learning curve, at the curve's value at `step`, with its hover text
// and (when given) the trial a click opens; null where the kind isn't drawn or the curve has
// no value there yet.
export function decisionMark(kind, step, steps, values, text, trialId) {
  if (!MARKS[kind] || step === null || step === undefined) return null;
  const y = valueAt(steps, values, step);
  if (y === null) return null;
  return { kind, x: step, y, text: plotText(text), id: trialId };
}

// How the marks look: small and faint among a study's many curves, large on a trial's one.
export const MARK_LOOK = {
  study: (kind) =>
    kind === "stop" ? { size: 6, opacity: 0.6, line: 1 } : { size: 8, opacity: 0.95, line: 1 },
  trial: () => ({ size: 11, opacity: 1, line: 1.5 }),
};

// One trace per kind of decision, in the order the kinds first appear; each is a legend
// entry named by the decision (the curves are named by the trial state).
function markTraces(marks, look) {
  const byKind = new Map();
  for (const m of marks) {
    if (!byKind.has(m.kind)) byKind.set(m.kind, []);
    byKind.get(m.kind).push(m);
  }
  return [...byKind].map(([kind, group]) => {
    const spec = MARKS[kind];
    const color = cssVar(spec.color);
    const { size, opacity, line } = look(kind);
    const trace = {
      type: "scatter",
      mode: "markers",
      name: kind,
      legendgroup: `mark-${kind}`,
      x: group.map((m) => m.x),
      y: group.map((m) => m.y),
      text: group.map((m) => m.text),
      marker: { symbol: spec.symbol, size, opacity, color, line: { width: line, color } },
      hovertemplate: "%{text}<extra></extra>",
    };
    if (group.every((m) => m.id !== undefined)) trace.customdata = group.map((m) => m.id);
    return trace;
  });
}

// Learning curves with the decisions taken on them, over a step axis with a dotted line and a
// label at each rung: the study page's figure of many trials and the trial page's of one.
// `curves` are the curve traces, `marks` come from decisionMark, `look` from MARK_LOOK.
export function drawCurves(el, t, figure) {
  const { curves, marks, look, metric, rungs, logX, logY, rungAmounts } = figure;
  return draw(
    el,
    [...curves, ...markTraces(marks, look)],
    layout(t, {
      xaxis: stepAxis(logX, rungs),
      yaxis: { title: { text: plotText(metric) }, type: logY ? "log" : "linear" },
      legend: {
        orientation: "h",
        x: 0,
        y: 1.06,
        yanchor: "bottom",
        font: { size: 11.5 },
        groupclick: "toggleitem",
      },
      margin: { l: 56, r: 16, t: 22, b: 44 },
      shapes: rungs.map((r) => ({
        type: "line",
        xref: "x",
        yref: "paper",
        x0: r,
        x1: r,
        y0: 0,
        y1: 1,
        layer: "below",
        line: { color: t.axis, width: 1, dash: "dot" },
      })),
      annotations: rungs.map((r, i) => ({
        x: logX ? Math.log10(r) : r,
        xref: "x",
        y: 1,
        yref: "paper",
        yanchor: "bottom",
        xanchor: "left",
        showarrow: false,
        text: rungAmounts ? `rung ${i} · ${fmtAmount(r)}` : `rung ${i}`,
        font: { size: 10.5, color: t.muted },
      })),
    }),
  );
}
