"""Following a job until it ends (``jobs watch``, ``jobs create --watch``)
over its Server-Sent Events stream, ``GET /api/v1/jobs/{id}/events``.

People get one line per change of status or state and, on a terminal, a
progress bar redrawn in place below them; scripts (``--json``) get every
event as a JSON line. The exit status is the job's outcome: 0 when it
finished, 1 when it ended any other way (with a line on stderr saying how).
"""

from __future__ import annotations

import shutil
import sys
from typing import Any, TextIO

from avtomatika.cli.api import Api, ServerEvent, path_of
from avtomatika.cli.command import CommandError
from avtomatika.cli.output import moment, percent, print_json_line, text
from avtomatika.client.views import TERMINAL_STATUSES as ENDED

__all__ = ["outcome", "watch"]

_BAR_WIDTH = 30
_CLEAR_LINE = "\r\x1b[2K"


def watch(api: Api, job_id: str, as_json: bool) -> int:
    """Follow ``job_id`` until it ends; its exit status."""
    screen = None if as_json else _Screen(sys.stdout)
    last: dict[str, Any] | None = None
    try:
        for event in api.events(path_of("api", "v1", "jobs", job_id, "events")):
            if event.kind == "error":  # the job disappeared while followed
                raise CommandError(f"job {job_id}: {text(event.data.get('error'))}")
            if screen is None:
                print_json_line({"event": event.kind, "data": event.data})
            else:
                screen.show(event)
            last = event.data
            if last.get("status") in ENDED:
                break
    finally:
        if screen is not None:
            screen.close()
    if last is None or last.get("status") not in ENDED:
        # The server closed the stream early (it is shutting down): ask once.
        last = api.get(path_of("api", "v1", "jobs", job_id))
        if last.get("status") not in ENDED:
            raise CommandError(
                f"the event stream of job {job_id} ended before the job did "
                f"(it is {text(last.get('status'))})"
            )
    return outcome(job_id, last)


def outcome(job_id: str, job: dict[str, Any]) -> int:
    """0 for a finished job; otherwise 1, having said how it ended."""
    status = job.get("status")
    if status == "finished":
        return 0
    error = job.get("error")
    reason = f": {text(error)}" if error else f" in state {text(job.get('current_state'))}"
    print(f"avtomatika: job {job_id} ended {text(status)}{reason}", file=sys.stderr)
    return 1


class _Screen:
    """A line per change of status or state; on a terminal, a progress bar
    under them, redrawn in place as progress events arrive."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._live = out.isatty()
        self._bar_shown = False

    def show(self, event: ServerEvent) -> None:
        data = event.data
        if event.kind == "status":
            self._clear()
            line = f"{moment(data.get('updated_at'))}  {text(data.get('status')):<19}"
            line += f"  {text(data.get('current_state'))}"
            if data.get("error"):
                line += f"  {text(data.get('error'))}"
            self._out.write(line + "\n")
        if self._live and data.get("status") not in ENDED:
            self._draw(data)
        self._out.flush()

    def close(self) -> None:
        self._clear()
        self._out.flush()

    def _draw(self, data: dict[str, Any]) -> None:
        progress = data.get("progress")
        fraction = min(max(float(progress), 0.0), 1.0) if isinstance(progress, int | float) else 0
        filled = round(fraction * _BAR_WIDTH)
        bar = f"[{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] {percent(fraction):>4}"
        if data.get("progress_message"):
            bar += f"  {text(data.get('progress_message'))}"
        # A line longer than the terminal wraps, and \r then redraws only
        # its last row: keep the bar to one row.
        columns = shutil.get_terminal_size().columns
        self._out.write(_CLEAR_LINE + bar[: max(columns - 1, 10)])
        self._bar_shown = True

    def _clear(self) -> None:
        if self._bar_shown:
            self._out.write(_CLEAR_LINE)
            self._bar_shown = False
