"""Types shared by the stages: the two ends of an anyio memory object stream and the stage shapes."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeAlias

from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

Receive: TypeAlias = MemoryObjectReceiveStream[Any]
Send: TypeAlias = MemoryObjectSendStream[Any]

Source: TypeAlias = Callable[[Send], Coroutine[Any, Any, object]]
"""Produces items into ``send`` and closes it when done."""

Stage: TypeAlias = Callable[[Receive, Send], Coroutine[Any, Any, object]]
"""Reads ``recv`` until it ends, writes ``send``, and closes both when done."""
