// Workers: who is connected (GET /api/v1/workers) and what waits for them
// (GET /api/v1/dashboard: queue depth and oldest queued task per skill),
// warning about queued skills that no connected worker has. Refreshed every
// two seconds.

import { call, repeat } from "./api.js";
import { age, badge, fill, h, table, when } from "./dom.js";

const REFRESH_MS = 2000;

export async function workersView(root, signal) {
  const problem = h("p", { class: "error", role: "alert" });
  const warnings = h("div", { "aria-live": "polite" });
  const queues = h("section", { "aria-labelledby": "queues-title" });
  const workers = h("section", { "aria-labelledby": "workers-title" });
  fill(root, h("h1", {}, "Workers"), problem, warnings,
    h("h2", { id: "workers-title" }, "Connected workers"), workers,
    h("h2", { id: "queues-title" }, "Queues"), queues);

  let shown = "";
  async function load() {
    const [listed, dashboard] = await Promise.all([
      call("/api/v1/workers", { signal }),
      call("/api/v1/dashboard", { signal }).catch((error) => {
        if (error.name === "AbortError") throw error;
        return { unavailable: error.message };
      }),
    ]);
    fill(problem);
    const seen = JSON.stringify([listed, dashboard]);
    if (seen === shown) return;
    shown = seen;
    fill(workers, listed.length ? workerTable(listed) : h("p", { class: "muted" }, "No worker is connected."));
    if (dashboard.unavailable) {
      fill(queues, h("p", { class: "muted" }, `No queue statistics: ${dashboard.unavailable}`));
      fill(warnings);
      return;
    }
    const depth = dashboard.queue_depth_by_skill ?? {};
    const oldest = dashboard.oldest_queued_at_by_skill ?? {};
    const served = new Set(listed.filter((w) => w.status !== "offline").flatMap((w) => w.skills ?? []));
    const skills = [...new Set([...Object.keys(depth), ...Object.keys(oldest)])].sort();
    const orphans = skills.filter((skill) => Number(depth[skill] ?? 0) > 0 && !served.has(skill));
    fill(warnings, orphans.map((skill) => h("p", { class: "warning", role: "alert", "data-skill": skill },
      h("strong", {}, "No worker has "), h("span", { class: "mono" }, skill),
      Number(depth[skill]) === 1 ? ": 1 task waits for one." : `: ${depth[skill]} tasks wait for one.`)));
    fill(queues, skills.length ? table([
      ["Skill", (skill) => h("span", { class: "mono" }, skill)],
      ["Queued", (skill) => String(depth[skill] ?? 0)],
      ["Oldest queued", (skill) => oldest[skill] ? h("span", {}, when(oldest[skill]), ` (${age(oldest[skill])})`) : ""],
      ["Workers with it", (skill) => served.has(skill) ? "yes" : h("span", { class: "error" }, "none")],
    ], skills) : h("p", { class: "muted" }, "Nothing is queued."));
  }

  await repeat(REFRESH_MS, signal, load, (error) => fill(problem, error.message));
}

function resources(worker) {
  const r = worker.resources ?? {};
  const parts = [];
  if (r.cpu_cores) parts.push(`${r.cpu_cores} CPU`);
  if (r.ram_gb) parts.push(`${r.ram_gb} GB RAM`);
  if (r.gpu_info) parts.push(`${r.gpu_info.model} (${r.gpu_info.vram_gb} GB)`);
  for (const model of r.installed_models ?? []) parts.push(`${model.name} ${model.version}`);
  return parts.join(", ");
}

function workerTable(workers) {
  return table([
    ["Worker", (w) => h("span", { class: "mono nowrap" }, w.worker_id)],
    ["Transport", (w) => h("span", { class: `transport transport-${String(w.transport).replace(/[^a-z]/g, "")}` }, w.transport)],
    ["Agent", (w) => w.agent ? h("span", { class: "mono small" }, w.agent) : h("span", { class: "muted" }, "—")],
    ["Skills", (w) => h("span", {}, (w.skills ?? []).map((s) => h("span", { class: "chip mono" }, s)))],
    ["Resources", (w) => resources(w) || h("span", { class: "muted" }, "—")],
    ["Load", (w) => `${w.load ?? 0} / ${w.resources?.max_concurrent_tasks || "?"}`],
    ["Status", (w) => badge(w.status)],
    ["Last seen", (w) => when(w.last_seen)],
    ["Tasks held", (w) => (w.active_task_ids ?? []).length
      ? h("span", {}, w.active_task_ids.map((id) => h("span", { class: "chip mono" }, id)))
      : h("span", { class: "muted" }, "none")],
  ], workers, "Workers connected to this orchestrator");
}
