"""``avtomatika jobs ...``: create, find, follow and act on the caller's
jobs through the REST client API."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from avtomatika.cli.api import Api, path_of
from avtomatika.cli.command import CommandError, Commands, Group
from avtomatika.cli.output import (
    listing,
    moment,
    percent,
    print_json,
    print_json_line,
    table,
    text,
)
from avtomatika.cli.watch import watch
from avtomatika.client._wire import split_route
from avtomatika.client.views import TERMINAL_STATUSES

__all__ = ["add_jobs"]


def add_jobs(commands: Commands, options: argparse.ArgumentParser) -> None:
    """The ``jobs`` command and its subcommands."""
    jobs = Group(commands, "jobs", "create, list, follow and act on jobs", options)

    create = jobs.add(
        "create",
        _create,
        "create a job",
        description="Create a job of a blueprint, named (echo) or by its route (jobs/echo).",
    )
    create.add_argument("blueprint", metavar="BLUEPRINT_ROUTE_OR_NAME")
    create.add_argument(
        "--data",
        default="{}",
        help="the initial data: a JSON object, or @FILE to read it from FILE (@- for stdin)",
    )
    create.add_argument(
        "--watch", action="store_true", help="then follow it until it ends (as jobs watch)"
    )

    ls = jobs.add("ls", _list, "list your jobs, newest first")
    ls.add_argument(
        "--status",
        action="append",
        default=[],
        help="only jobs in this status (repeat, or separate with commas)",
    )
    ls.add_argument("--blueprint", default="", help="only jobs of this blueprint")
    ls.add_argument("--state", default="", help="only jobs in this state")
    ls.add_argument("--limit", type=_positive, default=50, help="at most this many (default 50)")
    ls.add_argument("--all", action="store_true", help="every job: follow every page")
    ls.add_argument(
        "--page-size", type=_positive, default=100, help="jobs per request (1 to 500, default 100)"
    )

    for verb, run, helped in (
        ("get", _get, "show a job"),
        ("watch", _watch, "follow a job until it ends: exit 0 if it finished, 1 otherwise"),
        ("cancel", _cancel, "cancel a job"),
        ("retry", _retry, "retry a failed, error or quarantined job from where it stopped"),
        ("history", _history, "list a job's lifecycle events"),
    ):
        jobs.add(verb, run, helped).add_argument("job_id", metavar="ID")

    approve = jobs.add("approve", _approve, "decide for a job waiting for approval")
    approve.add_argument("job_id", metavar="ID")
    approve.add_argument("decision", metavar="DECISION", help="one of the decisions it offers")


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {raw!r}")
    return value


def _job_path(job_id: str, *rest: str) -> str:
    return path_of("api", "v1", "jobs", job_id, *rest)


def _create(args: argparse.Namespace) -> int:
    api = Api.from_args(args)
    initial_data = _initial_data(args.data)
    created = api.post(_create_path(api, args.blueprint), {"initial_data": initial_data})
    job_id = str(created.get("job_id", ""))
    if args.json:
        # With --watch, the events follow as JSON lines: so this is one too.
        (print_json_line if args.watch else print_json)(created)
    else:
        print(job_id)
    sys.stdout.flush()
    return watch(api, job_id, args.json) if args.watch else 0


def _create_path(api: Api, blueprint: str) -> str:
    """Where to POST a job of ``blueprint``: the route of the blueprint of
    that name, else ``blueprint`` read as a route (``jobs/echo``,
    ``v1/jobs/echo``, ``/api/v1/jobs/echo``); an unknown route is the
    server's 404 to report."""
    for listed in api.get("/api/v1/blueprints").get("blueprints", []):
        if listed.get("name") == blueprint:
            if not listed.get("route"):
                raise CommandError(
                    f"blueprint {blueprint!r} has no route: it is started by other jobs "
                    "or by schedules, never by a client"
                )
            return str(listed["route"])
    try:
        version, endpoint = split_route(blueprint, None)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return f"/api/{version}/{endpoint}"


