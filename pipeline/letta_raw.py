"""Letta's stream read as bytes: our SSE parser and orjson instead of a pydantic model per chunk.

letta-client parses every chunk of a stream into a pydantic model (``construct_type``
over the ``LettaStreamingResponse`` union), which costs more than everything else a
chunk does in this service.  :func:`open_raw_stream` still sends the request through
letta-client — ``client.agents.messages.with_streaming_response.create(...)`` keeps the
SDK's URL building, auth, timeouts, error mapping and headers (Letta answers 422 to a
streaming request from a client it does not take for letta-client ≥ 1.0) — but reads
the response body itself: :class:`~pipeline.sse.SSEParser` (sans-IO) splits the frames
and orjson decodes each ``data:`` line into a ``dict``, which
:class:`~pipeline.letta_map.LettaMapper` maps rule for rule as it maps the SDK's models.

orjson rather than msgspec: the mapper reads a handful of keys of a dozen message
types, so a generic ``dict`` is all it needs; msgspec's speed comes from decoding into
declared structs, which would mean restating Letta's schema next to the SDK's.  orjson
is the fastest ``dict`` decoder for CPython and also encodes our frames (:mod:`pipeline.wire`).

The stream follows letta-client's ``AsyncStream`` exactly: it ends at ``data: [DONE]``,
an ``event: error`` frame raises the SDK's status error (with the frame's JSON as its
``body``), frames with any other ``event:`` are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, runtime_checkable

import httpx
import orjson
from letta_client import AsyncLetta

from .sse import ServerSentEvent, SSEParser

BODY_EXTENSION = "letta_stream.body"
"""The httpx response extension under which a transport may hand over its body stream itself.

httpx wraps a transport's body in a stream that references the whole response (and so its
request); a stream that takes the transport's own body lets both go.  The body must be an
``httpx.AsyncByteStream`` whose ``aclose`` gives the connection back."""


@runtime_checkable
class PushBody(Protocol):
    """A body that hands its bytes over from the event loop's callbacks (a protocol's ``data_received``).

    ``push(on_data, on_end)``: from now on ``on_data(chunk)`` for every chunk as it arrives (what arrived
    already first), then ``on_end(error)`` once (``None``, or the failure that ended the body); neither
    may raise.  ``pause()`` holds the chunks back (the connection stops reading) until ``resume()``.
    ``app.letta_protocol.Body`` is one (asyncio only).
    """

    def push(self, on_data: Callable[[bytes], object], on_end: Callable[[BaseException | None], object]) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


class RawLettaStream:
    """One streamed response of Letta: its messages as ``dict`` values.  Close it (:meth:`close`).

    ``on_run``, if set, is called once with the run id of the first message that names one,
    before that message is yielded (then it is unset): the reader learns the run without a
    generator of its own around the stream.
    """

    def __init__(self, client: AsyncLetta, response: Any) -> None:
        self._client = client
        self.on_run: Callable[[str], object] | None = None
        http = response.http_response
        self.status_code: int = http.status_code
        # what an ``event: error`` frame's exception names: the request line and Letta's request id
        self._request_line: tuple[str, Any] = (http.request.method, http.request.url)
        self._request_id: str | None = http.headers.get("x-request-id")
        # Without a content coding (Letta sends none) only the transport's stream is kept: the
        # httpx response, its request (headers, the JSON body) and letta-client's AsyncAPIResponse
        # (a copy of the request's options) are let go: a stream open for minutes need not hold
        # them (~5 KiB of RSS per held stream with the except-handler fix, measured).  A coded
        # body keeps the response, whose decoders it needs.
        self._response: Any = None
        self._chunks: Any = None
        if http.headers.get("content-encoding", "identity").lower() in ("identity", ""):
            # httpx's own wrapper of the body holds the response: take the transport's body if it offers it
            self._chunks = http.extensions.get(BODY_EXTENSION, http.stream)
            if self._chunks is not http.stream:
                # httpx's wrapper and the response refer to each other: a cycle that only the collector
                # frees, which takes the request and its headers with it.  The response is let go now, so
                # it refers to the transport's body directly (closing it still closes that) and is freed
                # at once instead.
                http.stream = self._chunks
        else:
            self._response = http

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[dict[str, Any]]:
        parser = SSEParser()
        async for data in self._body():
            payloads = parser.data_of(data)  # Letta's own framing: whole `data:` events (the hot path)
            if payloads is not None:
                for payload in payloads:
                    if payload.startswith(b"[DONE]"):
                        return
                    message = self._decoded(payload)
                    if message is not None:
                        yield message
                continue
            for sse in parser.feed(data):
                if sse.data.startswith("[DONE]"):
                    return
                message = self._message(sse)
                if message is not None:
                    yield message
        for sse in parser.close():
            if sse.data.startswith("[DONE]"):
                return
            message = self._message(sse)
            if message is not None:
                yield message

    @property
    def pushes(self) -> bool:
        """Whether the stream can hand its messages over from the loop's callbacks (:meth:`push`)."""
        return isinstance(self._chunks, PushBody)

    def push(self, take: Callable[[dict[str, Any]], object], on_end: Callable[[BaseException | None], object]) -> None:
        """Hand every message to ``take`` as its bytes arrive, then call ``on_end`` once: ``None`` at the
        stream's end (``data: [DONE]``, or the body's), or the exception iterating would have raised.

        Only when :attr:`pushes`.  The messages and the end are exactly those of ``async for`` (the same
        parsing, the same ``on_run``); ``take`` and ``on_end`` run in loop callbacks and must not raise
        (an exception from ``take`` ends the stream with it).  :meth:`pause` and :meth:`resume` hold the
        bytes back (backpressure); :meth:`close` ends the delivery.
        """
        body: PushBody = self._chunks
        parser = SSEParser()
        ended = False

        def end(error: BaseException | None) -> None:
            nonlocal ended
            if not ended:
                ended = True
                on_end(error)

        def on_data(data: bytes) -> None:
            if ended:
                return
            try:
                payloads = parser.data_of(data)
                if payloads is not None:
                    for payload in payloads:
                        if payload.startswith(b"[DONE]"):
                            end(None)
                            return
                        message = self._decoded(payload)
                        if message is not None:
                            take(message)
                    return
                self._take_events(parser.feed(data), take, end)
            except Exception as exc:
                end(exc)

        def on_body_end(error: BaseException | None) -> None:
            if error is None and not ended:
                try:
                    self._take_events(parser.close(), take, end)
                except Exception as exc:
                    error = exc
            end(error)

        body.push(on_data, on_body_end)

    def _take_events(
        self, events: list[ServerSentEvent], take: Callable[[dict[str, Any]], object], end: Callable[[None], None]
    ) -> None:
        for sse in events:
            if sse.data.startswith("[DONE]"):
                end(None)
                return
            message = self._message(sse)
            if message is not None:
                take(message)

    def pause(self) -> None:
        """Hold the pushed bytes back until :meth:`resume`."""
        self._chunks.pause()

    def resume(self) -> None:
        self._chunks.resume()

    def _body(self) -> AsyncIterator[bytes]:
        """The body's bytes: straight from the transport's stream (httpx's decoding and re-chunking
        layers would each cost a generator step per chunk and change nothing), or decoded."""
        if self._chunks is not None:
            return self._chunks.__aiter__()  # type: ignore[no-any-return]
        return self._response.aiter_bytes()  # type: ignore[no-any-return]

    def _decoded(self, payload: bytes) -> dict[str, Any] | None:
        """The message of a ``message`` event's undecoded data (:meth:`SSEParser.data_of`), as :meth:`_message`."""
        try:
            found = orjson.loads(payload)
        except orjson.JSONDecodeError:  # as the parser reads it: bad UTF-8 as replacement characters
            found = orjson.loads(payload.decode("utf-8", "replace"))
        message = found if type(found) is dict else None
        if message is not None and self.on_run is not None:
            self._note_run(message)
        return message

    def _note_run(self, message: dict[str, Any]) -> None:
        assert self.on_run is not None
        run_id = message.get("run_id")
        if isinstance(run_id, str):
            on_run, self.on_run = self.on_run, None
            on_run(run_id)

    def _message(self, sse: ServerSentEvent) -> dict[str, Any] | None:
        if sse.event == "message":  # the common case: no error response is needed to read it
            message = message_of(sse, self._client, None)
        else:
            message = message_of(sse, self._client, self._error_response())
        if message is not None and self.on_run is not None:
            self._note_run(message)
        return message

    def _error_response(self) -> httpx.Response:
        """An httpx response standing for this one in an error (status, request line, request id)."""
        if self._response is not None:
            return self._response  # type: ignore[no-any-return]
        headers = {"x-request-id": self._request_id} if self._request_id else None
        return httpx.Response(self.status_code, headers=headers, request=httpx.Request(*self._request_line))

    async def close(self) -> None:
        """Close the HTTP response (its connection goes back to the pool), as ``AsyncAPIResponse.close()`` does."""
        if self._response is not None:
            await self._response.aclose()
        else:
            await self._chunks.aclose()


