"""The public use cases (no client token): liveness, readiness, metrics, human
decisions, the development flush and the API's documents, once for both
transports.

The documents describe the REST API, which only the REST transport can
render; the composition root hands them in as :class:`Documents`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from avtomatika.engine.core import Engine
from avtomatika.engine.followers import JobFollowers
from avtomatika.errors import InvalidArgument, NotFound, Unavailable
from avtomatika.monitoring.metrics import Metrics
from avtomatika.services.readiness import Readiness

__all__ = ["Documents", "PublicApi"]


class Documents(Protocol):
    """The API's interactive docs page and its OpenAPI document."""

    def docs_page(self) -> tuple[str, str]:
        """The HTML page and its Content-Security-Policy."""
        ...

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document."""
        ...


@dataclass(slots=True)
class PublicApi:
    """The public use cases of one orchestrator."""

    engine: Engine
    followers: JobFollowers
    metrics: Metrics | None = None
    documents: Documents | None = None
    readiness: Readiness = field(init=False)

    def __post_init__(self) -> None:
        self.readiness = Readiness(self.engine.storage.ping)

    def status(self) -> str:
        """Liveness: the process answers."""
        return "ok"

    async def ready(self) -> None:
        """Readiness: returns when the store answers (see
        :class:`Readiness`); :class:`Unavailable` saying why not."""
        problem = await self.readiness.problem()
        if problem is not None:
            raise Unavailable(f"not ready: {problem}")

    async def metrics_text(self, accept: str = "") -> tuple[bytes, str]:
        """The Prometheus exposition (OpenMetrics when ``accept`` asks for
        it) and its content type."""
        if self.metrics is None:
            raise NotFound("metrics are not enabled in this orchestrator")
        return await self.metrics.render(accept)

    async def submit_approval(self, job_id: str, decision: Any, token: Any = None) -> None:
        """A human decision for a job waiting for one (see
        :meth:`Engine.submit_approval`)."""
        if not isinstance(decision, str) or not decision:
            raise InvalidArgument("decision must be a non-empty string")
        if token is not None and not isinstance(token, str):
            raise InvalidArgument("token must be a string")
        await self.engine.submit_approval(job_id, decision, token or None)

    async def flush(self) -> None:
        """Empty the job store (``DEBUG_FLUSH_ENABLED`` only; otherwise the
        route does not exist, and says so exactly as an unknown one does)."""
        if not self.engine.config.debug_flush_enabled:
            raise NotFound("Not Found")
        await self.engine.storage.flush()
        self.followers.refresh_all()

    def docs_page(self) -> tuple[str, str]:
        """The interactive docs page and its Content-Security-Policy."""
        return self._documents().docs_page()

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document of the REST API."""
        return self._documents().openapi()

    def _documents(self) -> Documents:
        if self.documents is None:
            raise NotFound("the API documents are not served by this orchestrator")
        return self.documents
