// A note and tags on a study or a trial: shown, and editable with a token of write scope
// (PATCH {path} with {note, tags}). The form is not overwritten by a refresh while it holds
// unsaved edits; an error from the API is shown under it.

import { canWrite, sendJSON } from "./api.js";
import { h } from "./dom.js";
import { card } from "./widgets.js";

// "a, b c" -> ["a", "b", "c"]: tags are separated by commas or spaces.
export function parseTags(text) {
  return text
    .split(/[\s,]+/)
    .map((t) => t.trim())
    .filter(Boolean);
}

export function tagChips(tags, hrefOf, testid = "tags") {
  return h(
    "span",
    { class: "chips tags", "data-testid": testid },
    (tags || []).map((t) =>
      hrefOf
        ? h("a", { class: "chip tag", href: hrefOf(t), "data-tag": t, onclick: stop }, t)
        : h("span", { class: "chip tag", "data-tag": t }, t),
    ),
  );
}

function stop(ev) {
  ev.stopPropagation();
}

// A card with the note and tags of what `path` names ("study" or "trial" in `what`).
export function notesCard({ path, what, cls }) {
  const note = h("textarea", {
    class: "note-input",
    rows: 3,
    maxlength: 10000,
    placeholder: `A note on this ${what}: what you tried, what you saw…`,
    "data-testid": "note-input",
    "aria-label": `Note on this ${what}`,
  });
  const tags = h("input", {
    type: "text",
    class: "tags-input",
    placeholder: "tags, separated by commas or spaces",
    "data-testid": "tags-input",
    "aria-label": `Tags of this ${what}`,
  });
  const shown = h("div", { class: "tags-shown" });
  const save = h(
    "button",
    { type: "submit", class: "btn btn-primary", "data-testid": "notes-save" },
    "Save",
  );
  const status = h("span", { class: "meta", "data-testid": "notes-status", role: "status" });
  const error = h("p", {
    class: "control-error",
    role: "alert",
    "data-testid": "notes-error",
    hidden: true,
  });
  const form = h(
    "form",
    { class: "notes-form", "data-testid": "notes-form" },
    note,
    h("div", { class: "notes-row" }, tags, save, status),
    error,
  );
  let dirty = false;
  let writable = null;
  const edited = () => {
    dirty = true;
    status.textContent = "unsaved";
  };
  note.addEventListener("input", edited);
  tags.addEventListener("input", edited);

  function render() {
    for (const el of [note, tags, save]) el.disabled = !writable;
    form.dataset.writable = String(Boolean(writable));
    if (writable === false) status.textContent = "read-only token: editing needs write scope";
  }

  function show(d) {
    shown.replaceChildren(tagChips(d.tags, null, `${what}-tags`));
    if (dirty) return;
    note.value = d.note || "";
    tags.value = (d.tags || []).join(", ");
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!writable) return;
    save.disabled = true;
    error.hidden = true;
    status.textContent = "saving…";
    try {
      const out = await sendJSON(path, "PATCH", { note: note.value, tags: parseTags(tags.value) });
      dirty = false;
      show(out);
      status.textContent = "saved";
    } catch (e) {
      error.textContent = `Couldn't save: ${e.message}`;
      error.hidden = false;
      status.textContent = "not saved";
    } finally {
      save.disabled = !writable;
    }
  });

  canWrite().then((w) => {
    writable = w;
    render();
  });
  render();
  const el = card({
    title: "Notes and tags",
    testid: "notes",
    meta: shown,
    body: h("div", { class: "card-body" }, form),
    cls: cls || "span-12",
  });
  return { el, show };
}
