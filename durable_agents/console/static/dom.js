// Small helpers every view uses: making elements, and formatting times, tokens and money.

/** h("div.card#x", {attrs, on: {click}}, ...children): an element; strings become text. */
export function h(tag, props, ...children) {
  const [, name, rest] = tag.match(/^([a-z0-9-]+)(.*)$/i);
  const el = document.createElement(name);
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === ".") el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  if (props && (typeof props !== "object" || props instanceof Node || Array.isArray(props))) {
    children.unshift(props);
    props = null;
  }
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [event, fn] of Object.entries(v)) el.addEventListener(event, fn);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replace an element's children (null and false are left out, as in h()). */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function ago(iso) {
  if (!iso) return "";
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 60) return `${Math.max(0, s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function tokens(n) {
  if (n === undefined || n === null) return "—";
  return n >= 10000 ? `${(n / 1000).toFixed(1)}k` : String(n);
}

export function cost(usage) {
  const amount = usage?.list_cost?.amount;
  return amount === undefined ? "—" : `$${Number(amount).toFixed(4)}`;
}

export function badge(status) {
  return h(`span.badge.${status || "unknown"}`, status || "unknown");
}

export function errorBox(error) {
  return h("p.error", { role: "alert" }, error?.message || String(error));
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}
