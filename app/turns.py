"""One turn at a time per agent.

Letta interleaves concurrent messages to one agent, so a second message while a
turn is running is refused with 409 rather than queued: the student sees "still
answering" at once, and nothing waits on a lock it may never get.
"""

from __future__ import annotations

import attrs

from .errors import ApiError


class TurnInProgress(ApiError):
    status = 409
    code = "turn_in_progress"


@attrs.define
class TurnGuard:
    _busy: set[str] = attrs.field(factory=set)

    def claim(self, agent_id: str) -> None:
        """Mark ``agent_id`` busy, or raise :class:`TurnInProgress`.  Pair with :meth:`release`."""
        if agent_id in self._busy:
            raise TurnInProgress("the agent is still answering the previous message; try again when it is done")
        self._busy.add(agent_id)

    def release(self, agent_id: str) -> None:
        self._busy.discard(agent_id)

    def busy(self, agent_id: str) -> bool:
        return agent_id in self._busy
