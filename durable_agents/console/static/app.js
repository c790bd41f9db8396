// The console's shell: sign-in, navigation, and the router (History API; every /console/* path
// is served index.html, so deep links and reloads land here and are routed the same way).

import { api, key, whenUnauthorized } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import { agentPage, agentsPage, deploymentPage, deploymentsPage, environmentsPage } from "./definitions.js";
import { rawEventsPage, sessionPage } from "./session.js";
import { sessionsPage } from "./sessions.js";

const BASE = "/console";
const main = document.getElementById("main");
const nav = document.getElementById("nav");
let current = null; // the view shown: {stop()} ends its streams and timers

const ROUTES = [
  [/^\/?$/, () => sessionsPage],
  [/^\/sessions\/?$/, () => sessionsPage],
  [/^\/sessions\/([^/]+)\/events\/?$/, (m) => (ctx) => rawEventsPage(ctx, decodeURIComponent(m[1]))],
  [/^\/sessions\/([^/]+)\/?$/, (m) => (ctx) => sessionPage(ctx, decodeURIComponent(m[1]))],
  [/^\/agents\/?$/, () => agentsPage],
  [/^\/agents\/([^/]+)\/?$/, (m) => (ctx) => agentPage(ctx, decodeURIComponent(m[1]))],
  [/^\/environments\/?$/, () => environmentsPage],
  [/^\/deployments\/?$/, () => deploymentsPage],
  [/^\/deployments\/([^/]+)\/?$/, (m) => (ctx) => deploymentPage(ctx, decodeURIComponent(m[1]))],
];

export function go(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  route();
}

function markNav(path) {
  for (const a of nav.querySelectorAll("a")) {
    const section = new URL(a.href).pathname.slice(BASE.length);
    const here = path === section || path.startsWith(section + "/") || (section === "/sessions" && path === "/");
    if (here) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function route() {
  current?.stop?.();
  current = null;
  const path = location.pathname.slice(BASE.length) || "/";
  if (!key.get()) return signIn();
  nav.hidden = false;
  markNav(path);
  clear(main);
  const found = ROUTES.map(([re, make]) => [path.match(re), make]).find(([m]) => m);
  if (!found) {
    main.append(h("h1", "Not found"), h("p", "No page at ", h("code", location.pathname), "."));
    return;
  }
  const view = found[1](found[0]);
  const ctx = { main, params: new URLSearchParams(location.search), go, stops: [] };
  current = { stop: () => ctx.stops.forEach((stop) => stop()) };
  Promise.resolve(view(ctx)).catch((error) => {
    if (error?.name === "AbortError") return;
    console.error(error);
    main.append(errorBox(error));
  });
}

function signIn(message) {
  nav.hidden = true;
  clear(main);
  const input = h("input#api-key", { type: "password", autocomplete: "off", required: true, spellcheck: false });
  const problem = h("p.error#sign-in-error", { role: "alert", hidden: !message }, message || "");
  const submit = h("button.primary", { type: "submit" }, "Sign in");
  const form = h(
    "form.signin.card",
    {
      on: {
        submit: async (event) => {
          event.preventDefault();
          submit.disabled = true;
          problem.hidden = true;
          key.set(input.value.trim());
          try {
            await api("/v1/agents?limit=1"); // a 401 comes back through whenUnauthorized
            route();
          } catch (error) {
            if (error.status !== 401) {
              problem.textContent = `Could not check the key: ${error.message}`;
              problem.hidden = false;
            }
          } finally {
            submit.disabled = false;
          }
        },
      },
    },
    h("h1", "Sign in"),
    h("p.muted", "Use an API key of this server (DA_API_KEY, or one made with da api-key create). It is kept in this browser tab only."),
    h("label", { for: "api-key" }, "API key"),
    input,
    problem,
    submit,
  );
  main.append(form);
  input.focus();
}

whenUnauthorized((error) => {
  key.clear();
  current?.stop?.();
  current = null;
  signIn(`That key was refused: ${error.message}`);
});

document.getElementById("sign-out").addEventListener("click", () => {
  key.clear();
  go(`${BASE}/`);
});

// Links inside the console change the view without a page load (a modified click opens a tab).
document.addEventListener("click", (event) => {
  const a = event.target.closest("a[href]");
  if (!a || a.target || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith(`${BASE}/`) || url.pathname.startsWith(`${BASE}/assets/`)) return;
  event.preventDefault();
  go(url.pathname + url.search);
  main.focus({ preventScroll: true });
});
window.addEventListener("popstate", route);
route();
