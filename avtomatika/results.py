"""What a task result does to its job: a pure decision, committed by the engine.

The worker's status picks the transition (``success`` when absent) and its
data merges into ``state_history``. A failure without a ``failure``
transition is decided by its error code: transient (and unknown) codes are
retried up to the retry limit then quarantined, permanent errors quarantine,
invalid input fails the job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from avtomatika.payload import from_payload, to_payload
from avtomatika.tasks import next_attempt
from avtomatika.v1.job_pb2 import Job, JobStatus
from avtomatika.v1.task_pb2 import ErrorCode, Task, TaskResult, TaskResultStatus, TaskState

__all__ = ["Decision", "decide", "requeue", "result_key"]

_KEYS = {
    TaskResultStatus.TASK_RESULT_STATUS_UNSPECIFIED: "success",
    TaskResultStatus.TASK_RESULT_STATUS_SUCCESS: "success",
    TaskResultStatus.TASK_RESULT_STATUS_FAILURE: "failure",
    TaskResultStatus.TASK_RESULT_STATUS_CANCELLED: "cancelled",
}


@dataclass(slots=True)
class Decision:
    """The job after the result, the tasks to write with it, and what happened."""

    job: Job
    tasks: list[Task]
    ready: bool
    transition: str


def result_key(result: TaskResult) -> str:
    """The transition name a result selects (``success``, ``failure``, custom...)."""
    if result.status == TaskResultStatus.TASK_RESULT_STATUS_CUSTOM:
        return result.custom_status
    return _KEYS[result.status]


def decide(job: Job, task: Task, result: TaskResult, *, max_retries: int, now: int) -> Decision:
    """Apply ``result`` of ``task`` to a copy of ``job``."""
    new = Job()
    new.CopyFrom(job)
    new.updated_at_ms = now
    new.progress = 0.0
    new.progress_message = ""
    done = Task()
    done.CopyFrom(task)
    done.state = TaskState.TASK_STATE_DONE
    del new.active_task_ids[:]
    _merge_data(new, task, result)

    key = result_key(result)
    target = task.transitions.get(key)
    if target:
        new.current_state = target
        new.status = JobStatus.JOB_STATUS_RUNNING
        new.retry_count = 0
        return Decision(new, [done], ready=True, transition=target)

    if result.status == TaskResultStatus.TASK_RESULT_STATUS_FAILURE:
        return _on_failure(new, done, result, max_retries=max_retries, now=now)
    if result.status == TaskResultStatus.TASK_RESULT_STATUS_CANCELLED:
        # The job was not cancelled (that is checked before deciding), so the
        # worker gave the task up, e.g. while shutting down: run it again.
        return _retry_or_quarantine(new, done, "worker cancelled the task", max_retries, now)
    new.status = JobStatus.JOB_STATUS_FAILED
    new.error = (
        f"worker returned status {key!r}, which has no transition in state {task.state_name!r}"
    )
    return Decision(new, [done], ready=False, transition="")


def requeue(job: Job, task: Task, reason: str, *, max_retries: int, now: int) -> Decision:
    """The worker lost the task (it disconnected, or gave it back while
    shutting down): a transient failure, retried whatever the transitions."""
    new = Job()
    new.CopyFrom(job)
    new.updated_at_ms = now
    del new.active_task_ids[:]
    done = Task()
    done.CopyFrom(task)
    done.state = TaskState.TASK_STATE_DONE
    return _retry_or_quarantine(new, done, reason, max_retries, now)


def _on_failure(
    job: Job, done: Task, result: TaskResult, *, max_retries: int, now: int
) -> Decision:
    error = result.error
    label = error.code_name or ErrorCode.Name(error.code)
    message = f"task {done.type!r} failed ({label}): {error.message}".rstrip(": ")
    if error.code == ErrorCode.ERROR_CODE_INVALID_INPUT:
        job.status = JobStatus.JOB_STATUS_FAILED
        job.error = message
        return Decision(job, [done], ready=False, transition="")
    if error.code == ErrorCode.ERROR_CODE_PERMANENT:
        job.status = JobStatus.JOB_STATUS_QUARANTINED
        job.error = message
        return Decision(job, [done], ready=False, transition="")
    return _retry_or_quarantine(job, done, message, max_retries, now)


def _retry_or_quarantine(
    job: Job, done: Task, message: str, max_retries: int, now: int
) -> Decision:
    if job.retry_count >= max_retries:
        job.status = JobStatus.JOB_STATUS_QUARANTINED
        job.error = f"{message}; gave up after {job.retry_count} retries"
        return Decision(job, [done], ready=False, transition="")
    retry = next_attempt(done, now)
    job.retry_count += 1
    job.status = JobStatus.JOB_STATUS_WAITING_FOR_WORKER
    job.active_task_ids.append(retry.task_id)
    return Decision(job, [done, retry], ready=False, transition="retry")


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
