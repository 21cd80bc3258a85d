"""The OpenAI-compatible endpoint with the official ``openai`` client, against the real Letta stack.

The service runs on real hypercorn in front of Letta 0.16.8 (scripted model behind it):
what the client streams is checked against the scripted answer, the reasoning arrives as
``reasoning_content``, usage comes at the end; a non-streaming call returns the whole
answer; the student is named by OpenWebUI's headers (plain, or a signed JWT on a second
service that requires one) and reaches only their own agent; a client that leaves has its
Letta run cancelled.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import jwt
import openai
import pytest
from letta_client import AsyncLetta

from app.settings import Settings
from devstack.service_thread import ServiceThread
from devstack.stack import LocalStack
from tests.conftest import SERVICE_TOKEN
from tests.scripted_llm import REASONING, TOOL_NAME, expected_answer

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

JWT_SECRET = "integration-openwebui-jwt-secret-0123456789"


def student(prefix: str) -> str:
    """A user id of this run (the stack's data may outlive a run)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def as_user(user_id: str, name: str = "Test Student") -> dict[str, str]:
    return {"X-OpenWebUI-User-Id": user_id, "X-OpenWebUI-User-Name": name}


def signed(sub: str, *, expires_in: float = 300, secret: str = JWT_SECRET) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": sub, "name": "Jay", "email": "j@example.com", "role": "user", "iss": "open-webui"}
    token = jwt.encode({**claims, "iat": now, "exp": now + expires_in}, secret, algorithm="HS256")
    return {"X-OpenWebUI-User-Jwt": token}


def client_for(url: str, headers: dict[str, str]) -> openai.AsyncOpenAI:
    # no retries: the OpenAI client would retry a 409 and hide it
    return openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=SERVICE_TOKEN, default_headers=headers, max_retries=0, timeout=60
    )


@pytest.fixture
async def oai(service: ServiceThread) -> AsyncIterator[openai.AsyncOpenAI]:
    async with client_for(service.url, as_user(student("oai"))) as client:
        yield client


@pytest.fixture(scope="module")
def jwt_service(letta_stack: LocalStack) -> Iterator[ServiceThread]:
    """A second service that knows students only from OpenWebUI's signed header."""
    settings = Settings(
        letta_base_url=letta_stack.letta_url,
        model=letta_stack.model_handle,
        embedding=letta_stack.embedding_handle,
        keepalive_interval=1.0,
        service_token=SERVICE_TOKEN,
        redis_url=letta_stack.redis_url,
        openwebui_jwt_secret=JWT_SECRET,
    )
    with ServiceThread(settings) as running:
        yield running


def reasoning_of(part: Any) -> str:
    """``reasoning_content`` of a delta or message (not a field of the client's models: an extra)."""
    return str((part.model_extra or {}).get("reasoning_content") or "")


async def stream_all(client: openai.AsyncOpenAI, prompt: str) -> tuple[str, str, list[Any]]:
    stream = await client.chat.completions.create(
        model="tutor", messages=[{"role": "user", "content": prompt}], stream=True
    )
    content, reasoning, chunks = [], [], []
    async for chunk in stream:
        chunks.append(chunk)
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            reasoning.append(reasoning_of(choice.delta))
    return "".join(content), "".join(reasoning), chunks


async def agent_of(letta_url: str, user_id: str) -> str:
    async with AsyncLetta(base_url=letta_url, timeout=30) as letta:
        agents = [a async for a in letta.agents.list(tags=[f"user:{user_id}"], match_all_tags=True)]
    assert len(agents) == 1, agents
    return agents[0].id


async def user_texts(letta_url: str, agent_id: str) -> list[str]:
    """What the agent was told, as Letta persisted it."""
    async with AsyncLetta(base_url=letta_url, timeout=30) as letta:
        messages = [m async for m in letta.agents.messages.list(agent_id, limit=100)]
    return [m.content for m in messages if m.message_type == "user_message" and isinstance(m.content, str)]


# ---------------------------------------------------------------- streaming and whole


async def test_models_lists_the_agent_types(oai: openai.AsyncOpenAI) -> None:
    models = [m async for m in oai.models.list()]
    assert [(m.id, m.owned_by) for m in models] == [("tutor", "letta-stream"), ("study-coach", "letta-stream")]


async def test_the_official_client_streams_reasoning_tool_use_answer_and_usage(oai: openai.AsyncOpenAI) -> None:
    prompt = "[think] [tool] [long 30] Help me find my essay topic"
    content, reasoning, chunks = await stream_all(oai, prompt)
    assert content == expected_answer(prompt)
    assert reasoning.startswith(REASONING), reasoning
    assert f"Using {TOOL_NAME}..." in reasoning  # tool use shown inside the reasoning stream
    assert all(not choice.delta.tool_calls for chunk in chunks for choice in chunk.choices)
    assert len({chunk.id for chunk in chunks}) == 1
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage is not None
    assert last.usage.total_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(chunk.usage is None for chunk in chunks[:-1])
    first_text = next(i for i, ch in enumerate(chunks) if ch.choices and ch.choices[0].delta.content)
    first_reasoning = next(i for i, ch in enumerate(chunks) if ch.choices and reasoning_of(ch.choices[0].delta))
    assert first_reasoning < first_text


