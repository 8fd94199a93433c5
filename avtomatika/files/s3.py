"""Job files in an S3-compatible store (AWS, MinIO, Ceph, moto...), through aioboto3.

:class:`S3Files` is a service: :meth:`~S3Files.start` opens one client (its
connection pool is shared by every request) and creates the bucket if it is
missing; :meth:`~S3Files.stop` closes it. Every method takes a job id and a
file name and validates the name before any I/O (see :mod:`.names`).

Foreign errors become ours in :func:`_translated`: a missing object is
:class:`~avtomatika.errors.NotFound`, anything else the store or the network
does wrong is :class:`~avtomatika.errors.Unavailable`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from avtomatika.config import Settings
from avtomatika.errors import ConfigError, InvalidArgument, NotFound, Unavailable
from avtomatika.files.job_files import JobFiles
from avtomatika.files.multipart import ByteStream, upload_stream
from avtomatika.files.names import job_prefix, object_key

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import ObjectIdentifierTypeDef

__all__ = ["MAX_EXPIRES_IN", "S3Files"]

log = logging.getLogger(__name__)

MAX_EXPIRES_IN = 7 * 24 * 3600
"""The longest a SigV4 presigned URL may live (7 days)."""

_MISSING = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


class S3Files:
    """The files of every job, in one bucket (``S3_DEFAULT_BUCKET``)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.s3_endpoint_url:
            raise ConfigError("S3Files needs S3_ENDPOINT_URL")
        self.bucket = settings.s3_default_bucket
        self.endpoint_url = settings.s3_endpoint_url
        self._session = aioboto3.Session(
            aws_access_key_id=settings.s3_access_key,
            aws_secret_access_key=settings.s3_secret_key,
            region_name=settings.s3_region,
        )
        # Path-style addressing (endpoint/bucket/key): what S3-compatible
        # stores expect; virtual hosts (bucket.endpoint) need DNS for each bucket.
        # Retries: the SDK's "standard" mode (3 attempts, jittered backoff)
        # rather than its legacy default of 5.
        self._config = AioConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard"},
            max_pool_connections=50,
        )
        self._region = settings.s3_region
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: S3Client | None = None

    # -- lifecycle --

    async def start(self) -> None:
        """Open the client and make sure the bucket exists."""
        if self._client is not None:
            return
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(
            self._session.client("s3", endpoint_url=self.endpoint_url, config=self._config)
        )
        try:
            await self._ensure_bucket(client)
        except BaseException:
            await stack.aclose()
            raise
        self._stack, self._client = stack, client

    async def stop(self) -> None:
        """Close the client. Idempotent."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _ensure_bucket(self, client: S3Client) -> None:
        where = f"S3 bucket {self.bucket!r} at S3_ENDPOINT_URL {self.endpoint_url!r}"
        try:
            try:
                await client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if _error_code(exc) not in _MISSING:
                    raise
            if self._region == "us-east-1":
                await client.create_bucket(Bucket=self.bucket)
            else:
                await client.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={"LocationConstraint": self._region},  # type: ignore[typeddict-item]
                )
            log.info("created %s", where)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise ConfigError(f"cannot use {where}: {exc}") from exc

    @property
    def client(self) -> S3Client:
        """The open client (:class:`Unavailable` before start or after stop)."""
        if self._client is None:
            raise Unavailable("file storage is not running")
        return self._client

    # -- files --

    def uri(self, job_id: str, filename: str) -> str:
        """``s3://bucket/jobs/{job_id}/{filename}``."""
        return f"s3://{self.bucket}/{object_key(job_id, filename)}"

    def for_job(self, job_id: str) -> JobFiles:
        """The ``task_files`` of ``job_id`` (a
        :data:`~avtomatika.blueprint.task_files.TaskFilesFactory`)."""
        return JobFiles(self, job_id)

    async def presigned_put(self, job_id: str, filename: str, expires_in: int) -> str:
        """A URL to PUT ``filename`` to, valid for ``expires_in`` seconds."""
        return await self._presign("put_object", object_key(job_id, filename), expires_in)

    async def presigned_get(self, job_id: str, filename: str, expires_in: int) -> str:
        """A URL to GET ``filename`` from, valid for ``expires_in`` seconds."""
        return await self._presign("get_object", object_key(job_id, filename), expires_in)

    async def exists(self, job_id: str, filename: str) -> bool:
        """Whether ``filename`` is stored."""
        key = object_key(job_id, filename)
        try:
            async with _translated(f"file {filename!r}"):
                await self.client.head_object(Bucket=self.bucket, Key=key)
        except NotFound:
            return False
        return True

    async def put(self, job_id: str, filename: str, data: bytes) -> str:
        """Store ``data`` as ``filename``; returns its URI."""
        key = object_key(job_id, filename)
        async with _translated(f"file {filename!r}"):
            await self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return self.uri(job_id, filename)

    async def get(self, job_id: str, filename: str) -> bytes:
        """The content of ``filename`` (:class:`NotFound` if it is not stored)."""
        key = object_key(job_id, filename)
        async with _translated(f"file {filename!r}"):
            reply = await self.client.get_object(Bucket=self.bucket, Key=key)
            body = reply["Body"]
            async with body:
                data: bytes = await body.read()
        return data

    async def upload_stream(
        self, job_id: str, filename: str, stream: ByteStream, content_type: str | None = None
    ) -> str:
        """Copy ``stream`` into ``filename`` in constant memory; returns its URI."""
        key = object_key(job_id, filename)
        async with _translated(f"file {filename!r}"):
            size = await upload_stream(
                self.client, self.bucket, key, stream, content_type=content_type
            )
        log.debug("stored %d bytes as %s", size, key)
        return self.uri(job_id, filename)

    async def delete_job(self, job_id: str) -> int:
        """Delete every file of ``job_id``; returns how many there were."""
        prefix = job_prefix(job_id)
        deleted = 0
        async with _translated(f"the files of job {job_id!r}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            async for page in pages:
                keys: list[ObjectIdentifierTypeDef] = [
                    {"Key": item["Key"]} for item in page.get("Contents", [])
                ]
                if keys:
                    # A page holds at most 1000 keys, DeleteObjects' limit.
                    await self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                    )
                    deleted += len(keys)
        return deleted

    async def _presign(self, operation: str, key: str, expires_in: int) -> str:
        if not 1 <= expires_in <= MAX_EXPIRES_IN:
            raise InvalidArgument(
                f"expires_in must be between 1 and {MAX_EXPIRES_IN} seconds, got {expires_in}"
            )
        async with _translated("a presigned URL"):
            url: str = await self.client.generate_presigned_url(
                operation,
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=expires_in,
            )
        return url


def _error_code(exc: ClientError) -> str:
    error: Any = exc.response.get("Error", {})
    return str(error.get("Code", ""))


@contextlib.asynccontextmanager
async def _translated(what: str) -> AsyncIterator[None]:
    """Map aiobotocore's errors to ours (the one table for foreign S3 errors)."""
    try:
        yield
    except ClientError as exc:
        code = _error_code(exc)
        if code in _MISSING:
            raise NotFound(f"{what} not found") from exc
        raise Unavailable(f"file storage refused {what}: {code or exc}") from exc
    except (BotoCoreError, OSError) as exc:
        raise Unavailable(f"file storage is unreachable: {exc}") from exc
