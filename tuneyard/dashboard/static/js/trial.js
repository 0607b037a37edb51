// The trial page, at /trials/{id}: its summary, parameters, resources, learning curve with
// the decisions taken on it, attempts and the tail of its log. A trial evaluated on folds or
// seeds shows their curves with its aggregate band and the per-fold table (replicates.js); a
// member of a pbt or pb2 study its lineage (population.js).

import { API, DASH, authedLink, getJSON } from "./api.js";
import { $, fill, h } from "./dom.js";
import {
  ACTIVE_TRIAL,
  directionArrow,
  fmtAmount,
  fmtBytes,
  fmtDuration,
  fmtParam,
  fmtTime,
  fmtValue,
} from "./format.js";
import { coalesce, watchStudy } from "./live.js";
import { notesCard } from "./notes.js";
import {
  MARK_LOOK,
  decisionMark,
  draw,
  drawCurves,
  emptyLayout,
  ensurePlotly,
  plotText,
  rungsLogScale,
  theme,
} from "./plots.js";
import { lineageCard } from "./population.js";
import {
  aggregatePoints,
  foldTable,
  hasReplicates,
  parentLink,
  racedNote,
  replicateTraces,
} from "./replicates.js";
import { showBanner } from "./status.js";
import { badge, card, gpuChips, metaEl, timeCell } from "./widgets.js";

