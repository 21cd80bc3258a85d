"""The letta-stream HTTP service (``hypercorn app:app``)."""

from .factory import create_app

app = create_app()

__all__ = ["app", "create_app"]
