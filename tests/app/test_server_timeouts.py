"""The shipped ``hypercorn.toml``'s timeouts, on real hypercorn, scaled down together.

A student's stream is a request the client sends once and then only reads: no server timeout
may cut it while it runs (hypercorn's ``read_timeout`` counts the whole connection's silence,
response included, so the file must not set one).  A connection that sends no request, or
trickles one, is still closed: by ``keep_alive_timeout``.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx

from app.factory import create_app
from app.launch import load_config
from app.settings import Settings
from devstack.service_thread import ServiceThread

from .fake_letta import make_fake

TOML = Path(__file__).parents[2] / "hypercorn.toml"
KEEP_ALIVE = 0.5
"""The shipped ``keep_alive_timeout`` scaled to this; every other timeout by the same factor."""


def scaled_config() -> tuple[object, float]:
    config = load_config(TOML)
    config.workers = 1  # served in this process (hypercorn.asyncio.serve warns about any other count)
    factor = KEEP_ALIVE / config.keep_alive_timeout
    config.keep_alive_timeout = KEEP_ALIVE
    if config.read_timeout is not None:
        config.read_timeout *= factor
    config.graceful_timeout = 2
    config.accesslog = None
    return config, factor


def test_a_stream_outlives_every_scaled_server_timeout_while_the_client_only_reads() -> None:
    config, factor = scaled_config()
    letta = make_fake()
    letta.agents.messages.reply = ["one", " two", " three"]
    letta.store.hold_after = 2  # the run waits, mid-answer, until told to go on
    app = create_app(Settings(keepalive_interval=0.2, throttle_window=0.0), client=letta)
    held = 130 * factor  # longer than 120 s (the read_timeout the file used to set) at this scale
    with ServiceThread(app=app, config=config) as service:  # type: ignore[arg-type]
        agent_id = httpx.post(f"{service.url}/agents", json={"user_id": "ada"}).json()["agent_id"]
        events: list[dict[str, object]] = []
        with httpx.stream(
            "POST", f"{service.url}/chat/stream", json={"agent_id": agent_id, "message": "hi"}, timeout=10
        ) as response:
            began = time.monotonic()
            released = False
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                if not released and time.monotonic() - began > held:

                    async def go() -> None:
                        letta.store.go.set()

                    service.run(go())
                    released = True
        assert released, "the stream ended before the hold was over"
        assert events[-1]["type"] == "done", events[-1]
        text = "".join(str(e["content"]) for e in events if e["type"] == "message")
        assert text == "one two three", events


def test_a_connection_that_sends_no_request_or_trickles_one_is_closed() -> None:
    config, _ = scaled_config()
    with ServiceThread(app=create_app(Settings(), client=make_fake()), config=config) as service:  # type: ignore[arg-type]
        silent = socket.create_connection(("127.0.0.1", service.port))
        silent.settimeout(10)
        assert silent.recv(1) == b""  # closed by the server, not by the 10 s guard (that raises)
        silent.close()

        trickle = socket.create_connection(("127.0.0.1", service.port))
        trickle.settimeout(10)
        closed = False
        try:
            for byte in b"GET /health HTTP/1.1\r\nhost: x\r\n" * 10:  # never ends its headers
                trickle.send(bytes([byte]))
                time.sleep(KEEP_ALIVE / 10)
        except OSError:
            closed = True
        else:
            closed = trickle.recv(1) == b""
        finally:
            trickle.close()
        assert closed
