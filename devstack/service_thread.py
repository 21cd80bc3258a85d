"""The letta-stream service on real hypercorn, in a thread of the current process.

Tests need the real server (Quart's test client and httpx's ASGI transport buffer
whole bodies, so they cannot show streaming or disconnects) and also need to look
inside it: :meth:`ServiceThread.task_count` counts the tasks on the server's loop,
so a test can assert that a disconnect left nothing running.  The server stops
through hypercorn's ``shutdown_trigger`` (cancelling ``serve()`` is unreliable).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from types import TracebackType
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from app.factory import create_app
from app.launch import loop_factory
from app.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServiceThread:
    """``with ServiceThread(settings) as service: httpx.get(service.url + "/health")``."""

    def __init__(
        self,
        settings: Settings | None = None,
        port: int | None = None,
        *,
        app: Any = None,
        config: Config | None = None,
        worker_class: str = "asyncio",
    ) -> None:
        """Serve ``create_app(settings)``, or any ASGI ``app`` given instead; under ``config`` (its bind replaced),
        on the event loop ``worker_class`` names (``"asyncio"`` or ``"uvloop"``, as the launcher picks it)."""
        self.port = port or free_port()
        self.config = config
        self._loop_factory = loop_factory(worker_class)
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app if app is not None else create_app(settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"service:{self.port}", daemon=True)

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self._loop_factory) as runner:
                runner.run(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.config is not None:
            config = self.config
        else:
            config = Config()
            config.graceful_timeout = 2
            config.backlog = 4096  # a thousand students connecting at once must not overflow the accept queue
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = None
        self._loop.call_soon(self._ready.set)
        await serve(self.app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

    def run(self, coro: Any, timeout: float = 10) -> Any:
        """Run ``coro`` on the server's loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def task_count(self) -> int:
        """Tasks alive on the server's loop (excluding the one counting)."""

        async def count() -> int:
            return len(asyncio.all_tasks()) - 1

        result: int = self.run(count())
        return result

    def start(self) -> ServiceThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"the service did not start: {self._error!r}") from self._error
        import httpx

        for _ in range(100):
            try:
                httpx.get(self.url + "/", timeout=5)
                return self
            except httpx.TransportError:
                threading.Event().wait(0.05)
        raise RuntimeError("the service did not answer")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def __enter__(self) -> ServiceThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
