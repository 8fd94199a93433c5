"""Connection hygiene over real sockets: slow and partial clients are closed,
caps refuse connections with 503 JSON, parser errors are JSON that never
echo the request (issue 17, findings 2 and 7), and ordinary keep-alive
clients notice none of it."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from avtomatika.config import Settings
from avtomatika.errors import ConfigError
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import HttpClient, StartOrchestrator
from tests.support.serve import serve_env, served
from tests.support.tokens import CLIENT_TOKEN
from tests.support.waiting import DEADLINE_SECONDS, wait_until

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Sockets:
    """Raw TCP connections a test opens (to play a slow or broken client);
    all closed at the end."""

    def __init__(self) -> None:
        self.open: list[Connection] = []

    async def connect(self, port: int, source: str = "127.0.0.1", data: bytes = b"") -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        self.open.append((reader, writer))
        if data:
            writer.write(data)
            await writer.drain()
        return reader, writer

    def close(self) -> None:
        for _, writer in self.open:
            writer.close()


@pytest.fixture
async def sockets() -> AsyncIterator[Sockets]:
    opened = Sockets()
    yield opened
    opened.close()


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(DEADLINE_SECONDS):
        return await reader.read()


def parse(raw: bytes) -> tuple[int, dict[str, str], dict[str, str]]:
    """Status, headers (lower-cased names) and JSON body of one response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, json.loads(body)


def json_error_of(raw: bytes, status: int) -> str:
    got, headers, body = parse(raw)
    assert got == status, raw
    assert headers["content-type"].startswith("application/json")
    assert set(body) == {"error"}
    return body["error"]


STATUS_REQUEST = b"GET /_public/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
"""One whole request, after which the server closes the connection."""

PARTIAL_REQUESTS = [
    b"GET /_public/sta",  # an unfinished request line
    b"GET /_public/status HTTP/1.1\r\n",  # a request line, no headers
    b"GET /_public/status HTTP/1.1\r\nHost: x\r\nUser-Ag",  # an unfinished header
    b"POST /api/v1/jobs/echo HTTP/1.1\r\nHost: x\r\n",  # headers never ended
    b"",  # nothing at all
]


async def test_connections_that_never_finish_their_headers_are_closed(
    start_orchestrator: StartOrchestrator, sockets: Sockets
) -> None:
    """Finding 2: ten connections sending a partial request line or partial
    headers are answered 408 JSON and closed after the header timeout."""
    orchestrator = await start_orchestrator(header_timeout_seconds=0.5)
    slow = [
        await sockets.connect(orchestrator.rest_port, data=PARTIAL_REQUESTS[i % 5])
        for i in range(10)
    ]
    for reader, _ in slow:
        message = json_error_of(await until_closed(reader), 408)
        assert message == "request headers not received in time"


async def test_a_slow_next_request_on_a_kept_alive_connection_is_closed(
    start_orchestrator: StartOrchestrator, sockets: Sockets
) -> None:
    """Finding 2: the header timeout holds for every request of a kept-alive
    connection, not only the first."""
    orchestrator = await start_orchestrator(header_timeout_seconds=0.5)
    request = b"GET /_public/status HTTP/1.1\r\nHost: x\r\n\r\n"
    reader, writer = await sockets.connect(orchestrator.rest_port, data=request)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(parse(head + b"{}")[1]["content-length"])
    await reader.readexactly(length)
    writer.write(b"GET /_public/status HTTP/1.1\r\nHo")
    json_error_of(await until_closed(reader), 408)


async def test_idle_keep_alive_connections_are_closed(
    start_orchestrator: StartOrchestrator, sockets: Sockets
) -> None:
    """Finding 2: a kept-alive connection that sends no next request is
    closed after the keep-alive timeout (silently: there is no request to
    answer)."""
    orchestrator = await start_orchestrator(keepalive_timeout_seconds=0.5)
    request = b"GET /_public/status HTTP/1.1\r\nHost: x\r\n\r\n"
    reader, _ = await sockets.connect(orchestrator.rest_port, data=request)
    status, headers, body = parse(await until_closed(reader))
    assert (status, body) == (200, {"status": "ok"})
    assert headers.get("connection") != "close"  # kept alive until it idled


