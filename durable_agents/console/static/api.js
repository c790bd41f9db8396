// The /v1 API as the console calls it: the key from sessionStorage (this browser tab's session
// only) sent as x-api-key, the SDK's error bodies as ApiError, `page` / `next_page` paging, and
// Server-Sent Events read with fetch (EventSource cannot send a header).

const KEY = "durable-agents.api-key";

export const key = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(callback) {
  onUnauthorized = callback;
}

function headers(extra = {}) {
  return { "x-api-key": key.get() || "", ...extra };
}

async function failure(response) {
  let kind = "api_error";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    kind = body.error?.type || kind;
    message = body.error?.message || message;
  } catch {
    // not the API's error body: keep the status line
  }
  const error = new ApiError(response.status, kind, message);
  if (response.status === 401) onUnauthorized(error);
  return error;
}

/** GET (or POST with `body`) a /v1 path; the parsed JSON, or an ApiError. */
export async function api(path, { method, body, signal } = {}) {
  const init = { method: method || (body === undefined ? "GET" : "POST"), headers: headers(), signal };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** A path with query parameters (arrays become repeated `name[]`). */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) value.forEach((v) => q.append(`${name}[]`, v));
    else q.append(name, value);
  }
  const text = q.toString();
  return text ? `${path}?${text}` : path;
}

/** Every item of a paged list, page by page (`limit` a page); `onPage` gets each page as it comes. */
export async function listAll(path, params = {}, { signal, limit = 1000, onPage } = {}) {
  const items = [];
  let page;
  do {
    const got = await api(withQuery(path, { ...params, limit, page }), { signal });
    items.push(...got.data);
    onPage?.(got.data);
    page = got.next_page;
  } while (page);
  return items;
}

/** Server-Sent Events of a /v1 stream: yields {event, data, id} until the stream ends. The
 * promise `opened` settles once the server has answered (so a backlog can be listed after it). */
export function stream(path, signal) {
  let opened;
  const ready = new Promise((resolve, reject) => (opened = { resolve, reject }));
  ready.catch(() => {}); // a stream given up before anyone waits for it is no page error
  async function* frames() {
    let response;
    try {
      response = await fetch(path, { headers: headers({ accept: "text/event-stream" }), signal });
      if (!response.ok) throw await failure(response);
      opened.resolve();
    } catch (error) {
      opened.reject(error);
      throw error;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let frame = { event: "message", data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let cut;
      while ((cut = buffer.search(/\r?\n/)) >= 0) {
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + (buffer[cut] === "\r" ? 2 : 1));
        if (line === "") {
          if (frame.data.length) yield { event: frame.event, id: frame.id, data: JSON.parse(frame.data.join("\n")) };
          frame = { event: "message", data: [], id: null };
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") frame.data.push(text);
          else if (field === "event") frame.event = text;
          else if (field === "id") frame.id = text;
        }
      }
    }
  }
  return { ready, frames: frames() };
}
