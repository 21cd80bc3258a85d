"""``POST /chat``'s reply from a whole turn, without an event loop."""

from __future__ import annotations

from letta_client.types.agents import LettaResponse

from app.bodies import ChatReply, ToolUse
from app.replies import chat_reply, turn_events
from pipeline.events import Error
from tests.pipeline import letta_chunks as c


def response(messages: list[object], stop: str = "end_turn") -> LettaResponse:
    return LettaResponse.model_construct(messages=messages, stop_reason=c.stop(stop), usage=c.usage())


def test_reply_gathers_text_reasoning_and_tools() -> None:
    events, mapper = turn_events(
        response(
            [
                c.reasoning("hm"),
                c.tool_call("t1", "conversation_search", "{}"),
                c.tool_return("t1", "ok"),
                c.assistant("Hi"),
            ]
        )
    )
    assert chat_reply("a1", events, mapper.run_id) == ChatReply(
        agent_id="a1",
        response="Hi",
        reasoning="hm",
        tools=[ToolUse("conversation_search", "{}", True)],
        stop_reason="end_turn",
        run_id="run-1",
    )


def test_a_failed_turn_is_its_error() -> None:
    events, mapper = turn_events(response([c.assistant("par")], stop="llm_api_error"))
    assert chat_reply("a1", events, mapper.run_id) == Error(
        "The agent stopped with an error (llm_api_error).", "llm_api_error"
    )
