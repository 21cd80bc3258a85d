"""The request body the service gives Quart (``app/request_body.py``): Quart's contract, no event per request.

Quart's receiver appends chunks and completes the body; the handler awaits or iterates it.
"""

from __future__ import annotations

import asyncio

import pytest
from quart import Quart
from werkzeug.exceptions import RequestEntityTooLarge

from app.request_body import LeanRequest, RequestBody

pytestmark = pytest.mark.anyio


async def test_awaiting_returns_every_chunk_once_complete_whenever_they_came() -> None:
    body = RequestBody(None, None)
    body.append(b"ab")
    waiting = asyncio.ensure_future(asyncio.wait_for(body, 5))  # as Quart's get_data awaits it
    also = asyncio.ensure_future(asyncio.wait_for(body, 5))
    await asyncio.sleep(0)
    body.append(b"")
    body.append(b"cd")
    await asyncio.sleep(0)
    assert not waiting.done()
    body.set_complete()
    assert await waiting == b"abcd"
    assert await also == b"abcd"
    assert await body == b"abcd"  # awaiting again after the end
    assert body._waiters == []


async def test_iterating_yields_data_as_it_arrives_and_ends_at_completion() -> None:
    body = RequestBody(None, None)
    seen: list[bytes] = []

    async def read() -> None:
        async for chunk in body:
            seen.append(chunk)

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0)
    body.append(b"one")
    await asyncio.sleep(0)
    body.append(b"two")
    body.append(b"three")
    await asyncio.sleep(0)
    body.set_complete()
    await asyncio.wait_for(reader, 5)
    assert seen == [b"one", b"twothree"]


async def test_a_cancelled_waiter_leaves_no_future_and_others_still_wake() -> None:
    body = RequestBody(None, None)
    first = asyncio.ensure_future(body.__anext__())
    second = asyncio.ensure_future(body.__anext__())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert len(body._waiters) == 1
    body.set_result(b"x")
    assert await second == b"x"
    assert body._waiters == []


async def test_a_body_over_the_limit_raises_to_its_reader_by_its_length_or_its_data() -> None:
    declared = RequestBody(10, 5)
    with pytest.raises(RequestEntityTooLarge):
        await declared
    with pytest.raises(RequestEntityTooLarge):
        await declared.__anext__()
    grown = RequestBody(None, 5)
    waiting = asyncio.ensure_future(asyncio.wait_for(grown, 5))
    await asyncio.sleep(0)
    grown.append(b"123")
    grown.append(b"456")  # over the limit: complete, and the reader is told
    with pytest.raises(RequestEntityTooLarge):
        await waiting
    grown.append(b"789")
    assert bytes(grown._data) == b"123456"  # nothing taken after the limit


async def test_the_app_reads_its_requests_bodies_with_it(app: Quart) -> None:
    assert app.request_class is LeanRequest
    assert LeanRequest.body_class is RequestBody
    response = await app.test_client().post("/agents", data=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400  # the body was read (and is not JSON)
