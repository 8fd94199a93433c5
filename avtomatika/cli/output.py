"""What the commands print: the API's JSON for scripts (``--json``), and
for people, aligned tables and ``key  value`` listings.

Everything shown to a person goes through :func:`text`, which escapes
control characters: a job's data, error or state name is the user's (or a
worker's), and an escape sequence in it must not drive the terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["listing", "moment", "percent", "print_json", "print_json_line", "table", "text"]

_NOTHING = "-"


def print_json(document: Any) -> None:
    """One JSON document, indented."""
    print(json.dumps(document, indent=2, ensure_ascii=False))


def print_json_line(document: Any) -> None:
    """One JSON document on one line, flushed at once (a stream of them is
    read line by line by whatever the output is piped to)."""
    sys.stdout.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def text(value: object) -> str:
    """``value`` as one line of safe text: ``-`` for nothing, JSON for
    objects and lists, control characters escaped (``\\n``, ``\\x1b``)."""
    if value is None or value == "":
        return _NOTHING
    if isinstance(value, dict | list):
        rendered = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        rendered = str(value)
    if rendered.isprintable():
        return rendered
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in rendered)


def percent(progress: object) -> str:
    """A progress fraction (0 to 1) as a whole percentage."""
    if not isinstance(progress, int | float):
        return _NOTHING
    return f"{round(progress * 100)}%"


def moment(iso: object) -> str:
    """An API timestamp (ISO 8601, UTC) to the second, readable:
    ``2026-12-06 02:30:01``."""
    if not isinstance(iso, str) or not iso:
        return _NOTHING
    return text(iso.replace("T", " ")[:19])


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print ``rows`` under ``headers``, each column as wide as its widest
    cell; an empty table prints its headers alone."""
    cells = [list(headers)] + [[text(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("  ".join(padded).rstrip())


def listing(pairs: Iterable[tuple[str, object]]) -> None:
    """Print ``key  value`` lines with the values aligned."""
    shown = [(key, text(value)) for key, value in pairs]
    width = max((len(key) for key, _ in shown), default=0)
    for key, value in shown:
        print(f"{key.ljust(width)}  {value}")
