"""The OpenAI-compatible endpoint's contract, with Quart's test client and an in-memory Letta.

Models, the streamed and the whole completion, who the student is (plain headers, or a
signed JWT), OpenWebUI's background tasks answered without the agent, one turn per agent
(409), the agent free before ``[DONE]``, a client that leaves cancels the run, and every
error as an OpenAI error object.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from letta_client import InternalServerError
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from quart import Quart

from app.factory import create_app
from app.services import EXTENSION, Services
from app.settings import Settings
from pipeline.sse import SSEParser

from .fake_letta import make_fake

pytestmark = pytest.mark.anyio

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def svc(app: Quart) -> Services:
    found: Services = app.extensions[EXTENSION]
    return found


def user(user_id: str, name: str | None = None) -> dict[str, str]:
    headers = {"X-OpenWebUI-User-Id": user_id}
    if name is not None:
        headers["X-OpenWebUI-User-Name"] = name
    return headers


def signed(sub: str, *, secret: str = SECRET, expires_in: float = 300, **claims: Any) -> dict[str, str]:
    now = int(time.time())
    payload = {"sub": sub, "name": "Ada", "iss": "open-webui", "iat": now, "exp": now + expires_in, **claims}
    return {"X-OpenWebUI-User-Jwt": jwt.encode(payload, secret, algorithm="HS256")}


def ask(text: str, *, stream: bool = True, model: str = "tutor", **extra: Any) -> dict[str, Any]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}], **extra}


def frames(data: bytes) -> list[Any]:
    parser = SSEParser()
    return [e.data if e.data == "[DONE]" else json.loads(e.data) for e in parser.feed(data) + parser.close()]


def joined(chunks: list[Any], key: str) -> str:
    return "".join(
        (c["choices"][0]["delta"].get(key) or "") for c in chunks if isinstance(c, dict) and c.get("choices")
    )


def agents_of(letta: Any) -> dict[str, str]:
    """``{user id: agent id}`` of every agent the fake Letta holds."""
    return {a.metadata["user_id"]: a.id for a in letta.store.agents.values()}


async def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, await response.get_data(as_text=True)
    body = await response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "code", "param"}
    return dict(body["error"])


# ---------------------------------------------------------------- models


async def test_models_are_the_agent_types(app: Quart) -> None:
    response = await app.test_client().get("/v1/models")
    body = await response.get_json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"], m["name"]) for m in body["data"]] == [
        ("tutor", "model", "letta-stream", "Letta Tutor"),
        ("study-coach", "model", "letta-stream", "Study Coach"),
    ]
    assert isinstance(body["data"][0]["created"], int)


async def test_the_service_token_guards_v1_with_an_openai_error() -> None:
    app = create_app(Settings(service_token="tok"), client=make_fake())
    async with app.test_app():
        client = app.test_client()
        error = await error_of(await client.get("/v1/models"), 401)
        assert error["type"] == "authentication_error"
        error = await error_of(await client.post("/v1/chat/completions", json=ask("hi")), 401)
        assert error["code"] == "unauthorized"
        ok = await client.get("/v1/models", headers={"Authorization": "Bearer tok"})
        assert ok.status_code == 200


# ---------------------------------------------------------------- completions


async def test_a_streamed_completion(app: Quart, letta: Any) -> None:
    response = await app.test_client().post("/v1/chat/completions", json=ask("hi"), headers=user("u1", "Ada%20L"))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    out = frames(await response.get_data())
    assert out[-1] == "[DONE]"
    for chunk in out[:-1]:
        ChatCompletionChunk.model_validate(chunk)
    assert joined(out, "content") == "Hello student"
    assert joined(out, "reasoning_content") == "Let me think."
    assert out[-2]["choices"][0]["finish_reason"] == "stop"
    assert out[-2]["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert len({c["id"] for c in out[:-1]}) == 1
    agent_id = agents_of(letta)["u1"]
    assert letta.agents.messages.sent == [(agent_id, "hi")]
    assert letta.store.agents[agent_id].name == "tutor-u1"
    assert letta.agents.messages.streams[-1].closed
    assert letta.agents.messages.cancelled == []
    assert await svc(app).host.store.record(agent_id) is None


async def test_a_whole_completion(app: Quart, letta: Any) -> None:
    response = await app.test_client().post("/v1/chat/completions", json=ask("hi", stream=False), headers=user("u2"))
    body = await response.get_json()
    parsed = ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.content == "Hello student"
    assert body["choices"][0]["message"]["reasoning_content"] == "hmm"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert await svc(app).host.store.record(agents_of(letta)["u2"]) is None


GIF = "R0lGODlhAQABAAAAACw="  # the first bytes of a GIF: enough for the service's check of the media type


async def test_only_the_last_user_message_reaches_the_agent(app: Quart, letta: Any) -> None:
    body = {
        "model": "tutor",
        "stream": True,
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "an answer"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "now "},
                    {"type": "image_url", "image_url": {"url": f"data:image/gif;base64,{GIF}"}},
                    {"type": "text", "text": "this"},
                ],
            },
        ],
        "temperature": 0.3,
        "stream_options": {"include_usage": True},
    }
    response = await app.test_client().post("/v1/chat/completions", json=body, headers=user("u3"))
    await response.get_data()
    picture = {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": GIF}}
    assert [sent for _, sent in letta.agents.messages.sent] == [[{"type": "text", "text": "now this"}, picture]]


async def test_each_student_has_their_own_agent(app: Quart, letta: Any) -> None:
    client = app.test_client()
    for who, text in [("ada", "from ada"), ("bob", "from bob"), ("ada", "ada again")]:
        response = await client.post("/v1/chat/completions", json=ask(text), headers=user(who))
        await response.get_data()
    agents = agents_of(letta)
    assert set(agents) == {"ada", "bob"}
    by_agent: dict[str, list[str]] = {}
    for agent_id, text in letta.agents.messages.sent:
        by_agent.setdefault(agent_id, []).append(text)
    assert by_agent == {agents["ada"]: ["from ada", "ada again"], agents["bob"]: ["from bob"]}


async def test_the_agent_is_free_before_done_goes_out(app: Quart, letta: Any) -> None:
    body = json.dumps(ask("first")).encode()
    got = b""
    headers = {"Content-Type": "application/json", **user("quick")}
    async with app.test_client().request("/v1/chat/completions", method="POST", headers=headers) as connection:
        await connection.send(body)
        await connection.send_complete()
        with anyio.fail_after(5):
            while b"[DONE]" not in got:
                got += await connection.receive()
        response = await app.test_client().post("/v1/chat/completions", json=ask("next"), headers=user("quick"))
        assert response.status_code == 200  # not 409
        await response.get_data()


async def test_a_second_message_while_a_turn_runs_is_409(app: Quart, letta: Any) -> None:
    letta.store.hold_after = 3
    body = json.dumps(ask("first")).encode()
    headers = {"Content-Type": "application/json", **user("busy")}
    async with app.test_client().request("/v1/chat/completions", method="POST", headers=headers) as connection:
        await connection.send(body)
        await connection.send_complete()
        await connection.receive()
        for stream in (True, False):
            response = await app.test_client().post(
                "/v1/chat/completions", json=ask("again", stream=stream), headers=user("busy")
            )
            error = await error_of(response, 409)
            assert error["code"] == "turn_in_progress"
            assert error["type"] == "invalid_request_error"
        agent_id = agents_of(letta)["busy"]
        response = await app.test_client().post("/chat/stream", json={"agent_id": agent_id, "message": "pipe too"})
        assert response.status_code == 409  # one turn per agent, whichever way in
        letta.store.go.set()
    assert [text for _, text in letta.agents.messages.sent] == ["first"]


async def test_a_client_that_leaves_cancels_the_run_and_frees_the_agent(app: Quart, letta: Any) -> None:
    letta.store.hold_after = 3
    body = json.dumps(ask("long")).encode()
    headers = {"Content-Type": "application/json", **user("leaver")}
    async with app.test_client().request("/v1/chat/completions", method="POST", headers=headers) as connection:
        await connection.send(body)
        await connection.send_complete()
        got = b""
        with anyio.fail_after(5):
            while b"reasoning_content" not in got:
                got += await connection.receive()
        await connection.disconnect()
    agent_id = agents_of(letta)["leaver"]
    with anyio.fail_after(5):
        while letta.agents.messages.cancelled != [agent_id] or await svc(app).host.store.record(agent_id):  # noqa: ASYNC110
            await anyio.sleep(0.01)
    run = next(iter(letta.store.runs.values()))
    assert run.status == "cancelled"
    assert svc(app).metrics.ended["cancelled"] == 1
    assert svc(app).metrics.active == 0


async def test_the_turn_record_names_the_run_so_a_stop_from_elsewhere_cancels_it(app: Quart, letta: Any) -> None:
    letta.store.hold_after = 3
    body = json.dumps(ask("long")).encode()
    headers = {"Content-Type": "application/json", **user("stopped")}
    async with app.test_client().request("/v1/chat/completions", method="POST", headers=headers) as connection:
        await connection.send(body)
        await connection.send_complete()
        got = b""
        with anyio.fail_after(5):
            while b"reasoning_content" not in got:
                got += await connection.receive()
        agent_id = agents_of(letta)["stopped"]
        record = await svc(app).host.store.record(agent_id)
        assert record is not None
        assert record.run_id == next(iter(letta.store.runs))
        response = await app.test_client().post("/chat/cancel", json={"agent_id": agent_id})
        assert response.status_code == 202
        with anyio.fail_after(5):
            while b"[DONE]" not in got:
                got += await connection.receive()
    assert next(iter(letta.store.runs.values())).status == "cancelled"
    assert frames(got)[-2]["choices"][0]["finish_reason"] == "stop"
    assert await svc(app).host.store.record(agent_id) is None


# ---------------------------------------------------------------- who the student is


async def test_no_user_is_a_400_naming_the_header(app: Quart, letta: Any) -> None:
    error = await error_of(await app.test_client().post("/v1/chat/completions", json=ask("hi")), 400)
    assert error["param"] == "X-OpenWebUI-User-Id"
    assert letta.agents.messages.sent == []


@pytest.fixture
async def jwt_app(letta: Any) -> Any:
    app = create_app(Settings(openwebui_jwt_secret=SECRET), client=letta)
    async with app.test_app():
        yield app


async def test_a_valid_jwt_names_the_student(jwt_app: Quart, letta: Any) -> None:
    response = await jwt_app.test_client().post("/v1/chat/completions", json=ask("hi"), headers=signed("jwt-user"))
    assert joined(frames(await response.get_data()), "content") == "Hello student"
    assert list(agents_of(letta)) == ["jwt-user"]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param(signed("x", expires_in=-60), id="expired"),
        pytest.param(signed("x", secret="another-secret-that-is-also-long-enough"), id="wrong-secret"),
        pytest.param(signed("x", iss="someone-else"), id="wrong-issuer"),
        pytest.param({"X-OpenWebUI-User-Jwt": "not.a.jwt"}, id="garbage"),
        pytest.param(user("plain-header-only"), id="plain-headers-ignored"),
    ],
)
async def test_without_a_valid_jwt_it_is_401(jwt_app: Quart, letta: Any, headers: dict[str, str]) -> None:
    for stream in (True, False):
        response = await jwt_app.test_client().post(
            "/v1/chat/completions", json=ask("hi", stream=stream), headers=headers
        )
        error = await error_of(response, 401)
        assert error["type"] == "authentication_error"
    assert letta.agents.messages.sent == []
    assert agents_of(letta) == {}


async def test_a_tampered_jwt_is_401(jwt_app: Quart, letta: Any) -> None:
    token = signed("mallory")["X-OpenWebUI-User-Jwt"]  # a real token of another student...
    head, _claims, signature = token.split(".")  # ...its claims swapped for the victim's, its signature kept
    forged = jwt.utils.base64url_encode(json.dumps({"sub": "victim", "iss": "open-webui", "exp": 2**40}).encode())
    headers = {"X-OpenWebUI-User-Jwt": f"{head}.{forged.decode()}.{signature}"}
    await error_of(await jwt_app.test_client().post("/v1/chat/completions", json=ask("hi"), headers=headers), 401)
    assert letta.agents.messages.sent == []


# ---------------------------------------------------------------- OpenWebUI's background tasks

TITLE_PROMPT = """### Task:
Generate a concise title summarizing the chat history.
### Output:
JSON format: { "title": "your concise title here" }
### Chat History:
<chat_history>
USER: Help me brainstorm my college essay about {"tags": "x"} robotics club
ASSISTANT: Hello student
</chat_history>"""


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("title", {"title": 'Help me brainstorm my college essay about {"tags":…'}),
        ("tags", {"tags": ["Letta Tutor"]}),
        ("follow_ups", {"follow_ups": []}),
        ("queries", {"queries": []}),
    ],
)
async def test_background_tasks_are_answered_without_the_agent(
    app: Quart, letta: Any, key: str, expected: dict[str, Any]
) -> None:
    prompt = TITLE_PROMPT.replace('"title"', f'"{key}"')
    response = await app.test_client().post(
        "/v1/chat/completions", json=ask(prompt, stream=False, max_tokens=1000), headers=user("u9")
    )
    body = await response.get_json()
    ChatCompletion.model_validate(body)
    assert json.loads(body["choices"][0]["message"]["content"]) == expected
    assert letta.agents.messages.sent == []
    assert agents_of(letta) == {}


async def test_a_streamed_task_shaped_message_is_a_chat_turn(app: Quart, letta: Any) -> None:
    response = await app.test_client().post("/v1/chat/completions", json=ask(TITLE_PROMPT), headers=user("u10"))
    await response.get_data()
    assert [text for _, text in letta.agents.messages.sent] == [TITLE_PROMPT]


# ---------------------------------------------------------------- errors before the stream


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "tutor"}, "messages"),
        ({"model": "tutor", "messages": []}, "messages"),
        ({"model": "tutor", "messages": "hi"}, "messages"),
        ({"model": "tutor", "messages": [{"role": "assistant", "content": "no user"}]}, "messages"),
        ({"model": "tutor", "messages": [{"role": "user", "content": "   "}]}, "messages"),
        ({"model": "tutor", "messages": [{"role": "user", "content": "x" * 1001}]}, "messages"),
        ({**ask("hi"), "stream": "yes"}, "stream"),
        ({**ask("hi"), "model": 5}, "model"),
    ],
)
async def test_bad_requests_are_400_naming_the_param(app: Quart, letta: Any, body: Any, param: str) -> None:
    response = await app.test_client().post("/v1/chat/completions", json=body, headers=user("u11"))
    error = await error_of(response, 400)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert letta.agents.messages.sent == []


async def test_not_json_is_400(app: Quart) -> None:
    response = await app.test_client().post("/v1/chat/completions", data=b"{", headers=user("u12"))
    assert (await error_of(response, 400))["code"] == "invalid_request"


async def test_an_unknown_model_is_404(app: Quart) -> None:
    response = await app.test_client().post("/v1/chat/completions", json=ask("hi", model="gpt-4"), headers=user("u"))
    error = await error_of(response, 404)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"


async def test_an_oversized_body_is_413(app: Quart) -> None:
    response = await app.test_client().post("/v1/chat/completions", json=ask("x" * 20_000), headers=user("u"))
    assert (await error_of(response, 413))["code"] == "request_entity_too_large"


async def test_letta_down_is_503(app: Quart, letta: Any) -> None:
    letta.store.down = True
    for stream in (True, False):
        response = await app.test_client().post(
            "/v1/chat/completions", json=ask("hi", stream=stream), headers=user("u")
        )
        error = await error_of(response, 503)
        assert error["code"] == "upstream_unavailable"
        assert error["type"] == "server_error"


async def test_letta_failing_is_502(app: Quart, letta: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def fail(*_: Any, **__: Any) -> Any:
        request = httpx.Request("POST", "http://letta.test/v1/agents/x/messages")
        raise InternalServerError("boom", response=httpx.Response(500, request=request), body=None)

    monkeypatch.setattr(letta.agents.messages, "create", fail)
    for stream in (True, False):
        response = await app.test_client().post(
            "/v1/chat/completions", json=ask("hi", stream=stream), headers=user("u")
        )
        error = await error_of(response, 502)
        assert error["code"] == "upstream_error"
        assert error["type"] == "server_error"
    agent_id = agents_of(letta)["u"]
    assert await svc(app).host.store.record(agent_id) is None  # the turn was released


async def test_while_draining_it_is_503(app: Quart) -> None:
    svc(app).draining.set()
    response = await app.test_client().post("/v1/chat/completions", json=ask("hi"), headers=user("u"))
    assert (await error_of(response, 503))["code"] == "shutting_down"


# ---------------------------------------------------------------- the pieces


def test_plain_headers_name_the_student_with_openwebuis_url_quoted_name() -> None:
    from app.identity import Student, student_from_headers

    headers = {"X-OpenWebUI-User-Id": "u-1", "X-OpenWebUI-User-Name": "Ad%C3%A9la%20N"}
    assert student_from_headers(headers, None) == Student("u-1", "Adéla N")


def test_a_short_jwt_secret_is_refused_at_startup() -> None:
    from app.settings import SettingsError, settings_from_env

    with pytest.raises(SettingsError, match="OPENWEBUI_JWT_SECRET"):
        settings_from_env({"SERVICE_AUTH": "off", "OPENWEBUI_JWT_SECRET": "short"})
    assert settings_from_env({"SERVICE_AUTH": "off", "OPENWEBUI_JWT_SECRET": SECRET}).openwebui_jwt_secret == SECRET


# ---------------------------------------------------------------- fuzzing: never a 500, always an OpenAI error

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
_content = _json | st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", 3]), "text": _json}), max_size=3
)
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", 7]), "content": _content})
_bodies = _json | st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["tutor", "", "gpt-4"]) | _json,
        "messages": st.lists(_message, max_size=3) | _json,
        "stream": st.booleans() | _json,
    },
)
_headers = st.fixed_dictionaries(
    {},
    optional={
        "X-OpenWebUI-User-Id": st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=300),
        "X-OpenWebUI-User-Name": st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
        "X-OpenWebUI-User-Jwt": st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=60),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_bodies, headers=_headers, jwt_secret=st.sampled_from([None, SECRET]))
async def test_any_body_and_headers(body: Any, headers: dict[str, str], jwt_secret: str | None) -> None:
    app = create_app(Settings(max_body_bytes=4096, openwebui_jwt_secret=jwt_secret), client=make_fake())
    async with app.test_app():
        response = await app.test_client().post("/v1/chat/completions", json=body, headers=headers)
        data = await response.get_data()
    assert response.status_code < 500, data
    if response.status_code >= 400:
        assert set(json.loads(data)["error"]) == {"message", "type", "code", "param"}
