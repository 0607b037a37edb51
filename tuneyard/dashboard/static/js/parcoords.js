// Parallel coordinates of a study's trials: an axis per parameter and one for the value.
//
// A parameter that is inactive in a trial (a conditional one whose condition does not hold)
// has no value there; plotly drops a line with a NaN anywhere, which would leave a
// conditional space's plot empty. Such a trial goes to a position of its own below the axis'
// range instead, ticked "inactive", so every trial's line is drawn.

import { $ } from "./dom.js";
import { fmtInt, fmtValue } from "./format.js";
import { draw, emptyLayout, layout, plotText } from "./plots.js";

export const INACTIVE = "inactive";
// How far below an axis' range the inactive position sits, as a share of the range.
const BELOW = 0.15;

// Round ticks for a linear axis from lo to hi.
function niceTicks(lo, hi, count = 5) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

// The axis of one parameter over the trials' values (undefined or null: inactive).
export function dimension(spec, values) {
  const label = plotText(spec.name);
  const missing = values.some((v) => v === undefined || v === null);
  if (spec.type === "categorical" || spec.choices) {
    const choices = (spec.choices || []).map((c) => String(c));
    const index = new Map(choices.map((c, i) => [c, i]));
    const off = -1;
    return {
      label,
      values: values.map((v) => (index.has(String(v)) ? index.get(String(v)) : off)),
      // Parcoords draws its tick labels as plain text (its axis titles as markup).
      tickvals: missing ? [off, ...choices.map((_, i) => i)] : choices.map((_, i) => i),
      ticktext: missing ? [INACTIVE, ...choices] : choices,
      range: [missing ? off : 0, Math.max(choices.length - 1, 1)],
    };
  }
  let lo;
  let hi;
  let place;
  let ticks;
  let text;
  let title = label;
  if (spec.log && spec.low > 0 && spec.high > 0) {
    lo = Math.log10(spec.low);
    hi = Math.log10(spec.high);
    place = (v) => (typeof v === "number" && v > 0 ? Math.log10(v) : null);
    ticks = [];
    for (let e = Math.ceil(lo); e <= Math.floor(hi); e += 1) ticks.push(e);
    text = ticks.map((e) => fmtValue(10 ** e));
    title = `${label} (log)`;
  } else {
    const nums = values.filter((v) => typeof v === "number" && Number.isFinite(v));
    lo = typeof spec.low === "number" ? spec.low : Math.min(...nums);
    hi = typeof spec.high === "number" ? spec.high : Math.max(...nums);
    if (!Number.isFinite(lo) || !Number.isFinite(hi)) [lo, hi] = [0, 1];
    place = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
    ticks = niceTicks(lo, hi);
    text = ticks.map(fmtValue);
  }
  const off = lo - BELOW * Math.max(hi - lo, 1e-9);
  const placed = values.map(place);
  const inactive = placed.some((v) => v === null);
  return {
    label: title,
    values: placed.map((v) => (v === null ? off : v)),
    range: [inactive ? off : lo, hi],
    tickvals: inactive ? [off, ...ticks] : ticks,
    ticktext: inactive ? [INACTIVE, ...text] : text,
  };
}

export function drawParcoords(el, t, d, data) {
  const space = data.space || d.space || [];
  const trials = (data.trials || []).filter((tr) => typeof tr.value === "number");
  const conditional = space.some((p) => p.when);
  $("#meta-parcoords").textContent =
    (data.total && data.shown < data.total
      ? `${fmtInt(trials.length)} of ${fmtInt(data.total)} trials · the best in the strongest colour`
      : `${fmtInt(trials.length)} trials with a value · the best in the strongest colour`) +
    (conditional ? ` · "${INACTIVE}": below an axis, where the parameter did not apply` : "");
  if (!trials.length || !space.length) {
    draw(el, [], emptyLayout(t, "No trials with a value yet"));
    return;
  }
  const values = trials.map((tr) => tr.value);
  const dims = space.map((spec) =>
    dimension(
      spec,
      trials.map((tr) => (tr.params || {})[spec.name]),
    ),
  );
  dims.push({ label: plotText(d.metric), values });
  const minimize = d.direction !== "maximize";
  draw(
    el,
    [
      {
        type: "parcoords",
        dimensions: dims,
        line: {
          color: values,
          colorscale: t.scale,
          reversescale: minimize,
          showscale: true,
          colorbar: {
            thickness: 10,
            len: 0.9,
            outlinewidth: 0,
            tickfont: { size: 10.5 },
            title: { text: plotText(d.metric), side: "right", font: { size: 11 } },
          },
        },
        labelfont: { size: 12, color: t.text },
        tickfont: { size: 10.5, color: t.muted },
        rangefont: { size: 9, color: t.muted },
      },
    ],
    { ...layout(t, { showlegend: false }), margin: { l: 60, r: 70, t: 40, b: 20 } },
  );
}
