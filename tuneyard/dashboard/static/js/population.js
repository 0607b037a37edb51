// A pbt or pb2 study's population. On the study page: every member's learning curve with each
// exploit drawn as a jump (the member's value where it cloned, a dashed line to its donor's
// value there), and the best member's schedule, each parameter a step line over the resource,
// with the schedule to download. On a member's page: its lineage, a row per interval boundary.
// The study page's summary has no scheduler in it: the public study (whose spec never
// changes) says once whether a study trains a population.

import { API, DASH, getJSON } from "./api.js";
import { $, fill, h } from "./dom.js";
import { fmtAmount, fmtInt, fmtParam, fmtValue } from "./format.js";
import {
  draw,
  emptyLayout,
  ensurePlotly,
  layout,
  linkPoints,
  logScaleFits,
  plotText,
  theme,
} from "./plots.js";
import { showBanner } from "./status.js";
import { badge, card, metaEl } from "./widgets.js";

const POPULATION_SCHEDULERS = new Set(["pbt", "pb2"]);
const trainsPopulation = new Map();

// Whether study `studyId` is a pbt or pb2 study, asked once per page per study.
export function isPopulationStudy(studyId) {
  if (!trainsPopulation.has(studyId)) {
    const asked = getJSON(`${API}/studies/${studyId}`).then((s) =>
      POPULATION_SCHEDULERS.has(s.spec?.scheduler?.type),
    );
    // A failed look-up is asked again on the next refresh.
    asked.catch(() => trainsPopulation.delete(studyId));
    trainsPopulation.set(studyId, asked);
  }
  return trainsPopulation.get(studyId);
}

// The study page's population cards (hidden until the study turns out to train one) and
// `load(detail)` that (re)draws them.
export function populationPanel(studyId) {
  const plotlyReady = ensurePlotly();
  const curves = h("div", {
    id: "plot-population",
    class: "plot tall",
    "data-testid": "plot-population",
  });
  const schedule = h("div", {
    id: "plot-schedule",
    class: "plot",
    "data-testid": "plot-schedule",
  });
  const download = h(
    "button",
    { type: "button", class: "btn btn-quiet", "data-testid": "download-schedule" },
    "Download schedule",
  );
  download.addEventListener("click", () => saveSchedule(studyId, download));
  const cards = [
    card({
      title: "Population",
      testid: "population",
      meta: metaEl("meta-population"),
      body: curves,
      cls: "span-12",
    }),
    card({
      title: "Best member's schedule",
      testid: "schedule",
      meta: metaEl("meta-schedule"),
      tools: h("div", { class: "tools" }, download),
      body: schedule,
      cls: "span-12",
    }),
  ];
  for (const c of cards) c.hidden = true;

  async function load(d) {
    if (!(await isPopulationStudy(studyId))) return;
    for (const c of cards) c.hidden = false;
    const [pop, data] = await Promise.all([
      getJSON(`${API}/studies/${studyId}/population`),
      // Every member's curve: a population is its trials, all of them.
      getJSON(`${DASH}/studies/${studyId}/curves?trials=${Math.min(1000, d.max_trials || 1000)}`),
      plotlyReady,
    ]);
    const t = theme();
    drawPopulation(curves, t, d, pop, data.trials || []);
    drawSchedule(schedule, t, d, pop);
    download.disabled = !pop.best;
  }

  return { cards, load };
}

