"""The orchestrator engine: blueprints, jobs, tasks and workers, with no
transport. REST and gRPC call into it; it never imports them.

    engine = OrchestratorEngine(MemoryStorage(), Settings())
    engine.register_blueprint(bp)
    await engine.start()
    job_id = await engine.create_background_job("video", {"url": ...})
    ...
    await engine.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from avtomatika.blueprint import StateMachineBlueprint
from avtomatika.clock import now_ms
from avtomatika.config import Settings
from avtomatika.context import ClientInfo
from avtomatika.errors import BlueprintError, Conflict, InvalidArgument, NotFound
from avtomatika.executor import StepRunner
from avtomatika.payload import to_payload
from avtomatika.results import Decision, decide, requeue
from avtomatika.status import TERMINAL, job_status_name
from avtomatika.storage.base import CommitOutcome, Lease, Storage
from avtomatika.storage.memory import MemoryStorage
from avtomatika.tasks import new_id
from avtomatika.v1.job_pb2 import Job, JobStatus
from avtomatika.v1.task_pb2 import Task, TaskResult, TaskState
from avtomatika.workers import WorkerRegistry

__all__ = ["BACKGROUND_CLIENT", "OrchestratorEngine", "ResultVerdict"]

log = logging.getLogger(__name__)

BACKGROUND_CLIENT = ClientInfo(id="__background__", plan="internal")
"""The owner of jobs created in-process by :meth:`OrchestratorEngine.create_background_job`."""

# How often a write that lost an optimistic race is decided again before
# giving up. Each retry re-reads, so this only bounds pathological contention.
_COMMIT_ATTEMPTS = 50


@dataclass(frozen=True, slots=True)
class ResultVerdict:
    """What became of a worker's result."""

    accepted: bool
    transition: str = ""
    reason: str = ""
    message: str = ""


