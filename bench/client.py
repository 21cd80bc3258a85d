"""A lean SSE client on raw asyncio sockets: one cost model for both sides of a comparison.

Both the emulator (Letta's framing) and the service (our framing) are read with the
same code, so the difference between the two is the service's, not the client's.
Every frame is time-stamped with ``CLOCK_MONOTONIC`` when its bytes arrive.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, field

from .letta_emulator import parse_stamps

TOKEN = "bench-token"
"""The bearer token the bench's service processes are started with (sent on every request)."""


class BenchError(AssertionError):
    """A sanity check failed: the bench must fail loudly."""


@dataclass
class StreamResult:
    """What one stream delivered, with arrival times (ns, CLOCK_MONOTONIC)."""

    started_ns: int
    status: int = 0
    headers_ns: int = 0
    first_text_ns: int = 0
    text_frames: int = 0
    stamps: list[tuple[int, int, int]] = field(default_factory=list)  # (seq, sent_ns, recv_ns)
    keepalives: list[int] = field(default_factory=list)
    ended: bool = False  # a terminal event (done / [DONE]) arrived
    ended_ns: int = 0
    other: list[str] = field(default_factory=list)
    stamped: bool = True  # text carries the emulator's stamps (False: plain text, kept in ``text``)
    text: list[str] = field(default_factory=list)
    text_ns: list[int] = field(default_factory=list)  # arrival of every text frame

    def delays_ms(self) -> list[float]:
        return [(recv - sent) / 1e6 for _, sent, recv in self.stamps]

    def check(self, count: int, label: str) -> None:
        """All ``count`` deltas arrived, once each, in order, and the stream ended."""
        seqs = [s for s, _, _ in self.stamps]
        if seqs != list(range(count)):
            missing = sorted(set(range(count)) - set(seqs))[:5]
            raise BenchError(
                f"{label}: got {len(seqs)} of {count} deltas (in order: {seqs == sorted(seqs)}, "
                f"first missing {missing}, other events {self.other[:3]})"
            )
        if not self.ended:
            raise BenchError(f"{label}: the stream did not end with done/[DONE] (other: {self.other[:3]})")


async def open_stream(
    host: str, port: int, path: str, body: dict[str, object], stamped: bool = True, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, StreamResult]:
    """Send the POST; return once the request is written (the result's clock starts here).

    ``rcvbuf`` shrinks the client's socket receive buffer (a slow phone rather than loopback's megabytes).
    """
    if rcvbuf is None:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    else:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    payload = json.dumps(body).encode()
    result = StreamResult(started_ns=time.monotonic_ns(), stamped=stamped)
    writer.write(
        b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\naccept: text/event-stream\r\n"
        b"authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s"
        % (path.encode(), host.encode(), port, TOKEN.encode(), len(payload), payload)
    )
    await writer.drain()
    return reader, writer, result


async def read_stream(reader: asyncio.StreamReader, result: StreamResult) -> None:
    """Read status, headers and the SSE body into ``result`` until the body ends."""
    head = await reader.readuntil(b"\r\n\r\n")
    result.headers_ns = time.monotonic_ns()
    lines = head.decode("latin-1").split("\r\n")
    result.status = int(lines[0].split(" ")[1])
    chunked = any(ln.lower().startswith("transfer-encoding:") and "chunked" in ln.lower() for ln in lines)
    if result.status != 200:  # an error answer: keep its body for the report, do not wait for more
        length = next((int(ln.split(":")[1]) for ln in lines if ln.lower().startswith("content-length:")), 0)
        result.other.append((await reader.readexactly(length)).decode(errors="replace")[:200])
        return
    buffer = b""
    while True:
        if chunked:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return
            data = await reader.readexactly(size + 2)
            data = data[:-2]
        else:
            data = await reader.read(65536)
            if not data:
                return
        now = time.monotonic_ns()
        buffer += data
        *frames, buffer = buffer.split(b"\n\n")
        for frame in frames:
            _frame(frame, now, result)


def _frame(frame: bytes, now: int, result: StreamResult) -> None:
    data = None
    for line in frame.split(b"\n"):
        if line.startswith(b"data:"):
            data = line[5:].strip()
        elif line.startswith(b":"):
            result.keepalives.append(now)
    if data is None:
        return
    if data == b"[DONE]":
        result.ended, result.ended_ns = True, now
        return
    obj = json.loads(data)
    kind = obj.get("message_type") or obj.get("type")
    if kind in ("assistant_message", "message"):
        result.text_frames += 1
        result.text_ns.append(now)
        if not result.first_text_ns:
            result.first_text_ns = now
        if result.stamped:
            result.stamps.extend((seq, sent, now) for seq, sent in parse_stamps(obj["content"]))
        else:
            result.text.append(obj["content"])
    elif kind == "ping":
        result.keepalives.append(now)
    elif kind == "done":
        result.ended, result.ended_ns = True, now
    elif kind not in ("stop_reason", "usage_statistics"):
        result.other.append(data.decode()[:200])


async def one_stream(
    host: str, port: int, path: str, body: dict[str, object], limit_s: float = 60, stamped: bool = True
) -> StreamResult:
    """Open, read to the end (within ``limit_s``), close."""
    reader, writer, result = await open_stream(host, port, path, body, stamped)
    try:
        await asyncio.wait_for(read_stream(reader, result), limit_s)
    finally:
        writer.close()
    return result
