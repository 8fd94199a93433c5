"""``task_files`` on S3: the files of one job, for its blueprint handlers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avtomatika.files.s3 import S3Files

__all__ = ["JobFiles"]


class JobFiles:
    """The :class:`~avtomatika.blueprint.task_files.TaskFiles` of one job, stored
    under ``jobs/{job_id}/`` in the files bucket."""

    __slots__ = ("_files", "job_id")

    def __init__(self, files: S3Files, job_id: str) -> None:
        self._files = files
        self.job_id = job_id

    async def download(self, name: str) -> bytes:
        """The content of ``name``."""
        return await self._files.get(self.job_id, name)

    async def upload(self, name: str, data: bytes) -> str:
        """Store ``data`` as ``name``; returns its ``s3://`` URI."""
        return await self._files.put(self.job_id, name, bytes(data))

    async def read_json(self, name: str) -> Any:
        """``name`` parsed as JSON."""
        return json.loads(await self.download(name))

    async def write_json(self, name: str, value: Any) -> str:
        """Store ``value`` as JSON; returns the file's URI."""
        return await self.upload(name, json.dumps(value, ensure_ascii=False).encode())

    async def read_text(self, name: str, encoding: str = "utf-8") -> str:
        """``name`` decoded as text."""
        return (await self.download(name)).decode(encoding)

    async def write_text(self, name: str, text: str, encoding: str = "utf-8") -> str:
        """Store ``text``; returns the file's URI."""
        return await self.upload(name, text.encode(encoding))

    async def presigned_url(self, name: str, expires_in: int = 3600) -> str:
        """A URL anyone can GET ``name`` from for ``expires_in`` seconds."""
        return await self._files.presigned_get(self.job_id, name, expires_in)

    def __repr__(self) -> str:
        return f"JobFiles(job_id={self.job_id!r}, bucket={self._files.bucket!r})"
