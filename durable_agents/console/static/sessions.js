// The sessions list: newest first, a page at a time (the API's `page` / `next_page`), filtered by
// agent and status, refreshed every few seconds while it is shown. The list gives each session's
// row; turns, tokens and cost come from each session's own record (one request per row).

import { api, listAll, withQuery } from "./api.js";
import { ago, badge, cost, errorBox, fill, h, tokens, when } from "./dom.js";

const PAGE = 20; // sessions a page (?limit= asks for another number)
const REFRESH_MS = 5000;
const STATUSES = ["running", "idle", "terminated", "rescheduling"];

export function sessionLink(id) {
  return `/console/sessions/${encodeURIComponent(id)}`;
}

function agentOf(session) {
  const agent = session.agent || {};
  return `${agent.name || agent.id || "?"} v${agent.version ?? "?"}`;
}

async function eachLimited(items, limit, fn) {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  });
  await Promise.all(workers);
}

export async function sessionsPage(ctx) {
  const { main, params, go } = ctx;
  const agentId = params.get("agent_id") || "";
  const status = params.get("status") || "";
  const page = params.get("page") || "";
  const limit = Math.min(100, Number(params.get("limit")) || PAGE);
  const here = (more) => withQuery("/console/sessions", { agent_id: agentId, status, limit: params.get("limit"), ...more });
  const controller = new AbortController();
  ctx.stops.push(() => controller.abort());

  const agentSelect = h("select#filter-agent", { name: "agent_id" }, h("option", { value: "" }, "All agents"));
  const statusSelect = h(
    "select#filter-status",
    { name: "status" },
    h("option", { value: "" }, "All statuses"),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)),
  );
  const apply = () => go(withQuery("/console/sessions", { agent_id: agentSelect.value, status: statusSelect.value, limit: params.get("limit") }));
  agentSelect.addEventListener("change", apply);
  statusSelect.addEventListener("change", apply);
  const body = h("tbody");
  const pager = h("div.pager.row");
  const problem = h("div");
  main.append(
    h("h1", "Sessions"),
    h(
      "div.filters.row",
      h("label", { for: "filter-agent" }, "Agent"),
      agentSelect,
      h("label", { for: "filter-status" }, "Status"),
      statusSelect,
    ),
    problem,
    h(
      "table.list#sessions",
      h("thead", h("tr", ["Session", "Agent", "Status", "Started", "Turns", "Tokens in / out", "Cost"].map((t) => h("th", { scope: "col" }, t)))),
      body,
    ),
    pager,
  );

  listAll("/v1/agents", {}, { signal: controller.signal, limit: 100 })
    .then((agents) => {
      for (const a of agents) agentSelect.append(h("option", { value: a.id, selected: a.id === agentId }, a.name));
    })
    .catch(() => {});

  const rows = new Map(); // session id -> its row's cells
  async function load() {
    const query = { limit, order: "desc", agent_id: agentId, statuses: status ? [status] : undefined, page };
    const listed = await api(withQuery("/v1/sessions", query), { signal: controller.signal });
    problem.replaceChildren();
    const seen = new Set();
    for (const [i, s] of listed.data.entries()) {
      seen.add(s.id);
      let row = rows.get(s.id);
      if (!row) {
        row = {
          tr: h("tr", { dataset: { session: s.id } }),
          status: h("td", { "data-label": "Status" }),
          turns: h("td.num", { "data-label": "Turns" }, "…"),
          tokens: h("td.num", { "data-label": "Tokens" }, "…"),
          cost: h("td.num", { "data-label": "Cost" }, "…"),
        };
        row.tr.append(
          h(
            "td",
            h(`a${s.title ? "" : ".untitled"}`, { href: sessionLink(s.id) }, s.title || "untitled"),
            h("div.muted.mono", s.id),
          ),
          h("td", { "data-label": "Agent" }, agentOf(s)),
          row.status,
          h("td", { "data-label": "Started", title: when(s.created_at) }, ago(s.created_at)),
          row.turns,
          row.tokens,
          row.cost,
        );
        rows.set(s.id, row);
      }
      if (body.children[i] !== row.tr) body.insertBefore(row.tr, body.children[i] || null);
      row.status.replaceChildren(badge(s.status));
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    if (!listed.data.length) body.replaceChildren(h("tr", h("td", { colspan: 7 }, h("span.muted", "No sessions."))));
    fill(
      pager,
      listed.prev_page !== null && listed.prev_page !== undefined
        ? h("a.button", { href: here({ page: listed.prev_page === "0" ? "" : listed.prev_page }) }, "← Newer")
        : null,
      listed.next_page ? h("a.button", { href: here({ page: listed.next_page }) }, "Older →") : null,
    );
    // The details of each row: status now, turns, tokens, cost.
    // Live rows first: an ended session's figures are read by replaying it, the slowest to come.
    const open = listed.data.filter((s) => !rows.get(s.id)?.final);
    open.sort((a, b) => (a.status === "terminated") - (b.status === "terminated"));
    await eachLimited(open, 4, async (s) => {
      try {
        const full = await api(`/v1/sessions/${encodeURIComponent(s.id)}`, { signal: controller.signal });
        const row = rows.get(s.id);
        if (!row) return;
        row.status.replaceChildren(badge(full.status));
        row.turns.textContent = full.stats?.turns ?? "—";
        const u = full.usage || {};
        row.tokens.textContent = `${tokens(u.input_tokens)} / ${tokens(u.output_tokens)}`;
        row.cost.textContent = cost(u);
        row.final = full.status === "terminated"; // it changes no more: not asked again
      } catch (error) {
        if (error.name === "AbortError") throw error;
      }
    });
    main.dataset.loaded = "sessions";
  }

  let timer = null;
  async function loop() {
    try {
      await load();
    } catch (error) {
      if (error.name === "AbortError") return;
      problem.replaceChildren(errorBox(error));
    }
    if (!controller.signal.aborted) timer = setTimeout(loop, REFRESH_MS);
  }
  ctx.stops.push(() => clearTimeout(timer));
  await loop();
}
