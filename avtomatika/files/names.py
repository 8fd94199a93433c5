"""Where a job's files live in the bucket, and which names are allowed.

Layout: ``jobs/{job_id}/{filename}``. A job's prefix holds only its own files,
so a name must never climb out of it or alias another one: ``..`` anywhere,
a leading ``/``, a backslash (a separator on some clients), an empty segment
(``a//b``) or ``.`` segment, and control characters are refused.
"""

from __future__ import annotations

import unicodedata

from avtomatika.errors import InvalidArgument

__all__ = ["MAX_FILENAME_BYTES", "check_filename", "job_prefix", "object_key"]

MAX_FILENAME_BYTES = 512
"""S3 keys are at most 1024 bytes; half of it is ample for a name and leaves
room for the prefix."""


def check_filename(filename: str) -> str:
    """``filename`` if it is a safe relative name, else :class:`InvalidArgument`."""
    if not filename:
        raise InvalidArgument("filename is required")
    try:
        encoded = filename.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("filename is not valid UTF-8 text") from None
    if len(encoded) > MAX_FILENAME_BYTES:
        raise InvalidArgument(f"filename is longer than {MAX_FILENAME_BYTES} bytes")
    if any(unicodedata.category(char) == "Cc" for char in filename):
        raise InvalidArgument("filename must not contain control characters")
    if "\\" in filename:
        raise InvalidArgument("filename must not contain a backslash")
    if ".." in filename:
        raise InvalidArgument("filename must not contain '..'")
    if filename.startswith("/"):
        raise InvalidArgument("filename must be relative, not start with '/'")
    if any(segment in ("", ".") for segment in filename.split("/")):
        raise InvalidArgument("filename must not contain empty or '.' path segments")
    return filename


def job_prefix(job_id: str) -> str:
    """The prefix under which every file of ``job_id`` lives."""
    if not job_id or "/" in job_id:
        raise InvalidArgument(f"invalid job id {job_id!r}")
    return f"jobs/{job_id}/"


def object_key(job_id: str, filename: str) -> str:
    """The object key of ``filename`` of ``job_id`` (validating the name)."""
    return job_prefix(job_id) + check_filename(filename)
