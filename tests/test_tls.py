"""TLS on both ports, mutual TLS and workers bound to their certificates
(issue 17, finding 4), against real servers: HTTPS and gRPC with the
certificate of ``TLS_CERT_PATH``, client certificates required with
``TLS_CA_PATH`` + ``TLS_REQUIRE_CLIENT_CERT``, and
``TLS_BIND_WORKER_IDENTITY`` refusing a worker whose id its certificate
does not name. The settings' start-up checks are in ``test_tls_config.py``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from avtomatika import OrchestratorEngine
from avtomatika.client import Client, TlsFiles
from avtomatika.client import Unavailable as ClientUnavailable
from avtomatika.v1 import worker_service_pb2_grpc
from avtomatika.v1.worker_pb2 import WorkerRegistration
from avtomatika.v1.worker_service_pb2 import RegisterWorkerRequest
from avtomatika.worker import ConnectionSettings, TaskContext
from tests.support import CLIENT_TOKEN, WORKER_TOKEN, RawWorker, create_job, wait_for_status
from tests.support.blueprints import echo_blueprint
from tests.support.orchestrator import GrpcChannel, HttpClient, StartOrchestrator, rest_url
from tests.support.rest_worker import RestWorkers, registration
from tests.support.sdk import serving
from tests.support.tls import Authority, Issued, client_context


@dataclass
class Pki:
    """The CA the orchestrator trusts, its server certificate, a good
    client certificate, and one from a CA nobody trusts."""

    ca: Authority
    server: Issued
    client: Issued
    stranger: Issued


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = Authority(tmp_path)
    rogue = Authority(tmp_path, "rogue")
    return Pki(ca, ca.server(), ca.client("w-1"), rogue.client("w-1"))


def tls_settings(pki: Pki, *, mutual: bool = False, bind: bool = False) -> dict[str, Any]:
    """The orchestrator's settings: its certificate, and with ``mutual``
    client certificates required (bound to worker ids with ``bind``)."""
    settings: dict[str, Any] = {"tls_cert_path": pki.server.cert, "tls_key_path": pki.server.key}
    if mutual:
        settings.update(tls_ca_path=pki.ca.cert, tls_require_client_cert=True)
    if bind:
        settings["tls_bind_worker_identity"] = True
    return settings


async def echo(params: dict[str, Any], task: TaskContext) -> dict[str, Any]:
    return {"echoed": params}


async def refused_over_https(orchestrator: OrchestratorEngine, ssl: Any) -> None:
    """A REST request on a connection the server's TLS refuses fails before
    any HTTP answer."""
    connector = aiohttp.TCPConnector(ssl=ssl)
    async with aiohttp.ClientSession(rest_url(orchestrator, tls=True), connector=connector) as s:
        with pytest.raises(aiohttp.ClientError):
            await s.get("/_public/status")


async def refused_over_grpc(
    orchestrator: OrchestratorEngine,
    grpc_channel: GrpcChannel,
    credentials: grpc.ChannelCredentials | None,
) -> None:
    """A worker stream on a channel the server's TLS refuses never opens."""
    worker = RawWorker(grpc_channel(orchestrator, credentials), "w-1")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await worker.hello(["echo"])
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


# -- TLS --


async def test_rest_is_https_with_the_grpc_certificate_and_plain_http_gets_no_answer(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, pki: Pki
) -> None:
    """Finding 4: REST was plain HTTP while gRPC was TLS, so tokens
    travelled in clear."""
    orchestrator = await start_orchestrator([echo_blueprint()], **tls_settings(pki))
    https = http_client(orchestrator, ssl=client_context(pki.ca.cert))
    job_id = await create_job(https, "jobs/echo", {"n": 1})
    assert (await https.get(f"/api/v1/jobs/{job_id}")).status == 200

    plain = http_client(orchestrator)
    with pytest.raises(aiohttp.ClientError):
        await plain.get("/_public/status")


async def test_the_grpc_port_refuses_a_plaintext_channel(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, pki: Pki
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], **tls_settings(pki))
    await refused_over_grpc(orchestrator, grpc_channel, None)


async def test_a_client_that_does_not_trust_the_servers_ca_is_refused_on_both_ports(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, pki: Pki, tmp_path: Path
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], **tls_settings(pki))
    other = Authority(tmp_path, "other")
    await refused_over_https(orchestrator, client_context(other.cert))
    await refused_over_grpc(orchestrator, grpc_channel, other.files().credentials())


# -- mutual TLS --