def _initial_data(raw: str) -> dict[str, Any]:
    """``--data``: a JSON object, inline or ``@FILE`` (``@-``: stdin)."""
    source = "--data"
    if raw.startswith("@"):
        source = raw[1:]
        try:
            raw = sys.stdin.read() if source == "-" else Path(source).read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CommandError(f"{source} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError(f"{source} must be a JSON object, got {type(data).__name__}")
    return data


def _get(args: argparse.Namespace) -> int:
    job = Api.from_args(args).get(_job_path(args.job_id))
    if args.json:
        print_json(job)
        return 0
    progress = _progress(job)
    if job.get("progress_message") and job.get("status") not in TERMINAL_STATUSES:
        progress += f"  {text(job.get('progress_message'))}"
    pairs: list[tuple[str, object]] = [
        ("id", job.get("id")),
        ("blueprint", job.get("blueprint_name")),
        ("status", job.get("status")),
        ("state", job.get("current_state")),
        ("progress", progress),
        ("error", job.get("error")),
        ("retries", job.get("retry_count")),
        ("created", moment(job.get("created_at"))),
        ("updated", moment(job.get("updated_at"))),
        ("initial data", job.get("initial_data")),
        ("result", job.get("result")),
    ]
    approval = job.get("approval")
    if isinstance(approval, dict):
        decisions = ", ".join(text(d) for d in approval.get("decisions", []))
        pairs.append(("approval", f"{text(approval.get('message'))} (decide: {decisions})"))
        if approval.get("expires_at"):
            pairs.append(("expires", moment(approval.get("expires_at"))))
    if job.get("parent_job_id"):
        pairs.append(("parent", job.get("parent_job_id")))
    if job.get("child_job_ids"):
        pairs.append(("children", ", ".join(job["child_job_ids"])))
    listing(pairs)
    return 0


def _list(args: argparse.Namespace) -> int:
    api = Api.from_args(args)
    query: list[tuple[str, str]] = [("statuses", status) for status in args.status]
    if args.blueprint:
        query.append(("blueprint", args.blueprint))
    if args.state:
        query.append(("current_state", args.state))
    jobs: list[dict[str, Any]] = []
    page: dict[str, Any] = {}
    token = ""
    while True:
        # Each page asks for no more than is still wanted, so a page is never
        # cut and its next_page_token stays true for the next command.
        wanted = args.page_size if args.all else min(args.limit - len(jobs), args.page_size)
        paging = [("page_size", str(wanted))] + ([("page_token", token)] if token else [])
        page = api.get("/api/v1/jobs", query + paging)
        jobs += page.get("jobs", [])
        token = page.get("next_page_token") or ""
        if not token or (not args.all and len(jobs) >= args.limit):
            break
    if args.json:
        print_json({**page, "jobs": jobs})
        return 0
    if not jobs:
        print("no jobs match" if query else "no jobs")
    else:
        _jobs_table(jobs)
    counts = page.get("counts")
    # Unfiltered, nothing listed already says there is no job at all.
    if (jobs or query) and isinstance(counts, dict):
        shown = ", ".join(f"{text(name)} {n}" for name, n in sorted(counts.items()) if n)
        print(f"\nall your jobs: {shown or 'none'}")
    if token:
        print("(more jobs: raise --limit, or --all)")
    return 0


def _jobs_table(jobs: list[dict[str, Any]]) -> None:
    table(
        ("ID", "BLUEPRINT", "STATUS", "STATE", "PROGRESS", "CREATED"),
        (
            (
                job.get("id"),
                job.get("blueprint_name"),
                job.get("status"),
                job.get("current_state"),
                _progress(job),
                moment(job.get("created_at")),
            )
            for job in jobs
        ),
    )


def _progress(job: dict[str, Any]) -> str:
    """A job's progress as a percentage while it runs; ``-`` once it ended,
    whose progress is only what its last task reported (a finished job may
    read 0%)."""
    if job.get("status") in TERMINAL_STATUSES:
        return text(None)
    return percent(job.get("progress"))


def _watch(args: argparse.Namespace) -> int:
    return watch(Api.from_args(args), args.job_id, args.json)


def _cancel(args: argparse.Namespace) -> int:
    answer = Api.from_args(args).post(_job_path(args.job_id, "cancel"), {})
    if args.json:
        print_json(answer)
    elif answer.get("status") == "cancellation_request_sent":
        print(f"job {text(args.job_id)}: cancelled, and its worker told at once")
    else:
        print(f"job {text(args.job_id)}: cancelled")
    return 0


def _retry(args: argparse.Namespace) -> int:
    _show_job(args, Api.from_args(args).post(_job_path(args.job_id, "retry"), {}))
    return 0


def _approve(args: argparse.Namespace) -> int:
    body = {"decision": args.decision}
    _show_job(args, Api.from_args(args).post(_job_path(args.job_id, "approve"), body))
    return 0


def _show_job(args: argparse.Namespace, job: dict[str, Any]) -> None:
    """An action's answer, the job as it is now: in one line for a person."""
    if args.json:
        print_json(job)
    else:
        state = text(job.get("current_state"))
        print(f"job {text(job.get('id'))}: {text(job.get('status'))} in state {state}")


def _history(args: argparse.Namespace) -> int:
    events = Api.from_args(args).get(_job_path(args.job_id, "history"))
    if args.json:
        print_json(events)
        return 0
    table(
        ("TIME", "EVENT", "STATE", "WORKER", "DURATION", "MESSAGE"),
        (
            (
                moment(event.get("timestamp")),
                event.get("type"),
                event.get("state"),
                event.get("worker_id"),
                f"{event['duration_ms']} ms" if event.get("duration_ms") is not None else None,
                event.get("message") or event.get("details") or None,
            )
            for event in events
        ),
    )
    return 0
