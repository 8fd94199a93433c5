"""``dispatch_timeout`` and ``result_timeout`` out of range are a 400 naming
the field, never a 500 (the property-based run over the OpenAPI document
found a float that overflowed once converted to milliseconds)."""

from __future__ import annotations

import pytest

from avtomatika.services.requests import MAX_TIMEOUT_SECONDS
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator

pytestmark = pytest.mark.both_stores


@pytest.mark.parametrize(
    "raw",
    [
        "2.2370009099233362e+307",  # finite, but not once multiplied by 1000
        "1" + "0" * 400,  # a JSON integer too large for any float
        str(MAX_TIMEOUT_SECONDS + 1),
        "0",
        "-1",
    ],
)
@pytest.mark.parametrize("field", ["dispatch_timeout", "result_timeout"])
async def test_a_timeout_out_of_range_is_a_400(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, field: str, raw: str
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    body = f'{{"initial_data": {{}}, "{field}": {raw}}}'
    response = await http_client(orchestrator).post(
        "/api/v1/jobs/echo", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert field in (await response.json())["error"]


async def test_the_longest_timeout_is_accepted(
    start_orchestrator: StartOrchestrator, http_client: HttpClient
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()])
    response = await http_client(orchestrator).post(
        "/api/v1/jobs/echo",
        json={"initial_data": {}, "dispatch_timeout": MAX_TIMEOUT_SECONDS, "result_timeout": 1},
    )
    assert response.status == 202
