"""Runs one step of a job: the handler of its current state, then commits the
handler's decision atomically.

A step is committed only if the job is still at the version it was read at;
otherwise something else (a cancel) happened while the handler ran and the
step is dropped, because the other change wins.

Failures: a blueprint bug that no retry can fix (an impossible transition, a
parameter nothing can inject, no action) fails the job with a message saying
what is wrong; an exception from the handler's own code is retried with
backoff up to ``JOB_MAX_RETRIES``, then the job is quarantined.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from avtomatika.blueprint.actions import (
    Action,
    ActionFactory,
    AwaitApproval,
    DispatchParallel,
    DispatchTask,
    RunBlueprint,
    TransitionTo,
)
from avtomatika.blueprint.context import ClientInfo, DataStores, JobContext
from avtomatika.blueprint.injection import build_arguments
from avtomatika.blueprint.state_machine import FAILED, FINISHED, StateMachineBlueprint, StateSpec
from avtomatika.blueprint.task_files import TaskFilesFactory
from avtomatika.clock import now_ms
from avtomatika.config import Settings
from avtomatika.engine.approvals import approval_json, offered
from avtomatika.engine.claim_check import check_in
from avtomatika.engine.events import E, JobEvent, creation_events, event
from avtomatika.engine.results import Policy, enter_state
from avtomatika.engine.tasks import first_attempt, new_id
from avtomatika.errors import BlueprintError
from avtomatika.payload import from_payload, to_payload
from avtomatika.status import RUNNABLE
from avtomatika.storage.base import CommitOutcome, Storage
from avtomatika.v1 import job_pb2
from avtomatika.v1.job_pb2 import Job, JobStatus
from avtomatika.v1.task_pb2 import Task

__all__ = ["Plan", "StepRunner"]

log = logging.getLogger(__name__)

Commit = Callable[..., Awaitable[CommitOutcome]]

# The job status of each outcome an end state can have (StateSpec.ends_as).
_END_STATUS: dict[str, JobStatus.ValueType] = {
    FINISHED: job_pb2.JOB_STATUS_FINISHED,
    FAILED: job_pb2.JOB_STATUS_FAILED,
}


@dataclass(slots=True)
class Plan:
    """What a step writes besides the job."""

    tasks: list[Task] = field(default_factory=list)
    new_jobs: list[Job] = field(default_factory=list)
    ready: bool = False
    ready_at_ms: int = 0
    events: list[JobEvent] = field(default_factory=list)


class StepRunner:
    """Runs handlers for jobs the storage marks ready."""

    def __init__(
        self,
        storage: Storage,
        blueprints: Callable[[str], StateMachineBlueprint | None],
        clients: Callable[[str], ClientInfo],
        settings: Settings,
        commit: Commit,
        task_files: TaskFilesFactory | None = None,
    ) -> None:
        self._storage = storage
        self._blueprints = blueprints
        self._clients = clients
        self._settings = settings
        self._commit = commit
        self._task_files = task_files

    async def run(self, job_id: str) -> None:
        """Run the current state's handler of ``job_id`` and commit its decision."""
        job = await self._storage.get_job(job_id)
        if job is None or job.status not in RUNNABLE:
            return  # cancelled (or flushed) while queued
        now = now_ms()
        new = Job()
        new.CopyFrom(job)
        new.updated_at_ms = now
        plan = await self.plan(job, new, now)
        outcome = await self._commit(
            job,
            new,
            events=plan.events,
            tasks=plan.tasks,
            new_jobs=plan.new_jobs,
            ready=plan.ready,
            ready_at_ms=plan.ready_at_ms,
        )
        if outcome is not CommitOutcome.OK:
            log.debug("job %s: step in %r dropped (%s)", job.id, job.current_state, outcome.value)

    def runs_at_once(self, job: Job) -> bool:
        """Whether the step that ``job`` is ready for may run in the commit
        that makes it ready: no handler of its state can suspend (see
        :func:`~avtomatika.blueprint.state_machine.never_suspends`), so running it there
        holds up nothing."""
        blueprint = self._blueprints(job.blueprint_name)
        spec = blueprint.state(job.current_state) if blueprint is not None else None
        return spec is not None and spec.never_suspends and job.status in RUNNABLE

    async def plan(self, job: Job, new: Job, now: int) -> Plan:
        """Run the handler of ``job``'s state, deciding on ``new`` (its copy,
        changed in place); what else the step writes. A blueprint bug fails
        the job; an exception from the handler schedules a retry."""
        try:
            return await self._step(job, new, now)
        except BlueprintError as exc:
            _end(new, job_pb2.JOB_STATUS_FAILED, exc.message)
        except Exception as exc:
            return self._retry_handler(new, exc, now)
        return Plan()

    async def _first_attempt(self, job: Job, state: str, action: DispatchTask, now: int) -> Task:
        """The task ``action`` asks for. Params over ``MAX_PAYLOAD_BYTES``
        go by reference (the claim-check) when file storage is configured;
        otherwise they fail the job (a blueprint mistake): no worker could
        be sent them."""
        task = first_attempt(job, state, action, now)
        size = len(task.params.data)
        if size <= self._settings.max_payload_bytes:
            return task
        files = self._task_files(job.id) if self._task_files is not None else None
        if files is None or size > self._settings.claim_check_max_bytes:
            raise BlueprintError(
                f"state {state!r}: the params of task {action.task_type!r} are {size} bytes, "
                f"over MAX_PAYLOAD_BYTES ({self._settings.max_payload_bytes} bytes); with S3 "
                "configured they would go by reference (up to CLAIM_CHECK_MAX_BYTES)"
            )
        name = f"task-{task.task_id}-params.json"
        task.params.CopyFrom(await check_in(files, name, task.params.data))
        return task

    async def _step(self, job: Job, new: Job, now: int) -> Plan:
        limit = self._settings.max_transitions_per_job
        if job.transition_count > limit:
            raise BlueprintError(
                f"job made more than {limit} transitions (MAX_TRANSITIONS_PER_JOB); "
                f"the blueprint {job.blueprint_name!r} probably cycles (last state "
                f"{job.current_state!r})"
            )
        blueprint, spec = self._resolve(job)
        initial_data = from_payload(job.initial_data, {})
        context = JobContext(
            job_id=job.id,
            current_state=job.current_state,
            initial_data=initial_data,
            state_history=from_payload(job.state_history, {}),
            client=self._clients(job.client_id),
            actions=ActionFactory(),
            data_stores=DataStores(blueprint.data_stores),
            tracing_context=dict(job.tracing_context),
            aggregation_results=(
                {k: from_payload(v) for k, v in job.branch_results.items()}
                if spec.is_aggregator
                else None
            ),
            webhook_url=job.webhook_url or None,
            task_files=self._task_files(job.id) if self._task_files else None,
        )
        areas = {"initial_data": context.initial_data, "state_history": context.state_history}
        handler = spec.select(areas)
        if handler is None:
            raise BlueprintError(
                f"no handler of state {spec.name!r} matches: its conditions are all false "
                "and it has no default handler"
            )
        await handler.handler(**build_arguments(handler.signature, context))
        # Handlers may write into state_history; that is part of the step.
        new.state_history.CopyFrom(to_payload(context.state_history))
        if spec.is_aggregator:
            new.branch_results.clear()
        return await self._apply(new, blueprint, spec, context.actions.action, now)

    def _retry_handler(self, job: Job, exc: Exception, now: int) -> Plan:
        message = f"handler for state {job.current_state!r} raised {type(exc).__name__}: {exc}"
        job.retry_count += 1
        # A bug in a blueprint is the operator's to fix: its traceback (the
        # file and line of the handler) goes to the log, never to the client.
        log.warning("job %s: %s (attempt %d)", job.id, message, job.retry_count, exc_info=exc)
        if job.retry_count > self._settings.job_max_retries:
            _end(
                job,
                job_pb2.JOB_STATUS_QUARANTINED,
                f"{message}; gave up after {job.retry_count - 1} retries",
            )
            return Plan()
        job.error = message
        delay = Policy.of(self._settings).delay_ms(job.retry_count)
        retry = event(
            E.HISTORY_EVENT_TYPE_TASK_RETRIED,
            job,
            now,
            state=job.current_state,
            message=f"{message}; handler retry {job.retry_count} in {delay} ms",
            # The attempt that failed: the first is attempt 1 (1.0b13's count).
            details={"attempt_number": job.retry_count},
        )
        return Plan(ready=True, ready_at_ms=now + delay, events=[retry])

    def _resolve(self, job: Job) -> tuple[StateMachineBlueprint, StateSpec]:
        blueprint = self._blueprints(job.blueprint_name)
        if blueprint is None:
            raise BlueprintError(f"blueprint {job.blueprint_name!r} is not registered")
        spec = blueprint.state(job.current_state)
        if spec is None:
            raise BlueprintError(
                f"blueprint {blueprint.name!r} has no handler for state {job.current_state!r}"
            )
        return blueprint, spec

    async def _apply(
        self,
        job: Job,
        blueprint: StateMachineBlueprint,
        spec: StateSpec,
        action: Action | None,
        now: int,
    ) -> Plan:
        """Turn the handler's decision into the job's next status."""
        if spec.is_end:
            if action is not None:
                raise BlueprintError(
                    f"end state {spec.name!r} took an action ({type(action).__name__}); "
                    "end states end the job"
                )
            # An end state is an outcome the blueprint chose, not an error:
            # the job ends without one, as in 1.0b13, whichever status.
            _end(job, _END_STATUS[spec.ends_as], "")
            return Plan()
        if action is None:
            raise BlueprintError(
                f"the handler of state {spec.name!r} took no action; a state that is not an "
                "end state must call one of transition_to, dispatch_task, dispatch_parallel, "
                "await_human_approval or run_blueprint"
            )
        for name in _targets(action):
            if blueprint.state(name) is None:
                raise BlueprintError(
                    f"blueprint {blueprint.name!r}: state {spec.name!r} leads to {name!r}, "
                    "which has no handler"
                )
        if isinstance(action, TransitionTo):
            enter_state(job, action.state)
            return Plan(ready=True)
        if isinstance(action, DispatchTask):
            task = await self._first_attempt(job, spec.name, action, now)
            _wait(job, job_pb2.JOB_STATUS_WAITING_FOR_WORKER)
            job.active_task_ids.append(task.task_id)
            return Plan(tasks=[task])
        if isinstance(action, DispatchParallel):
            aggregator = blueprint.state(action.aggregate_into)
            assert aggregator is not None
            if not aggregator.is_aggregator:
                raise BlueprintError(
                    f"blueprint {blueprint.name!r}: state {spec.name!r} aggregates into "
                    f"{action.aggregate_into!r}, which has no aggregator (@aggregator_for)"
                )
            tasks = [
                await self._first_attempt(job, spec.name, branch, now) for branch in action.tasks
            ]
            if not tasks:
                job.branch_results.clear()
                enter_state(job, action.aggregate_into)
                return Plan(ready=True)
            _wait(job, job_pb2.JOB_STATUS_WAITING_FOR_PARALLEL_TASKS)
            job.aggregate_into = action.aggregate_into
            job.branch_results.clear()
            job.active_task_ids.extend(t.task_id for t in tasks)
            return Plan(tasks=tasks)
        if isinstance(action, AwaitApproval):
            _wait(job, job_pb2.JOB_STATUS_WAITING_FOR_HUMAN)
            job.pending_transitions.update(action.transitions)
            job.approval_integration = action.integration
            job.approval_message = action.message
            job.approval_token = secrets.token_urlsafe(24)
            timeout = action.timeout
            job.approval_deadline_ms = now + int(timeout * 1000) if timeout is not None else 0
            job.approval_decisions[:] = offered(action.transitions, timeout is not None)
            # Says the job now waits for a person: its followers see it, and
            # the job_waiting_for_human webhook is sent on it.
            requested = event(
                E.HISTORY_EVENT_TYPE_APPROVAL_REQUESTED,
                job,
                now,
                state=job.current_state,
                message=action.message,
                details=approval_json(job),
            )
            return Plan(events=[requested])
        return self._run_blueprint(job, action, now)

    def _run_blueprint(self, job: Job, action: RunBlueprint, now: int) -> Plan:
        child_blueprint = self._blueprints(action.blueprint_name)
        if child_blueprint is None:
            raise BlueprintError(
                f"run_blueprint() names blueprint {action.blueprint_name!r}, which is not "
                "registered"
            )
        child = Job(
            id=new_id(),
            blueprint_name=child_blueprint.name,
            status=job_pb2.JOB_STATUS_PENDING,
            current_state=child_blueprint.start_state,
            initial_data=to_payload(action.initial_data),
            state_history=to_payload({}),
            created_at_ms=now,
            updated_at_ms=now,
            client_id=job.client_id,
            parent_job_id=job.id,
            state_entered_at_ms=now,
            dispatch_timeout_ms=int((action.dispatch_timeout or 0) * 1000),
            result_timeout_ms=int((action.result_timeout or 0) * 1000),
            tracing_context=job.tracing_context,
        )
        _wait(job, job_pb2.JOB_STATUS_WAITING_FOR_SUB_JOB)
        job.pending_transitions.update(action.transitions)
        job.awaited_job_id = child.id
        job.child_job_ids.append(child.id)
        # The parent's own history says it started the child (its status
        # alone changes, so nothing else would), naming the child to follow.
        started = event(
            E.HISTORY_EVENT_TYPE_SUB_JOB_STARTED,
            job,
            now,
            state=job.current_state,
            message=child.blueprint_name,
            details={"child_job_id": child.id, "blueprint_name": child.blueprint_name},
        )
        return Plan(new_jobs=[child], events=[started, *creation_events(child)])


def _targets(action: Action) -> list[str]:
    if isinstance(action, TransitionTo):
        return [action.state]
    if isinstance(action, DispatchParallel):
        return [action.aggregate_into]
    return list(action.transitions.values())


def _wait(job: Job, status: JobStatus.ValueType) -> None:
    job.status = status
    job.retry_count = 0
    job.error = ""
    del job.active_task_ids[:]


def _end(job: Job, status: JobStatus.ValueType, message: str) -> None:
    """End the job in ``status`` (a terminal one)."""
    job.status = status
    job.error = message
    del job.active_task_ids[:]
