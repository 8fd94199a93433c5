"""A real S3 emulator for the tests: moto's server mode in its own process,
on a port the OS picks, spoken to over HTTP like any S3-compatible store.

Without moto the file tests skip (saying how to enable them), except under
``CI=true``, where a missing emulator is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import aioboto3
import pytest
from aiobotocore.config import AioConfig

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["S3Emulator", "keys_in", "s3_emulator", "unique_bucket"]

_LISTENING = re.compile(r"Running on (http://127\.0\.0\.1:\d+)")
_START_TIMEOUT_SECONDS = 30


@dataclass(frozen=True, slots=True)
class S3Emulator:
    """Where the emulator listens, and credentials it accepts (any)."""

    endpoint_url: str
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    def client(self) -> AbstractAsyncContextManager[S3Client]:
        """``async with emulator.client() as s3:`` an aioboto3 S3 client, to
        look at the bucket from outside the orchestrator."""
        session = aioboto3.Session(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        config = AioConfig(s3={"addressing_style": "path"})
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def settings(self, bucket: str, **overrides: object) -> dict[str, object]:
        """Orchestrator settings that store job files in ``bucket`` here."""
        return {
            "s3_endpoint_url": self.endpoint_url,
            "s3_access_key": self.access_key,
            "s3_secret_key": self.secret_key,
            "s3_region": self.region,
            "s3_default_bucket": bucket,
            **overrides,
        }


def unique_bucket() -> str:
    """A bucket name no other test uses (tests share one emulator)."""
    return f"avt-test-{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def s3_emulator() -> Iterator[S3Emulator]:
    """One moto server for the session (``python -m moto.server`` on port 0);
    each test keeps to its own bucket (:func:`unique_bucket`)."""
    if importlib.util.find_spec("moto.server") is None:
        message = "moto[server] is not installed: pip install 'moto[server]' to run the S3 tests"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    found: list[str] = []
    listening = threading.Event()
    # moto logs every request to stderr: keep draining it so the server never
    # blocks on a full pipe; the first lines tell the port it bound.
    drain = threading.Thread(
        target=_drain, args=(process.stderr, found, listening), name="moto-stderr", daemon=True
    )
    drain.start()
    try:
        if not listening.wait(_START_TIMEOUT_SECONDS) or not found:
            pytest.fail(f"moto server did not start (exit code {process.poll()})")
        yield S3Emulator(found[0])
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        drain.join(timeout=10)
        process.stderr.close()


def _drain(stream: IO[str], found: list[str], listening: threading.Event) -> None:
    for line in stream:
        if not found and (match := _LISTENING.search(line)):
            found.append(match.group(1))
            listening.set()
    listening.set()  # the process ended (before listening, if found is empty)


async def keys_in(s3: S3Client, bucket: str, prefix: str = "") -> list[str]:
    """The keys stored in ``bucket`` under ``prefix``."""
    reply = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for item in reply.get("Contents", [])]
