"""The event loop a benchmark process runs on: ``asyncio`` (the default) or
``uvloop``, to measure the loop as a lever (issue 18).

uvloop is not a dependency: install it by hand in the venv that runs the
benchmark (``.venv/bin/pip install uvloop``). The choice travels to the
benchmark's own child processes in ``BENCH_LOOP``, so the orchestrator and
its SDK workers run on the same loop; the load clients keep asyncio, so they
cost the same in both arms of an A/B.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
LOOPS = ("asyncio", "uvloop")
ENV = "BENCH_LOOP"


def chosen() -> str:
    return os.environ.get(ENV, "asyncio")


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """``asyncio.run`` on ``loop`` (one of ``LOOPS``)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop != "asyncio":
        # Imported by name: mypy and the default install never need it.
        factory = importlib.import_module(loop).new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
