// A trial evaluated on folds or seeds, on its page: each replicate's learning curve drawn thin
// with the trial's aggregate and its band (± its standard error at each level), the per-fold
// table (a row per level, a column per replicate), and why racing stopped it.

import { h } from "./dom.js";
import { fmtAmount, fmtValue } from "./format.js";
import { plotText } from "./plots.js";
import { badge } from "./widgets.js";

export function hasReplicates(t) {
  return Array.isArray(t.replicates) && t.replicates.length > 0;
}

// The traces of the trial's curve: a thin line per replicate, then the band and the aggregate
// over the levels every replicate reached so far (a level some replicates have not reached
// yet is drawn as a hollow point: its aggregate may still move).
export function replicateTraces(t, th, metric) {
  const color = th.state[t.state] || th.brand;
  const name = plotText(metric);
  const traces = t.replicates.map((r) => {
    const points = r.curve.filter((p) => typeof p.value === "number");
    return {
      type: "scatter",
      mode: "lines",
      name: plotText(r.label),
      legendgroup: "replicates",
      x: points.map((p) => p.step),
      y: points.map((p) => p.value),
      line: { color: th.muted, width: 1 },
      opacity: 0.55,
      hovertemplate: `${plotText(r.label)}<br>step %{x}<br>${name} %{y:.5g}<extra></extra>`,
    };
  });
  const levels = t.levels || [];
  if (!levels.length) return traces;
  const x = levels.map((l) => l.resource);
  traces.push(
    {
      type: "scatter",
      mode: "lines",
      name: "band low",
      x,
      y: levels.map((l) => l.value - l.stderr),
      line: { width: 0, color },
      showlegend: false,
      hoverinfo: "skip",
    },
    {
      type: "scatter",
      mode: "lines",
      name: "± stderr",
      x,
      y: levels.map((l) => l.value + l.stderr),
      line: { width: 0, color },
      fill: "tonexty",
      fillcolor: translucent(color),
      hoverinfo: "skip",
    },
    {
      type: "scatter",
      mode: "lines+markers",
      name: "aggregate",
      x,
      y: levels.map((l) => l.value),
      customdata: levels.map((l) => [l.stderr, l.n]),
      line: { color, width: 2.5 },
      marker: {
        color,
        size: 7,
        symbol: levels.map((l) => (l.complete ? "circle" : "circle-open")),
      },
      hovertemplate:
        `step %{x}<br>${name} %{y:.5g} ± %{customdata[0]:.3g}` +
        `<br>%{customdata[1]} of ${t.replicates_total || t.replicates.length}<extra></extra>`,
    },
  );
  return traces;
}

// Where the trial's decisions go on its curve: the aggregate at each level.
export function aggregatePoints(t) {
  const levels = t.levels || [];
  return { steps: levels.map((l) => l.resource), values: levels.map((l) => l.value) };
}

function translucent(color) {
  const m = /^#([0-9a-f]{6})$/i.exec(color || "");
  if (!m) return "rgba(127, 127, 127, 0.2)";
  const n = parseInt(m[1], 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, 0.2)`;
}

// The per-fold table: a column per replicate (its header links to its own page), a row per
// level with each replicate's value there and the aggregate ± its standard error, and a last
// row with each replicate's state.
export function foldTable(t) {
  const total = t.replicates_total || t.replicates.length;
  const byIndex = new Map(t.replicates.map((r) => [r.index, r]));
  const columns = Array.from({ length: total }, (_, i) => byIndex.get(i) || null);
  const head = h(
    "tr",
    {},
    h("th", { class: "num" }, "Resource"),
    columns.map((r, i) =>
      h(
        "th",
        { class: "num", "data-testid": "fold-head" },
        r ? h("a", { href: `/trials/${r.id}` }, r.label) : `#${i + 1}`,
      ),
    ),
    h("th", { class: "num" }, "Aggregate ± stderr"),
    h("th", { class: "num" }, "n"),
  );
  const rows = (t.levels || []).map((l) =>
    h(
      "tr",
      { "data-testid": "fold-row", "data-complete": String(l.complete) },
      h("td", { class: "num" }, fmtAmount(l.resource)),
      columns.map((_, i) => h("td", { class: "num mono" }, fmtValue(l.values[i]))),
      h(
        "td",
        { class: "num mono", "data-testid": "fold-aggregate" },
        `${fmtValue(l.value)} ± ${fmtValue(l.stderr)}`,
      ),
      h("td", { class: "num" }, `${l.n}/${total}`),
    ),
  );
  const states = h(
    "tr",
    { "data-testid": "fold-states" },
    h("td", { class: "muted" }, "State"),
    columns.map((r) => h("td", { class: "num" }, r ? badge(r.state) : "—")),
    h("td", {}),
    h("td", {}),
  );
  return h(
    "table",
    { class: "table", "data-testid": "fold-table" },
    h("thead", {}, head),
    h(
      "tbody",
      {},
      rows.length
        ? rows
        : h("tr", {}, h("td", { colspan: total + 3, class: "empty" }, "No level reached yet.")),
      states,
    ),
  );
}

// "raced out after 2/5": racing stopped the trial, shown worse than the incumbent on the
// replicates both ran (its reason says how).
export function racedNote(t) {
  if (!t.raced) return null;
  return h(
    "span",
    { class: "badge plain s-stopped", "data-testid": "raced-note", title: t.reason || "" },
    `raced out after ${t.replicates_run}/${t.replicates_total}`,
  );
}

// On a replicate's own page: which trial it evaluates, linked.
export function parentLink(t) {
  if (t.parent_id === null || t.parent_id === undefined) return null;
  const what = [
    t.fold !== null && t.fold !== undefined ? `fold ${t.fold + 1}` : null,
    t.seed !== null && t.seed !== undefined ? `seed ${t.seed + 1}` : null,
  ].filter(Boolean);
  return h(
    "span",
    { "data-testid": "replicate-of" },
    `${what.join(", ") || `replicate ${t.replicate + 1}`} of `,
    h("a", { href: `/trials/${t.parent_id}` }, `trial #${t.number}`),
  );
}
