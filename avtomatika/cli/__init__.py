"""The ``avtomatika`` command (also ``python -m avtomatika``).

- ``serve`` runs the orchestrator (:mod:`.serve`); it needs the ``server``
  extra, imported only when it runs.
- ``jobs``, ``workers``, ``blueprints`` call a running orchestrator's REST
  client API with the standard library (:mod:`.api`), so they work on
  ``pip install avtomatika`` alone; ``blueprints check`` loads blueprint
  files locally, as ``serve`` would.

Each command reports a failure as one line on stderr (``avtomatika: ...``)
and a non-zero exit status, never a traceback: 1 for a failure, 2 for a
command line or configuration mistake.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from avtomatika.cli.blueprints import add_blueprints
from avtomatika.cli.command import CommandError, connection_defaults, connection_options
from avtomatika.cli.jobs import add_jobs
from avtomatika.cli.serve import add_serve
from avtomatika.cli.version import package_version
from avtomatika.cli.workers import add_workers

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    options = connection_options()
    parser = argparse.ArgumentParser(
        prog="avtomatika", description="An orchestrator for long-running jobs.", parents=[options]
    )
    parser.add_argument("--version", action="version", version=f"avtomatika {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve(commands)
    add_jobs(commands, options)
    add_workers(commands, options)
    add_blueprints(commands, options)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = _parser().parse_args(argv)
    connection_defaults(args)
    try:
        status: int = args.run(args)
    except CommandError as exc:
        print(f"avtomatika: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130  # Ctrl-C while following a job: the shell's convention
    except BrokenPipeError:
        # The reader went away (`avtomatika jobs ls | head`): nothing left to say.
        sys.stderr.close()
        return 1
    return status
