"""The garbage collector is tuned once the app has started (``app/collector.py``).

Each case runs in a fresh interpreter: the tuning is once per process, and this test
process has long since been tuned by other tests' apps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, json
    from app.factory import create_app
    from app.settings import settings_from_env
    from app import collector
    from tests.app.fake_letta import make_fake

    async def main():
        before = {{"thresholds": gc.get_threshold(), "frozen": gc.get_freeze_count()}}
        app = create_app(settings_from_env(), client=make_fake())
        async with app.test_app():
            after = {{"thresholds": gc.get_threshold(), "frozen": gc.get_freeze_count()}}
            again = collector.tune(123)  # once per process: the first outcome, nothing re-frozen
            print(json.dumps({{"before": before, "after": after,
                              "again": None if again is None else list(again.thresholds),
                              "frozen_after_again": gc.get_freeze_count()}}))

    asyncio.run(main())
    """
)


def run_app(tmp_path: Path, **env: str) -> dict[str, object]:
    script = tmp_path / "tuned.py"
    script.write_text(SCRIPT.replace("{{", "{").replace("}}", "}"))
    inherited = {k: v for k, v in os.environ.items() if k != "GC_YOUNG_THRESHOLD"}
    environ = {**inherited, "PYTHONPATH": str(REPO), "SERVICE_AUTH": "off", **env}
    done = subprocess.run([sys.executable, str(script)], env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize("young", [None, "20000"])
def test_startup_freezes_the_heap_and_raises_the_young_threshold(tmp_path: Path, young: str | None) -> None:
    found = run_app(tmp_path, **({"GC_YOUNG_THRESHOLD": young} if young else {}))
    expected = int(young) if young else 50_000
    assert found["before"] == {"thresholds": [700, 10, 10], "frozen": 0}
    after = found["after"]
    assert isinstance(after, dict)
    assert after["thresholds"] == [expected, 4, 100]
    assert after["frozen"] > 10_000  # modules, clients, the app: what startup built
    assert found["again"] == [expected, 4, 100]
    assert found["frozen_after_again"] == after["frozen"]


def test_zero_leaves_cpython_defaults(tmp_path: Path) -> None:
    found = run_app(tmp_path, GC_YOUNG_THRESHOLD="0")
    assert found["after"] == {"thresholds": [700, 10, 10], "frozen": 0}
