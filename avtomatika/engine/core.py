"""The engine: blueprints, jobs, tasks and workers, with no transport. REST and
gRPC call into it; it never imports them.

Every state change is read → decide (pure functions in :mod:`results` and
:mod:`executor`) → commit, guarded by the job's version and, for worker
results, by the task's lease. When a commit loses a race it is decided again
from a fresh read, so a result, a timeout and a cancel arriving together on
one job leave exactly one outcome.

A step whose handler cannot suspend runs inside the change that makes it
ready (a job's creation, a result, a deadline) and is committed with it; any
other step waits in the ready queue for an executor loop.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from avtomatika.backoff import backoff_delay
from avtomatika.blueprint.context import ClientInfo
from avtomatika.blueprint.state_machine import StateMachineBlueprint
from avtomatika.blueprint.task_files import TaskFilesFactory
from avtomatika.clock import now_ms
from avtomatika.config import Settings
from avtomatika.engine.approvals import TIMEOUT_DECISION, decisions
from avtomatika.engine.claim_check import check_in
from avtomatika.engine.events import E, EventBus, JobEvent, creation_events, derive_events, event
from avtomatika.engine.executor import StepRunner
from avtomatika.engine.registry import WorkerRegistry
from avtomatika.engine.results import (
    RETRYABLE,
    Decision,
    Policy,
    decide,
    enter_state,
    expire,
    requeue,
    restart,
    result_key,
    undeliverable,
)
from avtomatika.engine.roster import Roster
from avtomatika.engine.signals import Signal
from avtomatika.engine.tasks import new_id
from avtomatika.errors import (
    BlueprintError,
    Conflict,
    InvalidArgument,
    NotFound,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from avtomatika.payload import from_payload, to_payload
from avtomatika.status import TERMINAL, job_status_name
from avtomatika.storage.base import (
    APPROVAL_EXPIRY,
    CommitOutcome,
    Expiry,
    Lease,
    Storage,
    queued_at,
)
from avtomatika.storage.memory import MemoryStorage
from avtomatika.v1 import job_pb2, task_pb2
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.payload_pb2 import Payload
from avtomatika.v1.task_pb2 import Task, TaskResult

__all__ = ["BACKGROUND_CLIENT", "Engine", "ResultVerdict"]

log = logging.getLogger(__name__)

BACKGROUND_CLIENT = ClientInfo(id="__background__", plan="system")
"""The owner of jobs created in-process by :meth:`Engine.create_job` callers
such as ``create_background_job``."""

# How often a write that lost an optimistic race is decided again before
# giving up. Each retry re-reads, so this only bounds pathological contention.
_COMMIT_ATTEMPTS = 50

_LIVE_TASK = (
    task_pb2.TASK_STATE_QUEUED,
    task_pb2.TASK_STATE_LEASED,
    task_pb2.TASK_STATE_SCHEDULED,
)


@dataclass(frozen=True, slots=True)
class ResultVerdict:
    """What became of a worker's result."""

    accepted: bool
    transition: str = ""
    reason: str = ""
    message: str = ""


