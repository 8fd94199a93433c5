// Building the page. Every value from the server goes in through a text node
// or an attribute set one by one: nothing here parses a string as HTML, so a
// job whose data holds "<img onerror=...>" or "<script>" shows that text.

/**
 * h("button", {class: "primary", onclick: fn, "aria-label": "Close"}, "text", child)
 * Attributes: "class", "text" (textContent), on<event> functions, `true` for
 * a present boolean attribute; false, null and undefined are left out.
 * Children: nodes, strings (as text), arrays of those; null is skipped.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "text") {
      element.textContent = String(value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else if (child instanceof Node) element.append(child);
    else element.append(document.createTextNode(String(child)));
  }
}

/** Replace what `element` holds. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** A status name as a coloured badge (the colour comes from its class). */
export function badge(status) {
  const name = String(status ?? "unknown");
  return h("span", { class: `badge status-${name.replace(/[^a-z_]/g, "")}` }, name.replaceAll("_", " "));
}

/** JSON, pretty-printed, as text in a <pre>. */
export function json(value, label) {
  return h("pre", { class: "json", tabindex: "0", "aria-label": label }, JSON.stringify(value, null, 2));
}

/** An ISO-8601 time as the reader's local time (and the ISO text on hover). */
export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return h("span", {}, String(iso));
  return h("time", { datetime: iso, title: iso }, date.toLocaleString());
}

/** Milliseconds as "850 ms", "3.2 s", "4 min 10 s", "2 h 5 min". */
export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** How long ago an ISO time was, in words. */
export function age(iso) {
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return "";
  return `${duration(Math.max(0, Date.now() - then))} ago`;
}

/** A progress bar with its percentage as its accessible name. */
export function progressBar(fraction, label = "progress") {
  const value = Math.max(0, Math.min(1, Number(fraction) || 0));
  const percent = `${Math.round(value * 100)}%`;
  return h("span", { class: "progress" },
    h("progress", { max: "1", value: String(value), "aria-label": `${label} ${percent}` }),
    h("span", { class: "progress-text" }, percent));
}

/** Statuses a job does not leave (save by a retry). */
export const ENDED = new Set(["finished", "failed", "cancelled", "error", "quarantined"]);

/** A job's progress as the API says it; an ended job shows no bar (its
 * progress field stays where the last report left it, often 0). */
export function jobProgress(job, label = "job") {
  if (ENDED.has(job.status)) return h("span", { class: "muted", title: `job ${String(job.status).replaceAll("_", " ")}` }, "—");
  return progressBar(job.progress, label);
}

/** A table: `columns` are [heading, cell(row) -> node/string]; each cell
 * carries its heading so narrow screens can show rows as cards. */
export function table(columns, rows, caption) {
  return h("table", {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, columns.map(([heading]) => h("th", { scope: "col" }, heading)))),
    h("tbody", {}, rows.map((row) =>
      h("tr", {}, columns.map(([heading, cell]) => h("td", { "data-label": heading }, cell(row)))))));
}

/** A message in the page's live region, read out by screen readers. */
export function announce(text) {
  const region = document.getElementById("announcer");
  if (region) region.textContent = text;
}
