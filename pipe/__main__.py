"""Drive the OpenWebUI pipe from a terminal, printing what OpenWebUI would receive.

    python -m pipe "Help me start my essay"            # against task up's service
    python -m pipe --url http://127.0.0.1:8100 --user-id ada "Hi"

Each yielded chunk and each emitted status is printed as one JSON line, then the
answer as the student would read it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import anyio

from .letta_pipe import Pipe


async def drive(args: argparse.Namespace) -> int:
    pipe = Pipe()
    pipe.valves = Pipe.Valves(SERVICE_URL=args.url, SERVICE_TOKEN=args.token, ENABLE_THINKING=not args.no_thinking)

    async def emitter(event: dict[str, Any]) -> None:
        print("emit ", json.dumps(event, ensure_ascii=False), flush=True)

    body = {"model": "letta_tutor", "stream": True, "messages": [{"role": "user", "content": args.message}]}
    user = {"id": args.user_id, "name": args.user_name, "valves": Pipe.UserValves()}
    result = await pipe.pipe(body, __user__=user, __event_emitter__=emitter, __chat_id__="demo-chat")
    answer = []
    if isinstance(result, str):
        print("return", json.dumps(result))
        return 0
    async for chunk in result:
        print("yield", json.dumps(chunk, ensure_ascii=False), flush=True)
        if isinstance(chunk, dict):
            answer.append(chunk["choices"][0]["delta"].get("content", ""))
    print("\nanswer:", "".join(answer))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m pipe", description=__doc__.splitlines()[0])
    parser.add_argument("message")
    parser.add_argument("--url", default=os.environ.get("LETTA_STREAM_URL", "http://127.0.0.1:8100"))
    parser.add_argument("--token", default=os.environ.get("LETTA_STREAM_TOKEN", ""))
    parser.add_argument("--user-id", default="demo-student")
    parser.add_argument("--user-name", default="Demo Student")
    parser.add_argument("--no-thinking", action="store_true")
    result: int = anyio.run(drive, parser.parse_args())
    return result


if __name__ == "__main__":
    sys.exit(main())
