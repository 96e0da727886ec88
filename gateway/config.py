"""Settings: the one typed settings object, and the only reader of the environment.

Each field is a ``gateway serve`` flag (``--model-repository``) and a
``GATEWAY_<NAME>`` environment variable (``GATEWAY_MODEL_REPOSITORY``); flags win.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
# how messages name them: "redis://, rediss://, unix://, ..."
REDIS_URL_STARTS = ", ".join(scheme + "://" for scheme in REDIS_SCHEMES)
# set by `gateway serve --workers N` for its workers; prometheus_client reads it too
WORKER_DIRECTORY_ENV = "PROMETHEUS_MULTIPROC_DIR"


def is_redis_url(url: str) -> bool:
    """Whether ``url`` is one the gateway connects to Redis with (``REDIS_URL_STARTS``):
    the one check for ``--redis-url`` of ``gateway serve`` and ``gateway features load``."""
    return urlsplit(url).scheme in REDIS_SCHEMES


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", frozen=True, extra="forbid", protected_namespaces=()
    )

    model_repository: Path = Field(Path("models"), description="the model repository directory")
    host: str = Field("127.0.0.1", description="address to listen on")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(8000, description="TCP port")
    grpc_port: Annotated[int, Field(ge=1, le=65535)] | None = Field(
        None, description="also serve the v2 protocol over gRPC on this port (SPEC 15)"
    )
    workers: Annotated[int, Field(ge=1, le=64)] = Field(1, description="server processes")
    redis_url: str | None = Field(None, description="Redis for model features")
    control_url: str | None = Field(
        None, description="Redis for the desired state all replicas follow (SPEC 11)"
    )
    features_file: Path | None = Field(None, description="CSV or JSONL features, no Redis")
    admin_token: SecretStr | None = Field(None, description="bearer token for admin endpoints")
    poll_interval: Annotated[float, Field(gt=0)] = Field(
        1.0, description="seconds between repository checks"
    )
    max_body_bytes: Annotated[int, Field(gt=0)] = Field(
        32 * 1024 * 1024, description="largest request body accepted"
    )
    max_header_bytes: Annotated[int, Field(gt=0)] = Field(
        64 * 1024, description="largest total size of a request's headers (else 431)"
    )
    read_timeout: Annotated[float, Field(gt=0)] = Field(
        30.0, description="seconds a client has to send its headers, and its body (else 408)"
    )
    shadow_log: Path | None = Field(None, description="JSONL log of shadow comparisons")
    payload_log: str | None = Field(
        None, description="log each answered request: file:///DIR or redis://HOST:PORT/STREAM"
    )
    payload_sample: Annotated[float, Field(ge=0, le=1)] = Field(
        1.0, description="share of requests the payload log records"
    )
    payload_max_len: Annotated[int, Field(ge=1)] = Field(
        100_000, description="entries a payload log Redis Stream is trimmed to"
    )
    drain_timeout: Annotated[float, Field(ge=0)] = Field(
        30.0, description="seconds to finish in-flight requests on SIGTERM"
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="log level"
    )
    log_format: Literal["json", "text"] = Field("text", description="log line format")

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("redis_url", "control_url", "features_file", "payload_log", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # GATEWAY_FEATURES_FILE= (as compose or `docker run -e` write it) means "none"
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("redis_url", "control_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not is_redis_url(value):
            raise ValueError(f"expected a URL starting with {REDIS_URL_STARTS}; got {value!r}")
        return value

    @field_validator("payload_log")
    @classmethod
    def _payload_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("file://"):
            if not value.removeprefix("file://").startswith("/"):
                raise ValueError(f"expected file:///ABSOLUTE/DIR; got {value!r}")
            return value
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError(
                f"expected file:///DIR or redis://HOST:PORT/STREAM (rediss:// too); got {value!r}"
            )
        return value

    @field_validator("admin_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("an empty admin token would let anyone in; set a real one or none")
        return value

    @field_validator("features_file")
    @classmethod
    def _features_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    def to_environment(self) -> dict[str, str]:
        """The settings as GATEWAY_* variables, so worker processes rebuild the same object."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"GATEWAY_{name.upper()}"] = str(value)
        return env


def worker_directory() -> Path | None:
    """The directory this process shares with the other workers of its gateway, or None
    when it serves alone."""
    value = os.environ.get(WORKER_DIRECTORY_ENV)
    return Path(value) if value else None