async def test_mutual_tls_on_rest_refuses_no_certificate_and_a_strangers(
    start_orchestrator: StartOrchestrator, http_client: HttpClient, pki: Pki
) -> None:
    """Finding 4: TLS_CA_PATH and TLS_REQUIRE_CLIENT_CERT were accepted
    and ignored."""
    orchestrator = await start_orchestrator([echo_blueprint()], **tls_settings(pki, mutual=True))
    await refused_over_https(orchestrator, client_context(pki.ca.cert))
    await refused_over_https(orchestrator, client_context(pki.ca.cert, pki.stranger))

    https = http_client(orchestrator, ssl=client_context(pki.ca.cert, pki.client))
    job_id = await create_job(https, "jobs/echo", {"n": 1})
    await wait_for_status(https, job_id, "waiting_for_worker")


async def test_mutual_tls_on_grpc_refuses_no_certificate_and_a_strangers_and_runs_a_job(
    start_orchestrator: StartOrchestrator,
    http_client: HttpClient,
    grpc_channel: GrpcChannel,
    pki: Pki,
) -> None:
    """Finding 4: a gRPC client with no certificate connected although
    TLS_REQUIRE_CLIENT_CERT was true."""
    orchestrator = await start_orchestrator([echo_blueprint()], **tls_settings(pki, mutual=True))
    await refused_over_grpc(orchestrator, grpc_channel, pki.ca.files().credentials())
    stranger = pki.ca.files(pki.stranger).credentials()
    await refused_over_grpc(orchestrator, grpc_channel, stranger)

    https = http_client(orchestrator, ssl=client_context(pki.ca.cert, pki.client))
    async with serving(orchestrator, {"echo": echo}, worker_id="w-1", tls=pki.ca.files(pki.client)):
        job_id = await create_job(https, "jobs/echo", {"secure": True})
        job = await wait_for_status(https, job_id, "finished")
    assert job["state_history"] == {"echoed": {"secure": True}}


async def test_the_python_client_connects_with_its_certificate(
    start_orchestrator: StartOrchestrator, pki: Pki
) -> None:
    orchestrator = await start_orchestrator([echo_blueprint()], **tls_settings(pki, mutual=True))
    address = f"localhost:{orchestrator.grpc_port}"
    async with Client(address, CLIENT_TOKEN, tls=pki.ca.files(pki.client)) as client:
        job_id = await client.create_job("jobs/echo", {"n": 1})
        assert (await client.get_job(job_id)).status == "waiting_for_worker"
    async with Client(address, CLIENT_TOKEN, tls=pki.ca.files(), timeout=5) as client:
        with pytest.raises(ClientUnavailable):
            await client.get_job(job_id)


# -- worker ids bound to certificates --


async def test_a_worker_stream_must_claim_the_id_its_certificate_names(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, pki: Pki
) -> None:
    """Finding 4: with TLS_BIND_WORKER_IDENTITY a certificate for w-1 cannot
    open a stream as w-2; its common name or a DNS name can."""
    orchestrator = await start_orchestrator(
        [echo_blueprint()], **tls_settings(pki, mutual=True, bind=True)
    )
    as_w1 = pki.ca.files(pki.client).credentials()
    impostor = RawWorker(grpc_channel(orchestrator, as_w1), "w-2")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await impostor.hello(["echo"])
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "does not name worker 'w-2'" in (refused.value.details() or "")

    await RawWorker(grpc_channel(orchestrator, as_w1), "w-1").hello(["echo"])
    host = pki.ca.client("gpu-box-7", dns_names=["w-3", "w-3.workers"])
    by_dns = RawWorker(grpc_channel(orchestrator, pki.ca.files(host).credentials()), "w-3")
    await by_dns.hello(["echo"])
    assert sorted(info.registration.worker_id for info in orchestrator.engine.workers.list()) == [
        "w-1",
        "w-3",
    ]


