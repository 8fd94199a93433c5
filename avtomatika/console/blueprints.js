// Blueprints: each with its graph and, when it has a route, a form that
// creates a job: the initial data typed as JSON, parsed here first, then
// posted to the blueprint's route; the server's refusal (say, the input
// schema's) is shown as it came.

import { call, graph } from "./api.js";
import { fill, h, json } from "./dom.js";

export async function blueprintsView(root, signal) {
  const { blueprints } = await call("/api/v1/blueprints", { signal });
  fill(root, h("h1", {}, "Blueprints"),
    blueprints.length ? blueprints.map((blueprint) => card(blueprint, signal)) : h("p", { class: "muted" }, "No blueprint is registered."));
}

function card(blueprint, signal) {
  const id = `bp-${blueprint.name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const picture = h("figure", { class: "graph" }, h("figcaption", { class: "muted" }, "Drawing…"));
  graph(blueprint.name, signal).then(
    (svg) => fill(picture, svg ?? h("figcaption", { class: "muted" }, "No graph.")),
    (error) => { if (error.name !== "AbortError") fill(picture, h("figcaption", { class: "error" }, error.message)); },
  );
  return h("article", { class: "card blueprint", "aria-labelledby": `${id}-title`, "data-blueprint": blueprint.name },
    h("h2", { id: `${id}-title`, class: "mono" }, blueprint.name),
    h("p", { class: "muted" },
      blueprint.route ? ["POST ", h("span", { class: "mono" }, blueprint.route)] : "Internal: started by other jobs or schedules.",
      ` · start: ${blueprint.start_state} · ends: ${(blueprint.end_states ?? []).join(", ")}`),
    picture,
    blueprint.route ? createForm(blueprint, id) : null);
}

function createForm(blueprint, id) {
  const textarea = h("textarea", {
    id: `${id}-data`, name: "initial_data", rows: "5", spellcheck: "false", class: "mono",
    "aria-describedby": `${id}-hint`,
  });
  textarea.value = "{}";
  const result = h("output", { class: "answer", role: "status", "aria-live": "polite", for: `${id}-data` });
  const form = h("form", { class: "create", "aria-label": `Create a job of ${blueprint.name}` },
    h("label", { for: `${id}-data` }, "Initial data (JSON object)"),
    textarea,
    h("p", { id: `${id}-hint`, class: "muted small" },
      blueprint.input_schema ? "Checked against the blueprint's input schema by the server." : "This blueprint declares no input schema."),
    blueprint.input_schema ? h("details", {}, h("summary", {}, "Input schema"), json(blueprint.input_schema, "input schema")) : null,
    h("button", { type: "submit", class: "primary" }, "Create job"),
    result);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let data;
    try {
      data = JSON.parse(textarea.value || "{}");
    } catch (error) {
      fill(result, h("span", { class: "error" }, `Not JSON: ${error.message}`));
      textarea.focus();
      return;
    }
    if (data === null || typeof data !== "object" || Array.isArray(data)) {
      fill(result, h("span", { class: "error" }, "The initial data must be a JSON object."));
      textarea.focus();
      return;
    }
    fill(result, "Creating…");
    try {
      const accepted = await call(blueprint.route, { method: "POST", body: { initial_data: data } });
      fill(result, h("span", { class: "ok" }, "Created job "),
        h("a", { href: `#/jobs/${encodeURIComponent(accepted.job_id)}`, class: "mono", "data-created-job": accepted.job_id }, accepted.job_id));
    } catch (error) {
      fill(result, h("span", { class: "error" }, `Refused (${error.status ?? "network"}): ${error.message}`));
    }
  });
  return form;
}
