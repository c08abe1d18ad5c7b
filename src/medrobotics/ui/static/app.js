// The dashboard's shell: client-side routes under /api/dashboard, the key prompt.
import { keys } from "./api.js";
import { BASE, el } from "./dom.js";
import * as views from "./views.js";

const view = document.getElementById("view");
const keyButton = document.getElementById("key-button");

const ROUTES = [
  [/^\/?$/, "overview", (ctx) => views.overview(ctx)],
  [/^\/robots\/?$/, "robots", (ctx) => views.robots(ctx)],
  [/^\/robots\/([^/]+)$/, "robots", (ctx, id) => views.robot(ctx, id)],
  [/^\/procedures\/?$/, "procedures", (ctx) => views.procedures(ctx)],
  [/^\/procedures\/([^/]+)$/, "procedures", (ctx, id) => views.procedure(ctx, id)],
];

let current = null; // the page shown: its abort controller and whether it is still shown

function go(path, params) {
  const q = params ? new URLSearchParams(params).toString() : "";
  history.pushState(null, "", BASE + path + (q ? `?${q}` : ""));
  render();
}

function render() {
  if (current) current.controller.abort();
  const controller = new AbortController();
  const ctx = {
    signal: controller.signal,
    params: new URLSearchParams(location.search),
    go,
    stale: () => ctx !== current,
    needKey: (message) => !ctx.stale() && askForKey(keys.get() ? `That key was refused: ${message}` : null),
    controller,
  };
  current = ctx;
  keyButton.hidden = !keys.get();
  const rest = location.pathname.slice(BASE.length);
  for (const [pattern, section, make] of ROUTES) {
    const m = rest.match(pattern);
    if (!m) continue;
    for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === section);
    let id = m[1];
    try {
      id = id === undefined ? undefined : decodeURIComponent(id);
    } catch {
      break;
    }
    document.title = `${section === "overview" ? "Overview" : section[0].toUpperCase() + section.slice(1)} · medrobotics`;
    view.replaceChildren(...make(ctx, id));
    return;
  }
  view.replaceChildren(el("h1", null, "Not found"), el("p", { class: "state empty" }, "No such page. ", el("a", { href: BASE, "data-link": true }, "Back to the overview")));
}

// The key is kept for this tab only (sessionStorage) and sent as a header, never in a URL.
function askForKey(message) {
  if (current) current.controller.abort();
  current = null;
  keys.clear();
  keyButton.hidden = true;
  const input = el("input", { type: "password", name: "key", autocomplete: "off", required: true, "aria-label": "API key" });
  const form = el("form", { class: "card keybox", id: "key-form" },
    el("h2", null, "An API key is needed"),
    el("p", null, message || "This platform requires an API key to read its data. Ask its administrator for one with the api:read scope (phi:read also shows patient fields)."),
    el("label", null, "API key", input),
    el("button", { type: "submit" }, "Use this key"),
    el("p", { class: "note" }, "Kept in this browser tab only, until it closes; sent as an Authorization header."),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    keys.set(input.value.trim());
    render();
  });
  view.replaceChildren(form);
  input.focus();
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-link]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  history.pushState(null, "", a.getAttribute("href"));
  render();
  window.scrollTo(0, 0);
});
window.addEventListener("popstate", render);
keyButton.addEventListener("click", () => askForKey("Enter another key (the one in use is forgotten)."));
render();