async def test_connections_past_the_per_address_cap_are_refused_with_503(
    start_orchestrator: StartOrchestrator, sockets: Sockets
) -> None:
    """Finding 2: one address cannot take every connection: past its cap a
    new connection is answered 503 JSON and closed, while another address
    is served, and a freed slot is usable again."""
    orchestrator = await start_orchestrator(max_connections_per_address=3)
    port = orchestrator.rest_port
    held = [await sockets.connect(port) for _ in range(3)]
    reader, _ = await sockets.connect(port)
    raw = await until_closed(reader)
    assert json_error_of(raw, 503) == "too many open connections from this address"
    assert parse(raw)[1]["retry-after"] == "1"

    other, _ = await sockets.connect(port, source="127.0.0.2", data=STATUS_REQUEST)
    assert parse(await until_closed(other))[0] == 200

    held[0][1].close()

    async def served_again() -> bool:
        reader, _ = await sockets.connect(port, data=STATUS_REQUEST)
        return parse(await until_closed(reader))[0] == 200

    await wait_until(served_again, message="a freed slot was never given to a new connection")


async def test_connections_past_the_server_cap_are_refused_with_503(
    start_orchestrator: StartOrchestrator, sockets: Sockets
) -> None:
    """Finding 2: the server-wide cap holds whatever the address."""
    orchestrator = await start_orchestrator(max_connections=2, max_connections_per_address=0)
    port = orchestrator.rest_port
    await sockets.connect(port, source="127.0.0.1")
    await sockets.connect(port, source="127.0.0.2")
    reader, _ = await sockets.connect(port, source="127.0.0.3")
    assert json_error_of(await until_closed(reader), 503) == "too many open connections"


async def test_connections_closed_early_are_counted_in_metrics(
    start_orchestrator: StartOrchestrator, sockets: Sockets, http_client: HttpClient
) -> None:
    """Operators see the bounds at work: ``GET /_public/metrics`` counts the
    connections closed past a cap or for slow headers, and the open ones."""
    orchestrator = await start_orchestrator(
        header_timeout_seconds=0.5, max_connections_per_address=1
    )
    slow, _ = await sockets.connect(orchestrator.rest_port, data=b"GET / HTTP/1.1\r\n")
    refused, _ = await sockets.connect(orchestrator.rest_port)
    json_error_of(await until_closed(refused), 503)
    json_error_of(await until_closed(slow), 408)

    response = await http_client(orchestrator).get("/_public/metrics")
    samples = {
        (sample.name, tuple(sample.labels.values())): sample.value
        for family in text_string_to_metric_families(await response.text())
        for sample in family.samples
    }
    closed = "avtomatika_http_connections_closed_early_total"
    assert samples[(closed, ("address_cap",))] == 1
    assert samples[(closed, ("header_timeout",))] == 1
    assert samples[("avtomatika_http_connections_open", ())] == 1  # the scrape's own


async def test_status_answers_with_few_descriptors_and_300_slow_connections(
    sockets: Sockets,
) -> None:
    """Finding 2's reproduction: ``avtomatika serve`` with 256 descriptors
    and 300 connections that never finish their headers still answers
    ``/_public/status``, and closes every slow connection."""
    command = ("prlimit", "--nofile=256", sys.executable, "-m", "avtomatika")
    async with served("--header-timeout-seconds", "1", env=serve_env(), command=command) as server:
        slow = [
            await sockets.connect(server.rest_port, data=b"GET /_public/status HTTP/1.1\r\nX-")
            for _ in range(300)
        ]

        async def status_answers() -> bool:
            timeout = aiohttp.ClientTimeout(total=5)
            url = f"http://127.0.0.1:{server.rest_port}/_public/status"
            async with aiohttp.ClientSession(timeout=timeout) as session:
                try:
                    async with session.get(url) as response:
                        return response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    return False

        await wait_until(status_answers, message="/_public/status never answered")
        for reader, _ in slow:
            try:
                raw = await until_closed(reader)
            except ConnectionResetError:
                # Refused past the cap: the server closed it with our request
                # unread, which resets the connection, 503 or not.
                continue
            assert parse(raw)[0] in (408, 503)  # timed out, or refused past the cap