async def test_a_non_streaming_call_returns_the_whole_answer(oai: openai.AsyncOpenAI) -> None:
    prompt = "[think] [long 12] What makes a good opening line?"
    reply = await oai.chat.completions.create(model="tutor", messages=[{"role": "user", "content": prompt}])
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == expected_answer(prompt)
    assert reasoning_of(reply.choices[0].message) == REASONING
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.total_tokens > 0


async def test_the_agent_remembers_across_calls_and_gets_only_the_last_message(
    service: ServiceThread, letta_stack: LocalStack
) -> None:
    user_id = student("memory")
    async with client_for(service.url, as_user(user_id)) as client:
        first, _, _ = await stream_all(client, "My name is Ada")
        history = [
            {"role": "user", "content": "My name is Ada"},
            {"role": "assistant", "content": first},
            {"role": "user", "content": "What is my name?"},
        ]
        await client.chat.completions.create(model="tutor", messages=history)  # type: ignore[arg-type]
    agent_id = await agent_of(letta_stack.letta_url, user_id)
    texts = await user_texts(letta_stack.letta_url, agent_id)
    assert [t for t in texts if "Ada" in t or "name" in t] == ["My name is Ada", "What is my name?"]


async def test_a_second_message_while_streaming_is_409_and_leaving_cancels_the_run(
    service: ServiceThread, letta_stack: LocalStack
) -> None:
    user_id = student("busy")
    async with client_for(service.url, as_user(user_id)) as client:
        stream = await client.chat.completions.create(
            model="tutor",
            messages=[{"role": "user", "content": "[long 300] [slow 40] Tell me everything"}],
            stream=True,
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break  # the answer is being written
        with pytest.raises(openai.ConflictError) as refused:
            await client.chat.completions.create(model="tutor", messages=[{"role": "user", "content": "hello?"}])
        assert refused.value.code == "turn_in_progress"
        await stream.close()  # the student leaves mid-answer
    agent_id = await agent_of(letta_stack.letta_url, user_id)
    async with AsyncLetta(base_url=letta_stack.letta_url, timeout=30) as letta:
        runs = [r async for r in letta.runs.list(agent_id=agent_id)]
        assert len(runs) == 1  # the refused message never reached the agent
        status = ""
        with anyio.fail_after(10):
            while status != "cancelled":
                status = str((await letta.runs.retrieve(runs[0].id)).status)
                await anyio.sleep(0.1)
    async with client_for(service.url, as_user(user_id)) as client:  # and the agent is free again
        content, _, _ = await stream_all(client, "[long 3] Still there?")
    assert content == expected_answer("[long 3]")


# ---------------------------------------------------------------- who the student is


async def test_a_valid_jwt_reaches_that_students_agent(jwt_service: ServiceThread, letta_stack: LocalStack) -> None:
    user_id = student("jwt")
    async with client_for(jwt_service.url, signed(user_id)) as client:
        content, _, _ = await stream_all(client, "[long 5] Hello from a signed student")
    assert content == expected_answer("[long 5]")
    agent_id = await agent_of(letta_stack.letta_url, user_id)
    assert "[long 5] Hello from a signed student" in await user_texts(letta_stack.letta_url, agent_id)


@pytest.mark.parametrize("kind", ["expired", "tampered", "wrong-secret", "plain-headers"])
async def test_a_bad_jwt_is_401(jwt_service: ServiceThread, kind: str) -> None:
    victim = student("victim")
    if kind == "expired":
        headers = signed(victim, expires_in=-60)
    elif kind == "tampered":
        head, _, signature = signed(student("mallory"))["X-OpenWebUI-User-Jwt"].split(".")
        claims = jwt.utils.base64url_encode(f'{{"sub":"{victim}","iss":"open-webui","exp":{2**40}}}'.encode())
        headers = {"X-OpenWebUI-User-Jwt": f"{head}.{claims.decode()}.{signature}"}
    elif kind == "wrong-secret":
        headers = signed(victim, secret="not-the-secret-openwebui-and-the-service-share")
    else:
        headers = as_user(victim)
    async with client_for(jwt_service.url, headers) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="tutor", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.AuthenticationError):
            await stream_all(client, "hi")


async def test_a_second_students_messages_never_reach_the_first_ones_agent(
    jwt_service: ServiceThread, service: ServiceThread, letta_stack: LocalStack
) -> None:
    first, second = student("first"), student("second")
    async with client_for(jwt_service.url, signed(first)) as client:
        await stream_all(client, "[long 2] I am the first student")
    async with client_for(jwt_service.url, signed(second)) as client:
        await stream_all(client, "[long 2] I am the second student")
    async with client_for(service.url, as_user(second)) as client:  # plain headers, on the other service
        await client.chat.completions.create(
            model="tutor", messages=[{"role": "user", "content": "[long 2] second again"}]
        )
    first_agent = await agent_of(letta_stack.letta_url, first)
    second_agent = await agent_of(letta_stack.letta_url, second)
    assert first_agent != second_agent
    assert [t for t in await user_texts(letta_stack.letta_url, first_agent) if "[long 2]" in t] == [
        "[long 2] I am the first student"
    ]
    assert [t for t in await user_texts(letta_stack.letta_url, second_agent) if "[long 2]" in t] == [
        "[long 2] I am the second student",
        "[long 2] second again",
    ]