// The members' curves, the best drawn strongest, and the exploits as jumps onto the donors'.
function drawPopulation(el, t, d, pop, members) {
  const exploits = pop.exploits || [];
  $("#meta-population").textContent =
    `${fmtInt(members.length)} of ${fmtInt(pop.members)} members · ` +
    `${fmtInt(exploits.length)} exploit${exploits.length === 1 ? "" : "s"} · ` +
    `interval ${fmtAmount(pop.interval)} of ${fmtAmount(pop.max_resource)} · ` +
    "click a curve to open its member";
  if (!members.length) {
    draw(el, [], emptyLayout(t, "No reports yet"));
    return;
  }
  const metric = plotText(d.metric);
  const bestId = pop.best ? pop.best.trial_id : null;
  const sorted = [...members].sort(
    (a, b) => (a.id === bestId) - (b.id === bestId) || a.number - b.number,
  );
  const traces = sorted.map((m) => {
    const best = m.id === bestId;
    const color = best ? t.brand : t.state[m.state] || t.muted;
    return {
      type: "scatter",
      mode: m.steps.length > 1 ? "lines" : "markers",
      name: `trial #${m.number}${best ? " (best)" : ""}`,
      meta: { role: "member", trial: m.id },
      showlegend: best,
      x: m.steps,
      y: m.values,
      opacity: best ? 1 : 0.7,
      line: { color, width: best ? 2.6 : 1.4 },
      marker: { color, size: 5 },
      customdata: m.steps.map(() => m.id),
      hovertemplate: `trial #${m.number}<br>step %{x}<br>${metric} %{y:.5g}<extra>${m.state}</extra>`,
    };
  });
  if (exploits.length) {
    const jumpX = [];
    const jumpY = [];
    for (const e of exploits) {
      if (typeof e.value !== "number" || typeof e.donor_value !== "number") continue;
      jumpX.push(e.resource, e.resource, null);
      jumpY.push(e.value, e.donor_value, null);
    }
    const look = t.state.paused || t.text;
    traces.push(
      {
        type: "scatter",
        mode: "lines",
        name: "jump to the donor",
        meta: { role: "jumps" },
        legendgroup: "exploit",
        x: jumpX,
        y: jumpY,
        line: { color: look, width: 1.4, dash: "dash" },
        hoverinfo: "skip",
      },
      {
        type: "scatter",
        mode: "markers",
        name: "exploit",
        meta: { role: "exploits" },
        legendgroup: "exploit",
        x: exploits.map((e) => e.resource),
        y: exploits.map((e) => e.value),
        // Numbers only besides the metric's name, which is escaped.
        text: exploits.map(
          (e) =>
            `trial #${e.number} cloned #${e.donor_number} at ${fmtAmount(e.resource)}` +
            `<br>${metric} ${fmtValue(e.value)} → donor's ${fmtValue(e.donor_value)}`,
        ),
        customdata: exploits.map((e) => e.trial_id),
        marker: {
          symbol: "triangle-right",
          size: 10,
          color: look,
          line: { width: 1, color: look },
        },
        hovertemplate: "%{text}<extra></extra>",
      },
    );
  }
  draw(
    el,
    traces,
    layout(t, {
      xaxis: { title: { text: "step (resource)" }, range: [0, pop.max_resource] },
      yaxis: {
        title: { text: metric },
        type: logScaleFits(members.flatMap((m) => m.values)) ? "log" : "linear",
      },
      legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom", font: { size: 11 } },
      margin: { l: 56, r: 16, t: 22, b: 44 },
      shapes: boundaries(pop, t),
    }),
  );
  linkPoints(el);
}

// A faint dotted line at each interval boundary, where members pause and exploit.
function boundaries(pop, t) {
  const out = [];
  if (!(pop.interval > 0)) return out;
  for (let r = pop.interval; r < pop.max_resource - 1e-9; r += pop.interval) {
    out.push({
      type: "line",
      xref: "x",
      yref: "paper",
      x0: r,
      x1: r,
      y0: 0,
      y1: 1,
      layer: "below",
      line: { color: t.grid, width: 1, dash: "dot" },
    });
  }
  return out;
}

// The best member's schedule: a row per parameter, sharing the resource axis; a numeric
// parameter is its value as a step line, a categorical one the index of its choice with the
// choices as tick labels.
function drawSchedule(el, t, d, pop) {
  const lin = pop.best;
  const meta = $("#meta-schedule");
  if (!lin || !lin.schedule.length) {
    meta.textContent = "";
    el.style.height = "";
    draw(el, [], emptyLayout(t, "No member has reported yet"));
    return;
  }
  const clones = lin.steps.filter((s) => s.decision === "exploit").length;
  meta.textContent =
    `trial #${lin.number} · ${fmtInt(lin.schedule.length)} ` +
    `setting${lin.schedule.length === 1 ? "" : "s"} · ${fmtInt(clones)} ` +
    `clone${clones === 1 ? "" : "s"} · replays its training from scratch`;
  const space = new Map((d.space || []).map((p) => [p.name, p]));
  const names = [...space.keys()];
  for (const step of lin.schedule)
    for (const name of Object.keys(step.params)) if (!names.includes(name)) names.push(name);
  // The last setting holds to where the member stopped (or the end of training).
  const end = Math.max(lin.resource ?? 0, pop.max_resource ?? 0);
  const x = [...lin.schedule.map((s) => s.resource), end];
  const traces = [];
  const axes = {};
  names.forEach((name, i) => {
    const raw = lin.schedule.map((s) => s.params[name]);
    const values = [...raw, raw[raw.length - 1]];
    const spec = space.get(name);
    const numeric =
      spec && spec.type !== "categorical"
        ? true
        : !spec && values.every((v) => v === undefined || v === null || typeof v === "number");
    const axis = i === 0 ? "y" : `y${i + 1}`;
    const key = i === 0 ? "yaxis" : `yaxis${i + 1}`;
    const label = plotText(name);
    let y;
    let yaxis;
    if (numeric) {
      y = values.map((v) => (typeof v === "number" ? v : null));
      yaxis = { type: spec && spec.log ? "log" : "linear" };
    } else {
      const choices = spec && spec.choices ? spec.choices.map(fmtParam) : [];
      for (const v of values) {
        const text = fmtParam(v);
        if (v !== undefined && v !== null && !choices.includes(text)) choices.push(text);
      }
      y = values.map((v) => (v === undefined || v === null ? null : choices.indexOf(fmtParam(v))));
      yaxis = {
        tickvals: choices.map((_, k) => k),
        ticktext: choices.map(plotText),
        range: [-0.5, Math.max(choices.length - 0.5, 0.5)],
      };
    }
    traces.push({
      type: "scatter",
      mode: "lines+markers",
      name: label,
      meta: { role: "param", kind: numeric ? "numeric" : "categorical", param: name },
      xaxis: "x",
      yaxis: axis,
      x,
      y,
      text: values.map((v) => plotText(fmtParam(v))),
      line: { shape: "hv", width: 2, color: numeric ? t.brand : t.muted },
      marker: { size: 5, color: numeric ? t.brand : t.muted },
      hovertemplate: `${label} %{text}<br>from step %{x}<extra></extra>`,
    });
    axes[key] = {
      ...yaxis,
      title: { text: label, font: { size: 11.5, color: t.muted } },
      gridcolor: t.grid,
      zerolinecolor: t.grid,
      linecolor: t.axis,
      tickcolor: t.axis,
      automargin: true,
    };
  });
  el.style.height = `${Math.max(220, 40 + 110 * names.length)}px`;
  const lay = layout(t, {
    showlegend: false,
    grid: { rows: names.length, columns: 1, pattern: "coupled", roworder: "top to bottom" },
    xaxis: { title: { text: "step (resource)" }, range: [0, end] },
    margin: { l: 72, r: 16, t: 10, b: 44 },
  });
  Object.assign(lay, axes);
  draw(el, traces, lay);
}

