"""The letta-stream HTTP service (``hypercorn app:app``).

``app`` is built from the environment on first access, so importing the package
(tests, tools) never requires the service's settings.
"""

from __future__ import annotations

from typing import Any

from .factory import create_app

__all__ = ["app", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        built = create_app()
        globals()["app"] = built
        return built
    raise AttributeError(name)
