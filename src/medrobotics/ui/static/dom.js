// Small DOM helpers: elements built with text nodes (data never goes through innerHTML).
import { ApiError } from "./api.js";

export const BASE = "/api/dashboard";

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function link(path, text, params) {
  const q = params ? new URLSearchParams(params).toString() : "";
  return el("a", { href: BASE + path + (q ? `?${q}` : ""), "data-link": true }, text);
}

// A link to a record named by its (long) identifier, shortened; the full one in the tooltip.
export function idLink(path, id) {
  const a = link(path, id.length > 12 ? `${id.slice(0, 8)}…` : id);
  a.title = id;
  return a;
}

export const num = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
export const money = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", maximumFractionDigits: 0 });
export const pct = (v) => (v == null ? "–" : `${(v * 100).toFixed(1)} %`);
export const fmt = (v) => (v == null ? "–" : typeof v === "number" ? num.format(v) : String(v));

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

export function badge(value) {
  return value ? el("span", { class: `badge ${value}` }, value.replace("_", " ")) : "–";
}

export function tiles(items) {
  return el("div", { class: "tiles" }, items.map(([k, v]) => el("div", { class: "tile" }, el("div", { class: "v" }, v), el("div", { class: "k" }, k))));
}

export function facts(pairs) {
  return el("dl", { class: "facts" }, pairs.flatMap(([k, v]) => [el("dt", null, k), el("dd", null, v ?? "–")]));
}

export function table(columns, rows) {
  const head = el("tr", null, columns.map((c) => el("th", { class: c.num ? "num" : null }, c.label)));
  const body = rows.map((r) => el("tr", null, columns.map((c) => el("td", { class: c.num ? "num" : null }, c.cell(r)))));
  return el("div", { class: "scroll" }, el("table", null, el("thead", null, head), el("tbody", null, body)));
}

export const empty = (text) => el("p", { class: "state empty" }, text);

// A card whose body loads on its own: a loading state, then the content, an empty state or
// the error (with a retry). A refused key (401) goes to the page's key prompt instead.
export function card(title, fill, { wide = false, ctx } = {}) {
  const body = el("div", { class: "body" });
  const node = el("section", { class: wide ? "card wide" : "card" }, el("h2", null, title), body);
  const run = async () => {
    body.replaceChildren(el("p", { class: "state loading" }, "Loading…"));
    node.dataset.state = "loading";
    try {
      await fill(body);
      if (ctx && ctx.stale()) return;
      node.dataset.state = "ready";
    } catch (err) {
      if (err.name === "AbortError" || (ctx && ctx.stale())) return;
      if (err instanceof ApiError && err.status === 401 && ctx) {
        ctx.needKey(err.message);
        return;
      }
      node.dataset.state = "error";
      body.replaceChildren(
        el("p", { class: "state error" }, err instanceof ApiError ? err.message : "Something went wrong showing this part."),
        el("button", { type: "button", class: "secondary", onclick: run }, "Try again"),
      );
      if (!(err instanceof ApiError)) console.warn("dashboard:", err.message);
    }
  };
  run();
  return node;
}
