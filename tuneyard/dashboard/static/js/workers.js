// The workers page, at /workers.

import { DASH, getJSON } from "./api.js";
import { fill, h } from "./dom.js";
import { fmtDuration, secondsSince } from "./format.js";
import { keepFresh } from "./live.js";
import { card, gpuChips, timeCell } from "./widgets.js";

export async function workersPage(main) {
  document.title = "Workers · tuneyard";
  const summary = h("div", { class: "sub", "data-testid": "workers-summary" });
  const tbody = h("tbody");
  const empty = h(
    "div",
    { class: "empty", hidden: true },
    h("p", {}, "No workers attached."),
    h(
      "p",
      { class: "muted" },
      "Start one on a GPU machine with ",
      h("code", {}, "tuneyard worker --gpus 0,1"),
      ".",
    ),
  );
  const table = h(
    "table",
    { class: "table", "data-testid": "workers-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, "Status"),
        h("th", {}, "Worker"),
        h("th", {}, "Host"),
        h("th", {}, "GPUs"),
        h("th", {}, "Current trial"),
        h("th", { style: "min-width:150px" }, "Busy (last hour)"),
        h("th", {}, "Last seen"),
        h("th", {}, "Up"),
      ),
    ),
    tbody,
  );
  fill(
    main,
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Workers"), summary)),
    card({
      title: "Attached workers",
      testid: "workers",
      body: h("div", { class: "card-body flush" }, h("div", { class: "table-wrap" }, table), empty),
    }),
  );

  async function load() {
    const data = await getJSON(`${DASH}/workers`);
    const items = Array.isArray(data) ? data : data.items || [];
    const online = items.filter(isOnline);
    const gpus = online.reduce((n, w) => n + (w.gpus ? w.gpus.length : 0), 0);
    const busy = online.filter((w) => w.trial_id).length;
    fill(
      summary,
      h("span", {}, `${online.length} online`),
      h("span", {}, `${items.length - online.length} offline`),
      h("span", {}, `${busy} busy`),
      h("span", {}, `${gpus} GPU${gpus === 1 ? "" : "s"} online`),
    );
    const sorted = [...items].sort(
      (a, b) =>
        Number(isOnline(b)) - Number(isOnline(a)) || String(a.name).localeCompare(String(b.name)),
    );
    fill(tbody, sorted.map(workerRow));
    empty.hidden = items.length > 0;
    table.hidden = items.length === 0;
  }
  await keepFresh(load);
}

function isOnline(w) {
  return w.online ?? w.state === "active";
}

function workerRow(w) {
  const online = isOnline(w);
  const status = online ? "online" : w.state && w.state !== "active" ? w.state : "offline";
  const tone = online ? "online" : status === "lost" ? "lost" : "stopped";
  const frac =
    typeof w.busy_fraction === "number" ? Math.max(0, Math.min(1, w.busy_fraction)) : null;
  return h(
    "tr",
    { "data-testid": "worker-row", "data-online": String(online), "data-worker": w.name },
    h("td", {}, h("span", { class: `badge s-${tone}` }, status)),
    h(
      "td",
      {},
      h("div", { class: "name mono" }, w.name),
      h(
        "div",
        { class: "sub" },
        [w.queue ? `queue ${w.queue}` : null, w.pid ? `pid ${w.pid}` : null]
          .filter(Boolean)
          .join(" · "),
      ),
    ),
    h("td", {}, w.host),
    h("td", {}, gpuChips(w.gpus)),
    h(
      "td",
      {},
      w.trial_id
        ? h(
            "a",
            { href: `/trials/${w.trial_id}`, "data-testid": "worker-trial" },
            w.trial_number !== null && w.trial_number !== undefined
              ? `trial #${w.trial_number}`
              : `trial ${w.trial_id}`,
            null,
          )
        : h("span", { class: "faint" }, "idle"),
      w.study_id
        ? [
            h("span", { class: "faint" }, " · "),
            h("a", { class: "sub", href: `/studies/${w.study_id}` }, `study ${w.study_id}`),
          ]
        : null,
    ),
    h(
      "td",
      {},
      frac === null
        ? h("span", { class: "faint" }, "—")
        : [
            h("div", { class: "bar" }, h("span", { style: `width:${100 * frac}%` })),
            h("div", { class: "bar-label" }, h("span", {}, `${Math.round(100 * frac)}%`)),
          ],
    ),
    h("td", {}, timeCell(w.last_seen_at)),
    h("td", { class: "nowrap" }, online ? fmtDuration(secondsSince(w.started_at)) : "—"),
  );
}

