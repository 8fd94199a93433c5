// One job: what it is now (status, state, progress, data, error), what can
// be done to it (approve, cancel, retry: each answer shown), the tasks it
// dispatched and its history as a timeline (both from GET .../history), and
// its blueprint's graph with the current and visited states marked. Live:
// the job's event stream (GET .../events) triggers a reload on each change.

import { call, events, graph } from "./api.js";
import { announce, badge, duration, fill, h, json, progressBar, table, when } from "./dom.js";

const TERMINAL = new Set(["finished", "failed", "cancelled", "error", "quarantined"]);
const RETRYABLE = new Set(["failed", "error", "quarantined"]);
const POLL_MS = 2000;

export async function jobView(root, id, signal) {
  const base = `/api/v1/jobs/${encodeURIComponent(id)}`;
  const title = h("h1", {}, "Job ", h("span", { class: "mono" }, id));
  const summary = h("section", { class: "summary", "aria-label": "Job summary" });
  const actions = h("section", { class: "actions", "aria-label": "Actions" });
  const answer = h("output", { class: "answer", role: "status", "aria-live": "polite" });
  const picture = h("figure", { class: "graph" });
  const tasks = h("section", { "aria-labelledby": "tasks-title" });
  const timeline = h("section", { "aria-labelledby": "timeline-title" });
  const data = h("section", { class: "data", "aria-label": "Data" });
  fill(root,
    h("p", {}, h("a", { href: "#/jobs" }, "← All jobs")),
    title, summary, actions, answer,
    h("h2", {}, "Blueprint"), picture,
    h("h2", { id: "tasks-title" }, "Tasks"), tasks,
    h("h2", { id: "timeline-title" }, "Timeline"), timeline,
    data);

  let svg = null;
  let actionsKey = "";

  async function act(label, path, body) {
    fill(answer, `${label}…`);
    try {
      const reply = await call(`${base}/${path}`, { method: "POST", body, signal });
      // Approve and Retry answer the job; Cancel answers {"status": ...}.
      const said = reply && typeof reply === "object"
        ? (reply.id ? `job is now ${String(reply.status).replaceAll("_", " ")}` : String(reply.status ?? JSON.stringify(reply)).replaceAll("_", " "))
        : String(reply);
      fill(answer, h("span", { class: "ok" }, `${label}: ${said}`));
      announce(`${label}: ${said}`);
    } catch (error) {
      if (error.name === "AbortError") return;
      fill(answer, h("span", { class: "error" }, `${label} refused (${error.status ?? "network"}): ${error.message}`));
    }
    reload();
  }

  function showActions(job) {
    const key = JSON.stringify([job.status, job.approval ?? null]);
    if (key === actionsKey) return; // keep focus on a button that stays
    actionsKey = key;
    const buttons = [];
    if (job.status === "waiting_for_human") {
      const approval = job.approval;
      buttons.push(h("div", { class: "approval", role: "group", "aria-labelledby": "approval-title" },
        h("h2", { id: "approval-title" }, "Waiting for a decision"),
        approval ? h("p", { class: "message" }, approval.message) : null,
        approval?.expires_at ? h("p", { class: "muted" }, "Expires ", when(approval.expires_at)) : null,
        h("div", { class: "buttons" }, (approval?.decisions ?? []).map((decision) =>
          h("button", {
            type: "button", class: "primary", "data-decision": decision,
            onclick: () => act(`Decision "${decision}"`, "approve", { decision }),
          }, decision)))));
    }
    const row = [];
    if (!TERMINAL.has(job.status)) {
      row.push(h("button", { type: "button", class: "danger", onclick: () => act("Cancel", "cancel") }, "Cancel job"));
    }
    if (RETRYABLE.has(job.status)) {
      row.push(h("button", { type: "button", class: "primary", onclick: () => act("Retry", "retry", {}) }, "Retry job"));
    }
    fill(actions, buttons, row.length ? h("div", { class: "buttons" }, row) : null);
  }

  function showSummary(job) {
    fill(summary, h("dl", { class: "facts" },
      fact("Status", badge(job.status)),
      fact("Blueprint", h("a", { href: `#/jobs?blueprint=${encodeURIComponent(job.blueprint_name)}` }, job.blueprint_name)),
      fact("Current state", h("span", { class: "mono", "data-current-state": "" }, job.current_state)),
      fact("Progress", progressBar(job.status === "finished" ? 1 : job.progress, "job"), job.progress_message ? h("span", { class: "muted" }, ` ${job.progress_message}`) : null),
      fact("Created", when(job.created_at)),
      fact("Updated", when(job.updated_at)),
      job.retry_count ? fact("Retries", String(job.retry_count)) : null,
      job.parent_job_id ? fact("Parent", h("a", { href: `#/jobs/${encodeURIComponent(job.parent_job_id)}` }, job.parent_job_id)) : null),
    job.error ? h("div", { class: "job-error", role: "alert" }, h("strong", {}, "Error: "), h("span", {}, job.error)) : null);
  }

  function showData(job) {
    fill(data,
      h("h2", {}, "Initial data"), json(job.initial_data, "initial data"),
      h("h2", {}, job.result ? "Result" : "State history"), json(job.result ?? job.state_history, "state history"));
  }

  async function showGraph(job, history) {
    if (!svg) {
      try {
        svg = await graph(job.blueprint_name, signal);
      } catch (error) {
        if (error.name === "AbortError") throw error;
        fill(picture, h("figcaption", { class: "muted" }, `No graph: ${error.message}`));
        return;
      }
      if (!svg) return;
      fill(picture, svg, h("figcaption", {},
        h("span", { class: "key current" }, "current"), " ", h("span", { class: "key visited" }, "visited")));
    }
    const visited = new Set(history.filter((e) => e.type === "state_entered").map((e) => e.state));
    const taken = new Set(history.filter((e) => e.type === "state_left" && e.next_state)
      .map((e) => JSON.stringify([e.state, e.next_state])));
    for (const group of svg.querySelectorAll("g.state")) {
      const name = group.getAttribute("data-state");
      group.classList.toggle("visited", visited.has(name));
      group.classList.toggle("current", name === job.current_state);
    }
    for (const group of svg.querySelectorAll("g.transition")) {
      const pair = JSON.stringify([group.getAttribute("data-from"), group.getAttribute("data-to")]);
      group.classList.toggle("taken", taken.has(pair));
    }
  }

  let shownHistory = "";
  function showHistory(history, job) {
    const seen = JSON.stringify([history, job.progress, job.status]);
    if (seen === shownHistory) return;
    shownHistory = seen;
    const rows = tasksOf(history);
    // History keeps no progress events: a running task's progress is the job's.
    const running = rows.filter((t) => !t.outcome).at(-1);
    if (running && !TERMINAL.has(job.status)) running.progress = job.progress;
    fill(tasks, rows.length ? table([
      ["Task", (t) => h("span", { class: "mono" }, t.type || t.task_id)],
      ["State", (t) => h("span", { class: "mono" }, t.state ?? "")],
      ["Attempt", (t) => String(t.attempt ?? "")],
      ["Worker", (t) => t.worker ? h("span", { class: "mono" }, t.worker) : h("span", { class: "muted" }, "not picked up")],
      ["Progress", (t) => t.outcome === "success" ? progressBar(1, "task") : t.progress === null ? "" : progressBar(t.progress, "task")],
      ["Outcome", (t) => outcome(t, job)],
      ["Ran", (t) => duration(t.ran_ms)],
    ], rows) : h("p", { class: "muted" }, "No task dispatched."));
    fill(timeline, timelineOf(history));
  }

  let ended = false;
  let following = false;
  let pending = null;
  async function reload() {
    const [job, history] = await Promise.all([call(base, { signal }), call(`${base}/history`, { signal })]);
    document.title = `${job.status} · ${job.id} · Avtomatika`;
    showSummary(job);
    showActions(job);
    showData(job);
    showHistory(history, job);
    await showGraph(job, history);
    ended = TERMINAL.has(job.status);
    if (!ended && !following) {
      // Running again (say, after Retry): follow it again.
      following = true;
      follow().finally(() => { following = false; });
    }
    return job;
  }
  function soon() {
    // Several changes in a burst cost one reload.
    clearTimeout(pending);
    pending = setTimeout(() => reload().catch(() => {}), 100);
  }

  async function follow() {
    try {
      for await (const change of events(`${base}/events`, signal)) {
        if (change.event === "status" || change.event === "progress") soon();
      }
    } catch (error) {
      if (error.name === "AbortError") return;
    }
    // The stream ended (a terminal status) or broke: read once more, then
    // poll while the job still runs (history is written a moment later).
    while (!signal.aborted) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (signal.aborted) return;
      try {
        await reload();
      } catch (error) {
        if (error.name === "AbortError") return;
      }
      if (ended) {
        await new Promise((resolve) => setTimeout(resolve, POLL_MS));
        if (!signal.aborted) await reload().catch(() => {});
        return;
      }
    }
  }

  signal.addEventListener("abort", () => clearTimeout(pending));
  await reload();
}

