// One job: what it is now (status, state, progress, data, error), what can
// be done to it (approve, cancel, retry: each answer shown), the tasks it
// dispatched and its history as a timeline (both from GET .../history), and
// its blueprint's graph with the current and visited states marked. Live:
// the job's event stream (GET .../events) triggers a reload on each change.

import { call, events, graph } from "./api.js";
import { ENDED as TERMINAL, announce, badge, duration, fill, h, jobProgress, json, progressBar, table, when } from "./dom.js";

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
  // What the last action's answer says the job's status is: when the job
  // moves on, the answer says so too (or goes, if it was a refusal).
  let answered = null;

  function showAnswer(job) {
    if (!answered || answered.status === job.status) return;
    if (answered.label === null) {
      fill(answer);
      answered = null;
      return;
    }
    answered.status = job.status;
    fill(answer, h("span", { class: "ok" }, `${answered.label}: job is now ${job.status.replaceAll("_", " ")}`));
  }

  async function act(label, path, body) {
    answered = null;
    fill(answer, `${label}…`);
    try {
      const reply = await call(`${base}/${path}`, { method: "POST", body, signal });
      // Approve and Retry answer the job; Cancel answers {"status": ...}.
      const said = reply && typeof reply === "object"
        ? (reply.id ? `job is now ${String(reply.status).replaceAll("_", " ")}` : String(reply.status ?? JSON.stringify(reply)).replaceAll("_", " "))
        : String(reply);
      fill(answer, h("span", { class: "ok" }, `${label}: ${said}`));
      announce(`${label}: ${said}`);
      answered = { label, status: reply?.status };
    } catch (error) {
      if (error.name === "AbortError") return;
      fill(answer, h("span", { class: "error" }, `${label} refused (${error.status ?? "network"}): ${error.message}`));
      answered = { label: null, status: shownStatus };
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
            type: "button", class: decisionClass(decision), "data-decision": decision,
            onclick: () => act(`Decision "${decision}"`, "approve", { decision }),
          }, readable(decision))))));
    }
    const row = [];
    if (!TERMINAL.has(job.status)) {
      row.push(h("button", { type: "button", class: "danger", onclick: (event) => confirmCancel(event.currentTarget) }, "Cancel job"));
    }
    if (RETRYABLE.has(job.status)) {
      row.push(h("button", { type: "button", class: "primary", onclick: () => act("Retry", "retry", {}) }, "Retry job"));
    }
    fill(actions, buttons, row.length ? h("div", { class: "buttons" }, row) : null);
  }

  function confirmCancel(button) {
    // Cancelling cannot be undone: ask in the page first, keyboard first
    // (the question takes the focus; Escape or "No" puts the button back).
    const no = h("button", { type: "button", onclick: () => back() }, "No, keep it");
    const yes = h("button", { type: "button", class: "danger solid", onclick: () => act("Cancel", "cancel") }, "Yes, cancel the job");
    const question = h("div", { class: "confirm", role: "group", "aria-labelledby": "confirm-cancel" },
      h("span", { id: "confirm-cancel" }, "Cancel this job? It stops where it is."), yes, no);
    question.addEventListener("keydown", (event) => { if (event.key === "Escape") back(); });
    function back() {
      question.replaceWith(button);
      button.focus();
    }
    button.replaceWith(question);
    no.focus();
  }

  function showSummary(job) {
    fill(summary, h("dl", { class: "facts" },
      fact("Status", badge(job.status)),
      fact("Blueprint", h("a", { href: `#/jobs?blueprint=${encodeURIComponent(job.blueprint_name)}` }, job.blueprint_name)),
      fact("Current state", h("span", { class: "mono", "data-current-state": "" }, job.current_state)),
      fact("Progress", jobProgress(job), job.progress_message && !TERMINAL.has(job.status)
        ? h("span", { class: "muted progress-message", title: job.progress_message }, job.progress_message) : null),
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

  // History keeps no progress events: a running task's progress is the
  // job's, as its progress events set it; kept per task once it ends.
  const taskProgress = new Map();
  let shownHistory = "";
  function showHistory(history, job) {
    const seen = JSON.stringify([history, job.progress, job.status]);
    if (seen === shownHistory) return;
    shownHistory = seen;
    const rows = tasksOf(history);
    const running = rows.filter((t) => !t.outcome).at(-1);
    if (running && !TERMINAL.has(job.status)) taskProgress.set(running.task_id + running.attempt, job.progress);
    for (const row of rows) row.progress = taskProgress.get(row.task_id + row.attempt) ?? null;
    fill(tasks, rows.length ? table([
      ["Task", (t) => h("span", { class: "mono" }, t.type || t.task_id)],
      ["State", (t) => h("span", { class: "mono" }, t.state ?? "")],
      ["Attempt", (t) => String(t.attempt ?? "")],
      ["Worker", (t) => t.worker ? h("span", { class: "mono" }, t.worker) : h("span", { class: "muted" }, "not picked up")],
      ["Progress", (t) => t.outcome === "success" ? progressBar(1, "task")
        : t.progress === null ? h("span", { class: "muted" }, "—") : progressBar(t.progress, "task")],
      ["Outcome", (t) => outcome(t, job)],
      ["Ran", (t) => duration(t.ran_ms)],
    ], rows) : h("p", { class: "muted" }, "No task dispatched."));
    fill(timeline, timelineOf(history));
  }

  let shownStatus = null;
  let ended = false;
  let following = false;
  let pending = null;
  async function reload() {
    const [job, history] = await Promise.all([call(base, { signal }), call(`${base}/history`, { signal })]);
    document.title = `${job.status} · ${job.id} · Avtomatika`;
    shownStatus = job.status;
    showSummary(job);
    showAnswer(job);
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
  return h("span", {}, h("span", { class: outcomeClass(task.outcome) }, task.outcome),
    task.error ? h("span", { class: "task-error" }, ` — ${task.error}`) : null);
}

/** Success green, failures red; a blueprint's own outcomes (say,
 * "needs_review") are neither. */
function outcomeClass(name) {
  if (name === "success") return "ok";
  return /fail|error|cancel|timed out|timeout|quarantin/i.test(String(name)) ? "error" : "neutral";
}

const APPROVING = new Set(["approved", "approve", "yes", "accept", "accepted", "ok"]);
const REJECTING = new Set(["rejected", "reject", "no", "deny", "denied", "decline", "declined"]);

function decisionClass(decision) {
  const name = String(decision).toLowerCase();
  if (APPROVING.has(name)) return "primary";
  return REJECTING.has(name) ? "danger" : null;
}

/** A decision as a button's text: the name as given, its underscores spaces. */
function readable(decision) {
  const text = String(decision).replaceAll("_", " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
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
    const said = event.type === "task_finished" ? outcomeClass(event.message) : "";
    const marked = said === "error" ? " failed" : said === "neutral" ? " custom" : "";
    return h("li", { class: `event kind-${String(event.type).replace(/[^a-z_]/g, "")}${marked}` },
      h("span", { class: "offset", title: event.timestamp }, `+${duration(offset) || "0 ms"}`),
      h("span", { class: "kind" }, KIND_NAMES[event.type] ?? String(event.type).replaceAll("_", " ")),
      h("span", { class: "what" }, words.filter(Boolean).join(" · ")),
      h("span", { class: "took" }, event.duration_ms !== null && event.duration_ms !== undefined ? duration(event.duration_ms) : ""),
      bar);
  }));
}
