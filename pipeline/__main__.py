"""Stream one reply of a Letta agent to the terminal, reusing the service's stages.

    python -m pipeline --agent-id agent-... "Hello"            # asyncio
    python -m pipeline --backend trio --agent-id agent-... "Hi"  # the same stages under trio

The answer goes to stdout as it is written; statuses, reasoning and tool calls go to
stderr.  Exit status 1 when the turn ends with an error.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

import anyio
from letta_client import APIConnectionError, APIStatusError, AsyncLetta

from .events import Done, Error, Event, Reasoning, Status, Text, ToolCall, ToolResult
from .letta_map import LettaMapper
from .letta_turn import describe_upstream_error, start_turn
from .presets import letta_events


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("message", help="what to say to the agent")
    parser.add_argument("--agent-id", required=True)
    parser.add_argument("--base-url", default=os.environ.get("LETTA_BASE_URL", "http://127.0.0.1:8283"))
    parser.add_argument("--token", default=os.environ.get("LETTA_API_KEY"))
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--no-thinking", action="store_true", help="ask for no reasoning and show none")
    parser.add_argument("--message-level", action="store_true", help="whole messages instead of tokens")
    parser.add_argument("--window", type=float, default=0.05, help="coalescing window in seconds")
    return parser.parse_args(argv)


def render(event: Event, out: TextIO, err: TextIO) -> None:
    """Show one event on a terminal."""
    if isinstance(event, Text):
        out.write(event.content)
        out.flush()
    elif isinstance(event, Status):
        err.write(f"[{event.content}]\n")
    elif isinstance(event, Reasoning):
        err.write(event.content)
    elif isinstance(event, ToolCall):
        err.write(f"\n[tool {event.name}({event.arguments})]\n")
    elif isinstance(event, ToolResult):
        err.write(f"[tool {event.name}: {'ok' if event.ok else 'failed'}]\n")
    elif isinstance(event, Done):
        out.write("\n")
        err.write(f"[done: {event.stop_reason}]\n")
    elif isinstance(event, Error):
        err.write(f"\n[error {event.code}: {event.message}]\n")


async def chat(args: argparse.Namespace) -> int:
    """Run one turn; the exit status."""
    async with AsyncLetta(base_url=args.base_url, api_key=args.token) as client:
        try:
            turn = await start_turn(
                client,
                args.agent_id,
                args.message,
                stream_tokens=not args.message_level,
                thinking=not args.no_thinking,
            )
        except (APIConnectionError, APIStatusError) as exc:
            sys.stderr.write(f"{describe_upstream_error(exc).message}\n")
            return 2
        status = 0
        mapper = LettaMapper(show_reasoning=not args.no_thinking)
        async with letta_events(turn, mapper=mapper, window=args.window) as events:
            async for event in events:
                render(event, sys.stdout, sys.stderr)
                if isinstance(event, Error):
                    status = 1
        return status


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    result: int = anyio.run(chat, args, backend=args.backend)
    return result


if __name__ == "__main__":
    sys.exit(main())
