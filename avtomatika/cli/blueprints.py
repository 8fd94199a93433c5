"""``avtomatika blueprints ...``: the blueprints a server runs (``ls``,
``graph``), and ``check``, which validates a directory of blueprint files
locally, exactly as ``serve --blueprints-dir`` would load it, with no server.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from avtomatika.cli.api import Api, path_of
from avtomatika.cli.command import CommandError, Commands, Group, needs_server
from avtomatika.cli.output import print_json, table, text

__all__ = ["add_blueprints"]

_SVG = "image/svg+xml"


def add_blueprints(commands: Commands, options: argparse.ArgumentParser) -> None:
    """The ``blueprints`` command and its subcommands."""
    blueprints = Group(commands, "blueprints", "the blueprints: list, draw, check", options)
    blueprints.add("ls", _list, "list the server's blueprints")

    graph = blueprints.add(
        "graph",
        _graph,
        "a blueprint's state machine as Graphviz DOT (or SVG)",
        description="Print a blueprint's state machine: Graphviz DOT (render it with "
        "`dot -Tsvg`), or with --svg an SVG drawn by the server.",
    )
    graph.add_argument("name", metavar="NAME")
    graph.add_argument("--svg", action="store_true", help="ask the server for SVG")

    check = blueprints.add(
        "check",
        _check,
        "validate a directory of blueprint files (no server needed)",
        local=True,
        description="Load every *.py file of DIR as `serve --blueprints-dir DIR` does and "
        "report each blueprint; exit 1 if any is invalid or there is none.",
    )
    check.add_argument("directory", metavar="DIR", type=Path)
    check.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the report as JSON"
    )


def _list(args: argparse.Namespace) -> int:
    answer = Api.from_args(args).get("/api/v1/blueprints")
    if args.json:
        print_json(answer)
        return 0
    table(
        ("NAME", "ROUTE", "START", "END STATES", "STATES", "SCHEMA"),
        (
            (
                blueprint.get("name"),
                blueprint.get("route") or "(internal)",
                blueprint.get("start_state"),
                ", ".join(blueprint.get("end_states", [])),
                len(blueprint.get("states", [])),
                "yes" if blueprint.get("input_schema") else "no",
            )
            for blueprint in answer.get("blueprints", [])
        ),
    )
    return 0


def _graph(args: argparse.Namespace) -> int:
    query = [("format", "svg")] if args.svg else []
    path = path_of("api", "v1", "blueprints", args.name, "graph")
    answer = Api.from_args(args).fetch(path, query)
    if args.svg and answer.content_type != _SVG:
        # A server older than ?format=svg ignores it and answers DOT.
        raise CommandError(
            f"the server answered {answer.content_type}, not SVG: it cannot draw SVG yet "
            "(drop --svg and render the DOT with `dot -Tsvg`)"
        )
    graph = answer.body.decode("utf-8", errors="replace")
    if args.json:
        print_json({"blueprint": args.name, "format": "svg" if args.svg else "dot", "graph": graph})
    else:
        print(graph, end="" if graph.endswith("\n") else "\n")
    return 0


def _check(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if not directory.is_dir():
        raise CommandError(f"{directory} is not a directory")
    reports = needs_server(lambda: _check_directory(directory))
    valid = bool(reports) and all(report["valid"] for report in reports)
    if args.json:
        print_json({"directory": str(directory), "valid": valid, "blueprints": reports})
    else:
        width = max((len(text(report["blueprint"])) for report in reports), default=0)
        for report in reports:
            verdict = "ok     " if report["valid"] else "INVALID"
            detail = report["file"] if report["valid"] else report["error"]
            print(f"{verdict}  {text(report['blueprint']).ljust(width)}  {text(detail)}")
            for warning in report["warnings"]:
                print(f"         warning: {text(warning)}")
        invalid = sum(not report["valid"] for report in reports)
        print(f"{len(reports) - invalid} valid, {invalid} invalid in {text(str(directory))}")
    if not reports:
        raise CommandError(f"no blueprint found in {directory} (its *.py files define none)")
    return 0 if valid else 1


def _check_directory(directory: Path) -> list[dict[str, Any]]:
    """One report per blueprint (or per file that fails to import): what
    ``serve`` would make of it. They are registered on an engine that never
    starts, as ``serve`` registers them, so two blueprints with one name or
    route are refused here as they would be there."""
    from avtomatika.blueprint.loader import load_each
    from avtomatika.engine.core import Engine

    engine = Engine()
    reports: list[dict[str, Any]] = []
    with _warnings_logged() as warnings:
        for loaded in load_each(directory, engine.register_blueprint):
            blueprint = loaded.blueprint
            reports.append(
                {
                    "file": str(loaded.path),
                    "blueprint": blueprint.name if blueprint is not None else None,
                    "route": f"/api/{blueprint.route}" if blueprint and blueprint.route else None,
                    "valid": loaded.error is None,
                    "error": loaded.error.message if loaded.error is not None else None,
                    "warnings": warnings[:],
                }
            )
            warnings.clear()
    return reports


@contextmanager
def _warnings_logged() -> Iterator[list[str]]:
    """The warnings Avtomatika logs in the block (registration warns of an
    end state that fails its jobs by 1.0b13's naming rule), collected
    instead of printed, to be reported with the blueprint they concern."""
    collected: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            collected.append(record.getMessage())

    logger = logging.getLogger("avtomatika")
    handler = Collect(logging.WARNING)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield collected
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
