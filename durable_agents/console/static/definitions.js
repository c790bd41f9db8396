// Agents (with their versions: the definition of each, the diff between two), environments, and
// deployments (schedules: next runs, last result, pause / resume / run now).

import { api, listAll, withQuery } from "./api.js";
import { ago, badge, clear, errorBox, h, pretty, when } from "./dom.js";
import { sessionLink } from "./sessions.js";

const enc = encodeURIComponent;

function table(id, headings, rows, empty) {
  return h(
    `table.list#${id}`,
    h("thead", h("tr", headings.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", rows.length ? rows : h("tr", h("td", { colspan: headings.length }, h("span.muted", empty)))),
  );
}

function modelOf(agent) {
  return typeof agent.model === "string" ? agent.model : agent.model?.id || "?";
}

export async function agentsPage({ main }) {
  const agents = await listAll("/v1/agents", { include_archived: true }, { limit: 100 });
  main.append(
    h("h1", "Agents"),
    table(
      "agents",
      ["Agent", "Model", "Version", "Updated"],
      agents.map((a) =>
        h(
          "tr",
          h("td", h("a", { href: `/console/agents/${enc(a.id)}` }, a.name), a.archived_at ? h("span.muted", " (archived)") : null, h("div.muted.mono", a.id)),
          h("td", { "data-label": "Model" }, modelOf(a)),
          h("td.num", { "data-label": "Version" }, String(a.version)),
          h("td", { "data-label": "Updated", title: when(a.updated_at) }, ago(a.updated_at)),
        ),
      ),
      "No agents yet (create one with the API: client.beta.agents.create).",
    ),
  );
  main.dataset.loaded = "agents";
}

/** What an agent version is, without what changes with every version. */
function definitionOf(version) {
  const { id, type, version: _v, created_at, updated_at, archived_at, ...definition } = version;
  return definition;
}

/** A line diff (longest common subsequence): [[" " | "+" | "-", line], ...]. */
export function diffLines(a, b) {
  const n = a.length;
  const m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      out.push([" ", a[i]]);
      i++;
      j++;
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) out.push(["-", a[i++]]);
    else out.push(["+", b[j++]]);
  }
  while (i < n) out.push(["-", a[i++]]);
  while (j < m) out.push(["+", b[j++]]);
  return out;
}

export async function agentPage({ main, params, go }, agentId) {
  const versions = await listAll(`/v1/agents/${enc(agentId)}/versions`, {}, { limit: 100 });
  versions.sort((x, y) => x.version - y.version);
  const latest = versions[versions.length - 1];
  const shown = Number(params.get("version")) || latest.version;
  const from = Number(params.get("diff")) || null;
  const byNumber = new Map(versions.map((v) => [v.version, v]));
  const link = (q) => withQuery(`/console/agents/${enc(agentId)}`, q);

  const pickA = h("select#diff-a", { "aria-label": "Diff from version" }, versions.map((v) => h("option", { value: v.version, selected: v.version === (from || Math.max(1, shown - 1)) }, `v${v.version}`)));
  const pickB = h("select#diff-b", { "aria-label": "Diff to version" }, versions.map((v) => h("option", { value: v.version, selected: v.version === shown }, `v${v.version}`)));
  const body = h("div");
  main.append(
    h("h1", latest.name),
    h("p.muted.mono", agentId),
    h("h2", "Versions"),
    h("div.versions", versions.map((v) => h("a.button", { href: link({ version: v.version }), "aria-current": v.version === shown && !from ? "page" : null }, `v${v.version}`, h("span.muted", ` ${ago(v.updated_at)}`)))),
    h(
      "form.row",
      { on: { submit: (e) => { e.preventDefault(); go(link({ version: pickB.value, diff: pickA.value })); } } },
      h("span", "Compare"),
      pickA,
      h("span", "with"),
      pickB,
      h("button", { type: "submit" }, "Show the diff"),
    ),
    body,
  );
  const version = byNumber.get(shown);
  if (!version) {
    body.append(errorBox(`agent ${agentId} has no version ${shown}`));
    return;
  }
  if (from && byNumber.has(from)) {
    const a = pretty(definitionOf(byNumber.get(from))).split("\n");
    const b = pretty(definitionOf(version)).split("\n");
    const lines = diffLines(a, b);
    const changed = lines.filter(([k]) => k !== " ").length;
    body.append(
      h("h2", `Diff v${from} → v${shown}`, h("span.muted", ` (${changed} lines changed)`)),
      h("div.diff#diff", lines.map(([kind, line]) => h(`div${kind === "+" ? ".add" : kind === "-" ? ".del" : ""}`, `${kind} ${line}`))),
    );
  } else {
    body.append(
      h("h2", `Definition of v${shown}`, h("span.muted", ` (${when(version.updated_at)})`)),
      h("pre.card#definition", pretty(definitionOf(version))),
    );
  }
  main.dataset.loaded = "agent";
}

