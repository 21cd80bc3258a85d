"""OpenWebUI's background calls on the OpenAI-compatible endpoint: recognised and answered here.

After (and sometimes before) each chat turn OpenWebUI asks the chat's own model for a
title, tags, follow-up suggestions and search queries.  Through a pipe these calls carry
``__task__``; through a connection they carry no marker at all (OpenWebUI drops the
request's ``metadata`` before calling a connection).  Sent to the agent, each would cost
a whole agent turn and put OpenWebUI's instructions into the student's memory.

What they look like (``open_webui/routers/tasks.py`` and the ``DEFAULT_*_PROMPT_TEMPLATE``
texts of ``open_webui/config.py``, 0.12.4): ``"stream": false`` and one user message
that starts with ``### Task:`` and quotes the chat inside ``<chat_history>…</chat_history>``;
the instructions before the history name the JSON key of the answer (``"title"``,
``"tags"``, ``"follow_ups"``, ``"queries"``, ``"text"``, ``"prompt"``).  A chat turn from
OpenWebUI's UI is always streamed, so it is never taken for a task.

Admins who customise the task prompt templates must keep ``### Task:`` and
``<chat_history>`` in them — or set a *task model* in OpenWebUI (Admin → Settings →
Interface), so that these calls never reach this service.
"""

from __future__ import annotations

import json
import re
from typing import Final

from .openai_api import CompletionRequest, message_text

TASK_MARKER: Final = "### Task:"
HISTORY_MARKER: Final = "<chat_history>"
TITLE_CHARS: Final = 50

TASK_BY_KEY: Final = {
    "title": "title_generation",
    "tags": "tags_generation",
    "follow_ups": "follow_up_generation",
    "queries": "query_generation",
    "text": "autocomplete_generation",
    "prompt": "image_prompt_generation",
}
_ANSWER_KEY = re.compile(r'"(' + "|".join(TASK_BY_KEY) + r')"\s*:')


def background_task(request: CompletionRequest) -> str | None:
    """The OpenWebUI task a request is (``"title_generation"``, ...), or ``None`` for a chat turn.

    A task-shaped request whose answer key is not known is ``"unknown_task"``.
    """
    if request.stream:
        return None
    prompts = [message_text(m) for m in request.messages if m.get("role") == "user"]
    if len(prompts) != 1:
        return None
    prompt = prompts[0].lstrip()
    if not prompt.startswith(TASK_MARKER) or HISTORY_MARKER not in prompt:
        return None
    instructions = prompt.split(HISTORY_MARKER, 1)[0]  # the chat itself cannot choose the task
    found = _ANSWER_KEY.search(instructions)
    return TASK_BY_KEY[found.group(1)] if found else "unknown_task"


def _first_user_line(prompt: str) -> str:
    history = prompt.split(HISTORY_MARKER, 1)[-1]
    for line in history.splitlines():
        if line.startswith("USER:"):
            return line.removeprefix("USER:")
    return ""


def title_for(prompt: str) -> str:
    """A title from the student's first message in the quoted chat (cut at :data:`TITLE_CHARS`)."""
    text = " ".join(_first_user_line(prompt).split())
    if len(text) > TITLE_CHARS:
        text = text[:TITLE_CHARS].rstrip() + "…"
    return text or "New conversation"


def task_answer(task: str, prompt: str, tag: str) -> str:
    """The JSON text OpenWebUI expects for ``task``; ``tag`` is the one tag a chat gets."""
    if task == "title_generation":
        return json.dumps({"title": title_for(prompt)}, ensure_ascii=False)
    answers: dict[str, object] = {
        "tags_generation": {"tags": [tag]},
        "follow_up_generation": {"follow_ups": []},
        "query_generation": {"queries": []},
        "autocomplete_generation": {"text": ""},
        "image_prompt_generation": {"prompt": ""},
    }
    return json.dumps(answers.get(task, {}), ensure_ascii=False)
