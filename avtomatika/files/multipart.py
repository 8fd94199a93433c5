"""Streaming a body of unknown length into one S3 object in constant memory.

The body is read one part at a time (:data:`PART_SIZE`); only the part being
sent is held. A body shorter than one part is a single ``PutObject``; a longer
one is a multipart upload, aborted on any error or cancellation so no
half-written object or orphaned parts remain (S3 bills stored parts of
unfinished uploads).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from avtomatika.errors import InvalidArgument

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

__all__ = ["MAX_PARTS", "PART_SIZE", "ByteStream", "upload_stream"]

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024
"""Bytes per part: above S3's 5 MiB minimum, small enough to keep memory flat."""

MAX_PARTS = 10_000
"""S3's limit on parts per upload (so a streamed body is at most ~78 GiB)."""


class ByteStream(Protocol):
    """Something to read a body from (aiohttp's ``request.content`` is one):
    ``read(n)`` returns at most ``n`` bytes, and ``b""`` at the end."""

    async def read(self, n: int = -1) -> bytes: ...


async def read_part(stream: ByteStream, size: int) -> bytes:
    """Up to ``size`` bytes of ``stream``; fewer only at its end."""
    chunks: list[bytes] = []
    missing = size
    while missing:
        chunk = await stream.read(missing)
        if not chunk:
            break
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


async def upload_stream(
    client: S3Client,
    bucket: str,
    key: str,
    stream: ByteStream,
    *,
    content_type: str | None = None,
    part_size: int = PART_SIZE,
) -> int:
    """Copy ``stream`` to ``bucket``/``key``; returns the number of bytes."""
    extra: dict[str, Any] = {"ContentType": content_type} if content_type else {}
    body = await read_part(stream, part_size)
    if len(body) < part_size:
        await client.put_object(Bucket=bucket, Key=key, Body=body, **extra)
        return len(body)
    # With the SDK's default integrity checks each part carries a CRC32; the
    # upload must then declare it, and completing it must list them (as
    # s3transfer does).
    setting = getattr(client.meta.config, "request_checksum_calculation", None)
    checksums = setting != "when_required"
    if checksums:
        extra["ChecksumAlgorithm"] = "CRC32"
    upload = await client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
    upload_id = upload["UploadId"]
    parts: list[CompletedPartTypeDef] = []
    total = 0
    try:
        while body:
            number = len(parts) + 1
            if number > MAX_PARTS:
                raise InvalidArgument(
                    f"the body is larger than {MAX_PARTS * part_size} bytes, the most one "
                    "streamed upload can hold"
                )
            reply = await client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
            part: CompletedPartTypeDef = {"PartNumber": number, "ETag": reply["ETag"]}
            if checksums and "ChecksumCRC32" in reply:
                part["ChecksumCRC32"] = reply["ChecksumCRC32"]
            parts.append(part)
            total += len(body)
            body = b""  # drop the sent part before reading the next one
            body = await read_part(stream, part_size)
        await client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        await _abort(client, bucket, key, upload_id)
        raise
    return total


async def _abort(client: S3Client, bucket: str, key: str, upload_id: str) -> None:
    try:
        await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except Exception:
        # The original error matters more; a lifecycle rule on the bucket
        # (AbortIncompleteMultipartUpload) is the backstop for this case.
        log.exception("could not abort the multipart upload of %s/%s", bucket, key)
