"""A message with pictures as Letta's content parts (the shape verified against Letta 0.16.8 in tests/integration)."""

from __future__ import annotations

from pipeline.content import Image, letta_input


def test_text_alone_stays_a_string() -> None:
    assert letta_input("Hello") == "Hello"


def test_pictures_follow_the_text_in_order() -> None:
    images = [Image("image/png", "AAAA"), Image("image/gif", "BBBB")]
    assert letta_input("Look", images) == [
        {"type": "text", "text": "Look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "BBBB"}},
    ]


def test_a_picture_alone_has_no_empty_text_part() -> None:
    assert letta_input("", [Image("image/webp", "CCCC")]) == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "CCCC"}}
    ]
