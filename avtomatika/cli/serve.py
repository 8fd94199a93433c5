"""``avtomatika serve``: run the orchestrator. Settings come from
environment variables with the reference names, and flags override them.

The server is imported only once ``serve`` runs: ``pip install avtomatika``
alone installs the worker SDK without the server's dependencies, and there
the command says which extra to install instead of failing with a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from avtomatika.cli.command import CONNECTION_OPTIONS, Commands, needs_server
from avtomatika.cli.processes import ready_signal, supervise
from avtomatika.config import Settings
from avtomatika.errors import ConfigError
from avtomatika.logs.formats import configure_logging

__all__ = ["add_serve"]

log = logging.getLogger("avtomatika")


def add_serve(commands: Commands) -> None:
    """The ``serve`` command: one flag per setting it overrides."""
    run = commands.add_parser(
        "serve",
        help="run the orchestrator (REST and gRPC)",
        description="Run the orchestrator. Every flag overrides the environment variable "
        "named after it (--api-port -> API_PORT).",
    )
    run.add_argument("--api-host", help="REST bind address (API_HOST, default 0.0.0.0)")
    run.add_argument("--api-port", type=int, help="REST port (API_PORT, default 8080)")
    run.add_argument("--grpc-host", help="gRPC bind address (GRPC_HOST, default 0.0.0.0)")
    run.add_argument("--grpc-port", type=int, help="gRPC port (GRPC_PORT, default 50051)")
    run.add_argument("--blueprints-dir", type=Path, help="load *.py blueprints (BLUEPRINTS_DIR)")
    run.add_argument("--client-token", help="token of the default client (CLIENT_TOKEN)")
    run.add_argument(
        "--clients-config-path", type=Path, help="clients.toml to load (CLIENTS_CONFIG_PATH)"
    )
    run.add_argument(
        "--global-worker-token", help="token every worker may use (GLOBAL_WORKER_TOKEN)"
    )
    run.add_argument(
        "--workers-config-path", type=Path, help="per-worker tokens (WORKERS_CONFIG_PATH)"
    )
    run.add_argument(
        "--worker-task-signing-secret",
        help="sign tasks for REST workers with this secret, their ORCHESTRATOR_SECRET_KEY "
        "(WORKER_TASK_SIGNING_SECRET)",
    )
    run.add_argument(
        "--worker-signatures-required",
        action=argparse.BooleanOptionalAction,
        help="refuse REST worker requests without a valid security.signature "
        "(WORKER_SIGNATURES_REQUIRED, default false)",
    )
    run.add_argument(
        "--worker-heartbeat-min-interval-seconds",
        type=float,
        help="answer REST heartbeats sent sooner than this with 429 and Retry-After "
        "(WORKER_HEARTBEAT_MIN_INTERVAL_SECONDS, default 0: off)",
    )
    run.add_argument(
        "--schedules-config-path",
        type=Path,
        help="background jobs on a timetable, schedules.toml (SCHEDULES_CONFIG_PATH)",
    )
    run.add_argument(
        "--header-timeout-seconds",
        type=float,
        help="close a connection whose request line and headers (gRPC: handshake) are not "
        "complete this long after it opened (HEADER_TIMEOUT_SECONDS, default 15)",
    )
    run.add_argument(
        "--keepalive-timeout-seconds",
        type=float,
        help="close an idle keep-alive connection (KEEPALIVE_TIMEOUT_SECONDS, default 75)",
    )
    run.add_argument(
        "--max-connections",
        type=int,
        help="open connections per port (MAX_CONNECTIONS, default 0: from the descriptor limit)",
    )
    run.add_argument(
        "--max-connections-per-address",
        type=int,
        help="open REST connections from one client address "
        "(MAX_CONNECTIONS_PER_ADDRESS, default 256; 0 = no cap)",
    )
    run.add_argument(
        "--tls-cert-path", type=Path, help="TLS certificate of both ports, PEM (TLS_CERT_PATH)"
    )
    run.add_argument("--tls-key-path", type=Path, help="its private key, PEM (TLS_KEY_PATH)")
    run.add_argument(
        "--tls-ca-path",
        type=Path,
        help="CA bundle client certificates are checked against, PEM (TLS_CA_PATH)",
    )
    run.add_argument(
        "--tls-require-client-cert",
        action=argparse.BooleanOptionalAction,
        help="mutual TLS: refuse a connection without a client certificate TLS_CA_PATH "
        "verifies (TLS_REQUIRE_CLIENT_CERT, default false)",
    )
    run.add_argument(
        "--tls-bind-worker-identity",
        action=argparse.BooleanOptionalAction,
        help="a worker's id must be its client certificate's common name or a DNS name "
        "(TLS_BIND_WORKER_IDENTITY, default false)",
    )
    run.add_argument(
        "--tls-enabled",
        action=argparse.BooleanOptionalAction,
        help="1.0b13's switch: when given, must agree with --tls-cert-path (TLS_ENABLED)",
    )
    run.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (LOG_LEVEL, default INFO)")
    run.add_argument(
        "--log-format",
        help="text, or json for one JSON object per line (LOG_FORMAT, default text)",
    )
    run.add_argument("--redis-url", help="share state with other instances in Redis (REDIS_URL)")
    run.add_argument("--redis-prefix", help="prefix of every Redis key (REDIS_PREFIX)")
    run.add_argument("--instance-id", help="this instance's name in logs and Redis (INSTANCE_ID)")
    run.add_argument(
        "--processes",
        type=int,
        help="server processes of this instance sharing both ports, each with INSTANCE_ID "
        "<id>-1, <id>-2, ... (PROCESSES, default 1; above 1 needs REDIS_URL)",
    )
    run.add_argument(
        "--job-max-retries", type=int, help="retries of transient failures (JOB_MAX_RETRIES)"
    )
    run.set_defaults(run=_serve)


def _load_server() -> Callable[..., Coroutine[Any, Any, None]]:
    from avtomatika.server import serve

    return serve


def _serve(args: argparse.Namespace) -> int:
    serve = needs_server(_load_server)
    # The client commands' options parse at the top level too: not settings.
    ignored = ("command", "run", *CONNECTION_OPTIONS)
    overrides = {k: v for k, v in vars(args).items() if k not in ignored}
    environ = dict(os.environ)
    ready = ready_signal(environ)  # set when this is one of --processes' children
    try:
        settings = Settings.load(environ, overrides)
    except ConfigError as exc:
        print(f"avtomatika: invalid configuration: {exc}", file=sys.stderr)
        return 2
    instance = settings.instance_id if ready is not None else None
    configure_logging(settings.logging_level, settings.log_format, instance=instance)
    if not settings.client_token and settings.clients_config_path is None:
        log.warning(
            "neither CLIENT_TOKEN nor CLIENTS_CONFIG_PATH is set: every /api request will be "
            "refused with 401"
        )
    if not settings.global_worker_token and settings.workers_config_path is None:
        log.warning(
            "neither GLOBAL_WORKER_TOKEN nor WORKERS_CONFIG_PATH is set: no worker can connect"
        )
    if settings.processes > 1:
        try:
            return supervise(settings, environ, overrides)
        except OSError as exc:
            print(f"avtomatika: cannot start: {exc}", file=sys.stderr)
            return 1
    try:
        asyncio.run(serve(settings, ready=ready))
    except ConfigError as exc:
        print(f"avtomatika: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"avtomatika: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
