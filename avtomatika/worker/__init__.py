"""The Python worker SDK: run skills for an Avtomatika orchestrator over gRPC.

::

    from avtomatika.worker import TaskContext, TaskFailure, Worker

    worker = Worker(worker_id="w-1", addresses=["127.0.0.1:50051"], token="secret")

    @worker.skill("echo")
    async def echo(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
        await task.report_progress(0.5, "half way")
        return {"echo": params}

    await worker.run()
"""

from avtomatika.channel_tls import TlsFiles
from avtomatika.worker.config import ConnectionSettings, GpuInfo, Resources
from avtomatika.worker.errors import TaskFailure, WorkerError, WorkerRejected
from avtomatika.worker.task import HandlerResult, SkillHandler, TaskContext, TaskOutcome
from avtomatika.worker.worker import Worker

__all__ = [
    "ConnectionSettings",
    "GpuInfo",
    "HandlerResult",
    "Resources",
    "SkillHandler",
    "TaskContext",
    "TaskFailure",
    "TaskOutcome",
    "TlsFiles",
    "Worker",
    "WorkerError",
    "WorkerRejected",
]
