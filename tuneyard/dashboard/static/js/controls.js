// A study's controls: pause, resume, stop and delete, through the public API
// (PATCH /studies/{id}, DELETE /studies/{id}). They need a token of write scope: with a
// read-only one they are shown disabled, saying so. Stop and delete ask first; an error from
// the API is shown next to the buttons.

import { API, canWrite, sendJSON } from "./api.js";
import { h } from "./dom.js";

// What each button does, and in which of the study's states it applies.
const ACTIONS = [
  { key: "pause", label: "Pause", to: "paused", when: ["running"] },
  { key: "resume", label: "Resume", to: "running", when: ["paused", "failing"] },
  {
    key: "stop",
    label: "Stop",
    to: "stopped",
    when: ["running", "paused", "failing"],
    ask: (name) =>
      `Stop study "${name}"? Its paused and queued trials end now and its running ones at ` +
      "their next report; a stopped study can't be resumed.",
  },
  {
    key: "delete",
    label: "Delete",
    to: null,
    when: null, // any state
    ask: (name) => `Delete study "${name}" with all its trials, reports and logs? This can't be undone.`,
  },
];

export function studyControls(studyId, onChanged) {
  const error = h("p", {
    class: "control-error",
    role: "alert",
    "data-testid": "controls-error",
    hidden: true,
  });
  const hint = h(
    "span",
    { class: "muted control-hint", "data-testid": "controls-readonly", hidden: true },
    "Read-only token: pausing, stopping and deleting need one of write scope.",
  );
  const buttons = new Map(
    ACTIONS.map((a) => [
      a.key,
      h(
        "button",
        {
          type: "button",
          class: `btn${a.key === "delete" || a.key === "stop" ? " btn-danger" : ""}`,
          "data-testid": `study-${a.key}`,
          onclick: () => act(a),
        },
        a.label,
      ),
    ]),
  );
  const el = h(
    "div",
    { class: "study-controls", "data-testid": "study-controls" },
    h("div", { class: "control-buttons" }, [...buttons.values()], hint),
    error,
  );
  let study = null;
  let writable = null; // unknown until the server says
  let busy = false;

  function render() {
    el.dataset.writable = String(Boolean(writable));
    el.dataset.state = study ? study.state : "";
    hint.hidden = writable !== false;
    for (const a of ACTIONS) {
      const b = buttons.get(a.key);
      b.hidden = !study || (a.when !== null && !a.when.includes(study.state));
      b.disabled = !writable || busy;
      b.title = writable ? "" : "needs a token of write scope";
    }
  }

  async function act(a) {
    if (!study || busy || !writable) return;
    if (a.ask && !window.confirm(a.ask(study.name))) return;
    busy = true;
    error.hidden = true;
    render();
    try {
      if (a.to === null) {
        await sendJSON(`${API}/studies/${studyId}`, "DELETE");
        location.assign("/");
        return;
      }
      const out = await sendJSON(`${API}/studies/${studyId}`, "PATCH", { state: a.to });
      study = { ...study, state: out.state };
      onChanged();
    } catch (e) {
      error.textContent = `Couldn't ${a.key} the study: ${e.message}`;
      error.hidden = false;
    } finally {
      busy = false;
      render();
    }
  }

  canWrite().then((w) => {
    writable = w;
    render();
  });
  render();
  return {
    el,
    update(d) {
      study = { name: d.name, state: d.state };
      render();
    },
  };
}
