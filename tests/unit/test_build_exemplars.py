"""modelbuild/build_exemplars.py: when an encoder's exemplars must be embedded again."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from plano_extproc.modelbuild import build_exemplars as be
from plano_extproc.modelbuild import train_adapter as ta
from plano_extproc.modelbuild.wheels import MANIFEST_NAME
from plano_extproc.router import exemplars

pytestmark = pytest.mark.unit


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    model_dir, data = tmp_path / "encoder", tmp_path / "data"
    model_dir.mkdir()
    (model_dir / MANIFEST_NAME).write_text('{"recipe": 1}\n')
    shutil.copytree(ta.DATA, data)
    return model_dir, data


def test_the_source_follows_the_training_routes_and_the_encoder(
    layout: tuple[Path, Path],
) -> None:
    model_dir, data = layout
    before = be.source(model_dir, data)
    assert be.source(model_dir, data) == before
    train = sorted(data.glob("train_*.jsonl"))[0]
    train.write_text(train.read_text() + "\n")
    edited = be.source(model_dir, data)
    assert edited != before
    (model_dir / MANIFEST_NAME).write_text('{"recipe": 2}\n')
    rebuilt = be.source(model_dir, data)
    assert rebuilt not in (before, edited)
    # Files other than the routes' (follow-ups, off-route requests) are not embedded.
    (data / "closings.jsonl").write_text("")
    assert be.source(model_dir, data) == rebuilt


def test_a_missing_garbled_or_stale_file_is_not_current(layout: tuple[Path, Path]) -> None:
    model_dir, _ = layout
    assert not be.is_current(model_dir)
    target = model_dir / exemplars.FILE_NAME
    target.write_bytes(b"not a zip")
    assert not be.is_current(model_dir)
    seen = exemplars.Exemplars(
        np.eye(2, dtype=np.float32), np.array([0, 0]), np.eye(2, dtype=np.float32)[:1], ("r",)
    )
    np.savez(target, **exemplars.arrays(seen, "an older source"))
    assert not be.is_current(model_dir)
    np.savez(target, **exemplars.arrays(seen, be.source(model_dir)))
    assert be.is_current(model_dir)
    loaded = exemplars.load(target)
    assert loaded is not None and loaded.route_names == ("r",)
    assert loaded.requests.dtype == np.float32


def test_no_file_no_exemplars(tmp_path: Path) -> None:
    assert exemplars.load(tmp_path / exemplars.FILE_NAME) is None
