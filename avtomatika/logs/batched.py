"""The orchestrator's log handler: lines written to a stream in batches.

Under load the orchestrator logs about nine INFO lines per job (access and
lifecycle lines); written one ``write`` each, the syscalls alone cost a
fifth of its CPU. This handler formats each record where it is logged (so
the line says what was true then) but keeps the text, and writes what has
gathered in one go:

- when :data:`BATCH_BYTES` have gathered;
- at once for a WARNING or worse, with every line before it;
- at most :data:`BATCH_SECONDS` after the first line of a batch, by a
  writer thread, which sleeps while nothing is logged (an idle server
  wakes nobody);
- at exit: :func:`logging.shutdown` (registered with ``atexit`` by
  :mod:`logging` itself) flushes every handler, so a process stopped by
  SIGTERM, which stops gracefully and returns, loses no line.

A process killed by SIGKILL loses at most the last batch, as one whose
stream is buffered would.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TextIO

__all__ = ["BATCH_BYTES", "BATCH_SECONDS", "BatchedStreamHandler"]

BATCH_BYTES = 64 * 1024
BATCH_SECONDS = 0.05


class BatchedStreamHandler(logging.StreamHandler[TextIO]):
    """A :class:`logging.StreamHandler` that writes in batches."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._size = 0
        # Set when a batch starts; the writer thread waits on it.
        self._pending = threading.Event()
        self._writer = threading.Thread(
            target=self._write_late, name="avtomatika-log-writer", daemon=True
        )
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        # Called with self.lock held (Handler.handle), as flush takes it too.
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        try:
            self._add(line, record.levelno)
        except Exception:
            self.handleError(record)

    def write_line(self, line: str, levelno: int) -> None:
        """Write ``line`` (formatted already, without its terminator) as
        :meth:`emit` writes a record of ``levelno``'s; for lines made
        without a record (:mod:`avtomatika.logs.direct`). Raises what the
        stream raises."""
        with self.lock:  # type: ignore[union-attr]
            self._add(line, levelno)

    def _add(self, line: str, levelno: int) -> None:
        line += self.terminator
        if not self._lines:
            self._pending.set()
        self._lines.append(line)
        self._size += len(line)
        if levelno >= logging.WARNING or self._size >= BATCH_BYTES:
            self._write()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            self._write()

    def _write(self) -> None:
        if self._lines:
            text = "".join(self._lines)
            self._lines.clear()
            self._size = 0
            self.stream.write(text)
        self.stream.flush()

    def _write_late(self) -> None:
        while True:
            self._pending.wait()
            # The lines logged meanwhile join the batch.
            time.sleep(BATCH_SECONDS)
            with self.lock:  # type: ignore[union-attr]
                self._pending.clear()
                try:
                    self._write()
                except (OSError, ValueError):
                    # The stream is closed or gone (the process is ending);
                    # logging itself reports nothing either then.
                    self._lines.clear()
                    self._size = 0
