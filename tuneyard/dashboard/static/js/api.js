// HTTP: a bearer token from local storage on every request; a 401 asks for one. No token
// ever goes into a URL.

import { $, h } from "./dom.js";
import { setLive, showBanner } from "./status.js";

export const API = "/api/v1";
export const DASH = `${API}/dashboard`;
const TOKEN_KEY = "tuneyard.token";

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

async function request(path, as = "json", method = "GET", body = undefined) {
  const headers = { Accept: as === "json" ? "application/json" : "*/*" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
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

export const getJSON = (path) => request(path, "json");

// A change (POST, PATCH, DELETE) with a JSON body; its errors are thrown with the server's
// detail, for the caller to show.
export const sendJSON = (path, method, body) => request(path, "json", method, body);

// What the stored token may do ({scope, grants: [...]}), asked once per page.
let who = null;
export function whoAmI() {
  if (!who) who = request(`${API}/whoami`, "json");
  return who;
}

export async function canWrite() {
  try {
    const me = await whoAmI();
    return (me.grants || []).includes("write");
  } catch {
    return false;
  }
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

// An EventSource sends no headers, and a token in its URL would end up in logs: it opens
// the stream with a ticket (one study, a minute) that the token buys, a new one each time.
export async function streamUrl(base) {
  const t = await request(`${base}/stream-ticket`, "json", "POST");
  return `${base}/events?ticket=${encodeURIComponent(t.ticket)}`;
}

// A plain link can't carry the token header: fetch the file and hand the browser a blob.
export function authedLink(href, label, filename) {
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

export function setupAuth() {
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