@pytest.mark.parametrize(
    ("request_bytes", "status", "secret"),
    [
        # An oversized header.
        (
            b"GET /_public/status HTTP/1.1\r\nX-Big: " + b"SECRET" * 4000 + b"\r\n\r\n",
            431,
            b"SECRET",
        ),
        # An over-long URL.
        (b"GET /" + b"SECRET" * 2000 + b" HTTP/1.1\r\n\r\n", 414, b"SECRET"),
        # A garbage request line.
        (b"SECRET garbage\x01\x02 of no protocol\r\n\r\n", 400, b"SECRET"),
        # A bad method.
        (b"SE<R>ET /_public/status HTTP/1.1\r\n\r\n", 400, b"SE<R>ET"),
        # A bad HTTP version.
        (b"GET /_public/status HTTP/SECRET\r\n\r\n", 400, b"SECRET"),
        # Too many headers.
        (
            b"GET / HTTP/1.1\r\n"
            + b"".join(b"X-SECRET-%d: 1\r\n" % i for i in range(200))
            + b"\r\n",
            431,
            b"SECRET",
        ),
    ],
    ids=["oversized-header", "long-url", "garbage-line", "bad-method", "bad-version", "headers"],
)
async def test_parser_errors_are_json_and_never_echo_the_request(
    start_orchestrator: StartOrchestrator,
    sockets: Sockets,
    request_bytes: bytes,
    status: int,
    secret: bytes,
) -> None:
    """Finding 7: what aiohttp's parser refuses is answered as JSON with its
    own status, without the bytes that were sent."""
    orchestrator = await start_orchestrator()
    reader, _ = await sockets.connect(orchestrator.rest_port, data=request_bytes)
    raw = await until_closed(reader)
    json_error_of(raw, status)
    assert secret.lower() not in raw.lower()


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Encoding: gzip\r\nContent-Length: 6\r\n\r\nSECRET",
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nSECRET\r\n0\r\n\r\n",
    ],
    ids=["gzip-that-does-not-inflate", "bad-chunk-size"],
)
async def test_a_body_that_cannot_be_decoded_is_400_json(
    start_orchestrator: StartOrchestrator, sockets: Sockets, framing: bytes
) -> None:
    """Bad input never 500: a body whose encoding or framing is broken is
    a 400 JSON (it was a 500 with a traceback for gzip), without its bytes."""
    orchestrator = await start_orchestrator([echo_blueprint()])
    head = (
        b"POST /api/v1/jobs/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"X-Client-Token: " + CLIENT_TOKEN.encode() + b"\r\n"
    )
    reader, _ = await sockets.connect(orchestrator.rest_port, data=head + framing)
    raw = await until_closed(reader)
    json_error_of(raw, 400)
    assert b"SECRET" not in raw


async def test_keep_alive_clients_reuse_their_connections_undisturbed(
    start_orchestrator: StartOrchestrator,
) -> None:
    """Ordinary clients never meet the bounds: an aiohttp session making
    many requests over a few reused connections, with tight settings."""
    orchestrator = await start_orchestrator(
        header_timeout_seconds=0.5, max_connections_per_address=4
    )
    opened: list[object] = []

    async def on_create(*_: object) -> None:
        opened.append(object())

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    connector = aiohttp.TCPConnector(limit=4)
    url = f"http://127.0.0.1:{orchestrator.rest_port}/_public/status"
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:

        async def get() -> int:
            async with session.get(url) as response:
                await response.read()
                return response.status

        for _ in range(5):
            statuses = await asyncio.gather(*(get() for _ in range(20)))
            assert statuses == [200] * 20
    assert 1 <= len(opened) <= 4


async def test_grpc_connections_that_never_handshake_are_closed(
    start_orchestrator: StartOrchestrator, sockets: Sockets
) -> None:
    """Finding 2 on the gRPC port: a connection that never completes its
    HTTP/2 handshake is closed after the header timeout (grpc's default
    would hold it for two minutes)."""
    orchestrator = await start_orchestrator(header_timeout_seconds=0.5)
    reader, _ = await sockets.connect(orchestrator.grpc_port, data=b"PRI * HTTP/2.0\r\n")
    await until_closed(reader)
    assert reader.at_eof()


async def test_grpc_connections_past_the_cap_are_closed(
    start_orchestrator: StartOrchestrator, sockets: Sockets
) -> None:
    """Finding 2 on the gRPC port: past ``MAX_CONNECTIONS`` a new connection
    is closed as soon as it is accepted (the header timeout, longer than the
    test's deadline, cannot be what closes it)."""
    orchestrator = await start_orchestrator(max_connections=2, header_timeout_seconds=60)
    port = orchestrator.grpc_port
    held = [await sockets.connect(port) for _ in range(2)]
    reader, _ = await sockets.connect(port)
    await until_closed(reader)
    assert reader.at_eof()
    assert not any(held_reader.at_eof() for held_reader, _ in held)


@pytest.mark.parametrize(
    "setting",
    ["header_timeout_seconds", "keepalive_timeout_seconds", "max_connections"],
)
def test_connection_settings_refuse_negative_values(setting: str) -> None:
    with pytest.raises(ConfigError, match=setting.upper()):
        Settings().replace(**{setting: -1})


def test_the_connection_cap_follows_the_descriptor_limit_unless_set() -> None:
    assert Settings(max_connections=7).connection_cap == 7
    assert 1 <= Settings().connection_cap <= 10_000
