"""Settings: required variables per V3 auth mode, validation messages, and secret hygiene."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import (
    USER_AGENT_PATTERN,
    Settings,
    SettingsError,
    V3AuthMode,
    default_user_agent,
    load_settings,
)

SECRETS = {
    "v3_client_secret": "client-secret-XYZZY",
    "v3_token": "static-token-PLUGH",
    "legacy_api_key": "legacy-key-FROBOZZ",
    "webhook_secret": "webhook-secret-GRUE",
}

OAUTH: dict[str, Any] = {
    "v3_url": "https://api.aviv-group.com/caas/v3",
    "v3_auth": "oauth",
    "v3_token_url": "https://auth.api.aviv-group.com/oauth/token",
    "v3_client_id": "abc123",
    "v3_client_secret": SECRETS["v3_client_secret"],
    "v3_audience": "https://api.aviv-group.com/caas/v3",
    "v3_intermediary_id": "agency-42",
    "legacy_url": "https://www.goedgeplaatst.nl/rest/v1",
    "legacy_api_key": SECRETS["legacy_api_key"],
    "webhook_secret": SECRETS["webhook_secret"],
}
STATIC: dict[str, Any] = {
    "v3_url": OAUTH["v3_url"],
    "v3_auth": "static",
    "v3_token": SECRETS["v3_token"],
    "legacy_url": OAUTH["legacy_url"],
    "legacy_api_key": SECRETS["legacy_api_key"],
}
PASSTHROUGH: dict[str, Any] = {
    "v3_url": OAUTH["v3_url"],
    "v3_auth": "passthrough",
    "legacy_url": OAUTH["legacy_url"],
    "legacy_api_key": SECRETS["legacy_api_key"],
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No GATEWAY_* variable or `.env` of the machine running the tests leaks in."""
    import os

    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def build(**values: Any) -> Settings:
    return load_settings(**values)


def error_for(**values: Any) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(**values)
    message = str(caught.value)
    assert "\n" not in message, "the message must be one line"
    return message


def test_valid_oauth_settings_have_documented_defaults() -> None:
    settings = build(**OAUTH)
    assert settings.v3_auth is V3AuthMode.OAUTH
    assert settings.legacy_max_batch == 100
    assert settings.cache_ttl_s == 30
    assert settings.cache_max_entries == 10_000
    assert settings.upstream_timeout_s == 5
    assert (settings.upstream_retries, settings.upstream_backoff_s) == (2, 0.1)
    assert settings.max_listings == 200
    assert (settings.host, settings.http_port, settings.grpc_port) == ("127.0.0.1", 8000, 50051)
    assert settings.client_tokens == ()
    assert settings.redis_url is None


def test_default_user_agent_matches_the_v3_pattern() -> None:
    assert USER_AGENT_PATTERN.match(default_user_agent())
    assert build(**OAUTH).user_agent == default_user_agent()


@pytest.mark.parametrize(
    ("mode", "values", "missing"),
    [
        ("oauth", OAUTH, "v3_url"),
        ("oauth", OAUTH, "legacy_url"),
        ("oauth", OAUTH, "legacy_api_key"),
        ("oauth", OAUTH, "v3_token_url"),
        ("oauth", OAUTH, "v3_client_id"),
        ("oauth", OAUTH, "v3_client_secret"),
        ("oauth", OAUTH, "v3_audience"),
        ("oauth", OAUTH, "v3_intermediary_id"),
        ("static", STATIC, "v3_token"),
        ("static", STATIC, "v3_url"),
        ("static", STATIC, "legacy_api_key"),
        ("passthrough", PASSTHROUGH, "v3_url"),
        ("passthrough", PASSTHROUGH, "legacy_url"),
        ("passthrough", PASSTHROUGH, "legacy_api_key"),
    ],
)
def test_each_required_variable_is_named_when_missing(
    mode: str, values: dict[str, Any], missing: str
) -> None:
    incomplete = {k: v for k, v in values.items() if k != missing}
    message = error_for(**incomplete)
    assert f"GATEWAY_{missing.upper()}" in message
    assert f"GATEWAY_V3_AUTH={mode}" in message


def test_empty_string_counts_as_missing() -> None:
    assert "GATEWAY_V3_CLIENT_ID" in error_for(**{**OAUTH, "v3_client_id": ""})


def test_static_and_passthrough_do_not_need_oauth_fields() -> None:
    assert build(**STATIC).v3_token.get_secret_value() == SECRETS["v3_token"]
    assert build(**PASSTHROUGH).v3_auth is V3AuthMode.PASSTHROUGH


def test_unknown_auth_mode_is_named() -> None:
    assert "GATEWAY_V3_AUTH" in error_for(**{**OAUTH, "v3_auth": "kerberos"})


@pytest.mark.parametrize(
    "agent",
    [
        "MyGateway/1.0.0",  # one token, as the vendor's auth page shows: refused by the regex
        "MyGateway/1.0.0 aiohttp/3.11",  # two tokens
        "a/1 b/2 c/3 d/4",  # four tokens
        "a/1  b/2 c/3",  # double space
        "a/1/x b/2 c/3",  # slash inside a token
        "a/1 b/2 c/",  # empty version
        "",
    ],
)
def test_bad_user_agent_is_refused(agent: str) -> None:
    assert error_for(**{**OAUTH, "user_agent": agent}).startswith("GATEWAY_USER_AGENT:")


