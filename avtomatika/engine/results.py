"""What a task's end does to its job: pure decisions, committed by the engine.

A single task: the worker's status picks the transition (``success`` when
absent) and its data merges into ``state_history``. A failure without a
``failure`` transition is decided by its error code: transient (and unknown)
codes are retried with backoff while attempts remain, then the job is
quarantined; permanent errors quarantine; invalid input fails the job.

A branch of a parallel fan-out: its full result is recorded under its task id
(failed branches included; transient failures are retried first), and once
every branch has ended the job moves to the aggregator's state.

A deadline: the task is withdrawn and the ``timeout`` transition is taken if
the blueprint has one; otherwise the job fails saying which deadline passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from avtomatika.backoff import backoff_delay
from avtomatika.config import Settings
from avtomatika.engine.tasks import next_attempt
from avtomatika.payload import from_payload, to_payload
from avtomatika.v1 import job_pb2, task_pb2
from avtomatika.v1.job_pb2 import Job, JobStatus
from avtomatika.v1.task_pb2 import Task, TaskResult

__all__ = [
    "RETRYABLE",
    "Decision",
    "Policy",
    "decide",
    "enter_state",
    "expire",
    "requeue",
    "restart",
    "result_key",
    "undeliverable",
]

RETRYABLE: frozenset[JobStatus.ValueType] = frozenset(
    {job_pb2.JOB_STATUS_FAILED, job_pb2.JOB_STATUS_ERROR, job_pb2.JOB_STATUS_QUARANTINED}
)
"""The statuses a client may retry a job from (cancelled and finished are final)."""

_KEYS = {
    task_pb2.TASK_RESULT_STATUS_UNSPECIFIED: "success",
    task_pb2.TASK_RESULT_STATUS_SUCCESS: "success",
    task_pb2.TASK_RESULT_STATUS_FAILURE: "failure",
    task_pb2.TASK_RESULT_STATUS_CANCELLED: "cancelled",
}
_ERROR_NAMES = {
    task_pb2.ERROR_CODE_TRANSIENT: "TRANSIENT_ERROR",
    task_pb2.ERROR_CODE_PERMANENT: "PERMANENT_ERROR",
    task_pb2.ERROR_CODE_INVALID_INPUT: "INVALID_INPUT_ERROR",
}


@dataclass(frozen=True, slots=True)
class Policy:
    """Retry settings: attempts allowed after the first, and the backoff."""

    max_retries: int
    base_delay_ms: int = 0
    max_delay_ms: int = 0

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        """The policy ``JOB_MAX_RETRIES`` and the backoff settings describe."""
        return cls(
            max_retries=settings.job_max_retries,
            base_delay_ms=int(settings.retry_backoff_base_seconds * 1000),
            max_delay_ms=int(settings.retry_backoff_max_seconds * 1000),
        )

    def delay_ms(self, retry: int) -> int:
        """Backoff before retry number ``retry`` (1, 2, ...)."""
        base, cap = self.base_delay_ms, self.max_delay_ms
        return int(backoff_delay(max(retry - 1, 0), base=base, cap=cap))


@dataclass(slots=True)
class Decision:
    """The job after the event, the tasks to write with it, and what happened."""

    job: Job
    tasks: list[Task]
    ready: bool
    transition: str
    withdraw: list[str] = field(default_factory=list)


def result_key(result: TaskResult) -> str:
    """The transition name a result selects (``success``, ``failure``, custom...)."""
    if result.status == task_pb2.TASK_RESULT_STATUS_CUSTOM:
        return result.custom_status
    return _KEYS[result.status]


def enter_state(job: Job, state: str) -> None:
    """Move ``job`` to ``state``, ready to run its handler (``updated_at_ms``
    must already be the time of the change)."""
    job.previous_state = job.current_state
    job.current_state = state
    job.status = job_pb2.JOB_STATUS_RUNNING
    job.transition_count += 1
    job.state_entered_at_ms = job.updated_at_ms
    job.retry_count = 0
    job.error = ""
    job.progress = 0.0
    job.progress_message = ""
    job.aggregate_into = ""
    job.awaited_job_id = ""
    job.approval_integration = ""
    job.approval_message = ""
    job.approval_token = ""
    job.approval_deadline_ms = 0
    del job.approval_decisions[:]
    job.pending_transitions.clear()
    del job.active_task_ids[:]


def restart(job: Job, state: str, now: int) -> Job:
    """A copy of ``job`` (one of :data:`RETRYABLE`) running again from
    ``state``, as a new attempt: no error, retries or progress left from the
    last one, a fresh budget of MAX_TRANSITIONS_PER_JOB (a job that ended
    for cycling would otherwise end again at once), and its job-level
    result_timeout counted from now (``retried_at_ms``). What its tasks merged
    into ``state_history`` stays: it restarts where it stopped."""
    new = Job()
    new.CopyFrom(job)
    new.updated_at_ms = now
    new.retried_at_ms = now
    enter_state(new, state)
    new.transition_count = 0
    # Its state before: what it was before ``state`` (unknown when the
    # restart goes back past a failing end state, whose predecessor it is).
    new.previous_state = job.previous_state if state == job.current_state else ""
    return new


def decide(job: Job, task: Task, result: TaskResult, *, policy: Policy, now: int) -> Decision:
    """Apply ``result`` of ``task`` to a copy of ``job``."""
    new, done = _copies(job, task, now)
    if job.status == job_pb2.JOB_STATUS_WAITING_FOR_PARALLEL_TASKS:
        return _branch_ended(new, done, result, policy=policy, now=now)
    new.progress = 0.0
    new.progress_message = ""
    _merge_data(new, task, result)
    key = result_key(result)
    target = task.transitions.get(key)
    if target:
        enter_state(new, target)
        return Decision(new, [done], ready=True, transition=target)
    if result.status == task_pb2.TASK_RESULT_STATUS_FAILURE:
        return _on_failure(new, done, result, policy=policy, now=now)
    if result.status == task_pb2.TASK_RESULT_STATUS_CANCELLED:
        # The job was not cancelled (that is checked before deciding), so the
        # worker gave the task up, e.g. while shutting down: run it again.
        return _retry_or_quarantine(new, done, "the worker gave the task up", policy, now)
    _finish(new, job_pb2.JOB_STATUS_FAILED)
    new.error = (
        f"worker returned status {key!r}, which has no transition in state {task.state_name!r}"
    )
    return Decision(new, [done], ready=False, transition="")


def requeue(job: Job, task: Task, reason: str, *, policy: Policy, now: int) -> Decision:
    """The worker lost the task (it disconnected, or handed it back while
    shutting down): a transient failure, retried whatever the transitions,
    and at once: the task did nothing wrong, so it waits out no backoff."""
    new, done = _copies(job, task, now)
    return _retry_or_quarantine(new, done, reason, Policy(policy.max_retries), now)


def expire(job: Job, task: Task, kind: str, *, now: int) -> Decision:
    """A deadline of ``task`` passed (``kind``: ``dispatch`` or ``result``)."""
    new, _ = _copies(job, task, now)
    if kind == "dispatch":
        message = (
            f"task {task.type!r} waited in the queue past its dispatch timeout; no worker took it"
        )
    else:
        message = f"task {task.type!r} produced no result before its result timeout"
    if job.status == job_pb2.JOB_STATUS_WAITING_FOR_PARALLEL_TASKS:
        record = {"task_id": task.task_id, "job_id": task.job_id, "status": "timeout",
                  "data": None, "error": {"code": "TIMEOUT", "message": message}}  # fmt: skip
        decision = _record_branch(new, task, record, transition="")
        decision.withdraw.append(task.task_id)
        return decision
    target = task.transitions.get("timeout")
    if target:
        enter_state(new, target)
        return Decision(new, [], ready=True, transition=target, withdraw=[task.task_id])
    _finish(new, job_pb2.JOB_STATUS_FAILED)
    new.error = message
    return Decision(new, [], ready=False, transition="", withdraw=[task.task_id])


def _copies(job: Job, task: Task, now: int) -> tuple[Job, Task]:
    new = Job()
    new.CopyFrom(job)
    new.updated_at_ms = now
    done = Task()
    done.CopyFrom(task)
    done.state = task_pb2.TASK_STATE_DONE
    return new, done


def _finish(job: Job, status: JobStatus.ValueType) -> None:
    job.status = status
    del job.active_task_ids[:]


def _on_failure(job: Job, done: Task, result: TaskResult, *, policy: Policy, now: int) -> Decision:
    error = result.error
    label = error.code_name or _ERROR_NAMES.get(error.code, "TRANSIENT_ERROR")
    message = f"task {done.type!r} failed ({label})"
    if error.message:
        message += f": {error.message}"
    if error.code in (task_pb2.ERROR_CODE_INVALID_INPUT, task_pb2.ERROR_CODE_PERMANENT):
        invalid = error.code == task_pb2.ERROR_CODE_INVALID_INPUT
        _finish(job, job_pb2.JOB_STATUS_FAILED if invalid else job_pb2.JOB_STATUS_QUARANTINED)
        job.error = message
        return Decision(job, [done], ready=False, transition="")
    return _retry_or_quarantine(job, done, message, policy, now)


def _retry_or_quarantine(job: Job, done: Task, message: str, policy: Policy, now: int) -> Decision:
    retry = done.attempt  # the retry number this would be
    if retry > policy.max_retries:
        if job.status == job_pb2.JOB_STATUS_WAITING_FOR_PARALLEL_TASKS:
            record = _result_record(done, "failure", None, message)
            return _record_branch(job, done, record, transition="", done=done)
        _finish(job, job_pb2.JOB_STATUS_QUARANTINED)
        job.error = f"{message}; gave up after {retry - 1} retries"
        return Decision(job, [done], ready=False, transition="")
    again = next_attempt(done, now, policy.delay_ms(retry))
    job.retry_count = retry
    job.error = message
    job.active_task_ids[:] = [
        again.task_id if t == done.task_id else t for t in job.active_task_ids
    ]
    return Decision(job, [done, again], ready=False, transition="retry")


def _branch_ended(
    job: Job, done: Task, result: TaskResult, *, policy: Policy, now: int
) -> Decision:
    if result.status == task_pb2.TASK_RESULT_STATUS_FAILURE and result.error.code not in (
        task_pb2.ERROR_CODE_INVALID_INPUT,
        task_pb2.ERROR_CODE_PERMANENT,
    ):
        return _retry_or_quarantine(job, done, f"branch {done.type!r} failed", policy, now)
    if result.status == task_pb2.TASK_RESULT_STATUS_CANCELLED:
        return _retry_or_quarantine(job, done, "the worker gave the branch up", policy, now)
    error = None
    if result.status == task_pb2.TASK_RESULT_STATUS_FAILURE:
        err = result.error
        error = {
            "code": err.code_name or _ERROR_NAMES.get(err.code, "TRANSIENT_ERROR"),
            "message": err.message,
            "details": from_payload(err.details),
        }
    record = _result_record(done, result_key(result), from_payload(result.data), None)
    record["error"] = error
    return _record_branch(job, done, record, transition="", done=done)


def _result_record(task: Task, status: str, data: Any, message: str | None) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "job_id": task.job_id,
        "worker_id": task.worker_id or None,
        "status": status,
        "data": data,
        "error": None if message is None else {"code": "TRANSIENT_ERROR", "message": message},
    }


def _record_branch(
    job: Job, task: Task, record: dict[str, Any], *, transition: str, done: Task | None = None
) -> Decision:
    job.branch_results[task.task_id].CopyFrom(to_payload(record))
    job.active_task_ids.remove(task.task_id)
    written = [done] if done is not None else []
    if job.active_task_ids:
        return Decision(job, written, ready=False, transition=transition)
    target = job.aggregate_into
    enter_state(job, target)
    return Decision(job, written, ready=True, transition=target)


def _merge_data(job: Job, task: Task, result: TaskResult) -> None:
    data: Any = from_payload(result.data)
    if data is None:
        return
    history = from_payload(job.state_history, {})
    if isinstance(data, dict):
        history.update(data)
    else:
        # A non-object result still reaches the blueprint, under the task type.
        history[task.type] = data
    job.state_history.CopyFrom(to_payload(history))


def undeliverable(result: TaskResult, message: str) -> TaskResult:
    """A failure in place of ``result`` (same task, job and worker) for data
    that cannot travel: a task too big for its worker, a result too big to
    keep. ``INVALID_INPUT`` fails the job with ``message`` (or takes the
    blueprint's ``failure`` transition): another attempt would fail alike."""
    return TaskResult(
        task_id=result.task_id,
        job_id=result.job_id,
        worker_id=result.worker_id,
        status=task_pb2.TASK_RESULT_STATUS_FAILURE,
        error=task_pb2.TaskError(code=task_pb2.ERROR_CODE_INVALID_INPUT, message=message),
    )
