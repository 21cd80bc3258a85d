"""A loopback TCP proxy that can be killed: Letta "dying" mid-stream, as the service sees it."""

from __future__ import annotations

from typing import Any

import anyio
from anyio.abc import SocketStream, TaskStatus


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target_port``; :meth:`kill` drops the listener and every connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._scope = anyio.CancelScope()
        self._connections: set[anyio.CancelScope] = set()

    async def run(self, *, task_status: TaskStatus[TcpProxy] = anyio.TASK_STATUS_IGNORED) -> None:
        with self._scope:
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
            self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started(self)
            async with listener:
                await listener.serve(self._handle)

    def kill(self) -> None:
        self._scope.cancel()

    def drop_connections(self) -> int:
        """Cut every open connection (a flaky network); new ones are still accepted.  Returns how many."""
        scopes, self._connections = self._connections, set()
        for scope in scopes:
            scope.cancel()
        return len(scopes)

    async def _handle(self, client: SocketStream) -> None:
        upstream = await anyio.connect_tcp("127.0.0.1", self.target_port)
        async with client, upstream, anyio.create_task_group() as tg:
            self._connections.add(tg.cancel_scope)
            tg.start_soon(_pump, client, upstream, tg.cancel_scope)
            tg.start_soon(_pump, upstream, client, tg.cancel_scope)
        self._connections.discard(tg.cancel_scope)


async def _pump(source: SocketStream, sink: SocketStream, scope: Any) -> None:
    try:
        async for data in source:
            await sink.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    scope.cancel()
