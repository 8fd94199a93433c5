"""Building task records: first attempts from a handler's decision, retries
from a failed attempt. Every attempt gets a fresh task id, so a late result
from an earlier attempt can never be taken for the current one."""

from __future__ import annotations

import os

from avtomatika.blueprint.actions import DispatchTask
from avtomatika.payload import to_payload
from avtomatika.v1 import task_pb2
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.task_pb2 import Task

__all__ = ["first_attempt", "new_id", "next_attempt"]


def new_id() -> str:
    """A fresh random id (jobs, tasks, events): 128 random bits as 32 hex
    digits, like a uuid4's hex without its cost (several per job)."""
    return os.urandom(16).hex()


def _deadline(now: int, seconds: float | None) -> int:
    return 0 if not seconds else now + int(seconds * 1000)


def first_attempt(job: Job, state: str, action: DispatchTask, now: int) -> Task:
    """The task a handler's ``dispatch_task`` (or one branch of its
    ``dispatch_parallel``) asks for. Per-task timeouts override the job's; the
    job's ``result_timeout`` is an absolute deadline from its creation (or
    its last retry)."""
    dispatch_seconds = action.dispatch_timeout_seconds
    if dispatch_seconds is None and job.dispatch_timeout_ms:
        dispatch_seconds = job.dispatch_timeout_ms / 1000
    result_seconds = action.result_timeout_seconds or action.timeout_seconds
    result_deadline = _deadline(now, result_seconds)
    if result_seconds is None and job.result_timeout_ms:
        # From the attempt's start: a retried job gets the whole of it again.
        result_deadline = (job.retried_at_ms or job.created_at_ms) + job.result_timeout_ms
    task = Task(
        task_id=new_id(),
        job_id=job.id,
        type=action.task_type,
        params=to_payload(action.params),
        priority=action.priority,
        attempt=1,
        state=task_pb2.TASK_STATE_QUEUED,
        created_at_ms=now,
        dispatch_deadline_ms=_deadline(now, dispatch_seconds),
        result_deadline_ms=result_deadline,
        transitions=action.transitions,
        dispatch_strategy=action.dispatch_strategy,
        tracing_context=job.tracing_context,
        state_name=state,
    )
    if action.resource_requirements is not None:
        task.resource_requirements.CopyFrom(to_payload(action.resource_requirements))
    if action.max_cost is not None:
        task.max_cost = action.max_cost
    return task


def next_attempt(previous: Task, now: int, delay_ms: int) -> Task:
    """A retry of ``previous``: same work, new id, attempt + 1, queued after
    ``delay_ms`` of backoff. Its deadlines keep the previous attempt's
    lengths, counted from when it is queued."""
    task = Task()
    task.CopyFrom(previous)
    task.task_id = new_id()
    task.attempt = previous.attempt + 1
    task.worker_id = ""
    task.leased_at_ms = 0
    task.sequence = 0
    task.created_at_ms = now
    start = now + delay_ms
    if delay_ms > 0:
        task.state = task_pb2.TASK_STATE_SCHEDULED
        task.not_before_ms = start
    else:
        task.state = task_pb2.TASK_STATE_QUEUED
        task.not_before_ms = 0
    if previous.dispatch_deadline_ms:
        task.dispatch_deadline_ms = start + (previous.dispatch_deadline_ms - previous.created_at_ms)
    return task
