"""Domain messages rendered as the documented JSON shapes."""

from __future__ import annotations

from typing import Any

from avtomatika.clock import iso_from_ms
from avtomatika.payload import from_payload
from avtomatika.status import job_status_name
from avtomatika.v1 import job_pb2
from avtomatika.v1.job_pb2 import Job
from avtomatika.v1.worker_pb2 import WorkerInfo, WorkerStatus, WorkerTransport

__all__ = ["job_json", "worker_json"]


def job_json(job: Job) -> dict[str, Any]:
    """A job as its owner sees it: never a client token or request headers;
    the approval token only while the job waits for that approval."""
    rendered = {
        "id": job.id,
        "blueprint_name": job.blueprint_name,
        "status": job_status_name(job.status),
        "current_state": job.current_state,
        "initial_data": from_payload(job.initial_data, {}),
        "state_history": from_payload(job.state_history, {}),
        "error": job.error or None,
        "progress": job.progress,
        "progress_message": job.progress_message or None,
        "retry_count": job.retry_count,
        "parent_job_id": job.parent_job_id or None,
        "child_job_ids": list(job.child_job_ids),
        "created_at": iso_from_ms(job.created_at_ms),
        "updated_at": iso_from_ms(job.updated_at_ms),
    }
    if job.status == job_pb2.JOB_STATUS_WAITING_FOR_HUMAN:
        rendered["approval_token"] = job.approval_token
    return rendered


def worker_json(info: WorkerInfo) -> dict[str, Any]:
    """A connected worker, without any credential."""
    reg = info.registration
    res = reg.resources
    return {
        "worker_id": reg.worker_id,
        "worker_type": reg.worker_type,
        "skills": list(reg.skills),
        "resources": {
            "max_concurrent_tasks": res.max_concurrent_tasks,
            "cpu_cores": res.cpu_cores,
            "ram_gb": res.ram_gb,
            "gpu_info": (
                {"model": res.gpu_info.model, "vram_gb": res.gpu_info.vram_gb}
                if res.HasField("gpu_info")
                else None
            ),
            "installed_models": [
                {"name": m.name, "version": m.version} for m in res.installed_models
            ],
        },
        "cost_per_skill": dict(reg.cost_per_skill),
        "labels": dict(reg.labels),
        "status": WorkerStatus.Name(info.status).removeprefix("WORKER_STATUS_").lower(),
        "transport": WorkerTransport.Name(info.transport).removeprefix("WORKER_TRANSPORT_").lower(),
        "load": len(info.active_task_ids),
        "active_task_ids": list(info.active_task_ids),
        "last_seen": iso_from_ms(info.last_seen_ms),
    }
