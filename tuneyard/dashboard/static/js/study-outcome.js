// What became of a study, on the studies list and the study page: the error a failing study
// stopped on (in red), why a study ended with no completed trial, and the best value seen at
// each rung.

import { h } from "./dom.js";
import { fmtAmount, fmtValue } from "./format.js";
import { stopPropagation } from "./widgets.js";

// States a study shows its reason for: failing, or ended without a completed trial.
const TOLD = new Set(["failing", "failed", "exhausted"]);

function trialLink(id, text) {
  return h("a", { href: `/trials/${id}`, onclick: stopPropagation }, text);
}

// The studies list: one red line under the state badge.
export function studyErrorLine(s) {
  if (!s.error) return null;
  return h(
    "div",
    { class: "study-error", "data-testid": "study-error", title: s.reason || "" },
    s.error.summary,
  );
}

// The study page: a red panel with the reason and the error, then the best per rung.
export function outcomePanel(d) {
  const e = d.error;
  const told =
    TOLD.has(d.state) && (d.reason || e)
      ? h(
          "div",
          { class: "study-outcome", "data-testid": "study-outcome" },
          d.reason ? h("div", {}, d.reason) : null,
          e
            ? h(
                "div",
                { class: "error-box", "data-testid": "study-error" },
                e.summary,
                h(
                  "div",
                  { class: "study-error-where" },
                  `${e.type || "error"} · ${e.count} trial(s) in a row · last from `,
                  e.trial_id != null ? trialLink(e.trial_id, `trial ${e.trial_id}`) : "a trial",
                  d.state === "failing" ? " · fix the code, then resume the study" : "",
                ),
              )
            : null,
        )
      : null;
  const rungs = d.best_by_rung || [];
  const best = rungs.length
    ? h(
        "div",
        { class: "rung-bests", "data-testid": "rung-bests" },
        "Best per rung: ",
        rungs.map((r, i) => [
          i ? " · " : "",
          h(
            "span",
            { title: `${r.entries} trial(s) reached resource ${fmtAmount(r.resource)}` },
            `${fmtAmount(r.resource)} → ${fmtValue(r.value)} `,
          ),
          trialLink(r.trial_id, `#${r.number}`),
        ]),
      )
    : null;
  return [told, best];
}
