// tuneyard dashboard: one page that routes on location.pathname and reads the JSON API.
// Plain modern JavaScript in native modules (js/), no build step. Every piece of server data
// reaches the DOM through textContent or attributes, never as HTML, and every piece drawn by
// plotly through plotText (js/plots.js).

import { setupAuth } from "./js/api.js";
import { $, fill, h } from "./js/dom.js";
import { setLive, showBanner } from "./js/status.js";
import { studiesPage } from "./js/studies.js";
import { studyPage } from "./js/study.js";
import { timelinePage } from "./js/timeline.js";
import { trialPage } from "./js/trial.js";
import { workersPage } from "./js/workers.js";

const ROUTES = [
  [/^\/$/, "studies", (main) => studiesPage(main)],
  [/^\/studies\/(\d+)\/?$/, "studies", (main, m) => studyPage(main, Number(m[1]))],
  [/^\/trials\/(\d+)\/?$/, "studies", (main, m) => trialPage(main, Number(m[1]))],
  [/^\/workers\/?$/, "workers", (main) => workersPage(main)],
  [/^\/timeline\/?$/, "timeline", (main) => timelinePage(main)],
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
