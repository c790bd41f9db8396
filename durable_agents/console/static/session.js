// A session as a conversation: its events (listed, then streamed live with previews of the
// model's text), tool calls with their input and output, approvals and custom tool results
// answered from the page, errors, compactions, subagents as nested threads; and its raw events.

import { api, listAll, stream, withQuery } from "./api.js";
import { badge, cost, errorBox, fill, h, pretty, tokens, when } from "./dom.js";

const LONG_CHARS = 1200; // output longer than this (or than LONG_LINES lines) starts collapsed
const LONG_LINES = 16;
const TRUNCATED = /\[output truncated[^\]]*\]/;
const RECONNECT_MS = 1000; // the first reconnect's wait; it doubles up to MAX_RECONNECT_MS
const MAX_RECONNECT_MS = 30000;
const OPEN_ATTEMPTS = 4; // a page's first read, tried this often (1, 2, 4 s apart) before it shows the error
const CATCH_UP = 100; // newest events read again once the stream is open

const enc = encodeURIComponent;

function textOf(content) {
  return (content || []).filter((b) => b.type === "text").map((b) => b.text).join("\n");
}

function isLong(text) {
  return text.length > LONG_CHARS || text.split("\n").length > LONG_LINES;
}

/** fn(), tried again (1, 2, 4 s apart) when the server could not read the session just then (a
 * 5xx: Temporal slow to answer a query) or could not be reached; other errors are the caller's. */
async function retrying(fn) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      const transient = error?.name !== "AbortError" && (!error?.status || error.status >= 500);
      if (!transient || attempt >= OPEN_ATTEMPTS - 1) throw error;
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS * 2 ** attempt));
    }
  }
}

/** Whether the page is scrolled to (near) its end: new events keep it there, else leave it be. */
function atBottom() {
  return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 120;
}

function scrollToEnd() {
  window.scrollTo({ top: document.documentElement.scrollHeight });
}

/** One tool call: its name and input, then its output, and while it waits, what answers it. */
class ToolCard {
  constructor(convo, event) {
    this.convo = convo;
    this.id = event.id;
    this.custom = event.type === "agent.custom_tool_use";
    const name = event.mcp_server_name ? `${event.mcp_server_name} / ${event.name}` : event.name;
    this.state = h("span.state", "running…");
    this.controls = h("div.controls");
    this.output = h("div.output");
    const input = event.input || {};
    const shown = typeof input.command === "string" && Object.keys(input).length === 1 ? input.command : pretty(input);
    const inputBlock = isLong(shown)
      ? h("details", h("summary", `input (${shown.length} characters)`), h("pre.io", shown))
      : h("pre.io.input", shown);
    this.el = h(
      "div.tool",
      { dataset: { toolUseId: event.id }, role: "group", "aria-label": `tool call ${event.name}` },
      h("div.head", h("span.name", name), this.custom ? h("span.muted", "custom tool") : null, this.state),
      inputBlock,
      this.output,
      this.controls,
    );
  }

  result(event) {
    const text = textOf(event.content);
    this.el.classList.remove("waiting");
    this.controls.replaceChildren();
    this.el.classList.toggle("error", !!event.is_error);
    if (!this.el.classList.contains("denied")) this.state.textContent = event.is_error ? "error" : "done";
    const note = text.match(TRUNCATED);
    const pre = h("pre.io.result", text || "(no output)");
    const noteEl = note ? h("div.truncated", note[0]) : null;
    if (isLong(text)) {
      const lines = text.split("\n").length;
      const label = `output: ${lines} lines, ${text.length} characters${note ? ", truncated" : ""}`;
      fill(this.output, h("details", h("summary", label), pre), noteEl);
    } else {
      fill(this.output, pre, noteEl);
    }
  }

  wait() {
    if (this.el.classList.contains("answered")) return;
    this.el.classList.add("waiting");
    this.state.textContent = this.custom ? "waiting for its result" : "waiting for approval";
    if (!this.convo.steer) return;
    this.controls.replaceChildren(this.custom ? this.resultForm() : this.approvalForm());
  }

  approvalForm() {
    const reason = h("input", { type: "text", placeholder: "Reason (sent to the model when denied)", "aria-label": "Reason for denying" });
    const problem = h("div");
    const answer = async (result) => {
      const event = { type: "user.tool_confirmation", tool_use_id: this.id, result };
      if (result === "deny") event.deny_message = reason.value.trim() || "denied from the console";
      await this.convo.sendFrom(problem, [event], this.controls);
    };
    return h(
      "form.approval",
      { on: { submit: (e) => { e.preventDefault(); answer("deny"); } } },
      h("div.row",
        h("button.primary", { type: "button", on: { click: () => answer("allow") } }, "Allow"),
        reason,
        h("button.danger", { type: "submit" }, "Deny")),
      problem,
    );
  }

