"""Where the test stacks' Postgres keeps its files: a data dir made anew never gets an old database."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from devstack.postgres import SLOT_MARK, pgdata_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="slots are used only as root")


def _private_data_dir(tmp_path: Path) -> Path:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    return private / "stack"


def test_a_data_dir_keeps_its_slot(tmp_path: Path) -> None:
    root, data = tmp_path / "repo", _private_data_dir(tmp_path)
    first = pgdata_for(root, data)
    assert first.parent.parent == root / ".stack" / "pgdata"
    first.mkdir(parents=True)
    (first / "PG_VERSION").write_text("18")
    assert pgdata_for(root, data) == first
    assert (first / "PG_VERSION").exists(), "the same data dir keeps its database"
    assert (data / SLOT_MARK).read_text() == first.parent.name


def test_a_data_dir_made_anew_at_the_same_path_starts_empty(tmp_path: Path) -> None:
    """pytest's --basetemp reused: the old database (agents bound to a gone LLM port) must not come back."""
    root, data = tmp_path / "repo", _private_data_dir(tmp_path)
    first = pgdata_for(root, data)
    first.mkdir(parents=True)
    (first / "PG_VERSION").write_text("18")
    shutil.rmtree(data)
    data.mkdir()
    again = pgdata_for(root, data)
    assert again == first
    assert not (again / "PG_VERSION").exists()
