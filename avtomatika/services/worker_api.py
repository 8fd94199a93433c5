"""The use cases of a polling worker (register, heartbeat, wait for a task,
report a result), once for the legacy REST API and the unary gRPC worker
RPCs: the worker token is checked here, and whether it may act as the worker
it names, then :class:`~avtomatika.services.polling_workers.PollingWorkers`
keeps the books.

One :class:`WorkerApi` per transport: they share the books and differ only
in the name of the credential their refusals mention (``X-Worker-Token``,
``x-worker-token``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from dataclasses import dataclass

from avtomatika.access.authenticator import Authenticator
from avtomatika.access.peer import certificate_names
from avtomatika.engine.core import ResultVerdict
from avtomatika.errors import InvalidArgument, Unauthenticated
from avtomatika.ids import check_worker_id, worker_id_problem
from avtomatika.logs.scope import identify
from avtomatika.services.polling_workers import PollingWorkers
from avtomatika.v1.task_pb2 import Task, TaskResult
from avtomatika.v1.worker_pb2 import WorkerRegistration
from avtomatika.v1.worker_service_pb2 import HeartbeatRequest

__all__ = [
    "AGENT_LENGTH",
    "WorkerApi",
    "certificate_refusal",
    "check_registration",
    "registration_problem",
]

log = logging.getLogger(__name__)

AGENT_LENGTH = 256
"""The longest worker agent (User-Agent) kept; what is longer is cut."""


@dataclass(frozen=True, slots=True)
class WorkerApi:
    """A polling worker's use cases, refusing with ``credential``'s name."""

    auth: Authenticator
    workers: PollingWorkers
    credential: str = "X-Worker-Token"
    task_signing_secret: str | None = None
    """``WORKER_TASK_SIGNING_SECRET``: tasks handed out are signed with it."""
    signatures_required: bool = False
    """``WORKER_SIGNATURES_REQUIRED``: requests must carry the worker's
    signature (an HMAC keyed with its token, as SDK 1.0b20 signs)."""

    def authenticate(self, token: str | None) -> str | None:
        """Check a worker token: ``GLOBAL_WORKER_TOKEN`` or a per-worker
        token of ``workers.toml``. Returns the worker a per-worker token
        belongs to, None for the global token."""
        if not self.auth.worker(token):
            raise Unauthenticated(f"missing or invalid {self.credential}")
        owner = self.auth.worker_id_for_token(token)
        # A worker's own token names its worker at once (the anonymous
        # socket learns it only so): its certificate must name it too.
        if owner is not None and not self.auth.certificate_may_claim(certificate_names(), owner):
            raise Unauthenticated(certificate_refusal(owner))
        # The global token names no worker: the id comes with speaks_for.
        identify("worker" if owner is None else f"worker:{owner}")
        return owner

    def check_signature(self, token: str | None, content: bytes, signature: str | None) -> None:
        """With ``signatures_required``, refuse a request whose signature is
        not the HMAC-SHA256 of ``content`` keyed with the worker's token.
        Logged: a forged or corrupted request is worth an operator's look."""
        if not self.signatures_required:
            return
        expected = hmac.new((token or "").encode(), content, hashlib.sha256).hexdigest()
        if signature is None or not hmac.compare_digest(expected, signature):
            log.warning("worker request refused: %s signature", "bad" if signature else "no")
            raise Unauthenticated("missing or invalid security.signature")

    def speaks_for(self, token: str | None, worker_id: str) -> str:
        """``worker_id``, once the token is known to act as it: not another
        worker's own token, nor the global token for a worker
        ``workers.toml`` lists; with ``TLS_BIND_WORKER_IDENTITY``, the
        request's client certificate must name it as well."""
        check_worker_id(worker_id)
        if not self.auth.worker_may_claim(token, worker_id):
            raise Unauthenticated(f"this {self.credential} may not act as worker {worker_id!r}")
        if not self.auth.certificate_may_claim(certificate_names(), worker_id):
            raise Unauthenticated(certificate_refusal(worker_id))
        identify(f"worker:{worker_id}")
        return worker_id

    async def register(
        self,
        token: str | None,
        registration: WorkerRegistration,
        skills_hash: str = "",
        agent: str = "",
    ) -> None:
        """Register a worker; ``skills_hash`` is SDK 1.0b20's hash of its
        skills, against which its heartbeats are checked; ``agent`` what it
        says it is (its User-Agent), shown to clients."""
        self.authenticate(token)
        check_registration(registration)
        self.speaks_for(token, registration.worker_id)
        await self.workers.register(registration, skills_hash, agent[:AGENT_LENGTH])

    async def heartbeat(
        self,
        token: str | None,
        beat: HeartbeatRequest | None,
        worker_id: str,
        skills_hash: str = "",
        agent: str = "",
    ) -> list[str] | None:
        """A heartbeat; with no ``beat``, a TTL ping (None). The tasks the
        worker must stop. ``skills_hash``: SDK 1.0b20's, see
        :meth:`needs_full_sync`; ``agent``: as for :meth:`register` (a
        worker that this process forgot is registered again from it)."""
        self.authenticate(token)
        self.speaks_for(token, worker_id)
        if beat is None:
            await self.workers.ping(worker_id)
            return None
        if not all(beat.supported_skills) or not all(beat.current_tasks):
            raise InvalidArgument("supported_skills and current_tasks must be non-empty strings")
        return await self.workers.heartbeat(beat, skills_hash, agent[:AGENT_LENGTH])

    def needs_full_sync(self, worker_id: str, skills_hash: str) -> bool:
        """Whether the worker must resend its whole registration, its skills
        having changed since it last sent them (after a heartbeat)."""
        return self.workers.needs_full_sync(worker_id, skills_hash)

    async def next_task(
        self,
        token: str | None,
        worker_id: str,
        *,
        timeout: float | None = None,
        available: list[str] | None = None,
    ) -> Task | None:
        """The worker's next task, after a long-poll of at most
        ``WORKER_POLL_TIMEOUT_SECONDS`` (or ``timeout``, if shorter); None
        when none came. Only the ``available`` skills, when named."""
        self.authenticate(token)
        self.speaks_for(token, worker_id)
        if timeout is not None and not (math.isfinite(timeout) and timeout >= 0):
            raise InvalidArgument("timeout must be a non-negative number of seconds")
        return await self.workers.next_task(worker_id, timeout=timeout, available=available)

    async def give_back(self, worker_id: str, task_id: str) -> None:
        """A task handed out to a worker that hung up before it got it."""
        await self.workers.give_back(worker_id, task_id)

    async def submit_result(self, token: str | None, result: TaskResult) -> ResultVerdict:
        self.authenticate(token)
        if not result.job_id or not result.task_id:
            raise InvalidArgument("job_id and task_id are required (non-empty strings)")
        if not result.worker_id:
            raise InvalidArgument("worker_id is required (a string)")
        self.speaks_for(token, result.worker_id)
        return await self.workers.submit_result(result)

    async def report_progress(
        self, token: str | None, worker_id: str, task_id: str, progress: float, message: str
    ) -> bool:
        """Progress of a task the worker holds; False (nothing recorded) for
        a task it does not hold."""
        self.authenticate(token)
        self.speaks_for(token, worker_id)
        if not math.isfinite(progress):
            raise InvalidArgument("progress must be a finite number")
        return await self.workers.report_progress(worker_id, task_id, progress, message)

    async def report_holders_progress(
        self, token: str | None, task_id: str, progress: float, message: str
    ) -> bool:
        """Progress from an anonymous socket (SDK 1.0b7 opens one with the
        global token): it counts for the worker holding the task only if
        ``token`` may act as that worker, so the global token never speaks
        for a worker that has a token of its own."""
        holder = await self.workers.holder_of(task_id)
        if holder is None or not self.auth.worker_may_claim(token, holder):
            return False
        if not self.auth.certificate_may_claim(certificate_names(), holder):
            return False
        return await self.report_progress(token, holder, task_id, progress, message)


