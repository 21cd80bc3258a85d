"""Pictures in a chat request: checked before anything reaches Letta.

The wire shape (``POST /chat``, ``POST /chat/stream``) is ``images: [{"media_type", "data"}]``:
``data`` is the picture's bytes in standard base64, without a ``data:`` prefix.  A request is
refused with a 400 naming the field at fault (``images[2].data``) when there are more than
``MAX_IMAGES`` pictures, a media type is not PNG/JPEG/GIF/WebP, ``data`` is not base64, its
bytes are not a picture of the declared type, or a picture is larger than ``MAX_IMAGE_BYTES``
decoded.  ``/v1/chat/completions`` gets its pictures from OpenAI ``image_url`` parts with
``data:`` URLs (:func:`images_from_parts`) and checks them the same way.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any, Final

from pipeline.content import Image

from .errors import InvalidRequest

MEDIA_TYPES: Final = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
"""The media types a model takes, with the first bytes a file of each type starts with."""

_DATA_URL: Final = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)(?P<params>(;[^;,]*)*);base64,(?P<data>.*)", re.S)


def _starts_right(media_type: str, raw: bytes) -> bool:
    if media_type == "image/webp":
        return raw[:4] == b"RIFF" and raw[8:12] == b"WEBP"
    return raw.startswith(MEDIA_TYPES[media_type])


def checked_images(
    images: Sequence[Image],
    *,
    max_count: int,
    max_bytes: int,
    field: str = "images",
    names: Sequence[str] | None = None,
) -> list[Image]:
    """The pictures as checked (media types in lower case), or :class:`InvalidRequest` naming
    ``<field>[i].media_type`` or ``<field>[i].data`` for the first bad one.

    ``names`` (one per picture) names where each picture came from instead, for both its type and its data.
    """
    if len(images) > max_count:
        raise InvalidRequest(f"at most {max_count} images may be sent with one message", field=field)
    for index, image in enumerate(images):
        at = f"{field}[{index}]"
        kind_field, data_field = (names[index], names[index]) if names else (f"{at}.media_type", f"{at}.data")
        media_type = image.media_type.strip().lower()
        if media_type not in MEDIA_TYPES:
            allowed = ", ".join(sorted(MEDIA_TYPES))
            raise InvalidRequest(f"{kind_field}: the media type must be one of {allowed}", field=kind_field)
        if image.data.startswith("data:"):
            raise InvalidRequest(f"{data_field} must be plain base64, without a data: prefix", field=data_field)
        if len(image.data) * 3 // 4 > max_bytes + 2:  # before decoding: base64 is 4 characters per 3 bytes
            raise InvalidRequest(f"{data_field}: the image is larger than {max_bytes} bytes", field=data_field)
        try:
            raw = base64.b64decode(image.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(f"{data_field} is not valid base64", field=data_field) from exc
        if not raw:
            raise InvalidRequest(f"{data_field}: the image is empty", field=data_field)
        if len(raw) > max_bytes:
            raise InvalidRequest(f"{data_field}: the image is larger than {max_bytes} bytes", field=data_field)
        if not _starts_right(media_type, raw):
            raise InvalidRequest(f"{data_field}: the bytes are not a {media_type} image", field=data_field)
    return [Image(image.media_type.strip().lower(), image.data) for image in images]


def images_from_parts(content: Any, field: str) -> tuple[list[Image], list[str]]:
    """The pictures of an OpenAI message ``content`` (``image_url`` parts with ``data:`` URLs), and where each was.

    ``field`` names the content (``messages[3].content``): each picture's place is
    ``<field>[j].image_url.url``.  A part whose URL is not a base64 ``data:`` URL is a 400
    naming that place (this service fetches no URLs).
    """
    if not isinstance(content, list):
        return [], []
    found: list[Image] = []
    names: list[str] = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "image_url":
            continue
        where = f"{field}[{index}].image_url.url"
        image_url = part.get("image_url")
        url = image_url.get("url") if isinstance(image_url, dict) else image_url
        match = _DATA_URL.fullmatch(url) if isinstance(url, str) else None
        if match is None:
            raise InvalidRequest(f"{where} must be a base64 data: URL", field=where)
        found.append(Image(match["type"], match["data"]))
        names.append(where)
    return found, names