export async function trialPage(main, trialId) {
  const plotlyReady = ensurePlotly();
  const crumbs = h("div", { class: "crumbs" });
  const head = h("div", { class: "page-head", "data-testid": "trial-head" });
  const curve = h("div", {
    id: "plot-trial-curve",
    class: "plot",
    "data-testid": "plot-trial-curve",
  });
  const summary = h("dl", { class: "kv", "data-testid": "trial-summary" });
  const params = h("dl", { class: "kv", "data-testid": "trial-params" });
  const resources = h("dl", { class: "kv", "data-testid": "trial-resources" });
  const decisions = h("tbody");
  const folds = h("div", { class: "card-body flush table-wrap" });
  const foldsCard = card({
    title: "Per-fold values",
    testid: "folds",
    meta: metaEl("meta-folds"),
    body: folds,
  });
  foldsCard.hidden = true;
  const lineage = lineageCard(trialId);
  const attempts = h("tbody");
  const log = h("pre", { class: "log", "data-testid": "log-tail" });
  const logMeta = metaEl("meta-log");
  let studyCache = null;
  let watching = false;
  const notes = notesCard({ path: `${API}/trials/${trialId}/notes`, what: "trial" });

  fill(
    main,
    crumbs,
    head,
    h(
      "div",
      { class: "grid" },
      h(
        "div",
        { class: "stack span-4" },
        card({
          title: "Summary",
          testid: "summary",
          body: h("div", { class: "card-body" }, summary),
        }),
        card({
          title: "Parameters",
          testid: "params",
          body: h("div", { class: "card-body" }, params),
        }),
        card({
          title: "Resources",
          testid: "resources",
          body: h("div", { class: "card-body" }, resources),
        }),
      ),
      h(
        "div",
        { class: "stack span-8" },
        card({ title: "Learning curve", testid: "curve", meta: metaEl("meta-curve"), body: curve }),
        foldsCard,
        lineage.el,
        card({
          title: "Decisions",
          testid: "decisions",
          meta: metaEl("meta-decisions"),
          body: h(
            "div",
            { class: "card-body flush table-wrap" },
            h(
              "table",
              { class: "table", "data-testid": "trial-decisions" },
              h(
                "thead",
                {},
                h(
                  "tr",
                  {},
                  h("th", {}, "When"),
                  h("th", {}, "Decision"),
                  h("th", { class: "num" }, "Rung"),
                  h("th", { class: "num" }, "Resource"),
                  h("th", {}, "Reason"),
                ),
              ),
              decisions,
            ),
          ),
        }),
      ),
      notes.el,
      card({
        title: "Attempts",
        testid: "attempts",
        cls: "span-12",
        body: h(
          "div",
          { class: "card-body flush table-wrap" },
          h(
            "table",
            { class: "table", "data-testid": "trial-attempts" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                h("th", { class: "num" }, "#"),
                h("th", {}, "State"),
                h("th", {}, "Worker"),
                h("th", {}, "Host"),
                h("th", {}, "GPUs"),
                h("th", { class: "num" }, "Resource"),
                h("th", {}, "Started"),
                h("th", { class: "num" }, "Duration"),
                h("th", {}, "Error"),
              ),
            ),
            attempts,
          ),
        ),
      }),
      card({
        title: "Log tail",
        testid: "log",
        cls: "span-12",
        meta: logMeta,
        tools: h("div", { class: "tools" }, authedLink(`${API}/trials/${trialId}/log`, "Full log")),
        body: h("div", { class: "card-body flush" }, log),
      }),
    ),
  );

  function kv(dl, rows) {
    fill(
      dl,
      rows
        .filter(([, v]) => v !== null && v !== undefined && v !== "")
        .map(([k, v, cls]) => [h("dt", {}, k), h("dd", { class: cls || null }, v)]),
    );
  }

  async function load() {
    const t = await getJSON(`${DASH}/trials/${trialId}`);
    notes.show(t);
    if (!studyCache || studyCache.id !== t.study_id || ACTIVE_TRIAL.has(t.state)) {
      studyCache = await getJSON(`${DASH}/studies/${t.study_id}`).catch(() => null);
    }
    const st = studyCache;
    const metric = st ? st.metric : "value";
    document.title = `Trial #${t.number}${st ? ` · ${st.name}` : ""} · tuneyard`;
    fill(
      crumbs,
      h("a", { href: "/" }, "Studies"),
      h("span", { class: "sep" }, "/"),
      h("a", { href: `/studies/${t.study_id}` }, st ? st.name : `Study ${t.study_id}`),
      h("span", { class: "sep" }, "/"),
      h("span", {}, `Trial #${t.number}`),
    );
    const isBest = st && st.best && st.best.trial_id === t.id;
    fill(
      head,
      h(
        "div",
        {},
        h(
          "div",
          { class: "title" },
          h("h1", {}, `Trial #${t.number}`),
          badge(t.state),
          isBest ? h("span", { class: "badge plain s-completed" }, "★ best") : null,
          t.state === "completed" && t.checkpoint ? modelButton(t.id) : null,
        ),
        h(
          "div",
          { class: "sub" },
          h("span", {}, `id ${t.id}`),
          st ? h("span", {}, `${metric} ${directionArrow(st.direction)}`) : null,
          parentLink(t),
          racedNote(t),
          t.reason ? h("span", { "data-testid": "trial-reason" }, t.reason) : null,
        ),
      ),
      h(
        "div",
        { class: "stats" },
        h(
          "div",
          { class: "stat" },
          h("div", { class: "label" }, metric),
          h(
            "div",
            { class: "value", "data-testid": "trial-value" },
            fmtValue(t.value),
            t.value_stderr === null || t.value_stderr === undefined
              ? null
              : h("span", { class: "faint" }, ` ± ${fmtValue(t.value_stderr)}`),
          ),
        ),
        h(
          "div",
          { class: "stat" },
          h("div", { class: "label" }, "At step"),
          h("div", { class: "value" }, fmtAmount(t.resource)),
        ),
        h(
          "div",
          { class: "stat" },
          h("div", { class: "label" }, "Rung"),
          h("div", { class: "value" }, t.rung >= 0 ? t.rung : "—"),
        ),
      ),
    );
    kv(summary, [
      ["State", badge(t.state)],
      ["Bracket", t.bracket],
      ["Job", `${fmtAmount(t.resource_from)} → ${fmtAmount(t.resource_to)}`],
      ["Attempts", Array.isArray(t.attempts) ? t.attempts.length : t.attempts],
      ["Worker", t.worker],
      ["Pending", t.pending],
      ["Checkpoint", t.checkpoint, "mono"],
      ["Created", fmtTime(t.created_at)],
      ["Updated", fmtTime(t.updated_at)],
      ["Error", t.error ? h("div", { class: "error-box" }, t.error) : null],
    ]);
    kv(
      params,
      Object.entries(t.params || {}).map(([k, v]) => [k, fmtParam(v), "mono"]),
    );
    renderResources(t);
    renderDecisions(t);
    renderAttempts(t);
    renderFolds(t);
    lineage
      .load(t)
      .catch((e) => e.status !== 401 && showBanner(`Couldn't load the lineage: ${e.message}`));
    const tail = t.log_tail || "";
    log.textContent = tail || "No output captured.";
    logMeta.textContent = tail ? `last ${fmtBytes(new Blob([tail]).size)} of the output` : "";
    log.scrollTop = log.scrollHeight;
    await plotlyReady;
    drawTrialCurve(t, st, metric);
    if (!watching) {
      watching = true;
      const refresh = coalesce(
        () => load().catch((e) => e.status !== 401 && showBanner(`Couldn't refresh: ${e.message}`)),
        1000,
      );
      watchStudy(t.study_id, () => refresh(300));
    }
  }

  function renderResources(t) {
    const r = t.resources || {};
    const rows = [];
    for (const [k, v] of Object.entries(r)) {
      if (v === null || v === undefined) continue;
      const words = k.replace(/_(s|mib|bytes|mb)$/, "").replace(/_/g, " ");
      const label = words
        .replace(/\bgpu(s?)\b/gi, (_, plural) => `GPU${plural}`)
        .replace(/^./, (c) => c.toUpperCase());
      let text;
      if (k === "gpus" && Array.isArray(v)) text = gpuChips(v);
      else if (/_s$|seconds/.test(k) && typeof v === "number") text = fmtDuration(v);
      else if (/_mib$/.test(k) && typeof v === "number") text = fmtBytes(v * 1024 * 1024);
      else if (/_mb$/.test(k) && typeof v === "number") text = fmtBytes(v * 1e6);
      else if (/bytes/.test(k) && typeof v === "number") text = fmtBytes(v);
      else if (Array.isArray(v)) text = v.map(String).join(", ") || "—";
      else if (typeof v === "object") text = JSON.stringify(v);
      else text = typeof v === "number" ? fmtValue(v) : String(v);
      rows.push([label, text]);
    }
    if (!rows.length) rows.push(["", h("span", { class: "muted" }, "No resource usage reported.")]);
    kv(resources, rows);
  }

  function renderDecisions(t) {
    const list = t.decisions || [];
    $("#meta-decisions").textContent = `${list.length} decision${list.length === 1 ? "" : "s"}`;
    fill(
      decisions,
      list.length
        ? list.map((dc) =>
            h(
              "tr",
              { "data-testid": "decision-row", "data-kind": dc.kind },
              h(
                "td",
                { class: "nowrap", title: fmtTime(dc.created_at) },
                fmtTime(dc.created_at).slice(11),
              ),
              h("td", {}, badge(dc.kind, "k")),
              h("td", { class: "num" }, dc.rung ?? "—"),
              h("td", { class: "num" }, fmtAmount(dc.resource)),
              h("td", { class: "wrap", "data-testid": "decision-reason" }, dc.reason),
            ),
          )
        : h("tr", {}, h("td", { colspan: 5, class: "empty" }, "No decisions yet.")),
    );
  }

  function renderAttempts(t) {
    // The dashboard's trial lists its attempts in place of the public trial's count.
    const list = Array.isArray(t.attempts) ? t.attempts : t.attempt_log || [];
    fill(
      attempts,
      list.length
        ? list.map((a) => {
            const duration =
              a.duration_s ??
              (a.started_at
                ? ((a.ended_at ? Date.parse(a.ended_at) : Date.now()) - Date.parse(a.started_at)) /
                  1000
                : null);
            return h(
              "tr",
              { "data-testid": "attempt-row" },
              h("td", { class: "num" }, a.number),
              h("td", {}, badge(a.state)),
              h("td", { class: "mono" }, a.worker || "—"),
              h("td", {}, a.host || "—"),
              h("td", {}, gpuChips(a.gpus)),
              h(
                "td",
                { class: "num" },
                `${fmtAmount(a.resource_from)} → ${fmtAmount(a.resource_to)}`,
              ),
              h("td", {}, timeCell(a.started_at)),
              h(
                "td",
                { class: "num" },
                fmtDuration(duration),
                a.ended_at ? null : h("span", { class: "faint" }, " …"),
              ),
              h("td", {}, a.error ? h("div", { class: "error-box" }, a.error) : ""),
            );
          })
        : h("tr", {}, h("td", { colspan: 9, class: "empty" }, "Not started yet.")),
    );
  }

  function renderFolds(t) {
    foldsCard.hidden = !hasReplicates(t);
    if (foldsCard.hidden) return;
    const levels = t.levels || [];
    $("#meta-folds").textContent =
      `${t.replicates.length} of ${t.replicates_total} started · ` +
      `${levels.length} level${levels.length === 1 ? "" : "s"}`;
    fill(folds, foldTable(t));
  }

  function drawReplicateCurves(t, st, metric) {
    const th = theme();
    const points = t.replicates.reduce((n, r) => n + r.curve.length, 0);
    $("#meta-curve").textContent =
      `${t.replicates.length} ${t.replicates.length === 1 ? "replicate" : "replicates"}, ` +
      `${points} report${points === 1 ? "" : "s"}; band: ± stderr`;
    if (!points) {
      draw(curve, [], emptyLayout(th, "No reports yet"));
      return;
    }
    const { steps, values } = aggregatePoints(t);
    const rungs = (st && st.rungs) || [];
    const marks = (steps.length ? t.decisions || [] : []).map((dc) =>
      decisionMark(dc.kind, decisionStep(dc, steps, rungs), steps, values, dc.reason || dc.kind),
    );
    drawCurves(curve, th, {
      curves: replicateTraces(t, th, metric),
      marks: marks.filter(Boolean),
      look: MARK_LOOK.trial,
      metric,
      rungs,
      logX: rungsLogScale(rungs),
      logY: false,
      rungAmounts: false,
    });
  }

  function drawTrialCurve(t, st, metric) {
    if (hasReplicates(t)) {
      drawReplicateCurves(t, st, metric);
      return;
    }
    const th = theme();
    const reports = (t.reports || []).filter((r) => typeof r.value === "number");
    $("#meta-curve").textContent = `${reports.length} report${reports.length === 1 ? "" : "s"}`;
    if (!reports.length) {
      draw(curve, [], emptyLayout(th, "No reports yet"));
      return;
    }
    const steps = reports.map((r) => r.step);
    const values = reports.map((r) => r.value);
    const color = th.state[t.state] || th.brand;
    const rungs = (st && st.rungs) || [];
    const marks = (t.decisions || []).map((dc) =>
      decisionMark(dc.kind, decisionStep(dc, steps, rungs), steps, values, dc.reason || dc.kind),
    );
    drawCurves(curve, th, {
      curves: [
        {
          type: "scatter",
          mode: "lines+markers",
          name: plotText(metric),
          x: steps,
          y: values,
          line: { color, width: 2 },
          marker: { color, size: 5 },
          hovertemplate: `step %{x}<br>${plotText(metric)} %{y:.5g}<extra></extra>`,
        },
      ],
      marks: marks.filter(Boolean),
      look: MARK_LOOK.trial,
      metric,
      rungs,
      logX: rungsLogScale(rungs),
      logY: false,
      rungAmounts: false,
    });
  }

  try {
    await load();
  } catch (e) {
    if (e.status === 404) {
      fill(
        main,
        h(
          "div",
          { class: "empty" },
          h("h1", {}, "Trial not found"),
          h(
            "p",
            { class: "muted" },
            `There is no trial ${trialId}. `,
            h("a", { href: "/" }, "All studies"),
          ),
        ),
      );
    } else if (e.status !== 401) {
      showBanner(`Couldn't load: ${e.message}`);
    }
  }
}

