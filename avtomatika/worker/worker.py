"""The :class:`Worker`: skills, the connection loop, and shutdown.

Shutdown ordering (:meth:`Worker.stop`), each step idempotent:

1. drain: tell the server to send nothing more, grant no more credits;
2. wait up to the grace period for running tasks to finish;
3. cancel the rest; each reports a CANCELLED result;
4. wait (``result_flush_timeout``) for the server to acknowledge the last
   results, reconnecting if need be;
5. hang up the stream.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import grpc

from avtomatika.ids import worker_id_problem
from avtomatika.v1.worker_pb2 import GpuInfo as GpuInfoMessage
from avtomatika.v1.worker_pb2 import InstalledModel, WorkerRegistration, WorkerResources
from avtomatika.v1.worker_service_pb2 import Hello
from avtomatika.worker._backoff import Backoff
from avtomatika.worker._runner import TaskRunner
from avtomatika.worker._session import Session, SessionEnd
from avtomatika.worker.config import ConnectionSettings, Resources
from avtomatika.worker.errors import WorkerRejected
from avtomatika.worker.task import SkillHandler

__all__ = ["Worker"]

log = logging.getLogger("avtomatika.worker")


# Statuses that no retry can fix: the worker stops and run() raises.
_FATAL_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)

_H = TypeVar("_H", bound=SkillHandler)


class Worker:
    """A worker that runs skills for an Avtomatika orchestrator over gRPC.

    ::

        worker = Worker(worker_id="w-1", addresses=["orchestrator:50051"], token="...")

        @worker.skill("echo")
        async def echo(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
            await task.report_progress(0.5, "half way")
            return {"echo": params}

        await worker.run()   # until worker.stop()

    ``max_concurrency`` is how many tasks run at once; the server never sends
    more. ``addresses`` are tried in turn: when a stream fails or ends, the
    worker reconnects to the next one, with exponential backoff and jitter.
    """

    def __init__(
        self,
        *,
        worker_id: str,
        addresses: Sequence[str] | str,
        token: str,
        max_concurrency: int = 1,
        worker_type: str = "",
        resources: Resources | None = None,
        labels: Mapping[str, str] | None = None,
        installed_software: Mapping[str, str] | None = None,
        settings: ConnectionSettings | None = None,
    ) -> None:
        problem = worker_id_problem(worker_id)
        if problem is not None:
            raise ValueError(problem)
        self._addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        if not self._addresses or not all(self._addresses):
            raise ValueError("a worker needs at least one server address")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.worker_id = worker_id
        self.max_concurrency = max_concurrency
        self._token = token
        self._worker_type = worker_type
        self._resources = resources or Resources()
        self._labels = dict(labels or {})
        self._installed_software = dict(installed_software or {})
        self._settings = settings or ConnectionSettings()
        self._handlers: dict[str, SkillHandler] = {}
        self._costs: dict[str, float] = {}
        self._started = False
        self._stop_requested = asyncio.Event()
        self._grace: float | None = None
        self._closing = asyncio.Event()
        self._stopped = asyncio.Event()
        self._session: Session | None = None
        self._fatal: WorkerRejected | None = None

    # --- skills ----------------------------------------------------------------

    def skill(self, name: str, *, cost: float | None = None) -> Callable[[_H], _H]:
        """Register the decorated coroutine function as the handler of skill ``name``.

        ``cost`` is the price per task the dispatcher compares across workers.
        """

        def register(handler: _H) -> _H:
            self.add_skill(name, handler, cost=cost)
            return handler

        return register

    def add_skill(self, name: str, handler: SkillHandler, *, cost: float | None = None) -> None:
        """Register ``handler`` for skill ``name`` (the decorator's plain form)."""
        if self._started:
            raise RuntimeError("skills must be registered before the worker runs")
        if not name:
            raise ValueError("a skill needs a name")
        if name in self._handlers:
            raise ValueError(f"skill {name!r} is already registered")
        self._handlers[name] = handler
        if cost is not None:
            self._costs[name] = cost

    @property
    def skills(self) -> list[str]:
        """The registered skill names."""
        return sorted(self._handlers)

    # --- running -----------------------------------------------------------------

    async def run(self) -> None:
        """Serve tasks until :meth:`stop` is called.

        Reconnects on its own whenever the stream fails. Raises
        :class:`WorkerRejected` when the server refuses the worker for good
        (a bad token, say). A worker runs once.
        """
        if self._started:
            raise RuntimeError("a Worker runs once; create a new one to run again")
        if not self._handlers:
            raise RuntimeError("register at least one skill before running the worker")
        self._started = True
        _default_handler()
        try:
            if not self._stop_requested.is_set():
                await self._serve()
        finally:
            self._stopped.set()
        if self._fatal is not None:
            raise self._fatal

    async def stop(self, grace_seconds: float | None = 30.0) -> None:
        """Stop taking tasks, let running ones finish, then return.

        Tasks still running after ``grace_seconds`` (None: no limit) are
        cancelled and reported as cancelled. Safe to call more than once and
        from any task; every call returns when the worker has stopped.
        """
        if not self._stop_requested.is_set():
            self._grace = grace_seconds
            self._stop_requested.set()
        if self._started:
            await self._stopped.wait()

    async def _serve(self) -> None:
        async with asyncio.TaskGroup() as group:
            runner = TaskRunner(
                worker_id=self.worker_id,
                handlers=self._handlers,
                max_concurrency=self.max_concurrency,
                spawn=group.create_task,
                result_limit=self._settings.result_limit,
            )
            try:
                connector = group.create_task(self._connect(runner))
                await self._stop_requested.wait()
                await self._shut_down(runner)
                self._closing.set()
                if self._session is not None:
                    self._session.close()
                await connector
            except BaseException:
                # Torn down (run() cancelled): handlers are cancelled by the
                # group, with nobody left to report them to.
                runner.abandon()
                raise

    async def _shut_down(self, runner: TaskRunner) -> None:
        runner.drain("the worker is shutting down")
        try:
            async with asyncio.timeout(self._grace):
                await runner.wait_idle()
        except TimeoutError:
            runner.cancel_all("the worker shut down before the task finished")
            await runner.wait_idle()
        if self._fatal is not None:
            return
        try:
            async with asyncio.timeout(self._settings.result_flush_timeout):
                await runner.wait_acked()
        except TimeoutError:
            log.warning("stopping with %d results the server never acknowledged", runner.unacked)

    async def _connect(self, runner: TaskRunner) -> None:
        settings = self._settings
        backoff = Backoff(
            settings.reconnect_initial_delay,
            settings.reconnect_max_delay,
            settings.reconnect_multiplier,
            settings.reconnect_jitter,
        )
        for attempt in itertools.count():
            address = self._addresses[attempt % len(self._addresses)]
            session = Session(address, token=self._token, settings=settings, listener=runner)
            credits = runner.attach(session)
            self._session = session
            try:
                end = await session.run(
                    Hello(
                        registration=self._registration(),
                        initial_credits=credits,
                        held_task_ids=runner.held(),
                        reports_held_tasks=True,
                    )
                )
            finally:
                self._session = None
                runner.detach(session)
            if self._closing.is_set():
                return
            if end.code in _FATAL_CODES:
                self._reject(end)
                return
            if end.welcomed and not end.drained:
                backoff.reset()
            delay = backoff.next_delay()
            # A drained stream ending is the plan, not a problem.
            level = logging.INFO if end.drained else logging.WARNING
            log.log(
                level, "stream to %s ended (%s); reconnecting in %.2fs", address, end.reason, delay
            )
            try:
                async with asyncio.timeout(delay):
                    await self._closing.wait()
                    return
            except TimeoutError:
                pass

    def _reject(self, end: SessionEnd) -> None:
        assert end.code is not None
        self._fatal = WorkerRejected(end.address, end.code.name, end.reason)
        log.error("%s", self._fatal)
        if not self._stop_requested.is_set():
            self._grace = 0
            self._stop_requested.set()

    def _registration(self) -> WorkerRegistration:
        resources = self._resources
        message = WorkerRegistration(
            worker_id=self.worker_id,
            worker_type=self._worker_type,
            skills=self.skills,
            resources=WorkerResources(
                max_concurrent_tasks=self.max_concurrency,
                cpu_cores=resources.cpu_cores,
                ram_gb=resources.ram_gb,
                installed_models=[
                    InstalledModel(name=name, version=version)
                    for name, version in resources.installed_models.items()
                ],
            ),
            cost_per_skill=self._costs,
            labels=self._labels,
            installed_software=self._installed_software,
        )
        if resources.gpu is not None:
            message.resources.gpu_info.CopyFrom(
                GpuInfoMessage(model=resources.gpu.model, vram_gb=resources.gpu.vram_gb)
            )
        return message


def _default_handler() -> None:
    """Unless the application configured logging (a handler on the root
    logger, or on the SDK's), the SDK's INFO lines (connected, reconnecting,
    rejected) go to stderr: a worker started from a plain script otherwise
    says nothing, since Python shows only warnings without a handler. The
    handler goes on the SDK's logger, never the root, so the application's
    own logging stays as it is."""
    if logging.getLogger().handlers or log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