async def test_a_unary_worker_rpc_must_name_the_certificates_worker(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, pki: Pki
) -> None:
    orchestrator = await start_orchestrator(
        [echo_blueprint()], **tls_settings(pki, mutual=True, bind=True)
    )
    channel = grpc_channel(orchestrator, pki.ca.files(pki.client).credentials())
    stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
    metadata = (("x-worker-token", WORKER_TOKEN),)

    def register(worker_id: str) -> RegisterWorkerRequest:
        return RegisterWorkerRequest(
            registration=WorkerRegistration(worker_id=worker_id, skills=["echo"])
        )

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.RegisterWorker(register("w-2"), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "TLS_BIND_WORKER_IDENTITY" in (refused.value.details() or "")
    assert (await stub.RegisterWorker(register("w-1"), metadata=metadata)).status == "registered"


async def test_the_rest_worker_api_must_name_the_certificates_worker(
    start_orchestrator: StartOrchestrator, rest_worker: RestWorkers, pki: Pki
) -> None:
    orchestrator = await start_orchestrator(
        [echo_blueprint()], **tls_settings(pki, mutual=True, bind=True)
    )
    worker = rest_worker(orchestrator, "w-1", ssl=client_context(pki.ca.cert, pki.client))

    response = await worker.http.post("/_worker/workers/register", json=registration("w-2"))
    assert response.status == 401
    assert "does not name worker 'w-2'" in (await response.json())["error"]
    response = await worker.http.get("/_worker/workers/w-2/tasks/next")
    assert response.status == 401

    await worker.register()
    assert (await worker.beat())["status"] == "ok"


async def test_a_worker_socket_must_be_the_certificates_worker_named_or_by_its_token(
    start_orchestrator: StartOrchestrator, rest_worker: RestWorkers, pki: Pki, tmp_path: Path
) -> None:
    """The per-worker socket names its worker in the path; the anonymous
    one by a per-worker token (workers.toml): both must be the certificate's."""
    workers_toml = tmp_path / "workers.toml"
    workers_toml.write_text('[w-2]\ntoken = "w-2-token"\n')
    orchestrator = await start_orchestrator(
        [echo_blueprint()],
        workers_config_path=workers_toml,
        **tls_settings(pki, mutual=True, bind=True),
    )
    worker = rest_worker(orchestrator, "w-1", ssl=client_context(pki.ca.cert, pki.client))
    for path, token in (("/_worker/ws/w-2", WORKER_TOKEN), ("/_worker/ws", "w-2-token")):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await worker.http.ws_connect(path, headers={"X-Worker-Token": token})
        assert refused.value.status == 401
    async with worker.http.ws_connect("/_worker/ws/w-1") as socket:
        assert not socket.closed


async def test_without_binding_a_certificate_may_serve_any_worker_id(
    start_orchestrator: StartOrchestrator, grpc_channel: GrpcChannel, pki: Pki
) -> None:
    """Binding is a choice: mutual TLS alone authenticates the connection,
    the token decides the worker id."""
    orchestrator = await start_orchestrator([echo_blueprint()], **tls_settings(pki, mutual=True))
    channel = grpc_channel(orchestrator, pki.ca.files(pki.client).credentials())
    welcome = await RawWorker(channel, "w-2").hello(["echo"])
    assert welcome.WhichOneof("kind") == "welcome"


def test_tls_files_need_a_key_with_a_certificate_and_files_that_exist(pki: Pki) -> None:
    with pytest.raises(ValueError, match="set both cert_path and key_path"):
        TlsFiles(ca_path=pki.ca.cert, cert_path=pki.client.cert)
    with pytest.raises(ValueError, match=r"ca_path .* is not a file"):
        TlsFiles(ca_path=pki.ca.cert.with_name("missing.pem"))


def test_tls_files_from_the_environment(pki: Pki) -> None:
    environ = {
        "AVTOMATIKA_TLS_CA": str(pki.ca.cert),
        "AVTOMATIKA_TLS_CERT": str(pki.client.cert),
        "AVTOMATIKA_TLS_KEY": str(pki.client.key),
    }
    assert TlsFiles.from_env(environ) == pki.ca.files(pki.client)
    assert not TlsFiles.from_env({}).enabled


def test_the_sdk_reads_its_tls_files_from_the_environment_unless_given_credentials(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AVTOMATIKA_TLS_CA", str(pki.ca.cert))
    monkeypatch.setenv("AVTOMATIKA_TLS_CERT", str(pki.client.cert))
    monkeypatch.setenv("AVTOMATIKA_TLS_KEY", str(pki.client.key))
    assert ConnectionSettings().tls == pki.ca.files(pki.client)
    by_hand = grpc.ssl_channel_credentials(pki.ca.cert.read_bytes())
    assert ConnectionSettings(credentials=by_hand).channel_credentials() is by_hand
    with pytest.raises(ValueError, match="either credentials or tls files"):
        ConnectionSettings(credentials=by_hand, tls=pki.ca.files())
    monkeypatch.setenv("AVTOMATIKA_TLS_KEY", "")
    with pytest.raises(ValueError, match="set both cert_path and key_path"):
        ConnectionSettings()