// The best member's schedule, [{resource, params}] as `tuneyard study schedule -o` writes it,
// saved as a file. Asked at the click, so it is the schedule as it stands then.
async function saveSchedule(studyId, button) {
  button.disabled = true;
  try {
    const lin = await getJSON(`${API}/studies/${studyId}/schedule`);
    const text = `${JSON.stringify(lin.schedule, null, 2)}\n`;
    const url = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    h("a", { href: url, download: `study-${studyId}-schedule.json` }).click();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (e) {
    showBanner(`Schedule download failed: ${e.message}`);
  } finally {
    button.disabled = false;
  }
}

// A member's lineage on its page: hidden unless its study trains a population; `load(trial)`
// (re)fills it.
export function lineageCard(trialId) {
  const rows = h("tbody");
  const el = card({
    title: "Lineage",
    testid: "lineage",
    meta: metaEl("meta-lineage"),
    body: h(
      "div",
      { class: "card-body flush table-wrap" },
      h(
        "table",
        { class: "table", "data-testid": "lineage-table" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { class: "num" }, "Resource"),
            h("th", { class: "num" }, "Value"),
            h("th", {}, "Step"),
            h("th", {}, "Params from here"),
            h("th", {}, "Reason"),
          ),
        ),
        rows,
      ),
    ),
  });
  el.hidden = true;

  async function load(t) {
    if (!(await isPopulationStudy(t.study_id))) return;
    const lin = await getJSON(`${API}/trials/${trialId}/lineage`);
    el.hidden = false;
    const clones = lin.steps.filter((s) => s.decision === "exploit").length;
    $("#meta-lineage").textContent =
      `${fmtInt(lin.steps.length)} boundar${lin.steps.length === 1 ? "y" : "ies"} · ` +
      `${fmtInt(clones)} exploit${clones === 1 ? "" : "s"}`;
    fill(
      rows,
      lin.steps.length
        ? lin.steps.map(lineageRow)
        : h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No interval boundary reached yet.")),
    );
  }

  return { el, load };
}

function lineageRow(s) {
  const exploit = s.decision === "exploit";
  return h(
    "tr",
    { "data-testid": "lineage-row", "data-decision": s.decision },
    h("td", { class: "num" }, fmtAmount(s.resource)),
    h("td", { class: "num mono" }, fmtValue(s.value)),
    h(
      "td",
      { class: "nowrap", "data-testid": "lineage-step" },
      exploit
        ? [
            badge("exploit", "k"),
            " ← ",
            h(
              "a",
              { href: `/trials/${s.donor_trial_id}`, "data-testid": "lineage-donor" },
              `#${s.donor_number}`,
            ),
            ` (${fmtValue(s.donor_value)})`,
          ]
        : badge("keep", "k"),
    ),
    h(
      "td",
      { class: "mono wrap", "data-testid": "lineage-params" },
      Object.entries(s.new_params)
        .map(([k, v]) => `${k}=${fmtParam(v)}`)
        .join(", "),
    ),
    h("td", { class: "wrap", "data-testid": "lineage-reason" }, s.reason),
  );
}
