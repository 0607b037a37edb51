// tuneyard dashboard: one page that routes on location.pathname and reads the JSON API.
// Plain modern JavaScript, no build step. Every piece of server data reaches the DOM through
// textContent or attributes, never as HTML.
"use strict";

const API = "/api/v1";
const DASH = `${API}/dashboard`;
const TOKEN_KEY = "tuneyard.token";
const TRIAL_STATES = ["queued", "running", "paused", "completed", "stopped", "failed"];
const STUDY_STATES = ["running", "paused", "stopped", "completed"];
const ACTIVE_TRIAL = new Set(["queued", "running", "paused"]);
const LIST_POLL_MS = 5000;
const VERSION_POLL_MS = 3000;
const SSE_RETRY_MS = 30000;
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

// ---------------------------------------------------------------------------------------
// DOM helpers

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  add(el, children);
  return el;
}

function add(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function fill(el, ...children) {
  el.replaceChildren();
  return add(el, children);
}

const $ = (sel, root = document) => root.querySelector(sel);

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// ---------------------------------------------------------------------------------------
// Formatting

function fmtValue(v) {
  if (v === null || v === undefined || (typeof v === "number" && Number.isNaN(v))) return "—";
  if (typeof v !== "number") return String(v);
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "−∞";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-3) return v.toExponential(3).replace(/\.?0+e/, "e");
  return String(Number(v.toPrecision(5)));
}

function fmtInt(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
}

function fmtAmount(v) {
  if (v === null || v === undefined) return "—";
  return Number.isInteger(v) ? fmtInt(v) : fmtValue(v);
}

function fmtParam(v) {
  if (typeof v === "number") return fmtValue(v);
  if (v === null || v === undefined) return "—";
  return typeof v === "string" ? v : JSON.stringify(v);
}

function fmtDuration(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "—";
  s = Math.max(0, s);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

function secondsSince(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : Math.max(0, (Date.now() - t) / 1000);
}

function fmtAgo(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 5) return "just now";
  return `${fmtDuration(seconds).replace(/\.\d s$/, " s")} ago`;
}

