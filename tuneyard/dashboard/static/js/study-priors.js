// A warm-started study's priors: the earlier studies' observations its sampler was given
// before its first suggestion. They are drawn as hollow markers beside the study's own
// trials, one legend entry per source study, and summed up in one line. They are not its
// trials: they count in none of its trials, budget or results.

import { API, getJSON } from "./api.js";
import { h } from "./dom.js";
import { fmtInt } from "./format.js";
import { plotText } from "./plots.js";

// Hollow, and in a colour of their own, so no prior passes for one of the study's trials.
const SYMBOL = "circle-open";
const COLOURS = ["#8c6bb1", "#d95f02", "#1b9e77", "#e7298a", "#66a61e", "#a6761d"];

// The study's priors; once its sampler has read them they no longer change, so they are
// fetched again only until then. Null for a study that was not warm-started.
export function priorsSource(studyId) {
  let kept = null;
  return async (d) => {
    if (kept) return kept;
    if (!d.warm_start) return null;
    const p = await getJSON(`${API}/studies/${studyId}/priors?limit=2000`);
    if (p.read) kept = p;
    return p;
  };
}

// "warm-started from studies 3, 7 (42 observations, not counted in the budget)", the
// studies linked.
export function priorsLine(el, p) {
  el.replaceChildren();
  el.hidden = !p;
  if (!p) return;
  const ids = p.sources.map((s) => s.study_id);
  const links = ids.flatMap((id, i) => [
    i ? ", " : "",
    h("a", { href: `/studies/${id}`, "data-testid": "prior-source" }, String(id)),
  ]);
  el.append(
    `warm-started from ${ids.length > 1 ? "studies" : "study"} `,
    ...links,
    ` (${fmtInt(p.total)} observation${p.total === 1 ? "" : "s"}, not counted in the budget)`,
    p.read ? "" : " · read at the first suggestion",
  );
}

// The last (most trained) observation of each prior trial, by source study.
function bySource(p) {
  const out = new Map();
  for (const s of p.sources) out.set(s.study_id, new Map());
  for (const o of p.priors) {
    const mine = out.get(o.study_id);
    const seen = mine.get(o.number);
    if (!seen || o.resource >= seen.resource) mine.set(o.number, o);
  }
  return [...out].map(([id, m], i) => ({
    id,
    colour: COLOURS[i % COLOURS.length],
    points: [...m.values()].sort((a, b) => a.number - b.number),
  }));
}

function hover(id, metric) {
  return `prior from study ${id}, trial #%{text}<br>${plotText(metric)} %{y:.5g}<extra>prior</extra>`;
}

// On the optimization history: each prior at its (negative) number, left of trial 0.
export function priorHistoryTraces(p, metric) {
  if (!p) return [];
  return bySource(p)
    .filter((s) => s.points.length)
    .map((s) => ({
      type: "scatter",
      mode: "markers",
      name: `prior, study ${s.id}`,
      legendgroup: `prior-${s.id}`,
      x: s.points.map((o) => o.number),
      y: s.points.map((o) => o.value),
      text: s.points.map((o) => String(o.trial_number)),
      marker: { symbol: SYMBOL, color: s.colour, size: 7, line: { width: 1.5 } },
      hovertemplate: hover(s.id, metric),
    }));
}

// On one parameter's slice: the priors that set it, at its value.
export function priorSliceTraces(p, name, metric, categorical) {
  if (!p) return [];
  return bySource(p)
    .map((s) => ({ ...s, points: s.points.filter((o) => o.params[name] !== undefined) }))
    .filter((s) => s.points.length)
    .map((s) => ({
      type: "scatter",
      mode: "markers",
      name: `prior, study ${s.id}`,
      x: s.points.map((o) => (categorical ? plotText(o.params[name]) : o.params[name])),
      y: s.points.map((o) => o.value),
      text: s.points.map((o) => String(o.trial_number)),
      marker: { symbol: SYMBOL, color: s.colour, size: 7, line: { width: 1.5 } },
      hovertemplate: hover(s.id, metric),
    }));
}
