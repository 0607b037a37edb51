// The page's status: the connection indicator in the top bar and the error banner.

import { $, h } from "./dom.js";

export function setLive(mode, label, title) {
  const el = $("#live");
  el.dataset.mode = mode;
  el.title = title || "";
  $(".live-label", el).textContent = label;
}

export function showBanner(message) {
  const main = $("#main");
  let b = $(".banner", main);
  if (!b) {
    b = h("div", { class: "banner", role: "alert", "data-testid": "error-banner" });
    main.prepend(b);
  }
  b.textContent = message;
}

export function clearBanner() {
  const b = $("#main .banner");
  if (b) b.remove();
}
