// The Pareto view of a study with several objectives or constraints: the completed trials
// against the front (two objectives: a scatter with the front as a staircase, dominated trials
// faded, infeasible ones as crosses; three or more: parallel coordinates of the objectives
// with the front in the strongest colour) and the front's hypervolume as trials completed.

import { API, DASH, getJSON } from "./api.js";
import { $, cssVar, fill, h } from "./dom.js";
import { fmtInt, fmtValue } from "./format.js";
import { draw, emptyLayout, ensurePlotly, layout, linkPoints, plotText, theme } from "./plots.js";
import { card, metaEl } from "./widgets.js";

const ARROW = { minimize: "↓", maximize: "↑" };

// The cards (hidden until the study turns out to have a front) and `load(detail)`.
export function paretoPanel(studyId) {
  const plot = (name) =>
    h("div", { id: `plot-${name}`, class: "plot", "data-testid": `plot-${name}` });
  const front = plot("pareto");
  const hv = plot("hypervolume");
  const cards = [
    card({
      title: "Pareto front",
      testid: "pareto",
      meta: metaEl("meta-pareto"),
      body: front,
      cls: "span-8",
    }),
    card({
      title: "Hypervolume",
      testid: "hypervolume",
      meta: metaEl("meta-hypervolume"),
      body: hv,
      cls: "span-4",
    }),
  ];
  for (const c of cards) c.hidden = true;
  let summary = null;

  async function load(d) {
    if (!d.pareto) return;
    for (const c of cards) c.hidden = false;
    const [points, history] = await Promise.all([
      getJSON(`${DASH}/studies/${studyId}/pareto?points=2000`),
      getJSON(`${API}/studies/${studyId}/pareto/history`),
      ensurePlotly(),
    ]).catch((e) => {
      // As the other plots do: the card's head says what failed.
      $("#meta-pareto").textContent = e.status === 401 ? "" : `couldn't load: ${e.message}`;
      throw e;
    });
    summary = points;
    const stat = $("[data-testid=stat-front]");
    if (stat) fill(stat, frontStat(summary));
    const t = theme();
    drawFront(front, t, points);
    drawHypervolume(hv, t, history);
  }

  return { cards, load, summary: () => summary };
}

// What the study page's head shows of the front instead of a best value: its size and
// hypervolume (a dash until the front is loaded).
export function frontStat(s) {
  if (!s) return "—";
  const hv = s.hypervolume === null ? null : h("small", {}, ` hv ${fmtValue(s.hypervolume)}`);
  return [fmtInt(s.size), hv];
}

function axisTitle(o) {
  return `${plotText(o.metric)} ${ARROW[o.direction] || ""}`;
}

function referenceText(data) {
  if (!data.reference_point) return "";
  const ref = data.reference_point.map(fmtValue).join(", ");
  return ` · reference (${ref})${data.reference_derived ? ", derived from the trials" : ""}`;
}

// The trials in three groups, each a trace (and a legend entry) of its own.
function groups(points) {
  return {
    front: points.filter((p) => p.front),
    dominated: points.filter((p) => !p.front && p.feasible !== false),
    infeasible: points.filter((p) => p.feasible === false),
  };
}

function drawFront(el, t, data) {
  const objectives = data.objectives || [];
  const points = data.points || [];
  $("#meta-pareto").textContent =
    `${fmtInt(data.size)} on the front of ${fmtInt(data.total)} completed trials` +
    (data.hypervolume === null ? "" : ` · hypervolume ${fmtValue(data.hypervolume)}`) +
    referenceText(data) +
    " · click a point to open its trial";
  el.dataset.front = String(data.size);
  if (!points.length) {
    draw(el, [], emptyLayout(t, "No completed trials yet"));
    return;
  }
  if (objectives.length === 2) drawScatter(el, t, objectives, groups(points));
  else drawObjectiveCoords(el, t, objectives, points);
  linkPoints(el);
}