  resultForm() {
    const text = h("textarea", { rows: 3, "aria-label": "Tool result", placeholder: "The result the model gets" });
    const isError = h("input", { type: "checkbox" });
    const problem = h("div");
    return h(
      "form.custom-result",
      {
        on: {
          submit: async (e) => {
            e.preventDefault();
            const event = {
              type: "user.custom_tool_result",
              custom_tool_use_id: this.id,
              content: [{ type: "text", text: text.value }],
              is_error: isError.checked,
            };
            await this.convo.sendFrom(problem, [event], this.controls);
          },
        },
      },
      text,
      h("div.row", h("label", isError, "It is an error"), h("button.primary", { type: "submit" }, "Send result")),
      problem,
    );
  }

  confirmed(event) {
    this.el.classList.remove("waiting");
    this.el.classList.add("answered");
    this.controls.replaceChildren();
    if (event.result === "deny") {
      this.el.classList.add("denied");
      this.state.textContent = `denied: ${event.deny_message || ""}`;
    } else {
      this.state.textContent = "allowed, running…";
    }
  }
}

/** The events of a session (or of one of its threads) as a conversation. */
export class Conversation {
  constructor({ session, thread = null, steer = false, onChange = () => {} }) {
    this.session = session;
    this.thread = thread;
    this.steer = steer;
    this.onChange = onChange; // told of events that change the session's state (status, usage)
    this.el = h("div.conversation", { "aria-live": "polite", "aria-relevant": "additions" });
    this.target = this.el;
    this.seen = new Set();
    this.tools = new Map();
    this.messages = new Map();
    this.threads = new Map();
    this.terminated = false;
    this.count = 0;
  }

  get base() {
    const s = `/v1/sessions/${enc(this.session)}`;
    return this.thread ? `${s}/threads/${enc(this.thread)}` : s;
  }

  /** Many events at once (a backlog): built off the page, attached in one go. */
  addMany(events) {
    this.target = document.createDocumentFragment();
    for (const e of events) this.add(e);
    this.el.append(this.target);
    this.target = this.el;
  }

  put(el) {
    const follow = this.target === this.el && this.live && !this.thread && atBottom();
    this.target.append(el);
    if (follow) scrollToEnd();
    return el;
  }

  add(e) {
    if (e.id && this.seen.has(e.id)) return;
    if (e.id) this.seen.add(e.id);
    this.count++;
    switch (e.type) {
      case "user.message":
        this.put(h("div.msg.user", { dataset: { eventId: e.id } }, h("div.who", "user"), h("div.text", textOf(e.content))));
        break;
      case "event_start":
        if (e.event?.type !== "agent.message") break;
        if (!this.messages.has(e.event.id)) this.agentMessage(e.event.id, "", true);
        else if (this.messages.get(e.event.id).classList.contains("streaming")) {
          this.messages.get(e.event.id).querySelector(".text").textContent = ""; // a retried call starts again
        }
        break;
      case "event_delta": {
        const m = this.messages.get(e.event_id) || this.agentMessage(e.event_id, "", true);
        if (m.classList.contains("streaming")) {
          const follow = this.live && !this.thread && atBottom();
          m.querySelector(".text").append(e.delta?.content?.text || "");
          if (follow) scrollToEnd();
        }
        break;
      }
      case "agent.message": {
        const m = this.messages.get(e.id);
        if (m) {
          m.querySelector(".text").textContent = textOf(e.content);
          m.classList.remove("streaming");
        } else this.agentMessage(e.id, textOf(e.content), false);
        break;
      }
      case "span.model_request_end": {
        const u = e.model_usage || {};
        this.put(h("div.usage", `model call: ${tokens(u.input_tokens)} in · ${tokens(u.output_tokens)} out`));
        this.onChange(e);
        break;
      }
      case "agent.tool_use":
      case "agent.mcp_tool_use":
      case "agent.custom_tool_use": {
        const card = new ToolCard(this, e);
        this.tools.set(e.id, card);
        this.put(card.el);
        break;
      }
      case "agent.tool_result":
        this.tools.get(e.tool_use_id)?.result(e);
        break;
      case "agent.mcp_tool_result":
        this.tools.get(e.mcp_tool_use_id)?.result(e);
        break;
      case "user.custom_tool_result":
        this.tools.get(e.custom_tool_use_id)?.result(e);
        this.tools.get(e.custom_tool_use_id)?.el.classList.add("answered");
        break;
      case "user.tool_confirmation":
        this.tools.get(e.tool_use_id)?.confirmed(e);
        break;
      case "user.interrupt":
        this.cutShort("interrupted");
        this.put(h("div.line", "Interrupted by the user"));
        break;
      case "session.status_idle":
        this.cutShort("stopped");
        if (e.stop_reason?.type === "requires_action") for (const id of e.stop_reason.event_ids || []) this.tools.get(id)?.wait();
        else if (e.stop_reason?.type === "retries_exhausted") this.put(h("div.line", "The model call failed after its retries"));
        else if (e.stop_reason?.type === "budget_reached") this.put(h("div.line", "The session's budget was reached"));
        this.onChange(e);
        break;
      case "session.status_running":
        this.onChange(e);
        break;
      case "session.status_terminated":
        this.terminated = true;
        this.put(h("div.line", "Session ended"));
        this.onChange(e);
        break;
      case "session.error":
        this.put(h("div.errorbox", { role: "note" }, h("b", e.error?.type || "error"), ": ", e.error?.message || ""));
        break;
      case "agent.thread_context_compacted":
        this.put(this.compaction(e));
        break;
      case "session.thread_created":
        this.put(this.threadBlock(e));
        break;
      case "session.thread_status_terminated":
        this.threads.get(e.session_thread_id)?.ended();
        break;
      default:
        break; // span.model_request_start and others show nothing of their own
    }
  }

