"""The TLS settings are checked at start-up (issue 17, finding 4): an
unknown TLS_* variable, settings that contradict each other and files that
cannot serve stop start-up naming the setting, where 1.0b13's
``TLS_CA_PATH`` and ``TLS_REQUIRE_CLIENT_CERT`` used to be accepted and
ignored. ``avtomatika serve`` runs as a process for the command line's side.
The servers' TLS itself is tested in ``test_tls.py``."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from avtomatika.config import Config, Settings
from avtomatika.errors import ConfigError
from tests.support.serve import exit_of_serve, serve_env, served
from tests.support.tls import Authority, client_context


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Named PEM files: a CA, a server certificate and key it issued, a key
    of another certificate, a file that is not PEM, and a directory."""
    ca = Authority(tmp_path)
    server, other = ca.server(), ca.client("someone")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    return {
        "ca": ca.cert,
        "cert": server.cert,
        "key": server.key,
        "other_key": other.key,
        "junk": tmp_path / "junk.pem",
        "dir": tmp_path,
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"TLS_CERT_PATH": "cert"}, "TLS_CERT_PATH and TLS_KEY_PATH must be set together"),
        ({"TLS_CA_PATH": "ca", "TLS_REQUIRE_CLIENT_CERT": "true"}, "TLS_CA_PATH needs TLS_CERT"),
        (
            {"TLS_CERT_PATH": "cert", "TLS_KEY_PATH": "key", "TLS_REQUIRE_CLIENT_CERT": "true"},
            "TLS_REQUIRE_CLIENT_CERT=true needs TLS_CA_PATH",
        ),
        (
            {"TLS_CERT_PATH": "cert", "TLS_KEY_PATH": "key", "TLS_CA_PATH": "ca"},
            "TLS_CA_PATH is set but TLS_REQUIRE_CLIENT_CERT is not true",
        ),
        (
            {"TLS_CERT_PATH": "cert", "TLS_KEY_PATH": "key", "TLS_BIND_WORKER_IDENTITY": "yes"},
            "TLS_BIND_WORKER_IDENTITY=true needs TLS_REQUIRE_CLIENT_CERT=true",
        ),
        ({"TLS_ENABLED": "true"}, "TLS_ENABLED=true needs TLS_CERT_PATH and TLS_KEY_PATH"),
        (
            {"TLS_ENABLED": "false", "TLS_CERT_PATH": "cert", "TLS_KEY_PATH": "key"},
            "TLS_ENABLED=false contradicts TLS_CERT_PATH",
        ),
        ({"TLS_ENABLED": "maybe"}, "TLS_ENABLED has an invalid value"),
        ({"TLS_CERT_PATH": "cert", "TLS_KEY_PATH": "other_key"}, "KEY_VALUES_MISMATCH"),
        ({"TLS_CERT_PATH": "cert", "TLS_KEY_PATH": "junk"}, "TLS_KEY_PATH .* is not an"),
        ({"TLS_CERT_PATH": "junk", "TLS_KEY_PATH": "key"}, "TLS_CERT_PATH .* holds no PEM"),
        ({"TLS_CERT_PATH": "dir", "TLS_KEY_PATH": "key"}, "TLS_CERT_PATH .* is not a file"),
        (
            {
                "TLS_CERT_PATH": "cert",
                "TLS_KEY_PATH": "key",
                "TLS_CA_PATH": "junk",
                "TLS_REQUIRE_CLIENT_CERT": "true",
            },
            "TLS_CA_PATH .* holds no usable PEM CA certificate",
        ),
        ({"TLS_CA_FILE": "ca"}, "unknown TLS setting TLS_CA_FILE; known: TLS_CERT_PATH"),
    ],
)
def test_a_bad_tls_setting_stops_start_up_naming_it(
    files: dict[str, Path], settings: dict[str, str], message: str
) -> None:
    environ = {name: str(files.get(value, value)) for name, value in settings.items()}
    with pytest.raises(ConfigError, match=message):
        Settings.load(environ)


def test_the_1_0b13_config_object_honours_the_mutual_tls_settings(
    files: dict[str, Path],
) -> None:
    """1.0b13 code setting ``TLS_REQUIRE_CLIENT_CERT`` used to get a warning
    that it had no effect, and a server without mutual TLS."""
    config = Config()
    config.TLS_CERT_PATH = str(files["cert"])
    config.TLS_KEY_PATH = str(files["key"])
    config.TLS_REQUIRE_CLIENT_CERT = "true"
    with pytest.raises(ConfigError, match="TLS_REQUIRE_CLIENT_CERT=true needs TLS_CA_PATH"):
        config.to_settings()
    config.TLS_CA_PATH = str(files["ca"])
    settings = config.to_settings()
    assert (settings.tls_ca_path, settings.tls_require_client_cert) == (files["ca"], True)


async def test_serve_refuses_a_client_certificate_requirement_without_a_ca(
    files: dict[str, Path],
) -> None:
    """Finding 4, as an operator meets it: ``TLS_REQUIRE_CLIENT_CERT=true``
    used to start a server that required nothing."""
    env = serve_env(
        TLS_CERT_PATH=str(files["cert"]), TLS_KEY_PATH=str(files["key"]),
        TLS_REQUIRE_CLIENT_CERT="true",
    )  # fmt: skip
    code, output = await exit_of_serve(env=env)
    assert code == 2
    assert "TLS_REQUIRE_CLIENT_CERT=true needs TLS_CA_PATH" in output
    assert "Traceback" not in output


async def test_serve_refuses_a_key_that_does_not_match_its_certificate_and_unknown_tls_vars(
    files: dict[str, Path],
) -> None:
    code, output = await exit_of_serve(
        "--tls-cert-path", str(files["cert"]), "--tls-key-path", str(files["other_key"]),
        env=serve_env(),
    )  # fmt: skip
    assert code == 2
    assert "TLS_KEY_PATH" in output
    assert "KEY_VALUES_MISMATCH" in output

    code, output = await exit_of_serve(env=serve_env(TLS_VERIFY_CLIENT="true"))
    assert code == 2
    assert "unknown TLS setting TLS_VERIFY_CLIENT" in output


async def test_serve_with_the_mutual_tls_flags_requires_a_client_certificate(
    tmp_path: Path,
) -> None:
    ca = Authority(tmp_path)
    server = ca.server()
    flags = [
        "--tls-cert-path", str(server.cert), "--tls-key-path", str(server.key),
        "--tls-ca-path", str(ca.cert), "--tls-require-client-cert",
    ]  # fmt: skip
    async with served(*flags, env=serve_env()) as orchestrator:
        url = f"https://127.0.0.1:{orchestrator.rest_port}/_public/status"
        good = aiohttp.TCPConnector(ssl=client_context(ca.cert, ca.client("probe")))
        async with aiohttp.ClientSession(connector=good) as session:
            assert (await session.get(url)).status == 200
        anonymous = aiohttp.TCPConnector(ssl=client_context(ca.cert))
        async with aiohttp.ClientSession(connector=anonymous) as session:
            with pytest.raises(aiohttp.ClientError):
                await session.get(url)
        log = await orchestrator.stop()
    assert "TLS on both ports (HTTPS and gRPC), client certificates required" in log
