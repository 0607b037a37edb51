// Pieces the pages share: cards, badges, progress bars, pagers, links on table rows, GPU chips.

import { h } from "./dom.js";
import { TRIAL_STATES, fmtAgo, fmtTime, secondsSince } from "./format.js";

export function card({ title, testid, meta, tools, body, cls }) {
  return h(
    "section",
    { class: `card ${cls || ""}`, "data-testid": testid ? `card-${testid}` : null },
    h("div", { class: "card-head" }, h("h2", {}, title), meta || null, tools || null),
    body,
  );
}

export function metaEl(id) {
  return h("span", { class: "meta", id });
}

export function progressBar(counts, total, testid) {
  const bar = h("div", { class: "bar", "data-testid": testid || null, role: "img" });
  const sum = TRIAL_STATES.reduce((n, s) => n + (counts[s] || 0), 0);
  const denominator = Math.max(total || 0, sum, 1);
  const parts = [];
  for (const s of ["completed", "stopped", "failed", "paused", "running", "queued"]) {
    const n = counts[s] || 0;
    if (!n) continue;
    parts.push(`${n} ${s}`);
    bar.append(
      h("span", {
        class: `s-${s}`,
        style: `width:${(100 * n) / denominator}%;background:var(--c)`,
      }),
    );
  }
  bar.setAttribute("aria-label", parts.join(", ") || "no trials yet");
  bar.title = parts.join(" · ") || "no trials yet";
  return bar;
}

export function pager({ onPrev, onNext, testid }) {
  const where = h("span", { class: "where", "data-testid": `${testid}-page` });
  const prev = h(
    "button",
    { class: "btn", type: "button", "data-testid": `${testid}-prev`, onclick: onPrev },
    "← Previous",
  );
  const next = h(
    "button",
    { class: "btn", type: "button", "data-testid": `${testid}-next`, onclick: onNext },
    "Next →",
  );
  const el = h("div", { class: "pager" }, where, prev, next);
  const update = (page, rows, hasNext) => {
    where.textContent = rows
      ? `Page ${page} · ${rows} row${rows === 1 ? "" : "s"}`
      : `Page ${page}`;
    prev.disabled = page <= 1;
    next.disabled = !hasNext;
  };
  update(1, 0, false);
  return { el, update };
}

// Keyset paging: a stack of cursors, the top one being the current page's.
export class Cursors {
  constructor() {
    this.reset();
  }
  reset() {
    this.stack = [null];
    this.next = null;
  }
  get current() {
    return this.stack[this.stack.length - 1];
  }
  get page() {
    return this.stack.length;
  }
  forward() {
    if (!this.next) return false;
    this.stack.push(this.next);
    return true;
  }
  back() {
    if (this.stack.length <= 1) return false;
    this.stack.pop();
    return true;
  }
}

// -- studies list -----------------------------------------------------------------------

export function timeCell(iso) {
  return h("span", { title: fmtTime(iso), class: "nowrap" }, fmtAgo(secondsSince(iso)));
}

export function badge(state, prefix = "s") {
  return h("span", { class: `badge ${prefix}-${state}`, "data-state": state }, state);
}

// On a link inside a row: the link, not the row, is followed.
export function stopPropagation(ev) {
  ev.stopPropagation();
}

export function rowLink(href) {
  return (ev) => {
    if (ev.target.closest("a, button, select, input")) return;
    if (window.getSelection && String(window.getSelection())) return;
    if (ev.ctrlKey || ev.metaKey) window.open(href, "_blank");
    else location.assign(href);
  };
}

function gpuLabel(g) {
  if (g === null || g === undefined) return "";
  if (typeof g !== "object") return `GPU ${g}`;
  const mem = g.memory_mib ? ` · ${Math.round(g.memory_mib / 1024)} GiB` : "";
  return `${g.index ?? "?"}${g.name ? ` · ${g.name}` : ""}${mem}`;
}

export function gpuChips(gpus) {
  if (!gpus || !gpus.length) return h("span", { class: "faint" }, "CPU");
  return h(
    "div",
    { class: "chips" },
    gpus.map((g) =>
      h(
        "span",
        { class: "chip", title: typeof g === "object" && g.uuid ? g.uuid : "" },
        gpuLabel(g),
      ),
    ),
  );
}

// -- workers ------------------------------------------------------------------------------