  /** Replies still streaming when the turn ends without them (an interrupt, a failed call) stop there. */
  cutShort(why) {
    for (const m of this.el.querySelectorAll(".msg.streaming")) {
      m.classList.remove("streaming");
      m.append(h("div.usage", `(${why} here)`));
    }
  }

  agentMessage(id, text, streaming) {
    const m = h(`div.msg.agent${streaming ? ".streaming" : ""}`, { dataset: { eventId: id } }, h("div.who", "agent"), h("div.text", text));
    this.messages.set(id, m);
    return this.put(m);
  }

  compaction(e) {
    const covers = e.covers || {};
    const range = covers.first_offset === undefined ? "" : `log events ${covers.first_offset}–${covers.last_offset}`;
    const raw =
      covers.from_page && this.thread === null
        ? h("a.raw", { href: withQuery(`/console/sessions/${enc(this.session)}/events`, { page: covers.from_page, limit: covers.events }) }, `the ${covers.events} raw events it covers`)
        : null;
    return h(
      "div.compaction",
      h("div", h("b", "Context compacted"), e.method ? ` (${e.method})` : "", range ? ` · ${range} · ` : " ", raw),
      e.reason ? h("div.muted", e.reason) : null,
      e.summary ? h("details", h("summary", "summary"), h("pre", e.summary)) : null,
    );
  }

  threadBlock(e) {
    const tid = e.session_thread_id;
    const status = h("span.badge.running", "running");
    const nested = new Conversation({ session: this.session, thread: tid });
    let feed = null;
    const block = h("details.thread", { dataset: { thread: tid } }, h("summary", `subagent ${e.agent_name || ""} `, h("span.muted.mono", tid), " ", status), nested.el);
    const load = () => {
      if (feed) return;
      feed = new Feed(nested, this.signal, { follow: !block.done });
      feed.open().catch((error) => error?.name !== "AbortError" && nested.el.append(errorBox(error)));
    };
    block.addEventListener("toggle", () => block.open && load());
    block.ended = () => {
      block.done = true;
      status.className = "badge terminated";
      status.textContent = "done";
    };
    nested.signal = this.signal;
    this.threads.set(tid, block);
    if (this.live) queueMicrotask(() => { block.open = true; }); // a subagent that starts now is shown as it works
    return block;
  }

  /** Send events to the session; problems are shown in `where`; `busy` is disabled meanwhile. */
  async sendFrom(where, events, busy) {
    const buttons = busy ? [...busy.querySelectorAll("button, input, textarea")] : [];
    buttons.forEach((b) => (b.disabled = true));
    where.replaceChildren();
    try {
      await api(`/v1/sessions/${enc(this.session)}/events`, { body: { events } });
      return true;
    } catch (error) {
      where.replaceChildren(errorBox(error));
      buttons.forEach((b) => (b.disabled = false));
      return false;
    }
  }
}