class Engine:
    """Runs jobs of registered blueprints on a storage backend."""

    def __init__(
        self,
        storage: Storage | None = None,
        config: Settings | None = None,
        *,
        task_files: TaskFilesFactory | None = None,
    ) -> None:
        """``task_files`` gives handlers the files of their job (see
        :mod:`avtomatika.blueprint.task_files`); without it they get ``None``."""
        self.config = config if config is not None else Settings()
        self.storage: Storage = (
            storage
            if storage is not None
            else MemoryStorage(
                self.config.job_retention_seconds, self.config.job_retention_max_bytes
            )
        )
        self.workers = WorkerRegistry(self.requeue_task, self.config.worker_reconnect_grace_seconds)
        self.roster = Roster(self.workers)
        """Recent leases and results per worker: warmth and reputation for
        the dispatcher."""
        self.events = EventBus()
        self.ignored_results: Signal[ResultVerdict] = Signal("ignored results")
        """Every worker result the engine refused (stale, late, cancelled, ...),
        whatever the transport; metrics count them by reason."""
        self._blueprints: dict[str, StateMachineBlueprint] = {}
        self._routes: dict[str, StateMachineBlueprint] = {}
        self._clients: dict[str, ClientInfo] = {BACKGROUND_CLIENT.id: BACKGROUND_CLIENT}
        self._policy = Policy.of(self.config)
        self._task_files = task_files
        self._steps = StepRunner(
            self.storage,
            self._blueprints.get,
            self.client,
            self.config,
            self._commit,
            task_files,
        )
        self._loops: list[asyncio.Task[None]] = []

    # -- blueprints and clients --

    def register_blueprint(self, blueprint: StateMachineBlueprint) -> None:
        """Add a blueprint; raises :class:`BlueprintError` if it is invalid or
        its name or route is taken."""
        blueprint.validate()
        if blueprint.name in self._blueprints:
            raise BlueprintError(f"a blueprint named {blueprint.name!r} is already registered")
        route = blueprint.route
        if route is not None and "/" not in route:
            raise BlueprintError(
                f"blueprint {blueprint.name!r}: its route /api/{route} needs an api_version "
                "or an api_endpoint of at least two segments (e.g. jobs/{route})"
            )
        if route is not None:
            if route in self._routes:
                raise BlueprintError(
                    f"blueprint {blueprint.name!r}: route /api/{route} is already served by "
                    f"blueprint {self._routes[route].name!r}"
                )
            self._routes[route] = blueprint
        self._blueprints[blueprint.name] = blueprint
        for state in blueprint.undeclared_end_states:
            log.warning(
                "blueprint %r: end state %r fails its jobs (1.0b13's rule: only an end state "
                "named 'finished' finishes them); if it is a success, declare it with "
                "handler_for(%r, is_end=True, outcome='finished'), or outcome='failed' to "
                "keep it and silence this warning",
                blueprint.name,
                state,
                state,
            )

    @property
    def blueprints(self) -> Mapping[str, StateMachineBlueprint]:
        """Registered blueprints by name."""
        return self._blueprints

    def blueprint_for_route(self, path: str) -> StateMachineBlueprint:
        """The blueprint whose jobs are created at ``/api/{path}``."""
        blueprint = self._routes.get(path.strip("/"))
        if blueprint is None:
            raise NotFound(f"no blueprint is served at /api/{path.strip('/')}")
        return blueprint

    def add_client(self, client: ClientInfo) -> None:
        """Make a client known (its plan and params reach handlers as ``client``)."""
        self._clients[client.id] = client

    def client(self, client_id: str) -> ClientInfo:
        """The client with this id (an unknown id gets a bare record)."""
        return self._clients.get(client_id) or ClientInfo(id=client_id)

    # -- lifecycle --

    async def start(self) -> None:
        """Start the executor loops and the deadline watcher. Idempotent."""
        if self._loops:
            return
        self._loops = [
            asyncio.create_task(self._execute_forever(), name=f"avtomatika-executor-{n}")
            for n in range(self.config.executor_concurrency)
        ]
        self._loops.append(asyncio.create_task(self._watch_forever(), name="avtomatika-timers"))

    async def stop(self) -> None:
        """Stop the loops and close storage. Idempotent."""
        loops, self._loops = self._loops, []
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await self.storage.close()

    async def _execute_forever(self) -> None:
        while True:
            job_id = await self.storage.next_ready_job()
            for attempt in itertools.count():
                try:
                    await self._steps.run(job_id)
                except Unavailable as exc:
                    # The shared store is down: run the step again once it
                    # is back (this instance keeps its claim on the step).
                    if attempt == 0:
                        log.warning("job %s: step waits for the store: %s", job_id, exc)
                    await asyncio.sleep(backoff_delay(attempt, base=0.1, cap=5.0))
                    continue
                except Exception:
                    # A bug below the handler: the job stays where it was (a
                    # shared store runs the step again once this instance's
                    # claim lapses); log loudly rather than kill this loop.
                    log.exception("job %s: step failed", job_id)
                    await self.storage.step_done(job_id, completed=False)
                else:
                    await self.storage.step_done(job_id)
                break

    async def _watch_forever(self) -> None:
        while True:
            expiry = await self.storage.next_expiry()
            try:
                await self._expire(expiry)
            except Exception:
                log.exception(
                    "task %s: handling its %s deadline failed", expiry.task_id, expiry.kind
                )

    # -- jobs --

    async def create_job(
        self,
        blueprint_name: str,
        initial_data: Mapping[str, Any] | None = None,
        *,
        client: ClientInfo = BACKGROUND_CLIENT,
        webhook_url: str = "",
        dispatch_timeout: float | None = None,
        result_timeout: float | None = None,
        tracing_context: Mapping[str, str] | None = None,
        job_id: str | None = None,
    ) -> str:
        """Create a job of a registered blueprint and queue its start handler
        (``job_id``: its id, when the caller reserved room for it)."""
        blueprint = self._blueprints.get(blueprint_name)
        if blueprint is None:
            raise NotFound(f"blueprint {blueprint_name!r} is not registered")
        if initial_data is not None and not isinstance(initial_data, Mapping):
            raise InvalidArgument("initial_data must be a JSON object")
        now = now_ms()
        try:
            initial = to_payload(dict(initial_data or {}))
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"initial_data is not JSON-serialisable: {exc}") from None
        job_id = job_id or new_id()
        if len(initial.data) > self.config.max_payload_bytes:
            initial = await self._check_in_initial_data(job_id, initial.data)
        job = Job(
            id=job_id,
            blueprint_name=blueprint.name,
            status=job_pb2.JOB_STATUS_PENDING,
            current_state=blueprint.start_state,
            initial_data=initial,
            state_history=to_payload({}),
            created_at_ms=now,
            updated_at_ms=now,
            client_id=client.id,
            webhook_url=webhook_url,
            dispatch_timeout_ms=int((dispatch_timeout or 0) * 1000),
            result_timeout_ms=int((result_timeout or 0) * 1000),
            tracing_context=dict(tracing_context or {}),
            state_entered_at_ms=now,
        )
        if self._steps.runs_at_once(job):
            await self._create_with_step(job)
        else:
            await self.storage.create_job(job)
            self.events.publish(creation_events(job))
        return job.id

    async def _check_in_initial_data(self, job_id: str, data: bytes) -> Payload:
        """Initial data over ``MAX_PAYLOAD_BYTES``: stored as the job file
        ``initial_data.json`` and referred to (the claim-check) when file
        storage is configured and it is within ``CLAIM_CHECK_MAX_BYTES``;
        refused otherwise."""
        size, limit = len(data), self.config.max_payload_bytes
        files = self._task_files(job_id) if self._task_files is not None else None
        if files is None:
            raise TooLarge(
                f"initial_data is {size} bytes, over MAX_PAYLOAD_BYTES ({limit} bytes); "
                "bigger inputs go by reference through job files (set S3_ENDPOINT_URL)"
            )
        most = self.config.claim_check_max_bytes
        if size > most:
            raise TooLarge(
                f"initial_data is {size} bytes, over CLAIM_CHECK_MAX_BYTES ({most} bytes); "
                "upload bigger inputs as job files"
            )
        return await check_in(files, "initial_data.json", data)

    async def _create_with_step(self, job: Job) -> None:
        """Store a new job with its start step already run (a start handler
        that cannot suspend, see :meth:`StepRunner.runs_at_once`): one commit
        instead of two, and no wait in the ready queue. The events are those
        of the creation and of the step, in their order."""
        new = Job()
        new.CopyFrom(job)
        plan = await self._steps.plan(job, new, job.created_at_ms)
        outcome = await self._commit(
            job,  # at version 0: the commit creates it
            new,
            # They carry the record as stored: the job never was stored pending.
            events=[*creation_events(new, job.current_state), *plan.events],
            tasks=plan.tasks,
            new_jobs=plan.new_jobs,
            ready=plan.ready,
            ready_at_ms=plan.ready_at_ms,
        )
        if outcome is not CommitOutcome.OK:
            raise Conflict(f"job {job.id!r} already exists")  # a fresh id: never expected

    async def get_job(self, job_id: str, *, client_id: str | None = None) -> Job:
        """The job; :class:`NotFound` if unknown or owned by another client
        (``client_id=None`` skips the ownership check, for in-process use)."""
        job = await self.storage.get_job(job_id)
        if job is None or (client_id is not None and job.client_id != client_id):
            raise NotFound(f"job {job_id!r} not found")
        return job

    async def cancel_job(self, job_id: str, *, client_id: str | None = None) -> bool:
        """Cancel a job (terminal at once) and the child job it waits for.
        Returns True when the cancel was pushed in real time to a worker
        running one of its tasks."""
        for _ in range(_COMMIT_ATTEMPTS):
            job = await self.get_job(job_id, client_id=client_id)
            if job.status in TERMINAL:
                raise Conflict(f"job {job_id!r} is already {job_status_name(job.status)}")
            new = Job()
            new.CopyFrom(job)
            new.status = job_pb2.JOB_STATUS_CANCELLED
            new.updated_at_ms = now_ms()
            new.error = ""  # an earlier retry's error is not why it ended
            withdrawn = list(job.active_task_ids)
            del new.active_task_ids[:]
            outcome = await self._commit(job, new, withdraw=withdrawn)
            if outcome is CommitOutcome.OK:
                pushed = await self._push_cancels(withdrawn, "job cancelled by client")
                if job.awaited_job_id:
                    pushed |= await self._cancel_child(job.awaited_job_id)
                return pushed
            if outcome is CommitOutcome.NOT_FOUND:
                raise NotFound(f"job {job_id!r} not found")
        raise Conflict(f"job {job_id!r} changed too often to cancel; try again")

    async def _cancel_child(self, child_id: str) -> bool:
        try:
            return await self.cancel_job(child_id)
        except (Conflict, NotFound):
            return False  # it ended (or vanished) on its own

    async def retry_job(self, job_id: str, *, client_id: str | None = None) -> Job:
        """Run a failed, error or quarantined job again from the state where
        it stopped, as a new attempt (see :func:`restart`); for a job that
        ended by running a failing end state, from the state before that end
        state. :class:`Conflict` for any other status: of two retries racing,
        one wins and the other finds the job running. Returns the job as
        committed."""
        for _ in range(_COMMIT_ATTEMPTS):
            job = await self.get_job(job_id, client_id=client_id)
            if job.status not in RETRYABLE:
                raise Conflict(
                    f"job {job_id!r} is {job_status_name(job.status)}; only a failed, error "
                    "or quarantined job can be retried"
                )
            state = self._restart_state(job)
            new = restart(job, state, now_ms())
            now = new.updated_at_ms
            left = now - job.state_entered_at_ms if job.state_entered_at_ms else 0
            events = [
                event(
                    E.HISTORY_EVENT_TYPE_JOB_RETRIED,
                    new,
                    now,
                    state=state,
                    message=f"retried from state {state!r}",
                    details={
                        "previous_status": job_status_name(job.status),
                        "previous_error": job.error or None,
                        "stopped_in": job.current_state,
                    },
                ),
                # The state it stopped in is left and the restart state
                # entered, so a timeline shows the new attempt as any other
                # transition (restart() resets the count derive_events uses).
                event(
                    E.HISTORY_EVENT_TYPE_STATE_LEFT,
                    new,
                    now,
                    state=job.current_state,
                    duration_ms=left,
                ),
                event(E.HISTORY_EVENT_TYPE_STATE_ENTERED, new, now, state=state),
            ]
            outcome = await self._commit(job, new, events=events, derived=[], ready=True)
            if outcome is CommitOutcome.OK:
                return new
            if outcome is CommitOutcome.NOT_FOUND:
                raise NotFound(f"job {job_id!r} not found")
        raise Conflict(f"job {job_id!r} changed too often to retry; try again")

    def _restart_state(self, job: Job) -> str:
        """Where a retry of ``job`` starts: the state it stopped in, unless
        that is an end state (running it would just end the job again), in
        which case the state that led there."""
        blueprint = self._blueprints.get(job.blueprint_name)
        spec = blueprint.state(job.current_state) if blueprint is not None else None
        if spec is not None and spec.is_end and job.previous_state:
            return job.previous_state
        return job.current_state

    async def submit_approval(
        self,
        job_id: str,
        decision: str,
        token: str | None = None,
        *,
        client_id: str | None = None,
    ) -> Job:
        """Deliver a human decision to a job waiting for one; returns the job
        as committed. With ``client_id`` it is the owning client's decision
        (another client's job is :class:`NotFound`; its client token already
        proved who decides). Otherwise it came through the public approval
        webhook: with ``APPROVAL_TOKEN_REQUIRED``, ``token`` must be the
        wait's ``approval_token`` (:class:`Unauthenticated` otherwise)."""
        decided_by = f"client:{client_id}" if client_id is not None else "approval_webhook"
        for _ in range(_COMMIT_ATTEMPTS):
            job = await self.get_job(job_id, client_id=client_id)
            if job.status != job_pb2.JOB_STATUS_WAITING_FOR_HUMAN:
                raise Conflict(
                    f"job {job_id!r} is {job_status_name(job.status)}, "
                    "not waiting for a human decision"
                )
            if (
                client_id is None
                and self.config.approval_token_required
                and not (token and hmac.compare_digest(token.encode(), job.approval_token.encode()))
            ):
                raise Unauthenticated("missing or invalid approval token for this job")
            choices = decisions(job)
            if decision not in choices:
                valid = ", ".join(repr(k) for k in choices)
                raise InvalidArgument(f"decision {decision!r} is not one of {valid}")
            new = await self._decide_approval(job, decision, decided_by)
            if new is not None:
                return new
        raise Conflict(f"job {job_id!r} changed too often; try again")

    async def _expire_approval(self, job_id: str) -> None:
        """A wait for a human decision timed out: the job takes its
        ``timeout`` transition, unless a decision (or a cancel) came first,
        or it waits again by now, for a later deadline."""
        for _ in range(_COMMIT_ATTEMPTS):
            job = await self.storage.get_job(job_id)
            if (
                job is None
                or job.status != job_pb2.JOB_STATUS_WAITING_FOR_HUMAN
                or not job.approval_deadline_ms
                or job.approval_deadline_ms > now_ms()
            ):
                return
            if await self._decide_approval(job, TIMEOUT_DECISION, "timeout") is not None:
                return

    async def _decide_approval(self, job: Job, decision: str, decided_by: str) -> Job | None:
        """Commit ``decision`` on ``job`` (read waiting for it); None when
        the job changed meanwhile (decide again on a fresh read): of a
        decision and a timeout arriving together, exactly one commits."""
        new = Job()
        new.CopyFrom(job)
        new.updated_at_ms = now_ms()
        enter_state(new, job.pending_transitions[decision])
        received = event(
            E.HISTORY_EVENT_TYPE_APPROVAL_RECEIVED,
            new,
            new.updated_at_ms,
            state=job.current_state,
            message=decision,
            details={"decision": decision, "decided_by": decided_by},
        )
        outcome = await self._commit(job, new, events=[received], ready=True)
        return new if outcome is CommitOutcome.OK else None

    async def _push_cancels(self, task_ids: Iterable[str], reason: str) -> bool:
        pushed = False
        for task_id in task_ids:
            task = await self.storage.get_task(task_id)
            if task is not None and task.worker_id:
                pushed |= await self.workers.push_cancel(
                    task.worker_id, task.task_id, task.job_id, reason
                )
        return pushed

    # -- every commit goes through here --

    async def _commit(
        self,
        previous: Job,
        job: Job,
        *,
        events: Iterable[JobEvent] = (),
        derived: Sequence[JobEvent] | None = None,
        **options: Any,
    ) -> CommitOutcome:
        """Commit ``job`` (read as ``previous``), then publish what happened
        (``events``, then what the change implies, unless ``derived`` says)
        and resume its parent if it just ended."""
        outcome = await self.storage.commit(job, expected_version=previous.version, **options)
        if outcome is not CommitOutcome.OK:
            return outcome
        if derived is None:
            derived = derive_events(previous, job, options.get("tasks", ()), job.updated_at_ms)
        self.events.publish([*events, *derived])
        if job.status in TERMINAL and previous.status not in TERMINAL and job.parent_job_id:
            await self._resume_parent(job)
        return outcome

    async def _resume_parent(self, child: Job) -> None:
        """A child job ended: its parent takes the transition of its outcome."""
        outcome = {
            job_pb2.JOB_STATUS_FINISHED: "success",
            job_pb2.JOB_STATUS_CANCELLED: "cancelled",
        }.get(child.status, "failure")
        for _ in range(_COMMIT_ATTEMPTS):
            parent = await self.storage.get_job(child.parent_job_id)
            if (
                parent is None
                or parent.status != job_pb2.JOB_STATUS_WAITING_FOR_SUB_JOB
                or parent.awaited_job_id != child.id
            ):
                return  # cancelled meanwhile, or no longer waiting for this child
            new = Job()
            new.CopyFrom(parent)
            new.updated_at_ms = now_ms()
            history = from_payload(parent.state_history, {})
            history[f"sub_job_{child.id}_result"] = {
                "outcome": outcome,
                "final_state": child.current_state,
                "status": job_status_name(child.status),
                "error_message": child.error or None,
                "state_history": from_payload(child.state_history, {}),
            }
            new.state_history.CopyFrom(to_payload(history))
            transitions = parent.pending_transitions
            target = transitions.get(outcome) or (
                transitions.get("failure") if outcome == "cancelled" else None
            )
            if target:
                enter_state(new, target)
            else:
                new.status = job_pb2.JOB_STATUS_FAILED
                new.error = (
                    f"child job {child.id} of blueprint {child.blueprint_name!r} ended with "
                    f"outcome {outcome!r}, and state {parent.current_state!r} has no "
                    "transition for it"
                )
            outcome_commit = await self._commit(parent, new, ready=bool(target))
            if outcome_commit is CommitOutcome.OK:
                return

    # -- workers --

    async def next_task(
        self, worker_id: str, skills: Iterable[str], timeout: float | None
    ) -> Task | None:
        """Wait for a task for this worker and lease it to it; the worker's
        resources, prices and labels come from its registration in
        :attr:`workers` (a worker not registered there can take only tasks
        without requirements)."""
        tasks = await self.next_tasks(worker_id, skills, timeout)
        return tasks[0] if tasks else None

    async def next_tasks(
        self, worker_id: str, skills: Iterable[str], timeout: float | None, limit: int = 1
    ) -> list[Task]:
        """:meth:`next_task` for up to ``limit`` tasks: those queued for the
        worker, best first, or the one it waited for (see
        :meth:`Storage.claim_tasks`)."""
        worker = self.roster.profile(worker_id, list(skills))
        tasks = await self.storage.claim_tasks(worker, timeout, limit)
        picked = []
        for task in tasks:
            self.roster.leased(worker_id, task)
            waited = task.leased_at_ms - queued_at(task)
            picked.append(
                event(
                    E.HISTORY_EVENT_TYPE_TASK_PICKED_UP,
                    task.job_id,
                    task.leased_at_ms,
                    state=task.state_name,
                    task=task,
                    duration_ms=max(waited, 0),
                    message=task.type,
                )
            )
        if picked:
            self.events.publish(picked)
        return tasks

    async def submit_result(self, result: TaskResult) -> ResultVerdict:
        """Apply a worker's result, if that worker holds the task's lease and
        the task is still what its job waits for. Data over
        ``MAX_PAYLOAD_BYTES`` is not stored: the task fails saying so."""
        size = len(result.data.data)
        if size > self.config.max_payload_bytes:
            result = undeliverable(
                result,
                f"the result's data is {size} bytes, over MAX_PAYLOAD_BYTES "
                f"({self.config.max_payload_bytes} bytes); return big outputs as job files (S3)",
            )
        verdict = await self._apply_result(result)
        if verdict.accepted:
            self.roster.finished(result)
        else:
            self.ignored_results.send(verdict)
        return verdict

    async def _apply_result(self, result: TaskResult) -> ResultVerdict:
        for _ in range(_COMMIT_ATTEMPTS):
            found = await self._leased(result.task_id, result.worker_id, result.job_id)
            if isinstance(found, ResultVerdict):
                return found
            task, job = found
            now = now_ms()
            decision = decide(job, task, result, policy=self._policy, now=now)
            finished = event(
                E.HISTORY_EVENT_TYPE_TASK_FINISHED,
                decision.job,
                now,
                state=task.state_name,
                task=task,
                duration_ms=now - task.leased_at_ms if task.leased_at_ms else 0,
                message=result_key(result),
            )
            lease = Lease(task.task_id, task.worker_id)
            if await self._commit_decision(job, decision, lease, [finished]):
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
            decision = requeue(job, task, reason, policy=self._policy, now=now_ms())
            if await self._commit_decision(job, decision, Lease(task.task_id, task.worker_id)):
                return True
        return False

    async def requeue_unheld(self, worker_id: str, held: set[str]) -> list[str]:
        """A worker reconnected saying it holds only ``held``: every other
        task leased to it lost its assignment with an earlier connection
        (say, an instance died between leasing and sending it) and goes
        back to the queue now, not at its result deadline. Returns those."""
        lost = [t for t in await self.storage.leased_to(worker_id) if t not in held]
        reason = "its assignment was lost with the worker's earlier connection"
        return [t for t in lost if await self.requeue_task(t, worker_id, reason)]

    def drain_worker(self, worker_id: str, reason: str = "drained by the operator") -> bool:
        """Tell a connected worker to take no more tasks (its running tasks
        finish); False when it is not connected here or cannot be told."""
        return self.workers.drain(worker_id, reason)

    async def holds(self, worker_id: str, task_id: str) -> bool:
        """Whether ``task_id`` is leased to ``worker_id`` right now."""
        task = await self.storage.get_task(task_id)
        return (
            task is not None
            and task.state == task_pb2.TASK_STATE_LEASED
            and task.worker_id == worker_id
        )

    async def report_progress(
        self, worker_id: str, task_id: str, progress: float, message: str
    ) -> bool:
        """Record a running task's progress on its job."""
        task = await self.storage.get_task(task_id)
        if task is None or task.state != task_pb2.TASK_STATE_LEASED or task.worker_id != worker_id:
            return False
        progress = min(max(progress, 0.0), 1.0)
        if not await self.storage.set_progress(task.job_id, task_id, progress, message):
            return False
        update = event(
            E.HISTORY_EVENT_TYPE_PROGRESS, task.job_id, now_ms(), task=task, message=message
        )
        update.event.details.CopyFrom(to_payload({"progress": progress, "message": message}))
        self.events.publish([update])
        return True

    async def _expire(self, expiry: Expiry) -> None:
        """A task deadline passed: time the task out unless it moved on (or
        a wait for a human decision expired)."""
        if expiry.kind == APPROVAL_EXPIRY:
            await self._expire_approval(expiry.task_id)
            return
        for _ in range(_COMMIT_ATTEMPTS):
            task = await self.storage.get_task(expiry.task_id)
            if task is None or task.state not in _LIVE_TASK:
                return
            if expiry.kind == "dispatch" and task.state == task_pb2.TASK_STATE_LEASED:
                return  # a worker took it in time
            job = await self.storage.get_job(task.job_id)
            if job is None or job.status in TERMINAL or task.task_id not in job.active_task_ids:
                return
            now = now_ms()
            decision = expire(job, task, expiry.kind, now=now)
            timeout = event(
                E.HISTORY_EVENT_TYPE_TIMEOUT,
                decision.job,
                now,
                state=task.state_name,
                task=task,
                message=f"{expiry.kind} deadline passed",
            )
            if await self._commit_decision(job, decision, None, [timeout]):
                if expiry.kind == "result" and task.state == task_pb2.TASK_STATE_LEASED:
                    self.roster.timed_out(task.worker_id)
                await self._push_cancels(decision.withdraw, f"{expiry.kind} deadline passed")
                return

    async def _leased(
        self, task_id: str, worker_id: str, job_id: str
    ) -> tuple[Task, Job] | ResultVerdict:
        """The task and its job if ``worker_id`` may report on it, else why not."""
        job: Job | None = None
        if job_id:
            # The worker named the job: both reads in one round trip to a
            # shared store (the job read is wasted only on a stale report).
            task, job = await self.storage.get_task_and_job(task_id, job_id, worker_id)
        else:
            task = await self.storage.get_task(task_id)
        if task is None or (job_id and task.job_id != job_id):
            return ResultVerdict(False, reason="stale", message=f"unknown task {task_id!r}")
        if task.state == task_pb2.TASK_STATE_CANCELLED:
            return ResultVerdict(False, reason="cancelled", message="the task was cancelled")
        if task.state == task_pb2.TASK_STATE_DONE:
            return ResultVerdict(False, reason="late", message="the task already has a result")
        if task.state != task_pb2.TASK_STATE_LEASED or task.worker_id != worker_id:
            return ResultVerdict(
                False, reason="stale", message=f"task {task_id!r} is not leased to {worker_id!r}"
            )
        if job is None:
            job = await self.storage.get_job(task.job_id)
        if job is None or job.status in TERMINAL or task_id not in job.active_task_ids:
            reason = "cancelled" if job and job.status == job_pb2.JOB_STATUS_CANCELLED else "late"
            return ResultVerdict(False, reason=reason, message="the job no longer waits for it")
        return task, job

    async def _commit_decision(
        self,
        job: Job,
        decision: Decision,
        lease: Lease | None,
        events: Iterable[JobEvent] = (),
    ) -> bool:
        if decision.ready and self._steps.runs_at_once(decision.job):
            return await self._commit_with_step(job, decision, lease, events)
        outcome = await self._commit(
            job,
            decision.job,
            events=events,
            tasks=decision.tasks,
            withdraw=decision.withdraw,
            lease=lease,
            ready=decision.ready,
        )
        return outcome is CommitOutcome.OK

    async def _commit_with_step(
        self, job: Job, decision: Decision, lease: Lease | None, events: Iterable[JobEvent]
    ) -> bool:
        """Commit ``decision`` together with the step it makes ready, run
        here and now (a step whose handler cannot suspend, such as most end
        states'): one commit instead of two, and no wait in the ready queue.
        The events are those the two commits would have published, in their
        order. If the commit loses to another change, the step is dropped
        with it, as a step run by the executor would be; a caller that then
        decides again on the new version runs the step again (a handler runs
        at least once per version it decides on)."""
        entered = Job()
        entered.CopyFrom(decision.job)
        now = entered.updated_at_ms
        plan = await self._steps.plan(entered, decision.job, now)
        # Every event carries the record as committed: ``entered`` never
        # was stored (the caller's events already carry decision.job).
        derived = [
            JobEvent(item.event, decision.job)
            for item in derive_events(job, entered, decision.tasks, now)
        ]
        derived += [*plan.events, *derive_events(entered, decision.job, plan.tasks, now)]
        outcome = await self._commit(
            job,
            decision.job,
            events=events,
            derived=derived,
            tasks=[*decision.tasks, *plan.tasks],
            withdraw=decision.withdraw,
            new_jobs=plan.new_jobs,
            lease=lease,
            ready=plan.ready,
            ready_at_ms=plan.ready_at_ms,
        )
        return outcome is CommitOutcome.OK
