"""Serve the service with several worker processes: ``python -m app.launch``.

``python -m app.launch [--config hypercorn.toml] [--bind HOST:PORT ...] [--workers N]``
reads hypercorn's settings from the toml file and serves ``app:app`` in ``workers``
processes (``workers = 0``: in this process).  It uses hypercorn only through its
public API — :meth:`hypercorn.config.Config.from_toml`,
:meth:`~hypercorn.config.Config.create_sockets` and
:func:`hypercorn.asyncio.serve` with a ``shutdown_trigger``.

**Sockets.**  The parent binds the listening sockets once (``config.create_sockets()``,
without ``SO_REUSEPORT``, so a second server on the same port fails to start instead of
silently taking half the traffic) and hands them to each worker it spawns
(multiprocessing ``spawn``: the socket objects travel as arguments, and multiprocessing
passes their file descriptors to the new process).  A worker rewrites its config's
binds to ``fd://<n>`` for those descriptors, so ``serve()`` listens on the shared
sockets and the kernel spreads new connections over the workers.

**Shutting down.**  On SIGTERM or SIGINT the parent sends SIGTERM to every worker (workers
ignore SIGINT: a Ctrl-C reaches the whole process group, and the parent decides).  A
worker's shutdown trigger then first awaits :meth:`app.ServiceEntry.drain` — open streams
end resumably and their turns are handed off — and only then returns, so hypercorn
closes its listeners and lets the remaining connections finish (``graceful_timeout``).
The drain bounds itself (``DRAIN_SECONDS``); the launcher stops waiting for it after
30 s all the same.  A worker whose parent is gone stops the same way.  The parent waits
up to ``30 + 2 * graceful_timeout + 15`` s for its workers (the drain, hypercorn's
graceful close, Quart's after-serving steps), then kills what is left.  It exits 0 when
every worker stopped cleanly.

**A worker that dies.**  A worker that dies *before* its app started (a bad setting:
the app's lifespan startup fails) makes the launcher stop the others and exit 1 — a
restart would fail the same way.  A worker that dies *after* it started serving is
logged and replaced by a new one on the same sockets (streams it held are lost; their
clients resume elsewhere); more than 5 such restarts within 60 s stop the launcher
with exit 1, so a worker that keeps crashing is not restarted forever.

**Metrics.**  With workers, each process counts its own metrics: the launcher sets
``PROMETHEUS_MULTIPROC_DIR`` for them (a fresh temporary directory, removed at exit; or
the directory given in the environment, emptied at start) and removes a dead worker's
live gauges, so ``GET /metrics`` in any worker shows every worker's counts
(:mod:`app.metrics`).

**Event loop.**  ``worker_class = "asyncio"``, or ``"uvloop"`` when uvloop is installed.

**Compared with ``hypercorn app:app -c hypercorn.toml``.**  hypercorn's own CLI still
works with the same file (its own worker processes, stopped through a shared event).
There the app learns of the shutdown only at ASGI lifespan shutdown, after hypercorn has
closed its listeners and waited ``graceful_timeout`` for open connections — open
streams are cut at that timeout instead of being drained first, and the metrics of its
workers are not combined (each ``/metrics`` answer is one worker's).  Deploy with this
launcher.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from types import FrameType
from typing import Any, Final, Protocol

from hypercorn.asyncio import serve
from hypercorn.config import Config, Sockets
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

DEFAULT_CONFIG: Final = Path("hypercorn.toml")
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"  # the same name as app.metrics.MULTIPROC_ENV
DRAIN_LIMIT: Final = 30.0  # a backstop: drain() bounds itself (DRAIN_SECONDS)
MAX_RESTARTS: Final = 5
RESTART_WINDOW: Final = 60.0
SHUTDOWN_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)

log = logging.getLogger("app.launch")

ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]


class Service(Protocol):
    """What the launcher serves: an ASGI app that can be drained (:class:`app.ServiceEntry`)."""

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None: ...

    async def drain(self) -> None: ...


class LaunchError(RuntimeError):
    """The launcher cannot start with this configuration."""


def setup_logging() -> None:
    """The launcher's lines on stderr, formatted like hypercorn's (the app's logging is left alone)."""
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s [%(process)d] [%(levelname)s] launch: %(message)s", "[%Y-%m-%d %H:%M:%S %z]")
    )
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def load_config(path: Path, bind: Sequence[str] | None = None, workers: int | None = None) -> Config:
    """hypercorn's config from ``path``, with ``bind`` and ``workers`` overridden when given."""
    config = Config.from_toml(path)
    if bind:
        config.bind = list(bind)
    if workers is not None:
        config.workers = workers
    if config.workers < 0:
        raise LaunchError(f"workers must be 0 (serve in-process) or more, not {config.workers}")
    loop_factory(config.worker_class)  # fail here, before any worker starts
    return config


