"""What every subcommand shares: the one error a command reports, the
connection options (server URL, token, ``--json``), and the lazy import of
the server's modules for the commands that need them.

A command is a function ``run(args) -> exit status`` set as the ``run``
default of its parser; :func:`avtomatika.cli.main` calls it and turns a
:class:`CommandError` into one line on stderr.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TypeAlias, TypeVar

__all__ = [
    "CONNECTION_OPTIONS",
    "DEFAULT_URL",
    "CommandError",
    "Commands",
    "Group",
    "Run",
    "connection_defaults",
    "connection_options",
    "needs_server",
]

DEFAULT_URL = "http://127.0.0.1:8080"

CONNECTION_OPTIONS = ("url", "token", "json")
"""Where :func:`connection_options` puts what it parses."""

Run = Callable[[argparse.Namespace], int]
"""A command: parsed arguments in, exit status out."""

# A string: argparse's class is generic only to type checkers.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""Where commands are added: ``add_subparsers()``'s answer."""

T = TypeVar("T")


class CommandError(Exception):
    """A failure a command reports as one line on stderr, exiting non-zero."""


class Group:
    """A command made of subcommands (``jobs`` of ``jobs ls``), most of which
    call the server and so take the connection options."""

    def __init__(
        self, commands: Commands, name: str, help: str, options: argparse.ArgumentParser
    ) -> None:
        group = commands.add_parser(name, help=help, parents=[options])
        self._verbs = group.add_subparsers(dest="verb", required=True, metavar="COMMAND")
        self._options = options

    def add(
        self, name: str, run: Run, help: str, *, local: bool = False, description: str = ""
    ) -> argparse.ArgumentParser:
        """The subcommand ``name``, running ``run``; ``local`` for one that
        needs no server (it gets no connection options)."""
        parser = self._verbs.add_parser(
            name,
            parents=[] if local else [self._options],
            help=help,
            description=description or help[:1].upper() + help[1:] + ".",
        )
        parser.set_defaults(run=run)
        return parser


def connection_options() -> argparse.ArgumentParser:
    """The options of every command that calls the server, as a parent
    parser of the top level, of each group and of each command, so they go
    anywhere (``avtomatika --url U jobs ls``, ``avtomatika jobs ls --url U``).
    Each level sets only what it is given (no default: ``SUPPRESS``), and a
    subcommand's values are copied over its parent's, so the innermost wins;
    :func:`connection_defaults` fills in the rest once parsing is done."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the orchestrator's REST address (AVTOMATIKA_URL, default {DEFAULT_URL})",
    )
    options.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="the client token, sent as X-Client-Token (AVTOMATIKA_TOKEN)",
    )
    options.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the API's JSON instead of a table",
    )
    return options


def connection_defaults(args: argparse.Namespace) -> None:
    """The connection options no level was given, from the environment, so
    a script can set ``AVTOMATIKA_URL`` and ``AVTOMATIKA_TOKEN`` once (and
    the token stays out of the process list, where ``--token`` would show
    it)."""
    given = vars(args)
    given.setdefault("url", os.environ.get("AVTOMATIKA_URL") or DEFAULT_URL)
    given.setdefault("token", os.environ.get("AVTOMATIKA_TOKEN"))
    given.setdefault("json", False)


def needs_server(load: Callable[[], T]) -> T:
    """``load()``, which imports modules of the server; when a third-party
    module of the ``server`` extra is missing (``pip install avtomatika``
    alone), a :class:`CommandError` saying what to install instead of a
    traceback."""
    try:
        return load()
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == "avtomatika" or missing.startswith("avtomatika."):
            raise  # a module of ours is missing: a broken install, not a missing extra
        raise CommandError(
            f"the server is not installed (no module {missing!r}); "
            "install it with: pip install 'avtomatika[server]'"
        ) from exc