function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (n) => String(n).padStart(2, "0");
  return (
    `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
  );
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function timeCell(iso) {
  return h("span", { title: fmtTime(iso), class: "nowrap" }, fmtAgo(secondsSince(iso)));
}

function badge(state, prefix = "s") {
  return h("span", { class: `badge ${prefix}-${state}`, "data-state": state }, state);
}

function directionArrow(direction) {
  return direction === "maximize" ? "↑ maximize" : "↓ minimize";
}

// ---------------------------------------------------------------------------------------
// HTTP: a bearer token from local storage on every request; a 401 asks for one.

function token() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function request(path, as = "json", method = "GET") {
  const headers = { Accept: as === "json" ? "application/json" : "*/*" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  let r;
  try {
    r = await fetch(path, { method, headers, cache: "no-store" });
  } catch {
    throw new HttpError(0, "the server can't be reached");
  }
  if (r.status === 401) {
    askForToken(t ? "The stored token was not accepted." : "");
    throw new HttpError(401, "an access token is required");
  }
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try {
      const problem = await r.json();
      message = problem.detail || problem.title || message;
      if (typeof message !== "string") message = JSON.stringify(message);
    } catch {
      // not JSON: keep the status line
    }
    throw new HttpError(r.status, message);
  }
  if (r.status === 204) return null;
  return as === "json" ? r.json() : r.text();
}

const getJSON = (path) => request(path, "json");

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

// An EventSource sends no headers, and a token in its URL would end up in logs: it opens
// the stream with a ticket (one study, a minute) that the token buys, a new one each time.
async function streamUrl(base) {
  const t = await request(`${base}/stream-ticket`, "json", "POST");
  return `${base}/events?ticket=${encodeURIComponent(t.ticket)}`;
}

// A plain link can't carry the token header: fetch the file and hand the browser a blob.
function authedLink(href, label, filename) {
  return h(
    "a",
    {
      href,
      onclick: async (ev) => {
        if (!token()) return;
        ev.preventDefault();
        try {
          const text = await request(href, "text");
          const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
          const a = h("a", { href: url, download: filename || "" });
          if (filename) a.click();
          else window.open(url, "_blank", "noopener");
          setTimeout(() => URL.revokeObjectURL(url), 60000);
        } catch (e) {
          showBanner(`Download failed: ${e.message}`);
        }
      },
    },
    label,
  );
}

function askForToken(message) {
  const overlay = $("#auth");
  const error = $("#auth-error");
  error.textContent = message || "";
  error.hidden = !message;
  if (!overlay.hidden) return;
  overlay.hidden = false;
  setLive("offline", "Signed out", "The server asks for an access token");
  $("#auth-token").focus();
}

function setupAuth() {
  $("#auth-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("#auth-token").value.trim();
    if (!value) return;
    try {
      localStorage.setItem(TOKEN_KEY, value);
    } catch {
      // storage disabled: the token can't be kept
    }
    location.reload();
  });
  const forget = $("#forget-token");
  forget.hidden = !token();
  forget.addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
}

function showBanner(message) {
  const main = $("#main");
  let b = $(".banner", main);
  if (!b) {
    b = h("div", { class: "banner", role: "alert", "data-testid": "error-banner" });
    main.prepend(b);
  }
  b.textContent = message;
}

// ---------------------------------------------------------------------------------------
// Live updates: the connection indicator, pollers and a coalescing refresher.

function setLive(mode, label, title) {
  const el = $("#live");
  el.dataset.mode = mode;
  el.title = title || "";
  $(".live-label", el).textContent = label;
}

// Run `fn` every `ms` (after each run ends), paused while the tab is hidden.
function every(ms, fn) {
  let timer = null;
  let busy = false;
  let stopped = false;
  const run = async () => {
    timer = null;
    if (stopped || busy || document.hidden) return;
    busy = true;
    try {
      await fn();
    } catch (e) {
      console.warn(e);
    } finally {
      busy = false;
    }
    if (!stopped) timer = setTimeout(run, ms);
  };
  const onVisible = () => {
    if (!document.hidden && timer === null) run();
  };
  document.addEventListener("visibilitychange", onVisible);
  timer = setTimeout(run, ms);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      document.removeEventListener("visibilitychange", onVisible);
    },
  };
}

// A refresh that many events may ask for: runs at most once per `gap` ms, never two at once,
// and once more after a run if asked during it.
function coalesce(fn, gap) {
  let running = false;
  let again = false;
  let last = 0;
  let timer = null;
  const go = async () => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = true;
    last = Date.now();
    try {
      await fn();
    } finally {
      running = false;
      if (again) {
        again = false;
        schedule(0);
      }
    }
  };
  const schedule = (delay = 250) => {
    if (running) {
      again = true;
      return;
    }
    if (timer) return;
    timer = setTimeout(go, Math.max(delay, last + gap - Date.now()));
  };
  return schedule;
}

// Follow a study: its event stream, or polling its version when the stream fails.
// `changed(data)` is called with the event's data (null when unknown).
function watchStudy(studyId, changed) {
  const base = `${DASH}/studies/${studyId}`;
  let source = null;
  let poller = null;
  let retry = null;
  let failedOnce = false;

  const poll = () => {
    if (poller) return;
    setLive("polling", "Polling", `Checking for changes every ${VERSION_POLL_MS / 1000} s`);
    poller = every(VERSION_POLL_MS, async () => {
      try {
        const v = await getJSON(`${base}/version`);
        setLive("polling", "Polling", `Checking for changes every ${VERSION_POLL_MS / 1000} s`);
        changed(v);
      } catch (e) {
        if (e.status === 404) changed(null);
        else if (e.status !== 401) setLive("offline", "Offline", e.message);
      }
    });
  };

  const retryLater = () => {
    failedOnce = true;
    poll();
    clearTimeout(retry);
    retry = setTimeout(connect, SSE_RETRY_MS);
  };

  const connect = async () => {
    if (!("EventSource" in window)) {
      poll();
      return;
    }
    let url;
    try {
      url = await streamUrl(base);
    } catch (e) {
      if (e.status === 404) changed(null);
      else retryLater();
      return;
    }
    source = new EventSource(url);
    source.addEventListener("open", () => {
      setLive("live", "Live", "Updates arrive as the study changes");
      if (poller) {
        poller.stop();
        poller = null;
      }
      if (failedOnce) changed(null); // changes may have been missed while disconnected
    });
    source.addEventListener("deleted", () => {
      source.close();
      setLive("offline", "Deleted", "The study was deleted");
      showBanner("This study has been deleted.");
    });
    source.addEventListener("change", (ev) => {
      let data = null;
      try {
        data = JSON.parse(ev.data);
      } catch {
        // an event without JSON: refresh anyway
      }
      changed(data);
    });
    source.addEventListener("error", () => {
      source.close();
      source = null;
      retryLater();
    });
  };
  connect();
}

// ---------------------------------------------------------------------------------------
// Plotly

let plotlyLoading = null;

function ensurePlotly() {
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

function theme() {
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

function layout(t, extra) {
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
function plotText(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

const PLOT_CONFIG = {
  displaylogo: false,
  responsive: true,
  modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d", "toggleSpikelines"],
};

function emptyLayout(t, message) {
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
function draw(el, data, lay) {
  const count = (tr) => (tr.x ? tr.x.length : tr.dimensions ? tr.dimensions[0].values.length : 0);
  el.dataset.points = String(data.reduce((n, tr) => n + count(tr), 0));
  return window.Plotly.react(el, data, lay, PLOT_CONFIG);
}

// Click a point that carries a trial id (customdata) to open the trial.
function linkPoints(el) {
  if (el.dataset.linked) return;
  el.dataset.linked = "1";
  el.on("plotly_click", (ev) => {
    const id = ev.points && ev.points[0] && ev.points[0].customdata;
    if (typeof id === "number") location.assign(`/trials/${id}`);
  });
}

// Legend entries of the decision marks (named by the decision; curves by the trial state).
function markLegend(kind) {
  return { name: kind, legendgroup: `mark-${kind}` };
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
function logAxis(values) {
  const v = values.filter((x) => typeof x === "number" && x > 0);
  if (v.length < 2) return { type: "log" };
  return Math.log10(Math.max(...v) / Math.min(...v)) >= 2
    ? { type: "log", dtick: 1 }
    : { type: "log" };
}

function logScaleFits(values) {
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
// Pages

function card({ title, testid, meta, tools, body, cls }) {
  return h(
    "section",
    { class: `card ${cls || ""}`, "data-testid": testid ? `card-${testid}` : null },
    h("div", { class: "card-head" }, h("h2", {}, title), meta || null, tools || null),
    body,
  );
}

function metaEl(id) {
  return h("span", { class: "meta", id });
}

function progressBar(counts, total, testid) {
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

function pager({ onPrev, onNext, testid }) {
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
class Cursors {
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

async function studiesPage(main) {
  document.title = "Studies · tuneyard";
  const cursors = new Cursors();
  const tbody = h("tbody");
  const summary = h("span", { class: "meta", "data-testid": "studies-summary" });
  const table = h(
    "table",
    { class: "table", "data-testid": "studies-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, "Study"),
        h("th", {}, "State"),
        h("th", { style: "min-width:220px" }, "Progress"),
        h("th", { style: "min-width:150px" }, "Budget used"),
        h("th", { class: "num" }, "Best value"),
        h("th", {}, "Age"),
      ),
    ),
    tbody,
  );
  const empty = h(
    "div",
    { class: "empty", hidden: true },
    h("p", {}, "No studies yet."),
    h(
      "p",
      { class: "muted" },
      "Create one with ",
      h("code", {}, "tuneyard study create -f study.yaml"),
      " or POST it to ",
      h("a", { href: "/docs" }, "/api/v1/studies"),
      ".",
    ),
  );
  const pages = pager({
    testid: "studies",
    onPrev: () => cursors.back() && load(),
    onNext: () => cursors.forward() && load(),
  });
  fill(
    main,
    h(
      "div",
      { class: "page-head" },
      h("div", {}, h("h1", {}, "Studies"), h("div", { class: "sub" }, summary)),
    ),
    card({
      title: "All studies",
      testid: "studies",
      body: h(
        "div",
        { class: "card-body flush" },
        h("div", { class: "table-wrap" }, table),
        empty,
        pages.el,
      ),
    }),
  );

  async function load() {
    const page = await getJSON(`${DASH}/studies${query({ limit: 50, cursor: cursors.current })}`);
    cursors.next = page.next_cursor;
    const items = page.items || [];
    fill(tbody, items.map(studyRow));
    empty.hidden = items.length > 0 || cursors.page > 1;
    table.hidden = !empty.hidden;
    pages.update(cursors.page, items.length, Boolean(page.next_cursor));
    const running = items.filter((s) => s.state === "running").length;
    const n = `${items.length}${page.next_cursor ? "+" : ""}`;
    summary.textContent = `${n} ${n === "1" ? "study" : "studies"} · ${running} running`;
  }
  await keepFresh(load);
}

function studyRow(s) {
  const counts = s.counts || {};
  const started = s.trials_started ?? Object.values(counts).reduce((a, b) => a + b, 0);
  const done = (counts.completed || 0) + (counts.stopped || 0) + (counts.failed || 0);
  const budget = s.budget || {};
  const budgetBar = h("div", { class: "bar" });
  if (budget.total) {
    budgetBar.append(
      h("span", { style: `width:${Math.min(100, (100 * (budget.used || 0)) / budget.total)}%` }),
    );
  }
  const href = `/studies/${s.id}`;
  return h(
    "tr",
    { class: "link", "data-testid": "study-row", "data-study-id": s.id, onclick: rowLink(href) },
    h(
      "td",
      {},
      h("a", { class: "name", href }, s.name),
      h("div", { class: "sub" }, `#${s.id} · ${s.metric || ""} ${directionArrow(s.direction)}`),
    ),
    h("td", {}, badge(s.state)),
    h(
      "td",
      {},
      progressBar(counts, s.max_trials, "study-progress"),
      h(
        "div",
        { class: "bar-label" },
        h(
          "span",
          {},
          `${fmtInt(started)}${s.max_trials ? ` / ${fmtInt(s.max_trials)}` : ""} trials`,
        ),
        h(
          "span",
          {},
          `${fmtInt(done)} done${counts.running ? ` · ${counts.running} running` : ""}`,
        ),
      ),
    ),
    h(
      "td",
      {},
      budget.total ? budgetBar : null,
      h(
        "div",
        { class: "bar-label" },
        h(
          "span",
          {},
          budget.total
            ? `${fmtAmount(budget.used)} / ${fmtAmount(budget.total)}`
            : fmtAmount(budget.used),
        ),
        budget.total
          ? h("span", {}, `${Math.round((100 * (budget.used || 0)) / budget.total)}%`)
          : null,
      ),
    ),
    h(
      "td",
      { class: "num" },
      s.best
        ? [
            h("div", { class: "best" }, fmtValue(s.best.value)),
            h(
              "a",
              { class: "sub", href: `/trials/${s.best.trial_id}`, onclick: stop },
              `trial #${s.best.number}`,
            ),
          ]
        : h("span", { class: "faint" }, "—"),
    ),
    h(
      "td",
      { class: "nowrap" },
      h(
        "span",
        { title: `created ${fmtTime(s.created_at)}` },
        fmtDuration(s.age_s ?? secondsSince(s.created_at)),
      ),
      s.finished_at
        ? h("div", { class: "sub" }, `finished ${fmtAgo(secondsSince(s.finished_at))}`)
        : null,
    ),
  );
}