// Two objectives, the first across and the second up. The front is drawn as a staircase
// from its best point in the first objective on: each step bounds what the points before it
// dominate, whichever way each objective is better.
function drawScatter(el, t, objectives, g) {
  const names = objectives.map((o) => plotText(o.metric));
  const hover = `${names[0]} %{x:.5g}<br>${names[1]} %{y:.5g}`;
  const trace = (name, pts, look) => ({
    type: "scatter",
    mode: "markers",
    name,
    x: pts.map((p) => p.values[0]),
    y: pts.map((p) => p.values[1]),
    customdata: pts.map((p) => p.trial_id),
    text: pts.map((p) =>
      p.infeasible ? `#${p.number}: ${plotText(p.infeasible)}` : `#${p.number}`,
    ),
    hovertemplate: `trial %{text}<br>${hover}<extra>${name}</extra>`,
    ...look,
  });
  const sign = objectives[0].direction === "maximize" ? -1 : 1;
  const front = [...g.front].sort((a, b) => sign * (a.values[0] - b.values[0]));
  draw(
    el,
    [
      trace("dominated", g.dominated, { marker: { color: t.muted, size: 6, opacity: 0.35 } }),
      trace("infeasible", g.infeasible, {
        marker: { color: cssVar("--failed"), size: 8, opacity: 0.75, symbol: "x" },
      }),
      trace("Pareto front", front, {
        mode: "lines+markers",
        line: { shape: "hv", color: t.brand, width: 1.6 },
        marker: { color: t.brand, size: 9, line: { width: 1, color: t.surface } },
      }),
    ],
    layout(t, {
      xaxis: { title: { text: axisTitle(objectives[0]) } },
      yaxis: { title: { text: axisTitle(objectives[1]) } },
    }),
  );
}

// Three or more objectives: an axis per objective; a line per trial, the front strongest,
// dominated ones faint, infeasible ones in the colour of failures.
function drawObjectiveCoords(el, t, objectives, points) {
  const level = (p) => (p.feasible === false ? 0 : p.front ? 1 : 0.5);
  draw(
    el,
    [
      {
        type: "parcoords",
        name: "objectives",
        dimensions: objectives.map((o, i) => ({
          label: axisTitle(o),
          values: points.map((p) => p.values[i]),
        })),
        customdata: points.map((p) => p.trial_id),
        line: {
          color: points.map(level),
          cmin: 0,
          cmax: 1,
          colorscale: [
            [0, cssVar("--failed")],
            [0.5, cssVar("--scale-0")],
            [1, t.brand],
          ],
        },
        labelfont: { size: 12, color: t.text },
        tickfont: { size: 10.5, color: t.muted },
        rangefont: { size: 9, color: t.muted },
      },
    ],
    { ...layout(t, { showlegend: false }), margin: { l: 60, r: 40, t: 40, b: 20 } },
  );
}

// The hypervolume after each completion that changed it, as a step line.
function drawHypervolume(el, t, data) {
  const pts = data.points || [];
  $("#meta-hypervolume").textContent =
    `${fmtInt(data.completed)} completed trials` + referenceText(data);
  if (!pts.length) {
    draw(el, [], emptyLayout(t, "No feasible completed trial yet"));
    return;
  }
  const x = pts.map((p) => p.completed);
  const y = pts.map((p) => p.hypervolume);
  if (x[x.length - 1] < data.completed) {
    x.push(data.completed);
    y.push(y[y.length - 1]);
  }
  draw(
    el,
    [
      {
        type: "scatter",
        mode: "lines+markers",
        name: "hypervolume",
        x,
        y,
        customdata: pts.map((p) => p.trial_id),
        text: pts.map((p) => `${p.number}`),
        line: { shape: "hv", color: t.brand, width: 2 },
        marker: { color: t.brand, size: 5 },
        hovertemplate: "after trial #%{text}: %{y:.5g}<extra></extra>",
      },
    ],
    layout(t, {
      showlegend: false,
      xaxis: { title: { text: "completed trials" }, rangemode: "tozero" },
      yaxis: { title: { text: "hypervolume" }, rangemode: "tozero" },
    }),
  );
  linkPoints(el);
}