def message_of(sse: ServerSentEvent, client: AsyncLetta, response: Any) -> dict[str, Any] | None:
    """The message one SSE event of Letta's carries, as letta-client's ``AsyncStream`` reads it.

    ``None`` for an event the SDK skips (a named event other than ``error``, or data
    that is not a JSON object); an ``error`` event raises the SDK's status error for
    ``response`` (which only an ``error`` event needs).
    """
    if sse.event == "error":
        body: object = sse.data
        try:
            body = orjson.loads(sse.data)
            message = f"{body}"
        except orjson.JSONDecodeError:
            message = sse.data or f"Error code: {response.status_code}"
        raise client._make_status_error(message, body=body, response=response)
    if sse.event != "message":  # the SDK yields only events without a name ("message" is the default name)
        return None
    found = orjson.loads(sse.data)
    return found if type(found) is dict else None


async def open_raw_stream(
    client: AsyncLetta, agent_id: str, conversation_id: str | None = None, **params: Any
) -> RawLettaStream:
    """``POST /v1/agents/{agent_id}/messages`` with ``streaming=True`` and ``params``; the open stream.

    With ``conversation_id``: ``POST /v1/conversations/{conversation_id}/messages`` instead (the
    same stream, in that conversation of the agent).
    Raises the SDK's errors (``NotFoundError``, ``APIConnectionError``, ...) before any
    message is read, as ``messages.create(streaming=True)`` does.
    """
    if conversation_id is not None:
        call = client.conversations.messages.with_streaming_response.create(conversation_id, streaming=True, **params)
    else:
        call = client.agents.messages.with_streaming_response.create(agent_id, streaming=True, **params)
    response = await call.__aenter__()
    return RawLettaStream(client, response)
