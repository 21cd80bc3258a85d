"""What a student's message carries to the agent: its text and the pictures pasted with it.

Letta 0.16.8 takes a message's content either as a string or as a list of parts; a picture is
an image part with a base64 source (``{"type": "image", "source": {"type": "base64",
"media_type": ..., "data": ...}}``), which Letta hands to the model as an OpenAI ``image_url``
part with a ``data:`` URL (verified against the real server).  :func:`letta_input` builds that
list; a message without pictures stays a plain string, exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import attrs
from letta_client.types.agents import ImageContentParam, TextContentParam

Part: TypeAlias = TextContentParam | ImageContentParam


@attrs.frozen
class Image:
    """One picture: its media type (``image/png``...) and its bytes as standard base64 (no ``data:`` prefix)."""

    media_type: str
    data: str


def letta_input(message: str, images: Sequence[Image] = ()) -> str | list[Part]:
    """The ``input`` of Letta's ``POST /v1/agents/{id}/messages`` for ``message`` and ``images``.

    Without images: ``message`` itself.  With images: a text part (omitted when the text is
    empty) followed by one image part per picture, in order.
    """
    if not images:
        return message
    parts: list[Part] = [{"type": "text", "text": message}] if message else []
    parts += [
        {"type": "image", "source": {"type": "base64", "media_type": image.media_type, "data": image.data}}
        for image in images
    ]
    return parts
