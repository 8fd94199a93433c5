"""What blueprint handlers get as ``task_files``: the files of their job.

The core only knows this interface; the S3 implementation lives in
:mod:`avtomatika.files` and reaches the engine as a :data:`TaskFilesFactory`
from the composition root, so the core never imports aioboto3. Handlers get
``None`` when no file storage is configured.

Names are relative to the job (``"input.mp4"``, ``"frames/0001.png"``); a name
with ``..``, a leading ``/``, a backslash, an empty segment or a control
character is refused with :class:`~avtomatika.errors.InvalidArgument`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["TaskFiles", "TaskFilesFactory"]


class TaskFiles(Protocol):
    """The files of one job. Every method is a round trip to the store;
    a missing file raises :class:`~avtomatika.errors.NotFound`, an
    unreachable store :class:`~avtomatika.errors.Unavailable`."""

    async def download(self, name: str) -> bytes:
        """The content of ``name``."""
        ...

    async def upload(self, name: str, data: bytes) -> str:
        """Store ``data`` as ``name`` (replacing it); returns its URI (``s3://...``)."""
        ...

    async def read_json(self, name: str) -> Any:
        """``name`` parsed as JSON."""
        ...

    async def write_json(self, name: str, value: Any) -> str:
        """Store ``value`` as JSON; returns the file's URI."""
        ...

    async def read_text(self, name: str, encoding: str = "utf-8") -> str:
        """``name`` decoded as text."""
        ...

    async def write_text(self, name: str, text: str, encoding: str = "utf-8") -> str:
        """Store ``text``; returns the file's URI."""
        ...

    async def presigned_url(self, name: str, expires_in: int = 3600) -> str:
        """A URL anyone can GET ``name`` from for ``expires_in`` seconds
        (to hand to a worker or a client)."""
        ...


TaskFilesFactory = Callable[[str], TaskFiles | None]
"""The ``task_files`` of a job id (``None``: no file storage)."""