def certificate_refusal(worker_id: str) -> str:
    """Why a worker whose client certificate does not name it is refused."""
    return (
        f"the client certificate does not name worker {worker_id!r} "
        "(TLS_BIND_WORKER_IDENTITY: its common name or a DNS name must be the worker id)"
    )


MAX_SKILLS = 256
"""The most skills (and ``cost_per_skill`` entries) a worker may declare."""
MAX_NAME_LENGTH = 128
"""The longest skill, worker type, label or software name."""
MAX_ENTRIES = 64
"""The most labels, installed software and installed models a worker may
declare."""
MAX_VALUE_LENGTH = 1024
"""The longest label value or software version."""


def check_registration(registration: WorkerRegistration) -> None:
    """What every transport's registration must hold (the REST parser
    already refuses most of it with its own field names)."""
    problem = registration_problem(registration)
    if problem is not None:
        raise InvalidArgument(problem)


def registration_problem(registration: WorkerRegistration) -> str | None:
    """What is wrong with a registration, or None. Besides the shapes, the
    sizes: a registration is kept for as long as the worker lives and listed
    to every client, so ids, names and counts are bounded (and a refusal
    never echoes an oversized value)."""
    if not registration.worker_id:
        return "worker_id is required (a string)"
    problem = worker_id_problem(registration.worker_id)
    if problem is not None:
        return problem
    if len(registration.worker_type) > MAX_NAME_LENGTH:
        return f"worker_type must be at most {MAX_NAME_LENGTH} characters"
    if len(registration.skills) > MAX_SKILLS or len(registration.cost_per_skill) > MAX_SKILLS:
        return f"a worker may declare at most {MAX_SKILLS} skills"
    if not all(registration.skills):
        return "skills must be non-empty strings"
    if any(len(skill) > MAX_NAME_LENGTH for skill in registration.skills):
        return f"skills must be at most {MAX_NAME_LENGTH} characters"
    for skill, cost in registration.cost_per_skill.items():
        if not math.isfinite(cost):
            return f"cost_per_skill.{skill[:MAX_NAME_LENGTH]} must be a finite number"
    resources = registration.resources
    if not (math.isfinite(resources.ram_gb) and math.isfinite(resources.gpu_info.vram_gb)):
        return "resources must be finite numbers"
    named = (
        ("labels", dict(registration.labels)),
        ("installed_software", dict(registration.installed_software)),
        ("installed_models", {m.name: m.version for m in resources.installed_models}),
    )
    for field, entries in named:
        if len(entries) > MAX_ENTRIES:
            return f"{field} may hold at most {MAX_ENTRIES} entries"
        if any(len(k) > MAX_NAME_LENGTH or len(v) > MAX_VALUE_LENGTH for k, v in entries.items()):
            return (
                f"{field}: names must be at most {MAX_NAME_LENGTH} characters "
                f"and values at most {MAX_VALUE_LENGTH}"
            )
    return None
