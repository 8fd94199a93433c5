"""Settings: one frozen object, read from environment variables with the
reference names and overridden by CLI flags. Invalid values stop start-up with
a :class:`~avtomatika.errors.ConfigError` naming the setting."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import resource
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from avtomatika.errors import ConfigError
from avtomatika.payload import DEFAULT_MAX_PAYLOAD_BYTES
from avtomatika.tls import server_context

__all__ = ["LOG_FORMATS", "Config", "Settings"]

log = logging.getLogger(__name__)

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# MAX_CONNECTIONS=0 derives the cap from the descriptor limit, never above this.
_AUTO_CONNECTION_CAP_CEILING = 10_000
LOG_FORMATS = ("text", "json")
"""The values of ``LOG_FORMAT``: plain lines, or one JSON object per line."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable. Field names are the environment variable
    names, lower-cased (``api_port`` <- ``API_PORT``)."""

    api_host: str = "0.0.0.0"
    api_port: int = 8080
    grpc_host: str = "0.0.0.0"
    grpc_port: int = 50051
    blueprints_dir: Path | None = None
    client_token: str | None = field(default=None, repr=False)
    global_worker_token: str | None = field(default=None, repr=False)
    log_level: str = "INFO"
    log_format: str = "text"
    job_max_retries: int = 3
    max_transitions_per_job: int = 100
    retry_backoff_base_seconds: float = 1.0
    retry_backoff_max_seconds: float = 60.0
    executor_concurrency: int = 32
    worker_heartbeat_interval_seconds: float = 10.0
    worker_poll_timeout_seconds: float = 30.0
    worker_health_check_interval_seconds: float = 60.0  # REST workers expire after twice this
    worker_reconnect_grace_seconds: float = 15.0
    workers_config_path: Path | None = None
    # SDK 1.0b20 REST workers: the secret tasks are signed with (their
    # ORCHESTRATOR_SECRET_KEY), and whether their own signatures are checked.
    worker_task_signing_secret: str | None = field(default=None, repr=False)
    worker_signatures_required: bool = False
    # A REST worker heartbeating (with a body) sooner than this after its
    # last heartbeat gets a 429 with Retry-After; 0 turns the limit off.
    worker_heartbeat_min_interval_seconds: float = 0.0
    # TLS on both ports (see avtomatika/tls.py): the server's certificate
    # and key; with a CA bundle and TLS_REQUIRE_CLIENT_CERT, mutual TLS.
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    tls_ca_path: Path | None = None
    tls_require_client_cert: bool = False
    tls_bind_worker_identity: bool = False
    # 1.0b13's switch; set, it must agree with the certificate settings.
    tls_enabled: bool | None = None
    shutdown_grace_seconds: float = 5.0
    # Connection hygiene: a connection must send its request line and headers
    # (gRPC: finish its handshake) within HEADER_TIMEOUT_SECONDS; an idle one is
    # closed after KEEPALIVE_TIMEOUT_SECONDS. Each port holds at most
    # MAX_CONNECTIONS (0: derived from the descriptor limit, see
    # connection_cap); REST at most MAX_CONNECTIONS_PER_ADDRESS from one client
    # address (0: no cap, for a proxy in front, where every client has its address).
    header_timeout_seconds: float = 15.0
    keepalive_timeout_seconds: float = 75.0
    max_connections: int = 0
    max_connections_per_address: int = 256
    # Clients: clients.toml, rate limits, quotas.
    clients_config_path: Path | None = None
    rate_limiting_enabled: bool = False
    rate_limit_limit: int = 100
    rate_limit_period: float = 60.0
    # Following jobs: the longest GET /api/v1/jobs/{id}?wait= may hold.
    job_wait_max_seconds: float = 60.0
    # A saturated server holds a status read without ?wait= until the job
    # changes, at most this long (see avtomatika/services/status_reads.py); 0: never.
    status_read_hold_seconds: float = 0.5
    # History: bounded in memory by default; SQLite or PostgreSQL when set.
    history_database_uri: str | None = None
    history_memory_events_per_job: int = 1000
    history_memory_max_events: int = 100_000
    history_queue_size: int = 10000
    # Files: S3-compatible storage, off unless S3_ENDPOINT_URL is set.
    s3_endpoint_url: str | None = None
    s3_access_key: str | None = field(default=None, repr=False)
    s3_secret_key: str | None = field(default=None, repr=False)
    s3_region: str = "us-east-1"
    s3_default_bucket: str = "avtomatika-payloads"
    s3_auto_cleanup: bool = True
    # Webhooks.
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_allow_private: bool = False
    webhook_max_attempts: int = 5
    webhook_timeout_seconds: float = 10.0
    webhook_backoff_base_seconds: float = 1.0
    # Public endpoints.
    approval_token_required: bool = False
    debug_flush_enabled: bool = False
    # Several instances: shared state in Redis when REDIS_URL is set.
    redis_url: str | None = field(default=None, repr=False)
    redis_prefix: str = "avtomatika"
    # The longest a request waits on Redis, connecting or for a reply: a
    # Redis that hangs (stopped, not dead) costs a request a 503 after this
    # long, never the whole outage; a write it did not confirm never lands.
    redis_command_timeout_seconds: float = 3.0
    instance_id: str | None = None
    # Server processes of this instance on this host (Redis only: the
    # embedded store lives in one process), sharing the ports; see
    # avtomatika/cli/processes.py.
    processes: int = 1
    # Bind both ports with SO_REUSEPORT, so several processes share them
    # (each process of --processes does; off, a taken port stops start-up).
    reuse_port: bool = False
    # Ended jobs, their tasks and history are forgotten this long after they end.
    job_retention_seconds: float = 7 * 24 * 3600.0
    # The embedded store also forgets the oldest ended jobs once their
    # records hold more than this many bytes (0: by age only).
    job_retention_max_bytes: int = 256 * 1024 * 1024
    # The largest initial data, task params or result (encoded JSON); the
    # gRPC message limits and the REST body limit follow from it.
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    # With S3, bigger payloads go by reference, up to this size.
    claim_check_max_bytes: int = 128 * 1024 * 1024
    # Per-client bounds (clients.toml may set its own per client; 0: none).
    client_max_jobs_in_flight: int = 100_000
    client_max_stored_bytes: int = 1024 * 1024 * 1024
    # A step claimed by an instance that stops renewing its lease (it died
    # mid-handler) is run again by another instance after this long.
    step_lease_seconds: float = 30.0
    # Scheduled background jobs (schedules.toml); their times are in TZ.
    schedules_config_path: Path | None = None
    tz: str = "UTC"

    def __post_init__(self) -> None:
        _check_port("API_PORT", self.api_port, allow_zero=True)
        _check_port("GRPC_PORT", self.grpc_port, allow_zero=True)
        if self.log_level.upper() not in _LOG_LEVELS:
            raise ConfigError(
                f"LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {self.log_level!r}"
            )
        if self.log_format.lower() not in LOG_FORMATS:
            raise ConfigError(
                f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}"
            )
        if self.job_max_retries < 0:
            raise ConfigError(f"JOB_MAX_RETRIES must be >= 0, got {self.job_max_retries}")
        if self.max_transitions_per_job < 1:
            raise ConfigError(
                f"MAX_TRANSITIONS_PER_JOB must be >= 1, got {self.max_transitions_per_job}"
            )
        if self.processes < 1:
            raise ConfigError(f"PROCESSES must be >= 1, got {self.processes}")
        if self.processes > 1 and not self.redis_url:
            raise ConfigError(
                f"PROCESSES={self.processes} needs REDIS_URL: the embedded store lives in one "
                "process, so only processes sharing Redis can serve one instance"
            )
        if self.executor_concurrency < 1:
            raise ConfigError(f"EXECUTOR_CONCURRENCY must be >= 1, got {self.executor_concurrency}")
        for name in (
            "rate_limit_limit",
            "history_memory_events_per_job",
            "history_memory_max_events",
            "history_queue_size",
            "webhook_max_attempts",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.upper()} must be >= 1, got {getattr(self, name)}")
        for name in (
            "worker_heartbeat_interval_seconds",
            "worker_poll_timeout_seconds",
            "worker_health_check_interval_seconds",
            "shutdown_grace_seconds",
            "retry_backoff_base_seconds",
            "retry_backoff_max_seconds",
            "rate_limit_period",
            "job_wait_max_seconds",
            "webhook_timeout_seconds",
            "webhook_backoff_base_seconds",
            "job_retention_seconds",
            "step_lease_seconds",
            "redis_command_timeout_seconds",
            "header_timeout_seconds",
            "keepalive_timeout_seconds",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.upper()} must be > 0, got {getattr(self, name)}")
        if self.blueprints_dir is not None and not self.blueprints_dir.is_dir():
            raise ConfigError(f"BLUEPRINTS_DIR {str(self.blueprints_dir)!r} is not a directory")
        for name in (
            "client_token",
            "global_worker_token",
            "webhook_secret",
            "worker_task_signing_secret",
        ):
            if getattr(self, name) == "":
                raise ConfigError(f"{name.upper()} is set but empty")
        if self.clients_config_path is not None and not self.clients_config_path.is_file():
            raise ConfigError(
                f"CLIENTS_CONFIG_PATH {str(self.clients_config_path)!r} is not a file"
            )
        if self.worker_heartbeat_min_interval_seconds < 0:
            raise ConfigError(
                "WORKER_HEARTBEAT_MIN_INTERVAL_SECONDS must be >= 0, "
                f"got {self.worker_heartbeat_min_interval_seconds}"
            )
        for name in ("max_connections", "max_connections_per_address"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.upper()} must be >= 0, got {getattr(self, name)}")
        if self.max_payload_bytes < 1:
            raise ConfigError(f"MAX_PAYLOAD_BYTES must be >= 1, got {self.max_payload_bytes}")
        if self.claim_check_max_bytes < self.max_payload_bytes:
            raise ConfigError(
                f"CLAIM_CHECK_MAX_BYTES ({self.claim_check_max_bytes}) must be >= "
                f"MAX_PAYLOAD_BYTES ({self.max_payload_bytes})"
            )
        for name in (
            "job_retention_max_bytes",
            "client_max_jobs_in_flight",
            "client_max_stored_bytes",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(
                    f"{name.upper()} must be >= 0 (0: no limit), got {getattr(self, name)}"
                )
        # Not checked against JOB_WAIT_MAX_SECONDS: a hold is a wait, capped by
        # it like any other, so lowering that setting alone never stops start-up.
        if not 0 <= self.status_read_hold_seconds < float("inf"):
            raise ConfigError(
                f"STATUS_READ_HOLD_SECONDS must be >= 0, got {self.status_read_hold_seconds}"
            )
        if self.worker_reconnect_grace_seconds < 0:
            raise ConfigError(
                "WORKER_RECONNECT_GRACE_SECONDS must be >= 0, "
                f"got {self.worker_reconnect_grace_seconds}"
            )
        for name in (
            "workers_config_path",
            "tls_cert_path",
            "tls_key_path",
            "tls_ca_path",
            "schedules_config_path",
        ):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ConfigError(f"{name.upper()} {str(path)!r} is not a file")
        self._check_tls()
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError(
                f"REDIS_URL must start with redis://, rediss:// or unix://, got {self.redis_url!r}"
            )
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.redis_prefix):
            raise ConfigError(
                f"REDIS_PREFIX may hold only letters, digits, '_', '.' and '-', "
                f"got {self.redis_prefix!r}"
            )
        if self.history_database_uri and not self.history_database_uri.startswith(
            ("sqlite:///", "postgresql://", "postgres://")
        ):
            raise ConfigError(
                "HISTORY_DATABASE_URI must start with sqlite:///, postgresql:// or postgres://, "
                f"got {self.history_database_uri!r}"
            )

    def _check_tls(self) -> None:
        """TLS settings that contradict each other, or files that cannot
        serve, stop start-up: a setting silently ignored would leave a port
        less protected than its operator believes."""
        serving = self.tls_cert_path is not None
        if serving != (self.tls_key_path is not None):
            raise ConfigError("TLS_CERT_PATH and TLS_KEY_PATH must be set together")
        if self.tls_enabled is True and not serving:
            raise ConfigError("TLS_ENABLED=true needs TLS_CERT_PATH and TLS_KEY_PATH")
        if self.tls_enabled is False and serving:
            raise ConfigError(
                "TLS_ENABLED=false contradicts TLS_CERT_PATH and TLS_KEY_PATH: "
                "unset one or the other (a port is either TLS or plaintext)"
            )
        if self.tls_ca_path is not None and not serving:
            raise ConfigError(
                "TLS_CA_PATH needs TLS_CERT_PATH and TLS_KEY_PATH: client certificates are "
                "checked only on a TLS port"
            )
        if self.tls_require_client_cert and self.tls_ca_path is None:
            raise ConfigError(
                "TLS_REQUIRE_CLIENT_CERT=true needs TLS_CA_PATH, the CA bundle client "
                "certificates are checked against"
            )
        if self.tls_ca_path is not None and not self.tls_require_client_cert:
            # gRPC either requires a verified client certificate or asks for
            # none: a CA alone would check nothing there.
            raise ConfigError(
                "TLS_CA_PATH is set but TLS_REQUIRE_CLIENT_CERT is not true: the CA would "
                "check no certificate; set TLS_REQUIRE_CLIENT_CERT=true for mutual TLS"
            )
        if self.tls_bind_worker_identity and not self.tls_require_client_cert:
            raise ConfigError(
                "TLS_BIND_WORKER_IDENTITY=true needs TLS_REQUIRE_CLIENT_CERT=true (and "
                "TLS_CA_PATH): without a client certificate there is no identity to bind"
            )
        if self.tls_cert_path is not None and self.tls_key_path is not None:
            server_context(self.tls_cert_path, self.tls_key_path, self.tls_ca_path)

    @property
    def connection_cap(self) -> int:
        """The most connections each port (REST, gRPC) holds open:
        ``MAX_CONNECTIONS``, or when 0, 40% of the process's descriptor limit
        (the two ports together leave a fifth to Redis, files and logs), at
        most 10,000."""
        if self.max_connections:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return _AUTO_CONNECTION_CAP_CEILING
        return max(1, min(soft * 2 // 5, _AUTO_CONNECTION_CAP_CEILING))

    @property
    def logging_level(self) -> int:
        """The ``logging`` module's level number."""
        level: int = logging.getLevelNamesMapping()[self.log_level.upper()]
        return level

    @classmethod
    def load(
        cls, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Settings from ``environ`` (reference names), then ``overrides``
        (CLI flags; ``None`` values are ignored)."""
        unknown = sorted(
            name for name in environ if name.startswith("TLS_") and name not in _TLS_SETTINGS
        )
        if unknown:
            raise ConfigError(
                f"unknown TLS setting {', '.join(unknown)}; known: {', '.join(_TLS_SETTINGS)}"
            )
        values: dict[str, Any] = {}
        for setting in fields(cls):
            raw = environ.get(setting.name.upper())
            if raw is not None:
                values[setting.name] = _parse(setting.name.upper(), raw, _PARSERS[setting.name])
        for name, value in (overrides or {}).items():
            if value is not None:
                values[name] = value
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


def _optional_path(raw: str) -> Path | None:
    return Path(raw) if raw else None


def _optional_str(raw: str) -> str | None:
    return raw


def _optional_bool(raw: str) -> bool | None:
    return _bool(raw) if raw else None


def _bool(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(raw)


# Parsers by the annotation of the Settings field (a string: annotations are
# not evaluated, see `from __future__ import annotations`).
_PARSERS_BY_TYPE: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": _bool,
    "bool | None": _optional_bool,
    "str | None": _optional_str,
    "Path | None": _optional_path,
}
_PARSERS: dict[str, Callable[[str], Any]] = {
    f.name: _PARSERS_BY_TYPE[str(f.type)] for f in fields(Settings)
}
# Every TLS_* variable must be one of these: a misspelt one (TLS_CA_FILE)
# would otherwise leave mutual TLS off without a word.
_TLS_SETTINGS = tuple(f.name.upper() for f in fields(Settings) if f.name.startswith("tls_"))


def _parse(name: str, raw: str, parser: Callable[[str], Any]) -> Any:
    try:
        return parser(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} has an invalid value {raw!r}") from None


def _check_port(name: str, value: int, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise ConfigError(f"{name} must be between {low} and 65535, got {value}")


# 1.0b13 settings with another name here, and those this version does not use.
_RENAMED_1_0B13 = {"EXECUTOR_MAX_CONCURRENT_JOBS": "executor_concurrency"}
_UNUSED_1_0B13 = frozenset(
    {
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_DB",
        "REDIS_STREAM_BLOCK_MS",
        "POSTGRES_DSN",
        "ENABLE_CLIENT_API",
        "WORKER_TIMEOUT_SECONDS",
        "TASK_FILES_DIR",
        "WATCHER_INTERVAL_SECONDS",
        "S3_MAX_CONCURRENCY",
        "RATE_LIMIT_HEARTBEAT_LIMIT",
        "RATE_LIMIT_POLL_LIMIT",
    }
)


class Config:
    """The 1.0b13 embedding style: a mutable object with upper-case
    attributes, read from the environment when created::

        config = Config()
        config.CLIENT_TOKEN = "..."
        engine = OrchestratorEngine(MemoryStorage(), config)

    Assigning an unknown name raises :class:`AttributeError` (a typo must not
    be ignored); values are validated when the engine is built. A string is
    read as the environment variable of that name would be, as 1.0b13 code
    assigns them (``config.BLUEPRINTS_DIR = ""`` means none). 1.0b13 settings
    this version does not use (``REDIS_HOST``, ``WATCHER_INTERVAL_SECONDS``,
    ...) are accepted so existing code runs, and logged as having no effect;
    ``EXECUTOR_MAX_CONCURRENT_JOBS`` sets ``EXECUTOR_CONCURRENCY``.
    """

    def __init__(self) -> None:
        settings = Settings.load(os.environ)
        object.__setattr__(
            self, "_values", {f.name: getattr(settings, f.name) for f in fields(Settings)}
        )
        object.__setattr__(self, "_ignored", {})

    def __getattr__(self, name: str) -> Any:
        values: dict[str, Any] = object.__getattribute__(self, "_values")
        ignored: dict[str, Any] = object.__getattribute__(self, "_ignored")
        key = _RENAMED_1_0B13.get(name, name.lower())
        if name.isupper() and key in values:
            return values[key]
        if name in ignored:
            return ignored[name]
        raise AttributeError(f"Config has no setting {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        values: dict[str, Any] = object.__getattribute__(self, "_values")
        key = _RENAMED_1_0B13.get(name, name.lower())
        if name.isupper() and key in values:
            values[key] = value
        elif name in _UNUSED_1_0B13:
            log.warning("Config.%s has no effect in this version; ignored", name)
            object.__getattribute__(self, "_ignored")[name] = value
        else:
            raise AttributeError(
                f"Config has no setting {name!r}; known: {', '.join(k.upper() for k in values)}"
            )

    def to_settings(self) -> Settings:
        """The validated :class:`Settings` these values make."""
        values: dict[str, Any] = object.__getattribute__(self, "_values")
        return Settings(
            **{
                key: _parse(key.upper(), value, _PARSERS[key]) if isinstance(value, str) else value
                for key, value in values.items()
            }
        )