function stop(ev) {
  ev.stopPropagation();
}

function rowLink(href) {
  return (ev) => {
    if (ev.target.closest("a, button, select, input")) return;
    if (window.getSelection && String(window.getSelection())) return;
    if (ev.ctrlKey || ev.metaKey) window.open(href, "_blank");
    else location.assign(href);
  };
}

// Load now, then every few seconds; says in the indicator how fresh the page is.
async function keepFresh(load) {
  const run = async () => {
    try {
      await load();
      setLive(
        "auto",
        "Auto-refresh",
        `Refreshed every ${LIST_POLL_MS / 1000} s; last ${fmtTime(new Date().toISOString())}`,
      );
      clearBanner();
    } catch (e) {
      if (e.status !== 401) {
        setLive("offline", "Offline", e.message);
        showBanner(`Couldn't load: ${e.message}`);
      }
    }
  };
  await run();
  every(LIST_POLL_MS, run);
}

function clearBanner() {
  const b = $("#main .banner");
  if (b) b.remove();
}

// -- study page ---------------------------------------------------------------------------

async function studyPage(main, studyId) {
  const plotlyReady = ensurePlotly();
  const state = {
    detail: null,
    version: null,
    filter: "",
    order: "number",
    limit: 25,
    cursors: new Cursors(),
    sliceEls: new Map(),
  };
  const ids = (name) =>
    h("div", { id: `plot-${name}`, class: "plot", "data-testid": `plot-${name}` });
  const head = h("div", { class: "page-head", "data-testid": "study-head" });
  const crumbs = h(
    "div",
    { class: "crumbs" },
    h("a", { href: "/" }, "Studies"),
    h("span", { class: "sep" }, "/"),
    h("span", { id: "crumb-name" }, `Study ${studyId}`),
  );
  const history = ids("history");
  const curves = ids("curves");
  curves.classList.add("tall");
  const parcoords = ids("parcoords");
  const importance = ids("importance");
  const importanceNote = h("div", {
    class: "note clamp",
    "data-testid": "importance-method",
    hidden: true,
  });
  const slices = h("div", { class: "slices", "data-testid": "slices" });

  // trials table
  const stateSelect = h("select", { "data-testid": "trials-state", "aria-label": "State" });
  const orderSelect = h(
    "select",
    { "data-testid": "trials-order", "aria-label": "Order" },
    h("option", { value: "number" }, "Number ↑"),
    h("option", { value: "-number" }, "Number ↓"),
    h("option", { value: "value" }, "Value ↑"),
    h("option", { value: "-value" }, "Value ↓"),
  );
  const sizeSelect = h(
    "select",
    { "aria-label": "Rows per page" },
    [25, 50, 100].map((n) => h("option", { value: n }, `${n} rows`)),
  );
  const thead = h("thead");
  const tbody = h("tbody");
  const tableNote = h("div", { class: "note", hidden: true });
  const table = h("table", { class: "table", "data-testid": "trials-table" }, thead, tbody);
  const pages = pager({
    testid: "trials",
    onPrev: () => state.cursors.back() && loadTable(),
    onNext: () => state.cursors.forward() && loadTable(),
  });
  const csv = authedLink(
    `${API}/studies/${studyId}/trials.csv`,
    "Export CSV",
    `study-${studyId}-trials.csv`,
  );
  csv.setAttribute("download", "");

  const setFilter = (value) => {
    state.filter = value;
    state.cursors.reset();
    loadTable();
  };
  const setOrder = (value) => {
    state.order = value;
    orderSelect.value = value;
    state.cursors.reset();
    loadTable();
  };
  stateSelect.addEventListener("change", () => setFilter(stateSelect.value));
  orderSelect.addEventListener("change", () => setOrder(orderSelect.value));
  sizeSelect.addEventListener("change", () => {
    state.limit = Number(sizeSelect.value);
    state.cursors.reset();
    loadTable();
  });

  fill(
    main,
    crumbs,
    head,
    h(
      "div",
      { class: "grid" },
      card({
        title: "Optimization history",
        testid: "history",
        meta: metaEl("meta-history"),
        body: history,
        cls: "span-8",
      }),
      card({
        title: "Parameter importance",
        testid: "importance",
        meta: metaEl("meta-importance"),
        body: [importance, importanceNote],
        cls: "span-4",
      }),
      card({
        title: "Learning curves",
        testid: "curves",
        meta: metaEl("meta-curves"),
        body: curves,
        cls: "span-12",
      }),
      card({
        title: "Parallel coordinates",
        testid: "parcoords",
        meta: metaEl("meta-parcoords"),
        body: parcoords,
        cls: "span-12",
      }),
      card({
        title: "Slices",
        testid: "slices",
        meta: metaEl("meta-slices"),
        body: slices,
        cls: "span-12",
      }),
      card({
        title: "Trials",
        testid: "trials",
        meta: metaEl("meta-trials"),
        tools: h(
          "div",
          { class: "tools controls" },
          h("label", {}, "State"),
          stateSelect,
          h("label", {}, "Sort"),
          orderSelect,
          sizeSelect,
          csv,
        ),
        body: h(
          "div",
          { class: "card-body flush" },
          tableNote,
          h("div", { class: "table-wrap" }, table),
          pages.el,
        ),
        cls: "span-12",
      }),
    ),
  );

  function renderHead(d) {
    document.title = `${d.name} · tuneyard`;
    $("#crumb-name").textContent = d.name;
    const counts = d.counts || {};
    const budget = d.budget || {};
    fill(
      head,
      h(
        "div",
        {},
        h(
          "div",
          { class: "title" },
          h("h1", { "data-testid": "study-name" }, d.name),
          badge(d.state),
        ),
        h(
          "div",
          { class: "sub" },
          h("span", {}, `#${d.id}`),
          h("span", {}, `${d.metric} ${directionArrow(d.direction)}`),
          h(
            "span",
            { title: fmtTime(d.created_at) },
            `created ${fmtAgo(secondsSince(d.created_at))}`,
          ),
          d.finished_at
            ? h(
                "span",
                { title: fmtTime(d.finished_at) },
                `finished ${fmtAgo(secondsSince(d.finished_at))}`,
              )
            : null,
        ),
        h(
          "div",
          { class: "legend", style: "margin-top:8px" },
          TRIAL_STATES.filter((s) => counts[s]).map((s) =>
            h(
              "span",
              { class: `s-${s}`, "data-testid": `count-${s}` },
              h("i"),
              `${counts[s]} ${s}`,
            ),
          ),
        ),
      ),
      h(
        "div",
        { class: "stats" },
        stat(
          "Best",
          d.best ? fmtValue(d.best.value) : "—",
          d.best ? h("a", { href: `/trials/${d.best.trial_id}` }, ` #${d.best.number}`) : null,
        ),
        stat(
          "Trials",
          fmtInt(d.trials_started),
          d.max_trials ? ` / ${fmtInt(d.max_trials)}` : null,
        ),
        stat(
          "Budget used",
          fmtAmount(budget.used),
          budget.total ? ` / ${fmtAmount(budget.total)}` : null,
        ),
        h(
          "div",
          { class: "stat", style: "min-width:200px" },
          h("div", { class: "label" }, "Progress"),
          h("div", { style: "margin-top:9px" }, progressBar(counts, d.max_trials)),
        ),
      ),
    );
    // state filter options with their counts
    const current = stateSelect.value;
    fill(
      stateSelect,
      h("option", { value: "" }, "All"),
      TRIAL_STATES.map((s) => h("option", { value: s }, counts[s] ? `${s} (${counts[s]})` : s)),
    );
    stateSelect.value = current || state.filter;
  }

  function stat(label, value, small) {
    return h(
      "div",
      { class: "stat" },
      h("div", { class: "label" }, label),
      h("div", { class: "value" }, value, small ? h("small", {}, small) : null),
    );
  }

  function renderTableHead() {
    const sortable = (label, key, cls) => {
      const active = state.order.replace("-", "") === key;
      const arrow = active ? (state.order.startsWith("-") ? "▼" : "▲") : "";
      return h(
        "th",
        {
          class: `sortable ${cls || ""}`,
          "data-sort": key,
          title: `Sort by ${key}`,
          onclick: () => setOrder(state.order === key ? `-${key}` : key),
        },
        label,
        " ",
        h("span", { class: "arrow" }, arrow),
      );
    };
    fill(
      thead,
      h(
        "tr",
        {},
        sortable("#", "number", "num"),
        h("th", {}, "State"),
        sortable("Value", "value", "num"),
        h("th", { class: "num" }, "Step"),
        h("th", { class: "num" }, "Rung"),
        h("th", { class: "num" }, "Bracket"),
        h("th", { class: "num" }, "Attempts"),
        h("th", {}, "Params"),
        h("th", {}, "Reason"),
        h("th", {}, "Updated"),
      ),
    );
  }

  let tableSeq = 0;
  async function loadTable() {
    const seq = ++tableSeq;
    renderTableHead();
    const url = `${API}/studies/${studyId}/trials${query({ state: state.filter, order: state.order, limit: state.limit, cursor: state.cursors.current })}`;
    try {
      const page = await getJSON(url);
      if (seq !== tableSeq) return; // a newer request is on its way
      state.cursors.next = page.next_cursor;
      const items = page.items || [];
      fill(
        tbody,
        items.length
          ? items.map(trialRow)
          : h(
              "tr",
              {},
              h(
                "td",
                { colspan: 10, class: "empty" },
                state.filter ? `No ${state.filter} trials.` : "No trials yet.",
              ),
            ),
      );
      pages.update(state.cursors.page, items.length, Boolean(page.next_cursor));
      tableNote.hidden = !state.order.includes("value");
      tableNote.textContent = "Sorted by value: trials without a value yet are not listed.";
      table.dataset.order = state.order;
      table.dataset.filter = state.filter;
      table.dataset.page = String(state.cursors.page);
    } catch (e) {
      if (seq === tableSeq)
        fill(
          tbody,
          h(
            "tr",
            {},
            h(
              "td",
              { colspan: 10, class: "empty error-box" },
              `Couldn't load trials: ${e.message}`,
            ),
          ),
        );
      throw e;
    }
  }

  function trialRow(t) {
    const href = `/trials/${t.id}`;
    const best = state.detail && state.detail.best && state.detail.best.trial_id === t.id;
    const params = Object.entries(t.params || {})
      .map(([k, v]) => `${k}=${fmtParam(v)}`)
      .join("  ");
    return h(
      "tr",
      {
        class: "link",
        "data-testid": "trial-row",
        "data-number": t.number,
        "data-state": t.state,
        "data-trial-id": t.id,
        onclick: rowLink(href),
      },
      h("td", { class: "num" }, h("a", { href }, `#${t.number}`)),
      h("td", {}, badge(t.state)),
      h(
        "td",
        {
          class: `num ${best ? "best" : ""}`,
          "data-testid": "trial-value",
          title: best ? "best trial" : null,
        },
        fmtValue(t.value),
        best ? " ★" : null,
      ),
      h("td", { class: "num" }, fmtAmount(t.resource)),
      h("td", { class: "num" }, t.rung >= 0 ? t.rung : "—"),
      h("td", { class: "num" }, t.bracket),
      h("td", { class: "num" }, t.attempts),
      h("td", { class: "params", title: params }, params),
      h("td", { class: "reason", title: t.reason || "" }, t.reason || ""),
      h("td", {}, timeCell(t.updated_at)),
    );
  }

  async function loadDetail() {
    const d = await getJSON(`${DASH}/studies/${studyId}`);
    state.detail = d;
    state.version = d.version ?? null;
    renderHead(d);
    return d;
  }

  function section(name, fn) {
    return fn().catch((e) => {
      const meta = $(`#meta-${name}`);
      if (meta) meta.textContent = e.status === 401 ? "" : `couldn't load: ${e.message}`;
      throw e;
    });
  }

  async function loadPlots(d) {
    await plotlyReady;
    const t = theme();
    const base = `${DASH}/studies/${studyId}`;
    await Promise.allSettled([
      section("history", async () =>
        drawHistory(t, d, await getJSON(`${base}/history?points=2000`)),
      ),
      section("curves", async () => drawCurves(t, d, await getJSON(`${base}/curves?trials=200`))),
      section("parcoords", async () => {
        const p = await getJSON(`${base}/params?trials=2000`);
        drawParcoords(t, d, p);
        drawSlices(t, d, p);
      }),
      section("importance", async () => drawImportance(t, await getJSON(`${base}/importance`))),
    ]);
  }

  function drawHistory(t, d, data) {
    const pts = data.points || [];
    $("#meta-history").textContent = data.downsampled
      ? `${fmtInt(pts.length)} of ${fmtInt(data.total)} trials shown (best and worst per bucket)`
      : `${fmtInt(data.total ?? pts.length)} finished trials`;
    if (!pts.length) {
      draw(history, [], emptyLayout(t, "No finished trials yet"));
      return;
    }
    const traces = [];
    for (const s of TRIAL_STATES) {
      const mine = pts.filter((p) => p.state === s);
      if (!mine.length) continue;
      traces.push({
        type: "scatter",
        mode: "markers",
        name: s,
        x: mine.map((p) => p.number),
        y: mine.map((p) => p.value),
        marker: { color: t.state[s], size: 6, opacity: s === "completed" ? 0.9 : 0.55 },
        hovertemplate: `trial #%{x}<br>${plotText(d.metric)} %{y:.5g}<extra>${s}</extra>`,
      });
    }
    const best = data.best || [];
    if (best.length) {
      const last = Math.max(...pts.map((p) => p.number));
      const bx = best.map((b) => b.number);
      const by = best.map((b) => b.value);
      if (bx[bx.length - 1] < last) {
        bx.push(last);
        by.push(by[by.length - 1]);
      }
      traces.push({
        type: "scatter",
        mode: "lines",
        name: "best so far",
        x: bx,
        y: by,
        line: { shape: "hv", color: t.brand, width: 2.2 },
        hovertemplate: `best so far %{y:.5g}<extra></extra>`,
      });
    }
    draw(
      history,
      traces,
      layout(t, {
        xaxis: { title: { text: "trial number" }, rangemode: "tozero" },
        yaxis: {
          title: { text: `${plotText(d.metric)} ${d.direction === "maximize" ? "↑" : "↓"}` },
          type: logScaleFits(pts.map((p) => p.value)) ? "log" : "linear",
        },
      }),
    );
  }

  function drawCurves(t, d, data) {
    const trials = data.trials || [];
    const rungs = data.rungs || d.rungs || [];
    $("#meta-curves").textContent =
      data.total && data.shown < data.total
        ? `${fmtInt(data.shown)} of ${fmtInt(data.total)} trials (best, active and a spread of the rest) · click a curve to open its trial`
        : `${fmtInt(trials.length)} trials · click a curve to open its trial`;
    if (!trials.length) {
      draw(curves, [], emptyLayout(t, "No reports yet"));
      return;
    }
    // Stopped trials first so the survivors are drawn on top.
    const rank = { stopped: 0, failed: 1, queued: 2, completed: 3, paused: 4, running: 5 };
    const sorted = [...trials].sort(
      (a, b) => (rank[a.state] ?? 9) - (rank[b.state] ?? 9) || a.number - b.number,
    );
    // The legend entry of each state goes on a curve with a line where there is one.
    const legendOf = new Map();
    for (const tr of sorted) {
      const prev = legendOf.get(tr.state);
      if (!prev || (prev.steps.length < 2 && tr.steps.length > 1)) legendOf.set(tr.state, tr);
    }
    const traces = sorted.map((tr) => {
      const first = legendOf.get(tr.state) === tr;
      const faded = tr.state === "stopped" || tr.state === "failed";
      return {
        type: "scatter",
        mode: tr.steps.length > 1 ? "lines" : "markers",
        name: `${tr.state} trials`,
        legendgroup: tr.state,
        showlegend: first,
        x: tr.steps,
        y: tr.values,
        opacity: faded ? 0.5 : 0.95,
        line: { color: t.state[tr.state] || t.muted, width: faded ? 1 : 1.8 },
        marker: { color: t.state[tr.state] || t.muted, size: 5 },
        customdata: tr.steps.map(() => tr.id),
        hovertemplate: `trial #${tr.number}<br>step %{x}<br>${plotText(d.metric)} %{y:.5g}<extra>${tr.state}</extra>`,
      };
    });
    const byKind = new Map();
    for (const tr of trials) {
      for (const m of tr.marks || []) {
        if (!MARKS[m.kind]) continue;
        if (m.step === null || m.step === undefined) continue;
        const y = valueAt(tr.steps, tr.values, m.step);
        if (y === null) continue;
        if (!byKind.has(m.kind)) byKind.set(m.kind, { x: [], y: [], text: [], ids: [] });
        const g = byKind.get(m.kind);
        g.x.push(m.step);
        g.y.push(y);
        g.text.push(plotText(`trial #${tr.number}: ${m.reason || m.kind}`));
        g.ids.push(tr.id);
      }
    }
    for (const [kind, g] of byKind) {
      const spec = MARKS[kind];
      traces.push({
        type: "scatter",
        mode: "markers",
        ...markLegend(kind),
        x: g.x,
        y: g.y,
        text: g.text,
        customdata: g.ids,
        marker: {
          symbol: spec.symbol,
          size: kind === "stop" ? 6 : 8,
          opacity: kind === "stop" ? 0.6 : 0.95,
          color: cssVar(spec.color),
          line: { width: 1, color: cssVar(spec.color) },
        },
        hovertemplate: "%{text}<extra></extra>",
      });
    }
    const allSteps = trials.flatMap((tr) => tr.steps);
    const logX =
      logScaleFits([...allSteps, ...rungs]) ||
      (rungs.length > 2 && rungs[0] > 0 && rungs[rungs.length - 1] / rungs[0] >= 9);
    draw(
      curves,
      traces,
      layout(t, {
        xaxis: stepAxis(logX, rungs),
        yaxis: {
          title: { text: plotText(d.metric) },
          type: logScaleFits(trials.flatMap((tr) => tr.values)) ? "log" : "linear",
        },
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
          text: `rung ${i} · ${fmtAmount(r)}`,
          font: { size: 10.5, color: t.muted },
        })),
      }),
    );
    linkPoints(curves);
  }

  function dimension(spec, values) {
    const label = plotText(spec.name);
    if (spec.type === "categorical" || spec.choices) {
      const choices = (spec.choices || []).map((c) => String(c));
      const index = new Map(choices.map((c, i) => [c, i]));
      return {
        label,
        values: values.map((v) => (index.has(String(v)) ? index.get(String(v)) : NaN)),
        tickvals: choices.map((_, i) => i),
        // Parcoords draws its tick labels as plain text (its axis titles as markup).
        ticktext: choices,
        range: [0, Math.max(choices.length - 1, 1)],
      };
    }
    if (spec.log) {
      const lo = Math.log10(spec.low);
      const hi = Math.log10(spec.high);
      const ticks = [];
      for (let e = Math.ceil(lo); e <= Math.floor(hi); e += 1) ticks.push(e);
      return {
        label: `${label} (log)`,
        values: values.map((v) => (typeof v === "number" && v > 0 ? Math.log10(v) : NaN)),
        range: [lo, hi],
        tickvals: ticks,
        ticktext: ticks.map((e) => fmtValue(10 ** e)),
      };
    }
    const dim = { label, values: values.map((v) => (typeof v === "number" ? v : NaN)) };
    if (typeof spec.low === "number" && typeof spec.high === "number")
      dim.range = [spec.low, spec.high];
    return dim;
  }

  function drawParcoords(t, d, data) {
    const space = data.space || d.space || [];
    const trials = (data.trials || []).filter((tr) => typeof tr.value === "number");
    $("#meta-parcoords").textContent =
      data.total && data.shown < data.total
        ? `${fmtInt(trials.length)} of ${fmtInt(data.total)} trials · the best in the strongest colour`
        : `${fmtInt(trials.length)} trials with a value · the best in the strongest colour`;
    if (!trials.length || !space.length) {
      draw(parcoords, [], emptyLayout(t, "No trials with a value yet"));
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
      parcoords,
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

  function drawSlices(t, d, data) {
    const space = data.space || d.space || [];
    const trials = (data.trials || []).filter((tr) => typeof tr.value === "number");
    $("#meta-slices").textContent =
      `value against each parameter · ${fmtInt(trials.length)} trials · colour: trial number (later is stronger)`;
    const wanted = new Set(space.map((s) => s.name));
    for (const [name, wrap] of state.sliceEls) {
      if (!wanted.has(name)) {
        wrap.remove();
        state.sliceEls.delete(name);
      }
    }
    if (!space.length) {
      fill(slices, h("p", { class: "empty" }, "No parameters"));
      return;
    }
    const maxNumber = Math.max(1, ...trials.map((tr) => tr.number));
    const logY = logScaleFits(trials.map((tr) => tr.value));
    space.forEach((spec, i) => {
      let wrap = state.sliceEls.get(spec.name);
      if (!wrap) {
        wrap = h(
          "div",
          { class: "slice-wrap" },
          h("h3", {}, spec.name),
          h("div", {
            class: "plot slice",
            id: `plot-slice-${i}`,
            "data-testid": "plot-slice",
            "data-param": spec.name,
          }),
        );
        state.sliceEls.set(spec.name, wrap);
        slices.append(wrap);
      }
      const el = $(".plot", wrap);
      const mine = trials.filter((tr) => (tr.params || {})[spec.name] !== undefined);
      const xs = mine.map((tr) => tr.params[spec.name]);
      const ys = mine.map((tr) => tr.value);
      const categorical = spec.type === "categorical" || Boolean(spec.choices);
      const marker = {
        color: mine.map((tr) => tr.number),
        cmin: 0,
        cmax: maxNumber,
        colorscale: t.scale,
        size: 6,
        opacity: 0.8,
      };
      const trace = categorical
        ? {
            type: "box",
            x: xs.map(plotText),
            y: ys,
            boxpoints: "all",
            jitter: 0.45,
            pointpos: 0,
            fillcolor: "rgba(0,0,0,0)",
            line: { color: t.axis, width: 1 },
            marker: { ...marker, color: t.brand, opacity: 0.55 },
          }
        : {
            type: "scatter",
            mode: "markers",
            x: xs,
            y: ys,
            marker,
          };
      trace.customdata = mine.map((tr) => tr.id);
      trace.text = mine.map((tr) => `#${tr.number}`);
      trace.hovertemplate = `trial %{text}<br>${plotText(spec.name)} %{x}<br>${plotText(d.metric)} %{y:.5g}<extra></extra>`;
      draw(
        el,
        [trace],
        layout(t, {
          showlegend: false,
          margin: { l: 52, r: 10, t: 6, b: 38 },
          xaxis: categorical
            ? {
                type: "category",
                categoryorder: "array",
                categoryarray: (spec.choices || []).map(plotText),
              }
            : spec.log
              ? logAxis([spec.low, spec.high])
              : { type: "linear" },
          yaxis: { title: { text: plotText(d.metric) }, type: logY ? "log" : "linear" },
        }),
      );
      linkPoints(el);
    });
  }

  function drawImportance(t, data) {
    const params = [...(data.params || [])].sort((a, b) => a.importance - b.importance);
    const parts = [];
    if (data.trials_used) parts.push(`${fmtInt(data.trials_used)} trials`);
    if (data.resource !== null && data.resource !== undefined)
      parts.push(`values at step ${fmtAmount(data.resource)}`);
    $("#meta-importance").textContent = parts.join(" · ");
    importanceNote.textContent = data.method || "";
    importanceNote.title = data.method || "";
    importanceNote.hidden = !data.method;
    if (!params.length || params.every((p) => !p.importance)) {
      importanceNote.hidden = true;
      draw(importance, [], emptyLayout(t, "Needs more finished trials"));
      return;
    }
    const total = params.reduce((n, p) => n + Math.max(0, p.importance), 0) || 1;
    draw(
      importance,
      [
        {
          type: "bar",
          orientation: "h",
          x: params.map((p) => p.importance),
          y: params.map((p) => plotText(p.name)),
          text: params.map((p) => `${Math.round((100 * Math.max(0, p.importance)) / total)}%`),
          textposition: "outside",
          cliponaxis: false,
          marker: { color: t.brand, opacity: 0.85 },
          hovertemplate: "%{y}: %{x:.3g}<extra></extra>",
        },
      ],
      layout(t, {
        showlegend: false,
        margin: { l: 10, r: 40, t: 10, b: 40 },
        xaxis: { title: { text: "importance" }, rangemode: "tozero" },
        yaxis: { automargin: true, tickfont: { family: cssVar("--mono"), size: 12 } },
        bargap: 0.35,
      }),
    );
  }

  const refresh = coalesce(async () => {
    try {
      const d = await loadDetail();
      await Promise.allSettled([loadPlots(d), loadTable()]);
      clearBanner();
    } catch (e) {
      if (e.status === 404 && !state.detail) {
        fill(
          main,
          h(
            "div",
            { class: "empty" },
            h("h1", {}, "Study not found"),
            h(
              "p",
              { class: "muted" },
              `There is no study ${studyId}. `,
              h("a", { href: "/" }, "All studies"),
            ),
          ),
        );
        return;
      }
      if (e.status !== 401) showBanner(`Couldn't refresh: ${e.message}`);
    }
  }, 1000);

  watchStudy(studyId, (data) => {
    if (data && state.version !== null && data.version === state.version) return;
    refresh(300);
  });
  refresh(0);
}

// -- trial page -------------------------------------------------------------------------

async function trialPage(main, trialId) {
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
  const attempts = h("tbody");
  const log = h("pre", { class: "log", "data-testid": "log-tail" });
  const logMeta = metaEl("meta-log");
  let studyCache = null;
  let watching = false;

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
        ),
        h(
          "div",
          { class: "sub" },
          h("span", {}, `id ${t.id}`),
          st ? h("span", {}, `${metric} ${directionArrow(st.direction)}`) : null,
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
          h("div", { class: "value" }, fmtValue(t.value)),
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

  function drawTrialCurve(t, st, metric) {
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
    const traces = [
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
    ];
    const rungs = (st && st.rungs) || [];
    const byKind = new Map();
    for (const dc of t.decisions || []) {
      if (!MARKS[dc.kind]) continue;
      // An ending without a resource happened at the last report.
      let step = dc.resource ?? (dc.kind === "promote" ? null : steps[steps.length - 1]);
      if (step === null) continue;
      // A promotion is recorded with the resource it leads to; it was taken at the rung below.
      if (dc.kind === "promote") {
        const below = rungs.filter((r) => r < dc.resource);
        step = below.length
          ? Math.max(...below)
          : Math.max(...steps.filter((s) => s < dc.resource), steps[0]);
      }
      const y = valueAt(steps, values, step);
      if (y === null) continue;
      if (!byKind.has(dc.kind)) byKind.set(dc.kind, { x: [], y: [], text: [] });
      const g = byKind.get(dc.kind);
      g.x.push(step);
      g.y.push(y);
      g.text.push(plotText(dc.reason || dc.kind));
    }
    for (const [kind, g] of byKind) {
      const spec = MARKS[kind];
      traces.push({
        type: "scatter",
        mode: "markers",
        ...markLegend(kind),
        x: g.x,
        y: g.y,
        text: g.text,
        marker: {
          symbol: spec.symbol,
          size: 11,
          color: cssVar(spec.color),
          line: { width: 1.5, color: cssVar(spec.color) },
        },
        hovertemplate: "%{text}<extra></extra>",
      });
    }
    const logX = rungs.length > 2 && rungs[0] > 0 && rungs[rungs.length - 1] / rungs[0] >= 9;
    draw(
      curve,
      traces,
      layout(th, {
        margin: { l: 56, r: 16, t: 22, b: 44 },
        legend: {
          orientation: "h",
          x: 0,
          y: 1.06,
          yanchor: "bottom",
          font: { size: 11.5 },
          groupclick: "toggleitem",
        },
        xaxis: stepAxis(logX, rungs),
        yaxis: { title: { text: plotText(metric) } },
        shapes: rungs.map((r) => ({
          type: "line",
          xref: "x",
          yref: "paper",
          x0: r,
          x1: r,
          y0: 0,
          y1: 1,
          layer: "below",
          line: { color: th.axis, width: 1, dash: "dot" },
        })),
        annotations: rungs.map((r, i) => ({
          x: logX ? Math.log10(r) : r,
          y: 1,
          yref: "paper",
          yanchor: "bottom",
          xanchor: "left",
          showarrow: false,
          text: `rung ${i}`,
          font: { size: 10.5, color: th.muted },
        })),
      }),
    );
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

function gpuLabel(g) {
  if (g === null || g === undefined) return "";
  if (typeof g !== "object") return `GPU ${g}`;
  const mem = g.memory_mib ? ` · ${Math.round(g.memory_mib / 1024)} GiB` : "";
  return `${g.index ?? "?"}${g.name ? ` · ${g.name}` : ""}${mem}`;
}

function gpuChips(gpus) {
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

async function workersPage(main) {
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

// ---------------------------------------------------------------------------------------
// Router

const ROUTES = [
  [/^\/$/, "studies", (main) => studiesPage(main)],
  [/^\/studies\/(\d+)\/?$/, "studies", (main, m) => studyPage(main, Number(m[1]))],
  [/^\/trials\/(\d+)\/?$/, "studies", (main, m) => trialPage(main, Number(m[1]))],
  [/^\/workers\/?$/, "workers", (main) => workersPage(main)],
];

function start() {
  setupAuth();
  setLive("idle", "");
  const main = $("#main");
  for (const [pattern, nav, render] of ROUTES) {
    const m = location.pathname.match(pattern);
    if (!m) continue;
    for (const a of document.querySelectorAll(".nav a"))
      a.classList.toggle("active", a.dataset.nav === nav);
    render(main, m).catch((e) => {
      if (e.status !== 401) showBanner(`Couldn't load the page: ${e.message}`);
    });
    return;
  }
  fill(
    main,
    h(
      "div",
      { class: "empty" },
      h("h1", {}, "Not found"),
      h("p", {}, h("a", { href: "/" }, "All studies")),
    ),
  );
}

start();
