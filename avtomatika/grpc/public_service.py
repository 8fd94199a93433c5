"""``PublicService``: the public endpoints over gRPC (no client token).

Each RPC calls the same :class:`~avtomatika.services.public_api.PublicApi`
method as its REST twin under ``/_public``; ``GetReadiness`` is UNAVAILABLE,
naming why, where REST answers 503 ``not_ready``. ``SubmitApproval`` takes
the wait's approval token, when one is required, from the
``x-approval-token`` metadata; ``FlushDb`` is NOT_FOUND unless
``DEBUG_FLUSH_ENABLED`` is set, as over REST.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from avtomatika.grpc.status import rpc_errors
from avtomatika.services.public_api import PublicApi
from avtomatika.v1 import public_service_pb2_grpc
from avtomatika.v1.public_service_pb2 import (
    FlushDbRequest,
    FlushDbResponse,
    GetDocsRequest,
    GetDocsResponse,
    GetMetricsRequest,
    GetMetricsResponse,
    GetOpenApiRequest,
    GetOpenApiResponse,
    GetReadinessRequest,
    GetReadinessResponse,
    GetStatusRequest,
    GetStatusResponse,
    SubmitApprovalRequest,
    SubmitApprovalResponse,
)

__all__ = ["APPROVAL_TOKEN_KEY", "PublicServicer"]

APPROVAL_TOKEN_KEY = "x-approval-token"
"""The metadata key of a human decision's approval token."""

_Context = grpc.aio.ServicerContext[Any, Any]


class PublicServicer(public_service_pb2_grpc.PublicServiceServicer):
    """Translates ``PublicService`` RPCs to :class:`PublicApi` calls."""

    def __init__(self, api: PublicApi) -> None:
        self._api = api

    async def GetStatus(self, request: GetStatusRequest, context: _Context) -> GetStatusResponse:
        return GetStatusResponse(status=self._api.status())

    async def GetReadiness(
        self, request: GetReadinessRequest, context: _Context
    ) -> GetReadinessResponse:
        async with rpc_errors(context):
            await self._api.ready()
            return GetReadinessResponse(status="ready")

    async def GetMetrics(self, request: GetMetricsRequest, context: _Context) -> GetMetricsResponse:
        async with rpc_errors(context):
            body, content_type = await self._api.metrics_text()
            response = GetMetricsResponse()
            response.body.content_type = content_type
            response.body.data = body
            return response

    async def SubmitApproval(
        self, request: SubmitApprovalRequest, context: _Context
    ) -> SubmitApprovalResponse:
        async with rpc_errors(context):
            token = dict(context.invocation_metadata() or ()).get(APPROVAL_TOKEN_KEY)
            await self._api.submit_approval(request.job_id, request.decision, token)
            return SubmitApprovalResponse(status="approval_received", job_id=request.job_id)

    async def FlushDb(self, request: FlushDbRequest, context: _Context) -> FlushDbResponse:
        async with rpc_errors(context):
            await self._api.flush()
            return FlushDbResponse(status="db_flushed")

    async def GetDocs(self, request: GetDocsRequest, context: _Context) -> GetDocsResponse:
        async with rpc_errors(context):
            page, _ = self._api.docs_page()
            response = GetDocsResponse()
            response.body.content_type = "text/html; charset=utf-8"
            response.body.data = page.encode()
            return response

    async def GetOpenApi(self, request: GetOpenApiRequest, context: _Context) -> GetOpenApiResponse:
        async with rpc_errors(context):
            document = self._api.openapi()
            response = GetOpenApiResponse()
            response.body.content_type = "application/json"
            response.body.data = json.dumps(document).encode()
            return response