def loop_factory(worker_class: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for ``worker_class``: None for asyncio's own, uvloop's when asked for and installed."""
    if worker_class == "asyncio":
        return None
    if worker_class == "uvloop":
        try:
            uvloop: Any = importlib.import_module("uvloop")
        except ImportError as exc:
            raise LaunchError('worker_class = "uvloop" but uvloop is not installed') from exc
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    raise LaunchError(
        f'worker_class = "{worker_class}": the service needs "asyncio" or "uvloop" (Quart is asyncio-only)'
    )


def service() -> Service:
    """The ASGI entry point ``app:app`` (an :class:`app.ServiceEntry`), imported when needed."""
    from app import app as entry

    return entry


# -- one server (a worker process, or this process with workers = 0) ---------------------------


class _Announcing:
    """Passes everything to ``app``; calls ``started`` once the app's lifespan startup completed."""

    def __init__(self, app: ASGIApp, started: Callable[[], None]) -> None:
        self.app = app
        self.started = started

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def announce(message: Any) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                self.started()

        await self.app(scope, receive, announce)


async def serve_until_shutdown(
    config: Config, shutdown: asyncio.Event, started: Callable[[], None] = lambda: None, *, entry: Service | None = None
) -> None:
    """Serve ``app:app`` (or ``entry``) until ``shutdown`` is set; then drain the app, then let hypercorn shut down."""
    app = service() if entry is None else entry

    async def drain_then_shut_down() -> None:
        await shutdown.wait()
        began = time.monotonic()
        log.info("draining")
        try:
            await asyncio.wait_for(app.drain(), timeout=DRAIN_LIMIT)
            log.info("drained in %.0f ms", (time.monotonic() - began) * 1000)
        except TimeoutError:
            log.warning("drain still running after %.0f s; stopping anyway", DRAIN_LIMIT)
        except Exception:
            log.exception("drain failed; stopping anyway")

    await serve(_Announcing(app, started), config, shutdown_trigger=drain_then_shut_down)


def _run(
    main: Callable[[asyncio.Event], Awaitable[None]], config: Config, on_loop: Callable[[asyncio.Event], None]
) -> None:
    with asyncio.Runner(loop_factory=loop_factory(config.worker_class)) as runner:

        async def with_shutdown() -> None:
            shutdown = asyncio.Event()
            on_loop(shutdown)
            await main(shutdown)

        runner.run(with_shutdown())


def serve_in_process(config: Config) -> int:
    """``workers = 0``: serve here; SIGTERM/SIGINT drain and stop."""

    def on_loop(shutdown: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for sig in SHUTDOWN_SIGNALS:
            loop.add_signal_handler(sig, shutdown.set)

    config = copy.copy(config)
    config.workers = 1  # what serve() expects: this one process
    try:
        _run(lambda shutdown: serve_until_shutdown(config, shutdown, _ready_in_process), config, on_loop)
    except Exception as exc:  # the app did not start (a bad setting), or the sockets could not be bound
        log.error("the service failed: %s", exc)
        return 1
    return 0


def _ready_in_process() -> None:
    log.info("ready: serving in this process")


def _fd_binds(sockets: list[Any]) -> list[str]:
    # detach(): the config's fd:// binds own the descriptors from here on
    return [f"fd://{sock.detach()}" for sock in sockets]


def worker_main(config: Config, sockets: Sockets, started: EventType) -> None:
    """A worker process: serve on the parent's sockets until SIGTERM (or the parent is gone)."""
    setup_logging()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C for everyone
    config.bind = _fd_binds(sockets.secure_sockets if config.ssl_enabled else sockets.insecure_sockets)
    if config.ssl_enabled:
        config.insecure_bind = _fd_binds(sockets.insecure_sockets)
        config.quic_bind = _fd_binds(sockets.quic_sockets)
    config.workers = 1  # serve() serves one process; the count meant nothing more here

    def on_loop(shutdown: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, shutdown.set)
        parent = multiprocessing.parent_process()
        if parent is not None:  # readable once the parent exits: stop rather than serve orphaned

            def orphaned() -> None:
                loop.remove_reader(parent.sentinel)
                log.warning("the launcher is gone; stopping")
                shutdown.set()

            loop.add_reader(parent.sentinel, orphaned)

    try:
        _run(lambda shutdown: serve_until_shutdown(config, shutdown, started.set), config, on_loop)
    except Exception as exc:
        log.error("worker failed: %s", exc)
        sys.exit(1)


# -- the parent ----------------------------------------------------------------------------------


class Launcher:
    """Starts ``config.workers`` worker processes on shared sockets and stops them on a signal."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.ctx = multiprocessing.get_context("spawn")
        self.workers: dict[int, tuple[BaseProcess, EventType]] = {}  # pid → (process, started)
        self.shutting_down = False
        self.failed = 0  # the exit code when something went wrong
        self.restarts: deque[float] = deque()
        self.shutdown_deadline: float | None = None
        self.metrics_dir: str | None = None
        self.own_metrics_dir = False
        self.serving: set[int] = set()  # workers whose app started

    @property
    def shutdown_timeout(self) -> float:
        """How long workers get to stop: the drain, hypercorn's graceful close, Quart's after-serving steps."""
        return DRAIN_LIMIT + 2 * self.config.graceful_timeout + 15

    def run(self) -> int:
        """Serve until stopped; the exit code."""
        self._prepare_metrics_dir()
        listening = copy.copy(self.config)
        listening.workers = 1  # no SO_REUSEPORT: one set of sockets, shared
        try:
            sockets = listening.create_sockets()
        except OSError as exc:
            self._remove_metrics_dir()
            raise LaunchError(f"cannot listen on {', '.join(self.config.bind)}: {exc}") from exc
        previous = {sig: signal.getsignal(sig) for sig in SHUTDOWN_SIGNALS}
        try:
            for sig in SHUTDOWN_SIGNALS:
                signal.signal(sig, self._on_signal)
            for _ in range(self.config.workers):
                self._spawn(sockets)
            self._supervise(sockets)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for sock in [*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets]:
                sock.close()
            self._remove_metrics_dir()
        return self.failed

    def _prepare_metrics_dir(self) -> None:
        given = os.environ.get(MULTIPROC_ENV)
        if given:
            self.metrics_dir = given
            os.makedirs(given, exist_ok=True)
            for leftover in Path(given).glob("*.db"):  # counts of an earlier run are not ours
                leftover.unlink()
        else:
            self.metrics_dir = tempfile.mkdtemp(prefix="letta-stream-metrics-")
            self.own_metrics_dir = True
            os.environ[MULTIPROC_ENV] = self.metrics_dir  # inherited by the workers spawned from now on

    def _remove_metrics_dir(self) -> None:
        if self.own_metrics_dir and self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            if os.environ.get(MULTIPROC_ENV) == self.metrics_dir:
                del os.environ[MULTIPROC_ENV]

    def _spawn(self, sockets: Sockets) -> None:
        started = self.ctx.Event()
        process = self.ctx.Process(
            target=worker_main, kwargs={"config": self.config, "sockets": sockets, "started": started}
        )
        # Start it with SIGINT ignored: it keeps ignoring it while Python starts up (a Ctrl-C
        # reaches the whole process group; the parent stops the workers itself).
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
        finally:
            signal.signal(signal.SIGINT, handler)
        assert process.pid is not None
        self.workers[process.pid] = (process, started)
        log.info("worker %d started", process.pid)
        if self.shutting_down:  # a shutdown signal arrived while it was starting
            os.kill(process.pid, signal.SIGTERM)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.workers))
        self.shut_down()

    def shut_down(self) -> None:
        """Tell every worker to drain and stop (idempotent)."""
        if not self.shutting_down:
            self.shutting_down = True
            self.shutdown_deadline = time.monotonic() + self.shutdown_timeout
        for process, _ in self.workers.values():
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)

    def _supervise(self, sockets: Sockets) -> None:
        while self.workers:
            sentinels = [process.sentinel for process, _ in self.workers.values()]
            multiprocessing.connection.wait(sentinels, timeout=0.2)
            self._announce()
            for pid, (process, started) in list(self.workers.items()):
                if process.exitcode is None:
                    continue
                process.join()
                del self.workers[pid]
                self.serving.discard(pid)
                self._forget_metrics(pid)
                self._exited(pid, process.exitcode, started.is_set(), sockets)
            if self.shutdown_deadline is not None and time.monotonic() > self.shutdown_deadline:
                for pid, (process, _) in self.workers.items():
                    if process.exitcode is None:
                        log.error("worker %d did not stop within %.0f s: killing it", pid, self.shutdown_timeout)
                        process.kill()
                self.failed = self.failed or 1
                self.shutdown_deadline = None

    def _announce(self) -> None:
        if self.shutting_down:
            return
        for pid, (_, started) in self.workers.items():
            if pid not in self.serving and started.is_set():
                self.serving.add(pid)
                log.info("worker %d serving", pid)
                if len(self.serving) == self.config.workers:
                    log.info("ready: all %d workers serving", self.config.workers)

    def _exited(self, pid: int, code: int, had_started: bool, sockets: Sockets) -> None:
        if self.shutting_down:
            if code == -signal.SIGTERM and not had_started:
                log.info("worker %d stopped before its app started", pid)
            elif code != 0:
                log.error("worker %d exited with %d while stopping", pid, code)
                self.failed = self.failed or 1
            else:
                log.info("worker %d stopped", pid)
            return
        if not had_started:
            log.error("worker %d exited (%d) before the app started: stopping", pid, code)
            self.failed = 1
            self.shut_down()
            return
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
            self.restarts.popleft()
        if len(self.restarts) >= MAX_RESTARTS:
            log.error(
                "worker %d exited (%d); %d restarts within %.0f s: stopping", pid, code, MAX_RESTARTS, RESTART_WINDOW
            )
            self.failed = 1
            self.shut_down()
            return
        self.restarts.append(now)
        log.warning("worker %d exited (%d) while serving: starting another", pid, code)
        self._spawn(sockets)

    def _forget_metrics(self, pid: int) -> None:
        if self.metrics_dir is None:
            return
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, serve until stopped; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m app.launch", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="hypercorn's toml file (hypercorn.toml)")
    parser.add_argument("--bind", action="append", help="HOST:PORT to listen on, instead of the file's (repeatable)")
    parser.add_argument("--workers", type=int, help="worker processes, instead of the file's (0: serve in-process)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        config = load_config(args.config, args.bind, args.workers)
    except (LaunchError, OSError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    if config.workers == 0:
        log.info("serving in this process on %s", ", ".join(config.bind))
        return serve_in_process(config)
    log.info("serving on %s with %d workers", ", ".join(config.bind), config.workers)
    try:
        return Launcher(config).run()
    except LaunchError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    # Run the module's importable twin, so the workers' target pickles as app.launch.worker_main.
    from app.launch import main as launch

    sys.exit(launch())
