"""The access and lifecycle lines written without a :class:`logging.LogRecord`
when nothing but the orchestrator's own handler would see the record.

Under load the orchestrator writes about nine INFO lines per job; through
:mod:`logging` each one builds a record (a dozen attributes, the ``extra``
fields copied in), walks the logger hierarchy, runs the handler's filters
and formats through :class:`logging.Formatter`: about a fifth of the
orchestrator's CPU at INFO. :func:`log_line` makes the same line from the
same parts directly and hands it to the :class:`BatchedStreamHandler`, but
only when that is provably what :mod:`logging` would do:

- the record would reach exactly one handler, our batched one (an
  application that attaches a handler anywhere on the logger's path, or
  pytest's ``caplog``, gets real records again);
- its formatter is exactly one of ours, its filters exactly ours (each
  knows how to add its field to the line);
- the logger is a plain, enabled :class:`logging.Logger` with no filters of
  its own, and no custom record factory is installed.

Otherwise the line goes through ``logger.log`` as any other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from avtomatika.logs.batched import BatchedStreamHandler
from avtomatika.logs.formats import InstanceTag, JsonFormatter, TextFormatter
from avtomatika.logs.scope import RequestIdFilter

__all__ = ["log_line"]

_FORMATTERS = (TextFormatter, JsonFormatter)
_FILTERS = (RequestIdFilter, InstanceTag)


def log_line(
    logger: logging.Logger,
    level: int,
    template: str,
    args: tuple[Any, ...],
    fields: dict[str, Any],
) -> None:
    """``logger.log(level, template, *args, extra=fields)``, with the same
    line written (``fields`` may gain the handler's ``request_id`` and
    ``instance``)."""
    if not logger.isEnabledFor(level):
        return
    handler = _sole_handler(logger, level)
    if handler is None:
        logger.log(level, template, *args, extra=fields)
        return
    formatter: Any = handler.formatter  # one of _FORMATTERS: _sole_handler checked
    # What LogRecord.getMessage makes of msg and args, a lone mapping
    # argument included.
    if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        message = str(template) % args[0]
    else:
        message = str(template) % args if args else str(template)
    for tag in handler.filters:
        tag.add_to(fields)  # type: ignore[union-attr]  # one of _FILTERS
    try:
        # Formatted under the handler's lock, as logging formats a record:
        # the text formatter keeps its stamp of the current second in two
        # fields, which another thread's line must not split.
        with handler.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            handler.write_line(
                formatter.format_fields(time.time(), level, logger.name, message, fields), level
            )
    except Exception:
        # Reported as logging reports a handler's failure, with the record
        # this line would have been.
        record = logger.makeRecord(logger.name, level, "", 0, template, args, None)
        handler.handleError(record)


def _sole_handler(logger: logging.Logger, level: int) -> BatchedStreamHandler | None:
    """The one handler a record of ``level`` from ``logger`` would reach, if
    it is our batched handler configured by us alone; else None."""
    if (
        type(logger) is not logging.Logger
        or logger.disabled
        or logger.filters
        or logging.getLogRecordFactory() is not logging.LogRecord
    ):
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        current = current.parent if current.propagate else None
    if type(found) is not BatchedStreamHandler or level < found.level:
        return None
    if type(found.formatter) not in _FORMATTERS:
        return None
    if any(type(tag) not in _FILTERS for tag in found.filters):
        return None
    return found
