"""Quart's request body, holding no ``asyncio.Event`` while nobody waits on it.

Quart's :class:`~quart.wrappers.request.Body` makes two ``asyncio.Event`` per request, and
each owns a waiter deque (~0.8 KiB) whether anyone waits or not.  A request that streams
an answer keeps its body for the whole turn, long after it was read: 1.7 KiB per open
stream.  :class:`RequestBody` is the same contract (Quart's ``Request.body_class`` hook):
chunks are appended by Quart's receiver and the handler awaits the whole body (or iterates
it); a waiter gets a loop future only while it waits.

Contract, as Quart's: awaiting returns all the data once the body is complete; iterating
yields the data as it arrives and ends when it is complete; a body over
``max_content_length`` raises :class:`~werkzeug.exceptions.RequestEntityTooLarge` to its
reader (and is complete).  Any number of tasks may wait; a waiter that is cancelled leaves
no future behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

from quart.wrappers import Request
from quart.wrappers.request import Body
from werkzeug.exceptions import RequestEntityTooLarge


class RequestBody(Body):
    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        # every method of Quart's Body is replaced: none of its state is made or read
        self._data = bytearray()
        self._done = False
        self._waiters: list[asyncio.Future[None]] = []
        self._max_content_length = max_content_length
        self._must_raise: Exception | None = None
        if (
            expected_content_length is not None
            and max_content_length is not None
            and expected_content_length > max_content_length
        ):
            self._must_raise = RequestEntityTooLarge()

    async def _changed(self) -> None:
        """Wait until the next append or the end."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def __aiter__(self) -> RequestBody:
        return self

    async def __anext__(self) -> bytes:
        while not self._done and not self._data and self._must_raise is None:
            await self._changed()
        if self._must_raise is not None:
            raise self._must_raise
        if self._done and not self._data:
            raise StopAsyncIteration()
        data = bytes(self._data)
        self._data.clear()
        return data

    def __await__(self) -> Generator[Any, None, Any]:
        if self._must_raise is not None:
            raise self._must_raise
        while not self._done:
            yield from self._changed().__await__()
        if self._must_raise is not None:
            raise self._must_raise
        return bytes(self._data)

    def append(self, data: bytes) -> None:
        if data == b"" or self._must_raise is not None:
            return
        self._data.extend(data)
        if self._max_content_length is not None and len(self._data) > self._max_content_length:
            self._must_raise = RequestEntityTooLarge()
            self._done = True
        self._wake()

    def set_complete(self) -> None:
        self._done = True
        self._wake()

    def set_result(self, data: bytes) -> None:
        self.append(data)
        self.set_complete()

    def clear(self) -> None:
        self._data.clear()


class LeanRequest(Request):
    """Quart's request with :class:`RequestBody`."""

    body_class = RequestBody
