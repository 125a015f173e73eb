"""The fresh-routes evaluation set (bench/router/fresh/) is well formed and stays apart from
the adapters' training data: a row copied into training would make its figure meaningless."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from plano_extproc.modelbuild.train_adapter import read_corpus

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench/router"))

from fresh_routes import FRESH, read_group  # noqa: E402

pytestmark = pytest.mark.unit

TOPICS = sorted(p for p in FRESH.glob("*.jsonl") if not p.name.endswith(".other.jsonl"))


def test_four_topics_of_36_routes() -> None:
    assert [p.stem for p in TOPICS] == [
        "code",
        "documents",
        "multilingual",
        "reasoning-creative-career",
    ]
    for path in TOPICS:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        names = [row["name"] for row in rows]
        assert len(names) == 36 and len(set(names)) == 36, path.name
        for row in rows:
            assert set(row) == {"name", "description", "requests", "followups"}
            assert row["description"].strip()
            assert len(row["requests"]) == 16 and len(row["followups"]) == 5, row["name"]
            assert all(isinstance(t, str) and t.strip() for t in row["requests"])
        corpus, others = read_group(path)
        assert len(corpus.descriptions) == 36 and len(others) == 40
        assert len(corpus.requests) == len(corpus.request_route) == 36 * 16
        assert len(corpus.followups) == len(corpus.followup_route) == 36 * 5


def test_nothing_of_it_is_in_the_training_data() -> None:
    training = read_corpus()
    seen = {
        t.strip().lower()
        for t in (*training.requests, *training.followups, *training.others, *training.closings)
    }
    trained_names = {d.split(":", 1)[0].replace(" ", "_") for d in training.descriptions}
    for path in TOPICS:
        corpus, others = read_group(path)
        texts = [*corpus.requests, *corpus.followups, *others]
        # Short follow-ups ("shorter please") may coincide by nature; anything longer may not.
        copied = [t for t in texts if len(t) >= 40 and t.strip().lower() in seen]
        assert not copied, f"{path.name}: {copied[:3]}"
        names = {d.split(":", 1)[0] for d in corpus.descriptions}
        assert not names & trained_names, path.name