class OrchestratorEngine:
    """Runs jobs of registered blueprints on a storage backend."""

    def __init__(self, storage: Storage | None = None, config: Settings | None = None) -> None:
        self.storage: Storage = storage if storage is not None else MemoryStorage()
        self.config = config if config is not None else Settings()
        self.workers = WorkerRegistry()
        self._blueprints: dict[str, StateMachineBlueprint] = {}
        self._routes: dict[tuple[str, str], StateMachineBlueprint] = {}
        self._clients: dict[str, ClientInfo] = {BACKGROUND_CLIENT.id: BACKGROUND_CLIENT}
        self._steps = StepRunner(self.storage, self._blueprints.get, self.client)
        self._loops: list[asyncio.Task[None]] = []

    # -- blueprints and clients --

    def register_blueprint(self, blueprint: StateMachineBlueprint) -> None:
        """Add a blueprint; raises :class:`BlueprintError` if it is invalid or
        its name or route is taken."""
        blueprint.validate()
        if blueprint.name in self._blueprints:
            raise BlueprintError(f"a blueprint named {blueprint.name!r} is already registered")
        route = (blueprint.api_version, blueprint.api_endpoint)
        if route in self._routes:
            raise BlueprintError(
                f"blueprint {blueprint.name!r}: route /api/{route[0]}/{route[1]} is already "
                f"served by blueprint {self._routes[route].name!r}"
            )
        self._blueprints[blueprint.name] = blueprint
        self._routes[route] = blueprint

    @property
    def blueprints(self) -> Mapping[str, StateMachineBlueprint]:
        """Registered blueprints by name."""
        return self._blueprints

    def blueprint_for_route(self, api_version: str, endpoint: str) -> StateMachineBlueprint:
        """The blueprint served at ``/api/{api_version}/{endpoint}``."""
        blueprint = self._routes.get((api_version, endpoint.strip("/")))
        if blueprint is None:
            raise NotFound(f"no blueprint is served at /api/{api_version}/{endpoint}")
        return blueprint

    def add_client(self, client: ClientInfo) -> None:
        """Make a client known (its plan and params reach handlers as ``client``)."""
        self._clients[client.id] = client

    def client(self, client_id: str) -> ClientInfo:
        """The client with this id (an unknown id gets a bare record)."""
        return self._clients.get(client_id) or ClientInfo(id=client_id)

    # -- lifecycle --

    async def start(self) -> None:
        """Start the executor loops. Idempotent."""
        if self._loops:
            return
        self._loops = [
            asyncio.create_task(self._execute_forever(), name=f"avtomatika-executor-{n}")
            for n in range(self.config.executor_concurrency)
        ]

    async def stop(self) -> None:
        """Stop the executor loops and close storage. Idempotent."""
        loops, self._loops = self._loops, []
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await self.storage.close()

    def run(self) -> None:
        """Blocking: start, then run until interrupted (Ctrl-C)."""

        async def main() -> None:
            await self.start()
            try:
                await asyncio.Event().wait()
            finally:
                await self.stop()

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())

    async def _execute_forever(self) -> None:
        while True:
            job_id = await self.storage.next_ready_job()
            try:
                await self._steps.run(job_id)
            except Exception:
                # A storage failure mid-step: the job stays where it was; log
                # loudly rather than kill this executor loop.
                log.exception("job %s: step failed", job_id)

    # -- jobs --

    async def create_job(
        self,
        blueprint_name: str,
        initial_data: Mapping[str, Any] | None = None,
        *,
        client: ClientInfo,
        webhook_url: str = "",
        dispatch_timeout: float | None = None,
        result_timeout: float | None = None,
        parent_job_id: str = "",
    ) -> str:
        """Create a job of a registered blueprint and queue its start handler."""
        blueprint = self._blueprints.get(blueprint_name)
        if blueprint is None:
            raise NotFound(f"blueprint {blueprint_name!r} is not registered")
        if initial_data is not None and not isinstance(initial_data, Mapping):
            raise InvalidArgument("initial_data must be a JSON object")
        now = now_ms()
        job = Job(
            id=new_id(),
            blueprint_name=blueprint.name,
            status=JobStatus.JOB_STATUS_PENDING,
            current_state=blueprint.start_state,
            initial_data=to_payload(dict(initial_data or {})),
            state_history=to_payload({}),
            created_at_ms=now,
            updated_at_ms=now,
            client_id=client.id,
            webhook_url=webhook_url,
            dispatch_timeout_ms=int((dispatch_timeout or 0) * 1000),
            result_timeout_ms=int((result_timeout or 0) * 1000),
            parent_job_id=parent_job_id,
        )
        await self.storage.create_job(job)
        return job.id

    async def create_background_job(
        self, blueprint_name: str, initial_data: Mapping[str, Any] | None = None, **options: Any
    ) -> str:
        """Create a job from inside the process (no client token involved)."""
        return await self.create_job(
            blueprint_name, initial_data, client=BACKGROUND_CLIENT, **options
        )

    async def get_job(self, job_id: str, *, client_id: str | None = None) -> Job:
        """The job; :class:`NotFound` if unknown or owned by another client
        (``client_id=None`` skips the ownership check, for in-process use)."""
        job = await self.storage.get_job(job_id)
        if job is None or (client_id is not None and job.client_id != client_id):
            raise NotFound(f"job {job_id!r} not found")
        return job

    async def cancel_job(self, job_id: str, *, client_id: str | None = None) -> bool:
        """Cancel a job (terminal at once). Returns True when the cancel was
        pushed in real time to a worker running one of its tasks."""
        for _ in range(_COMMIT_ATTEMPTS):
            job = await self.get_job(job_id, client_id=client_id)
            if job.status in TERMINAL:
                raise Conflict(f"job {job_id!r} is already {job_status_name(job.status)}")
            new = Job()
            new.CopyFrom(job)
            new.status = JobStatus.JOB_STATUS_CANCELLED
            new.updated_at_ms = now_ms()
            withdrawn = list(job.active_task_ids)
            del new.active_task_ids[:]
            outcome = await self.storage.commit(
                new, expected_version=job.version, withdraw=withdrawn
            )
            if outcome is CommitOutcome.OK:
                return await self._push_cancels(withdrawn, "job cancelled by client")
            if outcome is CommitOutcome.NOT_FOUND:
                raise NotFound(f"job {job_id!r} not found")
        raise Conflict(f"job {job_id!r} changed too often to cancel; try again")

    async def _push_cancels(self, task_ids: Iterable[str], reason: str) -> bool:
        pushed = False
        for task_id in task_ids:
            task = await self.storage.get_task(task_id)
            if task is not None and task.worker_id:
                pushed |= self.workers.push_cancel(
                    task.worker_id, task.task_id, task.job_id, reason
                )
        return pushed

    # -- workers --

    async def next_task(
        self, worker_id: str, skills: Iterable[str], timeout: float | None
    ) -> Task | None:
        """Wait for a task for this worker and lease it to it."""
        return await self.storage.claim_task(worker_id, list(skills), timeout)

    async def submit_result(self, result: TaskResult) -> ResultVerdict:
        """Apply a worker's result, if that worker holds the task's lease and
        the task is still what its job waits for."""
        for _ in range(_COMMIT_ATTEMPTS):
            found = await self._leased(result.task_id, result.worker_id, result.job_id)
            if isinstance(found, ResultVerdict):
                return found
            task, job = found
            decision = decide(
                job, task, result, max_retries=self.config.job_max_retries, now=now_ms()
            )
            if await self._commit_decision(job, task, decision):
                return ResultVerdict(accepted=True, transition=decision.transition)
        return ResultVerdict(False, reason="conflict", message="the job kept changing; giving up")

    async def requeue_task(self, task_id: str, worker_id: str, reason: str) -> bool:
        """Put a task the worker can no longer run back in the queue as a new
        attempt (a transient failure); True if it was still the worker's."""
        for _ in range(_COMMIT_ATTEMPTS):
            found = await self._leased(task_id, worker_id, "")
            if isinstance(found, ResultVerdict):
                return False
            task, job = found
            decision = requeue(
                job, task, reason, max_retries=self.config.job_max_retries, now=now_ms()
            )
            if await self._commit_decision(job, task, decision):
                return True
        return False

    async def holds(self, worker_id: str, task_id: str) -> bool:
        """Whether ``task_id`` is leased to ``worker_id`` right now."""
        task = await self.storage.get_task(task_id)
        return (
            task is not None
            and task.state == TaskState.TASK_STATE_LEASED
            and task.worker_id == worker_id
        )

    async def report_progress(
        self, worker_id: str, task_id: str, progress: float, message: str
    ) -> bool:
        """Record a running task's progress on its job."""
        task = await self.storage.get_task(task_id)
        if task is None or task.state != TaskState.TASK_STATE_LEASED or task.worker_id != worker_id:
            return False
        return await self.storage.set_progress(
            task.job_id, task_id, min(max(progress, 0.0), 1.0), message
        )

    async def _leased(
        self, task_id: str, worker_id: str, job_id: str
    ) -> tuple[Task, Job] | ResultVerdict:
        """The task and its job if ``worker_id`` may report on it, else why not."""
        task = await self.storage.get_task(task_id)
        if task is None or (job_id and task.job_id != job_id):
            return ResultVerdict(False, reason="stale", message=f"unknown task {task_id!r}")
        if task.state == TaskState.TASK_STATE_CANCELLED:
            return ResultVerdict(False, reason="cancelled", message="the task was cancelled")
        if task.state == TaskState.TASK_STATE_DONE:
            return ResultVerdict(False, reason="late", message="the task already has a result")
        if task.state != TaskState.TASK_STATE_LEASED or task.worker_id != worker_id:
            return ResultVerdict(
                False, reason="stale", message=f"task {task_id!r} is not leased to {worker_id!r}"
            )
        job = await self.storage.get_job(task.job_id)
        if job is None or job.status in TERMINAL or task_id not in job.active_task_ids:
            reason = "cancelled" if job and job.status == JobStatus.JOB_STATUS_CANCELLED else "late"
            return ResultVerdict(False, reason=reason, message="the job no longer waits for it")
        return task, job

    async def _commit_decision(self, job: Job, task: Task, decision: Decision) -> bool:
        outcome = await self.storage.commit(
            decision.job,
            expected_version=job.version,
            tasks=decision.tasks,
            lease=Lease(task.task_id, task.worker_id),
            ready=decision.ready,
        )
        return outcome is CommitOutcome.OK