/** Feeds a conversation: opens its stream and lists the backlog at once, then reads the newest
 * events again once the stream is open (so nothing falls between the two), then hands on what the
 * stream brings; reconnects while the session goes on. */
class Feed {
  /** follow: false for what has ended (a finished subagent's thread): its events listed, no stream. */
  constructor(convo, signal, { follow = true } = {}) {
    this.convo = convo;
    this.signal = signal;
    this.following = follow;
  }

  /** start(), tried again a few times if the server could not read the session just then. */
  open() {
    return retrying(() => this.start());
  }

  async start() {
    const { convo } = this;
    convo.signal = this.signal;
    const events = `${convo.base}/events`;
    if (!this.following) {
      const listed = await listAll(events, {}, { signal: this.signal, onPage: (page) => convo.addMany(page) });
      convo.terminated = true;
      return listed.length;
    }
    // This attempt's stream: ended with the page, or when the attempt fails (a later one opens its own).
    const attempt = new AbortController();
    const stop = () => attempt.abort();
    this.signal.addEventListener("abort", stop, { once: true });
    try {
      return await this.follow(events, attempt.signal);
    } catch (error) {
      attempt.abort();
      this.signal.removeEventListener("abort", stop);
      throw error;
    }
  }

  async follow(events, streamSignal) {
    const { convo } = this;
    const opened = stream(withQuery(`${convo.base}/${convo.thread ? "stream" : "events/stream"}`, { event_deltas: ["agent.message"] }), streamSignal);
    const early = [];
    let caughtUp = false;
    const pump = (async () => {
      for await (const frame of opened.frames) {
        this.delay = 0; // it works: a later drop reconnects at once
        if (caughtUp) convo.add(frame.data);
        else early.push(frame.data);
      }
    })();
    pump.catch(() => {});
    // The backlog is read while the stream opens (the stream only brings what comes after it).
    const first = !convo.thread && !this.restarted; // the page's first read: what the render figures time
    this.restarted = true;
    let pages = 0;
    const onPage = (page) => {
      convo.addMany(page); // each page shown as it comes: a long session's start is on screen early
      if (first && pages++ === 0) nextFrame().then(() => performance.mark("console:first-events"));
    };
    const backlog = await listAll(events, {}, { signal: this.signal, onPage });
    if (first) performance.mark("console:events-listed");
    await opened.ready;
    // What was recorded between the backlog's read and the stream's start: among the newest events.
    const newest = (await api(withQuery(events, { order: "desc", limit: CATCH_UP }), { signal: this.signal })).data;
    const unseen = newest.filter((e) => !convo.seen.has(e.id));
    if (unseen.length === CATCH_UP) convo.addMany(await listAll(events, {}, { signal: this.signal }));
    else unseen.reverse().forEach((e) => convo.add(e));
    caughtUp = true;
    convo.live = true;
    for (const e of early) convo.add(e);
    pump.then(
      () => this.again(),
      (error) => error?.name !== "AbortError" && this.again(),
    );
    return backlog.length;
  }

  /** The stream ended or failed: open it again (sooner after one that brought something), unless
   * the session has ended. */
  again() {
    if (this.convo.terminated || this.signal.aborted) return;
    this.delay = Math.min(MAX_RECONNECT_MS, (this.delay || RECONNECT_MS / 2) * 2);
    setTimeout(async () => {
      if (this.signal.aborted) return;
      try {
        const session = await api(`/v1/sessions/${enc(this.convo.session)}`, { signal: this.signal });
        if (session.status === "terminated" && !this.convo.thread) {
          // It ended (without a terminated event, or before the stream saw it): its whole log, once more.
          this.convo.addMany(await listAll(`${this.convo.base}/events`, {}, { signal: this.signal }));
          this.convo.terminated = true;
          return;
        }
        await this.start();
      } catch (error) {
        if (error?.name !== "AbortError") this.again();
      }
    }, this.delay);
  }
}

const agentName = (agent) => `${agent.name || agent.id} v${agent.version ?? "?"}`;
// Agents the API made (sessions from `da start` or a plain client name theirs agent_local_…).
const ourAgent = (agent) => agent.id && !agent.id.startsWith("agent_local_");