def test_three_token_user_agent_is_accepted() -> None:
    agent = "MyAwesomeSoft/1.0.0 curl/7.52.1 debian/9~1.gbpf8534c"
    assert build(**{**OAUTH, "user_agent": agent}).user_agent == agent


@pytest.mark.parametrize("field", ["v3_url", "legacy_url", "v3_token_url"])
@pytest.mark.parametrize("url", ["api.aviv-group.com/caas/v3", "ftp://host/x", "http://", "/v3"])
def test_bad_url_is_named(field: str, url: str) -> None:
    assert error_for(**{**OAUTH, field: url}).startswith(f"GATEWAY_{field.upper()}:")


def test_trailing_slash_is_stripped_from_urls() -> None:
    settings = build(**{**OAUTH, "v3_url": "https://h/caas/v3/", "legacy_url": "http://h/rest/v1/"})
    assert settings.v3_url == "https://h/caas/v3"
    assert settings.legacy_url == "http://h/rest/v1"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("legacy_max_batch", 0),
        ("legacy_max_batch", 1001),
        ("legacy_max_batch", "many"),
        ("http_port", 70_000),
        ("grpc_port", -1),
        ("upstream_timeout_s", 0),
        ("upstream_timeout_s", "soon"),
        ("upstream_retries", -1),
        ("upstream_retries", 6),
        ("upstream_backoff_s", -0.1),
        ("cache_ttl_s", -1),
        ("cache_max_entries", 0),
        ("max_listings", 0),
    ],
)
def test_bad_numbers_are_named(field: str, value: object) -> None:
    assert error_for(**{**OAUTH, field: value}).startswith(f"GATEWAY_{field.upper()}:")


def test_variables_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in OAUTH.items():
        monkeypatch.setenv(f"GATEWAY_{key.upper()}", value)
    monkeypatch.setenv("GATEWAY_LEGACY_MAX_BATCH", "250")
    monkeypatch.setenv("GATEWAY_UPSTREAM_TIMEOUT_S", "1.5")
    monkeypatch.setenv("GATEWAY_UPSTREAM_RETRIES", "0")
    monkeypatch.setenv("GATEWAY_UPSTREAM_BACKOFF_S", "0.25")
    settings = load_settings()
    assert settings.v3_intermediary_id == "agency-42"
    assert settings.legacy_max_batch == 250
    assert settings.upstream_timeout_s == 1.5
    assert (settings.upstream_retries, settings.upstream_backoff_s) == (0, 0.25)


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in OAUTH.items():
        monkeypatch.setenv(f"GATEWAY_{key.upper()}", value)
    monkeypatch.setenv("GATEWAY_LEGACY_MAX_BATCH", "lots")
    with pytest.raises(SettingsError, match=r"^GATEWAY_LEGACY_MAX_BATCH:"):
        load_settings()


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    lines = [f"GATEWAY_{key.upper()}={value}" for key, value in PASSTHROUGH.items()]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert load_settings().v3_auth is V3AuthMode.PASSTHROUGH


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("alpha", ["alpha"]),
        ("alpha,beta", ["alpha", "beta"]),
        (" alpha , beta ,, gamma ,", ["alpha", "beta", "gamma"]),
        ("", []),
        (" , ", []),
    ],
)
def test_client_tokens_split_on_commas(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    monkeypatch.setenv("GATEWAY_CLIENT_TOKENS", raw)
    settings = load_settings(**OAUTH)
    assert [t.get_secret_value() for t in settings.client_tokens] == expected


def test_secrets_stay_out_of_repr_and_str() -> None:
    settings = build(**{**OAUTH, "v3_token": SECRETS["v3_token"], "client_tokens": "tok-SHHH,x"})
    for text in (repr(settings), str(settings), repr(settings.model_dump())):
        for secret in [*SECRETS.values(), "tok-SHHH"]:
            assert secret not in text


def test_secrets_stay_out_of_error_messages() -> None:
    # A secret given where a number belongs must not be echoed back.
    message = error_for(**{**OAUTH, "legacy_max_batch": SECRETS["legacy_api_key"]})
    assert SECRETS["legacy_api_key"] not in message
    # Nor do the configured secrets appear when another variable is wrong.
    message = error_for(**{**OAUTH, "v3_audience": ""})
    for secret in SECRETS.values():
        assert secret not in message
    message = error_for(**{**OAUTH, "user_agent": SECRETS["v3_client_secret"]})
    assert SECRETS["v3_client_secret"] not in message


def test_settings_are_immutable() -> None:
    settings = build(**OAUTH)
    with pytest.raises(Exception, match="frozen"):
        settings.v3_url = "https://elsewhere"  # type: ignore[misc]


def test_settings_can_be_built_directly_without_the_environment() -> None:
    settings = Settings(**PASSTHROUGH)
    assert settings.legacy_api_key.get_secret_value() == SECRETS["legacy_api_key"]