function fact(label, ...value) {
  return h("div", {}, h("dt", {}, label), h("dd", {}, value));
}

/** The tasks the job dispatched, one row per attempt, from its history. */
export function tasksOf(history) {
  const rows = [];
  const current = new Map();
  let last = null;
  for (const event of history) {
    if (event.type === "job_ended" && last && last.outcome && last.outcome !== "success") {
      // "quarantined: <error>": the error of the task that ended the job.
      const colon = (event.message ?? "").indexOf(": ");
      if (colon >= 0) last.error = event.message.slice(colon + 2);
    }
    if (!event.task_id) continue;
    let row = current.get(event.task_id);
    if (event.type === "task_dispatched" || event.type === "task_retried" || !row) {
      const named = /^(.*) attempt (\d+)$/.exec(event.message ?? "");
      row = {
        task_id: event.task_id, type: named ? named[1] : "", attempt: named ? Number(named[2]) : event.attempt_number,
        state: event.state, worker: null, progress: null, outcome: null, error: null, ran_ms: null,
      };
      rows.push(row);
      current.set(event.task_id, row);
      last = row;
      if (event.type === "task_dispatched" || event.type === "task_retried") continue;
    }
    if (event.type === "task_picked_up") {
      row.worker = event.worker_id;
      row.type ||= event.message ?? "";
    } else if (event.type === "task_finished") {
      row.outcome = event.message;
      row.ran_ms = event.duration_ms;
      row.worker ||= event.worker_id;
    } else if (event.type === "timeout") {
      row.outcome = event.message ?? "timed out";
    }
  }
  return rows;
}

