"""Settings: every `GATEWAY_*` variable, validated once, immutable afterwards.

Built in the entry point (`gateway.cli`), never at import time, so tests construct
`Settings(...)` directly. A bad value raises `SettingsError` whose message is one
line naming the variable; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway import __version__
from gateway.access.client_tokens import split_entry

# V3's edge firewall refuses any User-Agent that is not exactly three name/version tokens.
USER_AGENT_PATTERN = re.compile(
    r"^[^\/\s]+\/[^\/\s]+\s{1}[^\/\s]+\/[^\/\s]+\s{1}[^\/\s]+\/[^\/\s]+$"
)


def _token(text: str) -> str:
    """Make `text` usable as one User-Agent token part (no slash, no whitespace)."""
    cleaned = re.sub(r"[\s/]+", "-", text.strip())
    return cleaned or "unknown"


def default_user_agent() -> str:
    system = _token(platform.system().lower() or "unknown")
    release = _token(platform.release() or "0")
    # Read from the installed package's metadata: importing aiohttp for its version alone
    # would cost every process ~0.1 s at start.
    aiohttp = _token(_installed_version("aiohttp"))
    return f"ListingGateway/{_token(__version__)} aiohttp/{aiohttp} {system}/{release}"


def _installed_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class V3AuthMode(StrEnum):
    OAUTH = "oauth"
    STATIC = "static"
    PASSTHROUGH = "passthrough"


class SettingsError(Exception):
    """A setting is missing or invalid; the message is one line naming the variable."""


PREFIX = "GATEWAY_"


class Settings(BaseSettings):
    """The gateway's configuration. Field `x` is read from `GATEWAY_X`."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    v3_url: str = ""
    v3_auth: V3AuthMode = V3AuthMode.OAUTH
    v3_token_url: str = ""
    v3_client_id: str = ""
    v3_client_secret: SecretStr = SecretStr("")
    v3_audience: str = ""
    v3_intermediary_id: str = ""
    v3_token: SecretStr = SecretStr("")
    v3_agencies: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="agencies a caller may name with `X-Intermediary-Id` (`oauth` mode); "
        "another is refused (`BAD_USER_INPUT`, gRPC INVALID_ARGUMENT) before any token "
        "request. `GATEWAY_V3_INTERMEDIARY_ID` is always allowed; unset: any agency",
    )
    user_agent: str = Field(default_factory=default_user_agent)

    legacy_url: str = ""
    legacy_api_key: SecretStr = SecretStr("")
    legacy_max_batch: int = Field(default=100, ge=1, le=1000)
    legacy_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="seconds a legacy ad's status is shared across requests (the Redis expiry "
        "too): concurrent requests for ads of one user make one `POST /status/` per chunk, "
        "across replicas with Redis; 0 reads legacy anew for every request",
    )
    legacy_cache_max_entries: int = Field(
        default=20_000,
        ge=1,
        le=10_000_000,
        description="legacy ad statuses kept in process (the least recently stored go first)",
    )

    cache_ttl_s: float = Field(default=30.0, ge=0)
    cache_max_entries: int = Field(default=10_000, ge=1)
    cache_stale_s: float = Field(default=300.0, ge=0)
    redis_url: str | None = None
    redis_timeout_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="seconds a Redis command or connection may take; a slower one counts as "
        "Redis down, and the gateway carries on without sharing until Redis answers again",
    )
    public_url: str | None = None
    webhook_secret: SecretStr = Field(default_factory=lambda: SecretStr(secrets.token_urlsafe(24)))

    # Live status: the webhook receiver and the event bus behind subscriptions.
    event_queue_size: int = Field(default=256, ge=1, le=100_000)
    max_subscriptions: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="GraphQL subscriptions and gRPC watch streams one process holds; one more "
        "is refused (GraphQL: an `error` message with `OVERLOADED`; gRPC RESOURCE_EXHAUSTED)",
    )
    webhook_subscribe: bool = False
    webhook_max_body_bytes: int = Field(default=64 * 1024, ge=256, le=1024 * 1024)
    webhook_dedup_window: int = Field(default=10_000, ge=1, le=1_000_000)
    # Listing changes of both providers (`listingChanged`, gRPC WatchListings).
    legacy_poll_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="seconds between two polls of the legacy ads that `listingChanged` and "
        "`WatchListings` watch: one `POST /status/` per legacy user and poll (chunked), "
        "whatever the number of subscribers or replicas",
    )
    event_retention_s: float = Field(
        default=900.0,
        gt=0,
        le=7 * 24 * 3600,
        description="seconds a listing change is kept for a client to resume after its cursor "
        "(in Redis with `GATEWAY_REDIS_URL`, else in process); a cursor whose own or later "
        "changes are gone is refused with `cursor_expired`",
    )
    event_log_max_entries: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="most listing changes kept, whatever their age (the oldest go first)",
    )

    host: str = "127.0.0.1"
    # `gateway serve` worker processes on one machine (docs/operating.md).
    workers: int = Field(default=1, ge=1, le=64)
    http_port: int = Field(default=8000, ge=0, le=65535)
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    upstream_timeout_s: float = Field(default=5.0, gt=0, le=300)
    # Retries of one idempotent upstream read, within upstream_timeout_s (docs/upstreams.md).
    upstream_retries: int = Field(default=2, ge=0, le=5)
    upstream_backoff_s: float = Field(default=0.1, ge=0, le=10)
    max_listings: int = Field(default=200, ge=1, le=10_000)
    client_tokens: Annotated[tuple[SecretStr, ...], NoDecode] = ()

    # False: plain graphql-core execution (the benchmark's naive mode compares the two).
    compiled_execution: bool = True
    # Before the first caller: fetch the V3 token, run one query through the GraphQL path.
    warm_up: bool = True

    # Listings `/board` shows when its URL names none: `classifiedId`, `userId:adId`, or both
    # joined by `+`; comma-separated in GATEWAY_BOARD_REFS.
    board_refs: Annotated[tuple[str, ...], NoDecode] = ()

    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="largest HTTP request body (else 413) and WebSocket message (else the "
        "socket is closed with 1009)",
    )
    body_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="seconds a client has to send a request's whole body once its headers "
        "are in, before any admission turn is taken; else 408 and the connection is closed",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="seconds a connection has to send a request's whole header block, from "
        "its start or the first byte after the last answer; else 408 (or nothing, if it sent "
        "nothing) and the connection is closed",
    )
    keep_alive_s: float = Field(
        default=75.0,
        gt=0,
        le=3600,
        description="seconds an idle keep-alive connection is kept open after an answer; "
        "longer than the idle timeout of the clients and load balancers in front (aiohttp "
        "15 s, most load balancers 60 s), so that the gateway does not close a connection "
        "as a client reuses it",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="largest header block of a request (request line included), else 431 and "
        "the connection is closed",
    )
    max_connections: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="open HTTP and WebSocket connections per process; one more is answered 503 "
        "and closed at once. Never more than the open-file limit less 256",
    )
    ws_init_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="seconds a GraphQL WebSocket (either protocol) has to send "
        "`connection_init` after the upgrade; else it is closed with 4408",
    )
    max_subscriptions_per_connection: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="operations (subscriptions, and queries still running) one GraphQL "
        "WebSocket runs at once; one more gets an `error` message with `OVERLOADED` and the "
        "socket stays up",
    )
    max_ws_connections: int = Field(
        default=5000,
        ge=1,
        le=1_000_000,
        description="GraphQL WebSockets one process holds open; one more is accepted and "
        "closed with 1013 (try again later)",
    )
    metrics_max_operations: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="distinct operation names, beyond those of the trusted documents, that "
        "become a metric label; the rest count as `other`",
    )
    request_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="deadline of one `/graphql` HTTP request once its body is in (admission "
        "wait, upstream reads, answer); past it the caller gets 504 `DEADLINE_EXCEEDED`",
    )
    parse_cache_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        le=4 * 1024 * 1024 * 1024,
        description="memory the parsed documents kept for reuse may hold (estimated at 80 bytes "
        "per character of their text), and as much for the compiled query plans; a document "
        "over a sixteenth of it is parsed for each request, never kept. 0: none kept",
    )
    max_query_depth: int = Field(default=20, ge=1)
    max_aliases: int = Field(default=200, ge=1)
    # Hardening (docs/security.md): request-shape limits checked before any parsing.
    max_variable_depth: int = Field(default=16, ge=1, le=512)
    # Checked before execution: root fields, and the upstream reads a request could make
    # (the default admits one listings query of 200 refs with whole histories).
    max_root_fields: int = Field(default=20, ge=1)
    max_upstream_cost: int = Field(default=12_000, ge=1)
    introspection: bool = True
    # Persisted documents: the APQ store's bound (in characters), and a trusted documents
    # manifest (Apollo or GraphQL Codegen format) that, when set, is all that may run.
    apq_max_bytes: int = Field(default=8 * 1024 * 1024, ge=0)
    trusted_documents: str | None = None

    # Resilience and observability (docs/operating.md).
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=10.0, gt=0)
    retry_budget_ratio: float = Field(default=0.2, ge=0, le=1)
    upstream_max_concurrency: int = Field(
        default=100,
        ge=1,
        description="upstream calls in flight per upstream, and the connections kept for "
        "them; a call waiting for a slot gives up at its deadline",
    )
    max_concurrent_requests: int = Field(
        default=256,
        ge=1,
        description="the most `/graphql` requests and unary gRPC calls running at once: the "
        "ceiling of the limit admission control finds from event-loop lag",
    )
    min_concurrent_requests: int = Field(
        default=4,
        ge=1,
        description="the floor of that limit: however busy the loop, this many may run",
    )
    admission_lag_target_s: float = Field(
        default=0.02,
        gt=0,
        le=1,
        description="event-loop lag past which admission control lowers the limit (it "
        "raises it while the lag stays under half of this and the limit is in use)",
    )
    max_queued_requests: int = Field(default=64, ge=0)
    queue_timeout_s: float = Field(default=2.0, gt=0)
    shutdown_grace_s: int = Field(default=10, ge=0)
    loop_lag_interval_s: float = Field(default=0.5, gt=0)
    grpc_health_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often gRPC health (`grpc.health.v1`) reads the readiness `/readyz` "
        "answers, and turns SERVING or NOT_SERVING with it",
    )

    @field_validator("client_tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("trusted_documents")
    @classmethod
    def _check_manifest(cls, value: str | None) -> str | None:
        if value and not Path(value).is_file():
            raise ValueError("must name a readable manifest file")
        return value or None

    @field_validator("board_refs", "v3_agencies", mode="before")
    @classmethod
    def _split_refs(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("user_agent")
    @classmethod
    def _check_user_agent(cls, value: str) -> str:
        if not USER_AGENT_PATTERN.match(value):
            raise ValueError(
                "must be exactly three name/version tokens separated by single spaces, "
                "e.g. 'MyGateway/1.0.0 aiohttp/3.11.0 linux/6.1'"
            )
        return value

    @field_validator("v3_url", "legacy_url", "v3_token_url", "public_url", "redis_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if value and not re.match(r"^(https?|rediss?|unix)://[^\s]+$", value):
            raise ValueError("must be an absolute URL, e.g. https://host/path")
        return value

    @model_validator(mode="after")
    def _check_required(self) -> Settings:
        required: list[tuple[str, object]] = [
            ("v3_url", self.v3_url),
            ("legacy_url", self.legacy_url),
            ("legacy_api_key", self.legacy_api_key.get_secret_value()),
        ]
        if self.v3_auth is V3AuthMode.OAUTH:
            required += [
                ("v3_token_url", self.v3_token_url),
                ("v3_client_id", self.v3_client_id),
                ("v3_client_secret", self.v3_client_secret.get_secret_value()),
                ("v3_audience", self.v3_audience),
                ("v3_intermediary_id", self.v3_intermediary_id),
            ]
        elif self.v3_auth is V3AuthMode.STATIC:
            required.append(("v3_token", self.v3_token.get_secret_value()))
        for name, value in required:
            if not value:
                raise ValueError(
                    f"{PREFIX}{name.upper()} is required (GATEWAY_V3_AUTH={self.v3_auth.value})"
                )
        if self.webhook_subscribe and not self.public_url:
            raise ValueError(f"{PREFIX}PUBLIC_URL is required (GATEWAY_WEBHOOK_SUBSCRIBE=true)")
        return self

    @model_validator(mode="after")
    def _check_client_tokens(self) -> Settings:
        # In passthrough mode the caller's Authorization is the V3 token: it cannot also be
        # one of ours, and V3 is the judge of it.
        if self.client_tokens and self.v3_auth is V3AuthMode.PASSTHROUGH:
            raise ValueError(
                f"{PREFIX}CLIENT_TOKENS cannot be used with GATEWAY_V3_AUTH=passthrough"
            )
        allowed = set(self.v3_agencies) | {self.v3_intermediary_id}
        for position, entry in enumerate(self.client_tokens, start=1):
            # The message names the entry by its position, never by its token.
            try:
                _, bound = split_entry(entry.get_secret_value())
            except ValueError:
                raise ValueError(
                    f"{PREFIX}CLIENT_TOKENS entry {position}: a bound token reads "
                    "`<token>@<agency>[|<agency>…]`"
                ) from None
            if bound is not None and self.v3_agencies and not bound <= allowed:
                raise ValueError(
                    f"{PREFIX}CLIENT_TOKENS entry {position} is bound to agencies outside "
                    f"{PREFIX}V3_AGENCIES: {', '.join(sorted(bound - allowed))}"
                )
        return self


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and `.env`), `overrides` taking precedence.

    Raises `SettingsError` with one line naming the first bad variable.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = [str(part) for part in first.get("loc", ()) if not isinstance(part, int)]
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if not loc:
        return message
    variable = f"{PREFIX}{loc[0].upper()}"
    # Never echo the offending value: it may be a secret.
    return f"{variable}: {message}"
