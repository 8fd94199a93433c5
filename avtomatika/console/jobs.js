// Jobs: the caller's jobs (GET /api/v1/jobs), filtered by status, blueprint,
// state and creation time, paged with the list's page token, the counts per
// status on top; refreshed every two seconds while the view is open.

import { call, query, repeat } from "./api.js";
import { badge, fill, h, jobProgress, table, when } from "./dom.js";

const REFRESH_MS = 2000;
const PAGE_SIZE = 20;
export const STATUSES = [
  "pending", "running", "waiting_for_worker", "waiting_for_human", "waiting_for_parallel_tasks",
  "waiting_for_sub_job", "finished", "failed", "error", "quarantined", "cancelled",
];

/** The hash of the jobs view with these filters. */
function link(filters) {
  return `#/jobs${query(filters)}`;
}

export async function jobsView(root, parameters, signal) {
  const filters = {
    status: parameters.get("status") ?? "",
    blueprint: parameters.get("blueprint") ?? "",
    state: parameters.get("state") ?? "",
    created_after: parameters.get("created_after") ?? "",
  };
  // The page size can be set in the address (#/jobs?size=5), for a link.
  const size = Number.parseInt(parameters.get("size") ?? "", 10) || PAGE_SIZE;
  // Page tokens of the pages before this one, for "Previous".
  const pages = [""];
  const counts = h("div", { class: "counts", role: "group", "aria-label": "Jobs by status" });
  const list = h("div", { class: "list", "aria-busy": "true" });
  const pager = h("div", { class: "pager" });
  const problem = h("p", { class: "error", role: "alert" });
  fill(root,
    h("h1", {}, "Jobs"),
    filterForm(filters),
    counts,
    problem,
    list,
    pager);

  let shown = "";
  let again = null;
  const refresh = () => again?.(); // a page asked for: load it at once
  async function load() {
    const created = filters.created_after ? Date.parse(filters.created_after) : NaN;
    const page = await call(`/api/v1/jobs${query({
      statuses: filters.status,
      blueprint: filters.blueprint,
      current_state: filters.state,
      created_after_ms: Number.isNaN(created) ? "" : created,
      page_size: size,
      page_token: pages.at(-1),
    })}`, { signal });
    fill(problem);
    // Unchanged data is not drawn again, so focus and selection stay put.
    const seen = JSON.stringify([page, pages.length]);
    if (seen === shown) return;
    shown = seen;
    showCounts(counts, page.counts, filters);
    list.setAttribute("aria-busy", "false");
    fill(list, page.jobs.length ? jobsTable(page.jobs) : h("p", { class: "muted" }, "No jobs match."));
    fill(pager,
      h("button", {
        type: "button", disabled: pages.length === 1,
        onclick: () => { pages.pop(); refresh(); },
      }, "Previous page"),
      h("span", { class: "muted" }, `Page ${pages.length}`),
      h("button", {
        type: "button", disabled: !page.next_page_token,
        onclick: () => { pages.push(page.next_page_token); refresh(); },
      }, "Next page"));
  }

  again = await repeat(REFRESH_MS, signal, load, (error) => fill(problem, error.message));
}

function filterForm(filters) {
  const field = (name, label, input) => h("div", { class: "field" }, h("label", { for: `filter-${name}` }, label), input);
  const status = h("select", { id: "filter-status", name: "status" },
    h("option", { value: "" }, "any"),
    STATUSES.map((name) => h("option", { value: name, selected: filters.status === name }, name.replaceAll("_", " "))));
  const blueprint = h("input", { id: "filter-blueprint", name: "blueprint", value: filters.blueprint, autocomplete: "off" });
  const state = h("input", { id: "filter-state", name: "state", value: filters.state, autocomplete: "off" });
  const created = h("input", { id: "filter-created", name: "created_after", type: "datetime-local", value: filters.created_after });
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter jobs" },
    field("status", "Status", status),
    field("blueprint", "Blueprint", blueprint),
    field("state", "State", state),
    field("created", "Created after", created),
    h("div", { class: "field actions" },
      h("button", { type: "submit", class: "primary" }, "Apply"),
      h("a", { href: "#/jobs", class: "button quiet" }, "Clear")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = link({
      status: status.value, blueprint: blueprint.value.trim(), state: state.value.trim(), created_after: created.value,
    });
  });
  return form;
}

function showCounts(element, counts, filters) {
  if (!counts || typeof counts !== "object") {
    fill(element);
    return;
  }
  const total = Object.values(counts).reduce((sum, n) => sum + Number(n || 0), 0);
  fill(element,
    h("a", { href: link({ ...filters, status: "" }), class: "count", "aria-current": filters.status ? null : "true" },
      h("span", { class: "count-n" }, String(total)), " all"),
    Object.entries(counts)
      .filter(([, n]) => Number(n) > 0 || filters.status)
      .map(([status, n]) => h("a", {
        href: link({ ...filters, status }),
        class: `count status-${status.replace(/[^a-z_]/g, "")}`,
        "aria-current": filters.status === status ? "true" : null,
        "data-status": status,
      }, h("span", { class: "count-n" }, String(n)), ` ${status.replaceAll("_", " ")}`)));
}

function jobsTable(jobs) {
  return table([
    ["Job", (job) => h("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, class: "mono" }, job.id)],
    ["Blueprint", (job) => job.blueprint_name],
    ["Status", (job) => badge(job.status)],
    ["State", (job) => h("span", { class: "mono" }, job.current_state)],
    ["Progress", (job) => jobProgress(job, `job ${job.id}`)],
    ["Created", (job) => when(job.created_at)],
    ["Updated", (job) => when(job.updated_at)],
  ], jobs, "Your jobs, newest first");
}
