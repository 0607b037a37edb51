// Formatting values for people, and the names of states.

export const TRIAL_STATES = ["queued", "running", "paused", "completed", "stopped", "failed"];
export const ACTIVE_TRIAL = new Set(["queued", "running", "paused"]);

export function fmtValue(v) {
  if (v === null || v === undefined || (typeof v === "number" && Number.isNaN(v))) return "—";
  if (typeof v !== "number") return String(v);
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "−∞";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-3) return v.toExponential(3).replace(/\.?0+e/, "e");
  return String(Number(v.toPrecision(5)));
}

export function fmtInt(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
}

export function fmtAmount(v) {
  if (v === null || v === undefined) return "—";
  return Number.isInteger(v) ? fmtInt(v) : fmtValue(v);
}

export function fmtParam(v) {
  if (typeof v === "number") return fmtValue(v);
  if (v === null || v === undefined) return "—";
  return typeof v === "string" ? v : JSON.stringify(v);
}

export function fmtDuration(s) {
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

export function secondsSince(iso) {
  if (!iso) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : Math.max(0, (Date.now() - t) / 1000);
}

export function fmtAgo(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 5) return "just now";
  return `${fmtDuration(seconds).replace(/\.\d s$/, " s")} ago`;
}

export function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (n) => String(n).padStart(2, "0");
  return (
    `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
  );
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}
export function directionArrow(direction) {
  return direction === "maximize" ? "↑ maximize" : "↓ minimize";
}
