"""How the orchestrator's log lines look: ``LOG_FORMAT=text`` (default) or
``json``, one object per line.

Structured fields travel as ``extra=`` attributes of the record
(``job_id``, ``worker_id``, ``request_id``, ``client_id``, ...). The JSON
format writes each of them as a key; the text format writes the message,
which says the same in words, and appends the request id when there is one.

Why a formatter of our own rather than python-json-logger or structlog:
JSON lines are one ``orjson.dumps`` of the record's fields, and orjson is
already a dependency (of the SDK too); the format needs no configuration
beyond its name; and structlog would change how every module logs, where
plain :mod:`logging` with ``extra=`` keeps embedding applications in charge
of their own handlers.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

from avtomatika.logs.batched import BatchedStreamHandler
from avtomatika.logs.scope import RequestIdFilter

__all__ = ["InstanceTag", "JsonFormatter", "TextFormatter", "configure_logging"]

# What every record has: anything else on a record is a structured field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

# The loggers of grpc's Python layer. Its C core writes to stderr by itself
# (GRPC_VERBOSITY, GRPC_TRACE) and is left as the operator sets it.
_GRPC_LOGGERS = ("grpc", "grpc._cython.cygrpc", "grpc._server", "grpc.aio", "grpc_reflection")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC, milliseconds),
    ``level``, ``logger``, ``message``, every structured field, and
    ``exception`` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = _json_fields(
            record.created, record.levelname, record.name, record.getMessage(), record.__dict__
        )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _json_text(line)

    def format_fields(
        self, created: float, levelno: int, name: str, message: str, fields: dict[str, Any]
    ) -> str:
        """The line :meth:`format` writes for a record of these whose
        ``extra`` was ``fields`` (no exception, no stack), made without the
        record (see :mod:`avtomatika.logs.direct`)."""
        return _json_text(
            _json_fields(created, logging.getLevelName(levelno), name, message, fields)
        )


def _json_fields(
    created: float, levelname: str, name: str, message: str, fields: dict[str, Any]
) -> dict[str, Any]:
    line: dict[str, Any] = {
        "time": _utc(created),
        "level": levelname,
        "logger": name,
        "message": message,
    }
    for key, value in fields.items():
        if key not in _STANDARD:
            line[key] = value
    return line


def _json_text(line: dict[str, Any]) -> str:
    # default=str: a field orjson cannot encode (a Path, an enum) is
    # written as its text rather than losing the line.
    return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``2026-01-01 12:00:00,000 INFO avtomatika.jobs: job 3f..: created
    [request_id=ab12]``: the message says what the fields hold, so only
    the request id, which no message names, is appended."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self._time(record.created)

    def _time(self, created: float) -> str:
        # What logging.Formatter writes, its text up to the second made once
        # a second rather than once a line (localtime and strftime are most
        # of the cost of formatting a line); the milliseconds as a record's
        # msecs has them.
        seconds = int(created)
        if seconds != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(seconds))
            self._second = seconds
        return f"{self._stamp},{int((created - seconds) * 1000):03d}"

    def format(self, record: logging.LogRecord) -> str:
        return _tagged(super().format(record), record.__dict__)

    def format_fields(
        self, created: float, levelno: int, name: str, message: str, fields: dict[str, Any]
    ) -> str:
        """The line :meth:`format` writes for a record of these whose
        ``extra`` was ``fields`` (no exception, no stack), made without the
        record (see :mod:`avtomatika.logs.direct`)."""
        text = f"{self._time(created)} {logging.getLevelName(levelno)} {name}: {message}"
        return _tagged(text, fields)


def _tagged(text: str, fields: dict[str, Any]) -> str:
    """A text line with the fields no message names appended."""
    for key in ("request_id", "instance"):
        value = fields.get(key)
        if value is not None:
            text = f"{text} [{key}={value}]"
    return text


class InstanceTag(logging.Filter):
    """Names the process on every line: the processes of ``serve
    --processes`` write to one stream, and each line says whose it is."""

    def __init__(self, instance: str) -> None:
        super().__init__()
        self._instance = instance

    def filter(self, record: logging.LogRecord) -> bool:
        record.instance = self._instance
        return True

    def add_to(self, fields: dict[str, Any]) -> None:
        """What :meth:`filter` adds to a record, added to a line's fields."""
        fields["instance"] = self._instance


def configure_logging(
    level: int, log_format: str, *, instance: str | None = None, stream: TextIO | None = None
) -> None:
    """The orchestrator's logging: one handler on the root logger, writing
    to ``stream`` (stderr unless given: the benchmarks write to a file), in
    ``log_format`` (``LOG_FORMAT``: ``json``, else text), the request id on
    every line logged while a request is served, and grpc's own loggers
    quiet (see :func:`_quiet_grpc`). ``instance`` tags every line with the
    process's name (a field ``instance``; ``[instance=...]`` in text).
    Lines are written in batches (:mod:`avtomatika.logs.batched`)."""
    handler = BatchedStreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if log_format.lower() == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    if instance is not None:
        handler.addFilter(InstanceTag(instance))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    _quiet_grpc(level)
    _skip_unwritten_fields()


def _skip_unwritten_fields() -> None:
    """Records without what neither format writes: the caller's source
    line (a walk up the stack per line), the thread and the process; the
    switches the logging HOWTO's "Optimization" section names. The
    process is the orchestrator's own (``serve`` configures it), so no
    other handler wants them."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def _quiet_grpc(level: int) -> None:
    """grpc's Python loggers at WARNING whatever ``LOG_LEVEL`` is.

    At DEBUG they report every poller wake-up and every call's teardown
    (hundreds of lines a second under load), which drowns the orchestrator's
    own DEBUG lines, the ones an operator turns DEBUG on for; what grpc
    says at WARNING and above (a port it cannot bind, a handler that
    raised past us) still shows. Its internals are traced with grpc's own
    switches (GRPC_VERBOSITY=debug, GRPC_TRACE=...), which are meant for it.
    """
    for name in _GRPC_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


# The last second _utc wrote, and its text: strftime once a second, not once
# a line.
_last_second: tuple[int, str] = (-1, "")


def _utc(created: float) -> str:
    global _last_second
    seconds = int(created)
    if seconds != _last_second[0]:
        _last_second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_last_second[1]}.{int((created - seconds) * 1000):03d}Z"
