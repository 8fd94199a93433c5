"""Runs one step of a job: the handler of its current state, then commits the
handler's decision atomically.

A step is committed only if the job is still at the version it was read at;
otherwise something else (a cancel) happened while the handler ran and the
step is dropped, because the other change wins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from avtomatika.actions import ActionFactory, DispatchTask, TransitionTo
from avtomatika.blueprint import StateMachineBlueprint, StateSpec
from avtomatika.clock import now_ms
from avtomatika.context import ClientInfo, JobContext
from avtomatika.errors import BlueprintError
from avtomatika.injection import build_arguments
from avtomatika.payload import from_payload, to_payload
from avtomatika.status import RUNNABLE
from avtomatika.storage.base import CommitOutcome, Storage
from avtomatika.tasks import first_attempt
from avtomatika.v1.job_pb2 import Job, JobStatus
from avtomatika.v1.task_pb2 import Task

__all__ = ["StepRunner"]

log = logging.getLogger(__name__)


class StepRunner:
    """Runs handlers for jobs the storage marks ready."""

    def __init__(
        self,
        storage: Storage,
        blueprints: Callable[[str], StateMachineBlueprint | None],
        clients: Callable[[str], ClientInfo],
    ) -> None:
        self._storage = storage
        self._blueprints = blueprints
        self._clients = clients

    async def run(self, job_id: str) -> None:
        """Run the current state's handler of ``job_id`` and commit its decision."""
        job = await self._storage.get_job(job_id)
        if job is None or job.status not in RUNNABLE:
            return  # cancelled (or flushed) while queued
        new = Job()
        new.CopyFrom(job)
        new.updated_at_ms = now_ms()
        tasks: list[Task] = []
        ready = False
        try:
            blueprint, spec = self._resolve(job)
            context = JobContext(
                job_id=job.id,
                current_state=job.current_state,
                initial_data=from_payload(job.initial_data, {}),
                state_history=from_payload(job.state_history, {}),
                client=self._clients(job.client_id),
                actions=ActionFactory(),
                data_stores=blueprint.data_stores,
            )
            await spec.handler(**build_arguments(spec.signature, context))
            # Handlers may write into state_history; that is part of the step.
            new.state_history.CopyFrom(to_payload(context.state_history))
            tasks, ready = self._apply(new, blueprint, spec, context.actions)
        except Exception as exc:
            new.status = JobStatus.JOB_STATUS_ERROR
            new.error = _describe(job.current_state, exc)
            log.warning("job %s: %s", job.id, new.error)
        outcome = await self._storage.commit(
            new, expected_version=job.version, tasks=tasks, ready=ready
        )
        if outcome is not CommitOutcome.OK:
            log.debug("job %s: step in %r dropped (%s)", job.id, job.current_state, outcome.value)

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

    @staticmethod
    def _apply(
        job: Job, blueprint: StateMachineBlueprint, spec: StateSpec, actions: ActionFactory
    ) -> tuple[list[Task], bool]:
        """Turn the handler's decision into the job's next status; returns the
        tasks to write and whether the job needs another step."""
        action = actions.action
        if spec.is_end:
            if action is not None:
                raise BlueprintError(
                    f"end state {spec.name!r} took an action ({action!r}); "
                    "end states finish the job"
                )
            job.status = JobStatus.JOB_STATUS_FINISHED
            return [], False
        if action is None:
            raise BlueprintError(
                f"the handler for state {spec.name!r} took no action "
                "(call actions.transition_to or actions.dispatch_task)"
            )
        if isinstance(action, TransitionTo):
            _check_target(blueprint, spec.name, action.state)
            job.current_state = action.state
            job.status = JobStatus.JOB_STATUS_RUNNING
            return [], True
        assert isinstance(action, DispatchTask)
        for target in action.transitions.values():
            _check_target(blueprint, spec.name, target)
        task = first_attempt(job, spec.name, action, job.updated_at_ms)
        job.status = JobStatus.JOB_STATUS_WAITING_FOR_WORKER
        job.retry_count = 0
        del job.active_task_ids[:]
        job.active_task_ids.append(task.task_id)
        return [task], False


def _check_target(blueprint: StateMachineBlueprint, state: str, target: str) -> None:
    if blueprint.state(target) is None:
        raise BlueprintError(
            f"blueprint {blueprint.name!r}: state {state!r} leads to {target!r}, "
            "which has no handler"
        )


def _describe(state: str, exc: Exception) -> str:
    if isinstance(exc, BlueprintError):
        return exc.message
    return f"handler for state {state!r} raised {type(exc).__name__}: {exc}"
