"""Faults between the service and Letta: the stream always ends, with an error event, and quickly."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import anyio
import httpx
import pytest

from app.settings import Settings
from devstack.service_thread import ServiceThread
from devstack.stack import LocalStack
from pipeline.events import Done, Error, Text
from pipeline.sse import SSEParser
from pipeline.wire import parse_event

from .tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_letta_dying_mid_stream_ends_the_stream_with_an_error_event(letta_stack: LocalStack) -> None:
    letta_port = urlsplit(letta_stack.letta_url).port
    assert letta_port is not None
    async with anyio.create_task_group() as tg:
        proxy: TcpProxy = await tg.start(TcpProxy(letta_port).run)
        settings = Settings(
            letta_base_url=f"http://127.0.0.1:{proxy.port}",
            model=letta_stack.model_handle,
            embedding=letta_stack.embedding_handle,
            cancel_timeout=1.0,
        )
        service = ServiceThread(settings)
        # started from a worker thread: the proxy lives on this event loop and must keep serving
        await anyio.to_thread.run_sync(service.start)
        try:
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
                agent_id = (await http.post("/agents", json={"user_id": "fault-student"})).json()["agent_id"]
                events = []
                killed_at = None
                parser = SSEParser()
                body = {"agent_id": agent_id, "message": "[long 400] [slow 30] keep going"}
                with anyio.fail_after(30):
                    async with http.stream("POST", "/chat/stream", json=body) as response:
                        async for chunk in response.aiter_bytes():
                            for sse in parser.feed(chunk):
                                events.append(parse_event(sse.data))
                            if killed_at is None and sum(isinstance(e, Text) for e in events) >= 3:
                                proxy.kill()
                                killed_at = time.monotonic()
                ended_after = time.monotonic() - (killed_at or 0)
        finally:
            await anyio.to_thread.run_sync(service.stop)
        tg.cancel_scope.cancel()
    assert killed_at is not None
    assert isinstance(events[-1], Error), events[-3:]
    assert events[-1].code in {"upstream_failed", "upstream_unreachable"}
    assert not any(isinstance(e, Done) for e in events)
    print(f"stream ended {ended_after * 1000:.0f} ms after Letta went away")
    assert ended_after < 5  # a hang guard; the figure itself is reported, not asserted tightly


async def test_model_error_inside_letta_reaches_the_client_with_letta_words(http: httpx.AsyncClient) -> None:
    agent_id = (await http.post("/agents", json={"user_id": "llm-error-student"})).json()["agent_id"]
    async with http.stream("POST", "/chat/stream", json={"agent_id": agent_id, "message": "[fail] now"}) as response:
        frames = b"".join([c async for c in response.aiter_bytes()])
    parser = SSEParser()
    events = [parse_event(s.data) for s in parser.feed(frames) + parser.close()]
    assert events[-1] == Error("An error occurred with the LLM request.", "llm_error")  # Letta's own words