// A completed trial's model (GET /trials/{id}/model, a tar.gz): fetched with the stored token
// (a link can't carry it; api.js's authedLink reads text, the model is binary) and handed to
// the browser as a file.
function modelButton(trialId) {
  const button = h(
    "button",
    { type: "button", class: "btn", "data-testid": "download-model" },
    "Download model",
  );
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const headers = {};
      let stored = "";
      try {
        stored = localStorage.getItem("tuneyard.token") || "";
      } catch {
        // storage disabled: no token to send
      }
      if (stored) headers.Authorization = `Bearer ${stored}`;
      const r = await fetch(`${API}/trials/${trialId}/model`, { headers, cache: "no-store" });
      if (!r.ok) {
        const problem = await r.json().catch(() => ({}));
        throw new Error(problem.detail || `${r.status} ${r.statusText}`);
      }
      const url = URL.createObjectURL(await r.blob());
      h("a", { href: url, download: `trial-${trialId}-model.tar.gz` }).click();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (e) {
      showBanner(`Model download failed: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

// Where a decision goes on the trial's curve: at its resource; an ending without one at the
// last report. A promotion is recorded with the resource it leads to; it was taken at the rung
// below.
function decisionStep(dc, steps, rungs) {
  const step = dc.resource ?? (dc.kind === "promote" ? null : steps[steps.length - 1]);
  if (step === null || dc.kind !== "promote") return step;
  const below = rungs.filter((r) => r < dc.resource);
  return below.length
    ? Math.max(...below)
    : Math.max(...steps.filter((s) => s < dc.resource), steps[0]);
}
