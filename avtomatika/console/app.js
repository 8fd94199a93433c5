// The console's shell: the login form, the navigation and the hash router
// (#/jobs, #/jobs/<id>, #/workers, #/blueprints). Each view gets an
// AbortSignal that aborts when the person leaves it, which stops its timers,
// requests and event stream.

import { call, clearToken, setToken, token } from "./api.js";
import { fill, h } from "./dom.js";
import { blueprintsView } from "./blueprints.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { workersView } from "./workers.js";

const view = document.getElementById("view");
const nav = document.getElementById("nav");
const logout = document.getElementById("logout");
let leaving = null;

function route() {
  const [path, search = ""] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const parameters = new URLSearchParams(search);
  if (parts[0] === "jobs" && parts[1]) return ["jobs", (root, signal) => jobView(root, parts[1], signal)];
  if (parts[0] === "workers") return ["workers", workersView];
  if (parts[0] === "blueprints") return ["blueprints", blueprintsView];
  return ["jobs", (root, signal) => jobsView(root, parameters, signal)];
}

function show() {
  leaving?.abort();
  leaving = new AbortController();
  if (!token()) {
    login();
    return;
  }
  nav.hidden = false;
  logout.hidden = false;
  const [name, render] = route();
  for (const link of nav.querySelectorAll("a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  fill(view);
  render(view, leaving.signal).catch((error) => {
    if (error.name !== "AbortError") fill(view, h("p", { class: "error", role: "alert" }, error.message));
  });
}

function login(message = "", kind = "error") {
  nav.hidden = true;
  logout.hidden = true;
  const input = h("input", {
    id: "token", name: "token", type: "password", autocomplete: "off", required: true,
    spellcheck: "false",
  });
  const problem = h("p", { class: kind, role: "alert" }, message);
  const form = h("form", { class: "login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Sign in"),
    h("p", {}, "Your client token is kept in this tab only, and sent only in a request header."),
    h("label", { for: "token" }, "Client token"),
    input,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    problem);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    try {
      await call("/api/v1/blueprints"); // a cheap request that needs the token
      show();
    } catch (error) {
      clearToken();
      problem.className = "error";
      fill(problem, error.status === 401 ? "That token was refused." : error.message);
    }
  });
  fill(view, form);
  input.focus();
}

logout.addEventListener("click", () => {
  clearToken();
  leaving?.abort();
  login("Logged out.", "info");
});

window.addEventListener("console:unauthorised", () => {
  if (nav.hidden) return; // the login form says it itself
  clearToken();
  leaving?.abort();
  login("The server refused the token: sign in again.");
});

window.addEventListener("hashchange", show);
show();
