"""Bearer-token authentication, and settings read from the environment."""

from __future__ import annotations

from typing import Any

import pytest

from app.factory import create_app
from app.settings import Settings, SettingsError, settings_from_env

from .fake_letta import make_fake

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/agents"),
        ("GET", "/agents?user_id=u"),
        ("GET", "/agents/a"),
        ("POST", "/chat"),
        ("POST", "/chat/stream"),
        ("GET", "/metrics"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"bearer {TOKEN}x", TOKEN])
async def test_every_endpoint_but_health_needs_the_token(method: str, path: str, header: str | None) -> None:
    app = create_app(Settings(service_token=TOKEN), client=make_fake())
    headers = {"Authorization": header} if header else {}
    async with app.test_app():
        response = await app.test_client().open(path, method=method, headers=headers, json={})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await response.get_json())["error"] == "unauthorized"


async def test_right_token_passes_and_health_is_open() -> None:
    app = create_app(Settings(service_token=TOKEN), client=make_fake())
    async with app.test_app():
        client = app.test_client()
        assert (await client.get("/health")).status_code == 200
        response = await client.post("/agents", json={"user_id": "u"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 201


def test_env_requires_a_token_unless_auth_is_explicitly_off() -> None:
    with pytest.raises(SettingsError, match="SERVICE_TOKEN"):
        settings_from_env({})
    assert settings_from_env({"SERVICE_AUTH": "off", "SERVICE_TOKEN": "x"}).service_token is None
    assert settings_from_env({"SERVICE_TOKEN": "x"}).service_token == "x"
    with pytest.raises(SettingsError, match="SERVICE_AUTH"):
        settings_from_env({"SERVICE_AUTH": "maybe", "SERVICE_TOKEN": "x"})


def test_env_values_are_typed_and_bad_ones_name_the_variable() -> None:
    env: dict[str, Any] = {"SERVICE_AUTH": "off", "STREAM_THROTTLE_SECONDS": "0.1", "MAX_MESSAGE_CHARS": "50"}
    settings = settings_from_env(env)
    assert settings.throttle_window == 0.1
    assert settings.max_message_chars == 50
    with pytest.raises(SettingsError, match="MAX_MESSAGE_CHARS"):
        settings_from_env({"SERVICE_AUTH": "off", "MAX_MESSAGE_CHARS": "many"})


def test_hypercorn_toml_keys_are_real_config_attributes() -> None:
    import tomllib
    from pathlib import Path

    from hypercorn.config import Config

    keys = tomllib.loads((Path(__file__).parents[2] / "hypercorn.toml").read_text())
    unknown = [k for k in keys if not hasattr(Config, k)]
    assert unknown == []
    assert keys["worker_class"] in ("asyncio", "uvloop")  # asyncio (on uvloop's loop): Quart needs asyncio
