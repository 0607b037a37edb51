// Live updates: pollers, a coalescing refresher and a study's event stream.

import { DASH, getJSON, streamUrl } from "./api.js";
import { fmtTime } from "./format.js";
import { clearBanner, setLive, showBanner } from "./status.js";

const LIST_POLL_MS = 5000;
const VERSION_POLL_MS = 3000;
const SSE_RETRY_MS = 30000;

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
export function coalesce(fn, gap) {
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
export function watchStudy(studyId, changed) {
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

// Load now, then every few seconds; says in the indicator how fresh the page is.
export async function keepFresh(load) {
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