function outcome(task, job) {
  if (!task.outcome && TERMINAL.has(job.status)) return h("span", { class: "muted" }, `stopped: job ${job.status}`);
  if (!task.outcome) return h("span", { class: "muted" }, task.worker ? "running" : "queued");
  const good = task.outcome === "success";
  return h("span", {}, h("span", { class: good ? "ok" : "error" }, task.outcome),
    task.error ? h("span", { class: "task-error" }, ` — ${task.error}`) : null);
}

const KIND_NAMES = {
  job_created: "created", state_entered: "entered", state_left: "left", task_dispatched: "task queued",
  task_picked_up: "task picked up", task_finished: "task finished", task_retried: "retried",
  approval_received: "decision", job_ended: "ended", job_cancelled: "cancelled", job_retried: "retry",
};

function timelineOf(history) {
  if (!history.length) return h("p", { class: "muted" }, "No history yet.");
  const start = Date.parse(history[0].timestamp);
  const longest = Math.max(1, ...history.map((e) => e.duration_ms ?? 0));
  return h("ol", { class: "timeline" }, history.map((event) => {
    const offset = Date.parse(event.timestamp) - start;
    const bar = h("span", { class: "bar", "aria-hidden": "true" });
    if (event.duration_ms) bar.style.width = `${Math.max(2, (100 * event.duration_ms) / longest)}%`;
    const words = [event.state, event.message, event.worker_id ? `worker ${event.worker_id}` : null];
    if (event.details && typeof event.details === "object" && event.type !== "progress") {
      for (const [key, value] of Object.entries(event.details)) {
        if (value === null || value === event.message) continue; // said already, or nothing
        words.push(`${key}: ${typeof value === "string" ? value : JSON.stringify(value)}`);
      }
    }
    const failed = event.type === "task_finished" && event.message !== "success";
    return h("li", { class: `event kind-${String(event.type).replace(/[^a-z_]/g, "")}${failed ? " failed" : ""}` },
      h("span", { class: "offset", title: event.timestamp }, `+${duration(offset) || "0 ms"}`),
      h("span", { class: "kind" }, KIND_NAMES[event.type] ?? String(event.type).replaceAll("_", " ")),
      h("span", { class: "what" }, words.filter(Boolean).join(" · ")),
      h("span", { class: "took" }, event.duration_ms !== null && event.duration_ms !== undefined ? duration(event.duration_ms) : ""),
      bar);
  }));
}