export async function environmentsPage({ main }) {
  const environments = await listAll("/v1/environments", { include_archived: true }, { limit: 100 });
  main.append(
    h("h1", "Environments"),
    table(
      "environments",
      ["Environment", "Networking", "Created", "Definition"],
      environments.map((e) =>
        h(
          "tr",
          h("td", h("b", e.name), e.archived_at ? h("span.muted", " (archived)") : null, h("div.muted.mono", e.id)),
          h("td", { "data-label": "Networking" }, e.config?.networking?.type || "—", e.config?.networking?.allowed_hosts?.length ? h("div.muted", e.config.networking.allowed_hosts.join(", ")) : null),
          h("td", { "data-label": "Created", title: when(e.created_at) }, ago(e.created_at)),
          h("td", h("details", h("summary", "config"), h("pre", pretty(e.config)))),
        ),
      ),
      "No environments yet.",
    ),
  );
  main.dataset.loaded = "environments";
}

function scheduleText(d) {
  return d.schedule ? `${d.schedule.expression} (${d.schedule.timezone})` : "manual only";
}

/** The newest run of a deployment and how its session ended (or stands). */
async function lastResult(deploymentId, signal) {
  const runs = await api(withQuery("/v1/deployment_runs", { deployment_id: deploymentId, limit: 1 }), { signal });
  const run = runs.data[0];
  if (!run) return h("span.muted", "no runs yet");
  let status = null;
  try {
    status = (await api(`/v1/sessions/${enc(run.session_id)}`, { signal })).status;
  } catch {
    status = "unknown";
  }
  return h("span", badge(status), " ", h("a", { href: sessionLink(run.session_id) }, ago(run.created_at)));
}

function actions(d, done, problem) {
  const act = async (what) => {
    problem.replaceChildren();
    try {
      const got = await api(`/v1/deployments/${enc(d.id)}/${what}`, { body: {} });
      done(what, got);
    } catch (error) {
      problem.replaceChildren(errorBox(error));
    }
  };
  return h(
    "div.row",
    d.status === "paused"
      ? h("button", { type: "button", on: { click: () => act("unpause") } }, "Resume")
      : h("button", { type: "button", on: { click: () => act("pause") } }, "Pause"),
    h("button.primary", { type: "button", on: { click: () => act("run") } }, "Run now"),
  );
}

export async function deploymentsPage(ctx) {
  const { main } = ctx;
  const controller = new AbortController();
  ctx.stops.push(() => controller.abort());
  const problem = h("div");
  const holder = h("div");
  main.append(h("h1", "Deployments"), problem, holder);
  const render = async () => {
    const deployments = await listAll("/v1/deployments", {}, { limit: 100, signal: controller.signal });
    const rows = deployments.map((d) => {
      const last = h("td", { "data-label": "Last run" }, "…");
      lastResult(d.id, controller.signal).then((el) => last.replaceChildren(el), () => last.replaceChildren("—"));
      return h(
        "tr",
        { dataset: { deployment: d.id } },
        h("td", h("a", { href: `/console/deployments/${enc(d.id)}` }, d.name), h("div.muted.mono", d.id)),
        h("td", { "data-label": "Schedule" }, scheduleText(d)),
        h("td", { "data-label": "Status" }, badge(d.status)),
        h("td", { "data-label": "Next runs" }, (d.schedule?.upcoming_runs_at || []).slice(0, 2).map((t) => h("div", when(t)))),
        last,
        h("td", actions(d, (what, got) => {
          if (what === "run") ctx.go(sessionLink(got.session_id));
          else render().catch((error) => problem.replaceChildren(errorBox(error)));
        }, problem)),
      );
    });
    clear(holder).append(table("deployments", ["Deployment", "Schedule", "Status", "Next runs", "Last run", ""], rows, "No deployments yet."));
    main.dataset.loaded = "deployments";
  };
  await render();
}

export async function deploymentPage(ctx, deploymentId) {
  const { main } = ctx;
  const controller = new AbortController();
  ctx.stops.push(() => controller.abort());
  const problem = h("div");
  const holder = h("div");
  main.append(problem, holder);
  const render = async () => {
    const d = await api(`/v1/deployments/${enc(deploymentId)}`, { signal: controller.signal });
    const runs = await api(withQuery("/v1/deployment_runs", { deployment_id: deploymentId, limit: 20 }), { signal: controller.signal });
    clear(holder).append(
      h("h1", d.name),
      h("p.muted.mono", d.id),
      h("div.facts", h("span", "schedule ", h("b", scheduleText(d))), h("span", "status ", badge(d.status)), h("span", "agent ", h("a", { href: `/console/agents/${enc(d.agent.id)}` }, `${d.agent.id} v${d.agent.version}`))),
      actions(d, (what, got) => {
        if (what === "run") ctx.go(sessionLink(got.session_id));
        else render().catch((error) => problem.replaceChildren(errorBox(error)));
      }, problem),
      h("h2", "Next runs"),
      (d.schedule?.upcoming_runs_at || []).length ? h("ul", d.schedule.upcoming_runs_at.map((t) => h("li", when(t)))) : h("p.muted", d.status === "paused" ? "paused" : "none"),
      h("h2", "Runs"),
      table(
        "runs",
        ["Started", "Trigger", "Session"],
        runs.data.map((r) =>
          h("tr", h("td", when(r.created_at)), h("td", { "data-label": "Trigger" }, r.trigger_context?.type || "—"), h("td", h("a.mono", { href: sessionLink(r.session_id) }, r.session_id))),
        ),
        "No runs yet.",
      ),
      h("h2", "First message"),
      h("pre.card", (d.initial_events || []).map((e) => (e.content || []).map((b) => b.text).join("\n")).join("\n\n")),
    );
    main.dataset.loaded = "deployment";
  };
  await render();
}
