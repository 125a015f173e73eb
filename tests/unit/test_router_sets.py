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

from fresh_routes import read_topic, topic_files  # noqa: E402

pytestmark = pytest.mark.unit

TOPICS = topic_files()


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
        topic = read_topic(path)
        corpus = topic.corpus
        assert corpus.names == names and len(corpus.plain_descriptions) == 36
        assert len(topic.others) == 40
        assert len(corpus.requests) == len(corpus.request_route) == 36 * 16
        assert len(corpus.followups) == len(corpus.followup_route) == 36 * 5


def test_nothing_of_it_is_in_the_training_data() -> None:
    training = read_corpus()
    seen = {
        t.strip().lower()
        for t in (*training.requests, *training.followups, *training.others, *training.closings)
    }
    trained_names = set(training.names)
    for path in TOPICS:
        topic = read_topic(path)
        texts = [*topic.corpus.requests, *topic.corpus.followups, *topic.others]
        # Short follow-ups ("shorter please") may coincide by nature; anything longer may not.
        copied = [t for t in texts if len(t) >= 40 and t.strip().lower() in seen]
        assert not copied, f"{path.name}: {copied[:3]}"
        assert not set(topic.corpus.names) & trained_names, path.name
