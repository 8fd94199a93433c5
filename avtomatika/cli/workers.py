"""``avtomatika workers ls``: the workers connected now, as the caller may
see them (``GET /api/v1/workers``)."""

from __future__ import annotations

import argparse

from avtomatika.cli.api import Api
from avtomatika.cli.command import Commands, Group
from avtomatika.cli.output import moment, print_json, table

__all__ = ["add_workers"]


def add_workers(commands: Commands, options: argparse.ArgumentParser) -> None:
    """The ``workers`` command and its subcommands."""
    Group(commands, "workers", "the connected workers", options).add(
        "ls", _list, "list the connected workers"
    )


def _list(args: argparse.Namespace) -> int:
    workers = Api.from_args(args).get("/api/v1/workers")
    if args.json:
        print_json(workers)
        return 0
    rows = []
    for worker in workers:
        capacity = worker.get("resources", {}).get("max_concurrent_tasks")
        rows.append(
            (
                worker.get("worker_id"),
                worker.get("transport"),
                worker.get("status"),
                ", ".join(worker.get("skills", [])),
                f"{worker.get('load', 0)}/{capacity}",
                moment(worker.get("last_seen")),
                worker.get("agent"),
            )
        )
    table(("WORKER", "TRANSPORT", "STATUS", "SKILLS", "LOAD", "LAST SEEN", "AGENT"), rows)
    return 0
