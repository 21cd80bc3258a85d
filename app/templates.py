"""Agent templates: what a new student's agent starts as.

A template is a value: the persona and the first notes about the student.  Letta
keeps both as memory blocks the agent can edit as it learns about the student.
"""

from __future__ import annotations

from typing import Final

import attrs
from letta_client.types import AgentType


@attrs.frozen
class AgentTemplate:
    agent_type: str
    persona: str
    human: str
    letta_agent_type: AgentType = "letta_v1_agent"

    def human_block(self, user_name: str | None) -> str:
        """The ``human`` block for a student (their name when OpenWebUI gave one)."""
        name = user_name.strip() if user_name and user_name.strip() else "not known yet"
        return self.human.format(name=name)


TUTOR: Final = AgentTemplate(
    agent_type="tutor",
    persona=(
        "I am a college-essay tutor. I help one student plan, draft and revise their application "
        "essays. I ask questions that draw out the student's own stories, give specific and honest "
        "feedback on structure, voice and clarity, and never write the essay for them. I remember "
        "what we worked on last time and pick up from there."
    ),
    human=(
        "Student's name: {name}.\n"
        "Essays in progress: none recorded yet.\n"
        "What they want help with: to be learnt in conversation."
    ),
)

TEMPLATES: Final[dict[str, AgentTemplate]] = {TUTOR.agent_type: TUTOR}
