// The one place that talks to the server. The client token lives in this
// tab's sessionStorage and travels only in the X-Client-Token header: never
// in a URL (EventSource cannot send headers, so the event stream is read
// with fetch), never in a cookie, never logged.

const TOKEN_KEY = "avtomatika.console.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** A refusal: the HTTP status and the server's {"error": ...} message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra = {}) {
  return { "X-Client-Token": token() ?? "", ...extra };
}

const REQUEST = { credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer" };

async function refusal(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") message = body.error;
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401) window.dispatchEvent(new CustomEvent("console:unauthorised"));
  return new ApiError(response.status, message);
}

/** GET or POST `path`; the answer's JSON (or text for other types). */
export async function call(path, { method = "GET", body, signal } = {}) {
  const init = { ...REQUEST, method, signal, headers: headers() };
  if (body !== undefined) {
    init.headers = headers({ "Content-Type": "application/json" });
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await refusal(response);
  const type = response.headers.get("Content-Type") ?? "";
  return type.includes("json") ? response.json() : response.text();
}

/** A query string from the entries that have a value. */
export function query(parameters) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(parameters)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/**
 * The Server-Sent Events of `path`, one {event, data} at a time (data parsed
 * as JSON), until the server ends the stream or `signal` aborts.
 */
export async function* events(path, signal) {
  const response = await fetch(path, { ...REQUEST, signal, headers: headers({ Accept: "text/event-stream" }) });
  if (!response.ok) throw await refusal(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replaceAll("\r\n", "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const message = parse(block);
        if (message) yield message;
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parse(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // a keep-alive comment
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return null;
  try {
    return { event, data: JSON.parse(data.join("\n")) };
  } catch {
    return null;
  }
}

/** A blueprint's graph as an <svg> element of this document, or null. */
export async function graph(blueprint, signal) {
  const text = await call(`/api/v1/blueprints/${encodeURIComponent(blueprint)}/graph?format=svg`, { signal });
  const parsed = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = parsed.documentElement;
  if (root.namespaceURI !== "http://www.w3.org/2000/svg" || root.localName !== "svg") return null;
  // Only drawing elements come in, without event handlers or links: the
  // server escapes every name, and this holds even if it did not.
  for (const element of [...root.querySelectorAll("script, foreignObject, a, use, image, iframe")]) {
    element.remove();
  }
  for (const element of [root, ...root.querySelectorAll("*")]) {
    for (const attribute of [...element.attributes]) {
      if (/^on/i.test(attribute.name) || /href$/i.test(attribute.name) || attribute.name === "style") {
        element.removeAttribute(attribute.name);
      }
    }
  }
  return document.importNode(root, true);
}

/**
 * Run `load` now and again `ms` after each run settles, until `signal`
 * aborts; a failure goes to `failed` (an abort ends quietly). Answers a
 * function that runs it again at once.
 */
export async function repeat(ms, signal, load, failed) {
  let timer = null;
  signal.addEventListener("abort", () => clearTimeout(timer));
  async function once() {
    clearTimeout(timer);
    try {
      await load();
    } catch (error) {
      if (error.name === "AbortError") return;
      failed(error);
    }
    if (!signal.aborted) timer = setTimeout(once, ms);
  }
  await once();
  return once;
}
