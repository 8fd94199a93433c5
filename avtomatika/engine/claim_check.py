"""The claim-check: a payload over ``MAX_PAYLOAD_BYTES`` (a job's initial
data, a task's params) is stored as a file of its job in S3 and replaced by
a small reference (:data:`avtomatika.payload.REFERENCE_KEY`), so big data
never crosses a worker's stream nor fills the store: the worker SDK fetches
it from the reference's presigned URL, a handler reads it with
``task_files``. Without file storage such a payload is refused instead.
"""

from __future__ import annotations

from avtomatika.blueprint.task_files import TaskFiles
from avtomatika.payload import REFERENCE_KEY, to_payload
from avtomatika.v1.payload_pb2 import Payload

__all__ = ["URL_SECONDS", "check_in"]

URL_SECONDS = 7 * 24 * 3600
"""How long a reference's URL works: the longest a SigV4 presigned URL may
live. A task still queued after that fails to fetch its params."""


async def check_in(files: TaskFiles, name: str, data: bytes) -> Payload:
    """Store ``data`` (encoded JSON) as the job file ``name``; the reference
    that stands in for it."""
    uri = await files.upload(name, data)
    url = await files.presigned_url(name, URL_SECONDS)
    reference = {"uri": uri, "name": name, "url": url, "bytes": len(data)}
    return to_payload({REFERENCE_KEY: reference})