function facts(session) {
  const u = session.usage || {};
  const agent = session.agent || {};
  const cache = u.cache_read_input_tokens ? ` (${tokens(u.cache_read_input_tokens)} from cache)` : "";
  return [
    h("span", "agent ", h("b", ourAgent(agent) ? h("a", { href: `/console/agents/${enc(agent.id)}?version=${agent.version}` }, agentName(agent)) : agentName(agent))),
    h("span", "started ", h("b", when(session.created_at))),
    h("span", "turns ", h("b#turns", String(session.stats?.turns ?? "—"))),
    h("span", "tokens ", h("b#tokens", `${tokens(u.input_tokens)} in / ${tokens(u.output_tokens)} out`), cache),
    h("span", "cost ", h("b#cost", cost(u))),
  ];
}

function nextFrame() {
  return new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
}

export async function sessionPage(ctx, id) {
  const { main } = ctx;
  const controller = new AbortController();
  ctx.stops.push(() => controller.abort());
  const signal = controller.signal;
  const base = `/v1/sessions/${enc(id)}`;

  const title = h("h1", id);
  const status = h("span#status");
  const factsEl = h("div.facts");
  const links = h("div.row");
  main.append(h("div.session-head", h("div.row", title, status), factsEl, links));

  let refreshing = null;
  const refresh = async () => {
    const session = await api(base, { signal });
    title.textContent = session.title || "untitled session";
    status.replaceChildren(badge(session.status));
    factsEl.replaceChildren(...facts(session));
    composer.hidden = session.status === "terminated";
    fill(
      links,
      h("span.muted.mono", id),
      session.temporal?.ui_url ? h("a#temporal-link", { href: session.temporal.ui_url, target: "_blank", rel: "noopener" }, "Open in the Temporal UI") : null,
      h("a", { href: `/console/sessions/${enc(id)}/events` }, "Raw events"),
    );
    return session;
  };
  const later = () => {
    clearTimeout(refreshing);
    refreshing = setTimeout(() => refresh().catch(() => {}), 400);
  };

  const convo = new Conversation({ session: id, steer: true, onChange: later });
  const composer = composerFor(convo);
  main.append(convo.el, composer);
  performance.mark("console:session-start");
  const [, count] = await Promise.all([retrying(refresh), new Feed(convo, signal).open()]);
  scrollToEnd(); // the newest events first in view; the message box under them
  await nextFrame();
  performance.mark("console:conversation-rendered");
  main.dataset.rendered = String(count);
  ctx.stops.push(() => clearTimeout(refreshing));
}

function composerFor(convo) {
  const text = h("textarea#message", { rows: 2, placeholder: "Message the agent (Enter sends, Shift+Enter for a new line)", "aria-label": "Message" });
  const problem = h("div");
  const send = async () => {
    const value = text.value;
    if (!value.trim()) return;
    const ok = await convo.sendFrom(problem, [{ type: "user.message", content: [{ type: "text", text: value }] }], form);
    if (ok) text.value = "";
    form.querySelectorAll("button, textarea").forEach((b) => (b.disabled = false));
    text.focus();
  };
  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  const interrupt = h("button#interrupt", { type: "button", on: { click: () => convo.sendFrom(problem, [{ type: "user.interrupt" }]) } }, "Interrupt");
  const form = h(
    "form.composer",
    { on: { submit: (e) => { e.preventDefault(); send(); } } },
    text,
    h("div.row", interrupt, h("button.primary#send", { type: "submit" }, "Send")),
    problem,
  );
  return form;
}

/** The session's events as the API gives them (a compaction links here with its range). */
export async function rawEventsPage(ctx, id) {
  const { main, params } = ctx;
  const controller = new AbortController();
  ctx.stops.push(() => controller.abort());
  const wanted = Number(params.get("limit")) || Infinity;
  const page = params.get("page") || undefined;
  main.append(
    h("h1", "Raw events"),
    h("p", h("a", { href: `/console/sessions/${enc(id)}` }, "← back to the session"), " ", h("span.muted.mono", id)),
  );
  const events = [];
  let next = page;
  do {
    const got = await api(withQuery(`/v1/sessions/${enc(id)}/events`, { limit: Math.min(1000, wanted - events.length), page: next }), { signal: controller.signal });
    events.push(...got.data);
    next = got.next_page;
  } while (next && events.length < wanted);
  main.append(
    h("p.muted", `${events.length} events${page ? ` from ${page}` : ""}`),
    h("div.conversation#raw-events", events.map((e) => h("div.card", h("div", h("b", e.type), " ", h("span.muted.mono", e.id), " ", h("span.muted", when(e.processed_at))), h("pre", pretty(e))))),
  );
  main.dataset.rendered = String(events.length);
}
