"""The router's lexical reading: the words a turn shares with each route's description."""

from __future__ import annotations

import math
import random
import sys
import threading

import numpy as np
import pytest
import snowballstemmer
from hypothesis import given, settings
from hypothesis import strategies as st

from plano_extproc.router import lexical
from plano_extproc.router.base import OTHER
from plano_extproc.router.embedded import LEXICAL_WEIGHT, Adapter, Views, member_logits
from plano_extproc.router.lexical import READ_CHARS, RouteWords, stems

pytestmark = pytest.mark.unit

DESCRIPTIONS = [
    "write code: writing new functions and scripts from a description",
    "explain code: explaining how existing code works, line by line",
    "fix bug: fixing errors and crashes in code",
]


def test_stems_read_word_forms_alike_and_leave_filler_out() -> None:
    assert stems("Writing") == stems("write") == {"write"}
    assert stems("explains the explanation") >= {"explain"}
    assert stems("can you help me with this for the user") == frozenset()
    assert stems("an ox is at it") == frozenset()  # under three letters


def test_stems_read_only_the_start_of_a_long_turn() -> None:
    assert stems("x" * READ_CHARS + " translate") == {"x" * READ_CHARS}
    assert "translat" in stems("translate " + "x" * READ_CHARS)


def test_a_word_weighs_more_the_fewer_routes_use_it() -> None:
    words = RouteWords.of(DESCRIPTIONS)
    n = len(DESCRIPTIONS)
    assert words.weights[0]["write"] == pytest.approx(math.log((n + 1) / 1))
    assert words.weights[0]["code"] == pytest.approx(math.log((n + 1) / n))


def test_scores_favour_the_route_whose_own_words_the_turn_uses() -> None:
    words = RouteWords.of(DESCRIPTIONS)
    texts = ["please explain what this code does", "thanks, bye", "fix this"]
    scores = words.scores([stems(t) for t in texts])
    assert scores.shape == (3, 3)
    assert np.allclose(scores.sum(axis=1), 0.0, atol=1e-6)  # centred: "other" is not moved
    assert int(np.argmax(scores[0])) == 1
    assert np.allclose(scores[1], 0.0)  # no word shared: no route moves
    assert int(np.argmax(scores[2])) == 2
    assert RouteWords.of([]).scores([stems("anything")]).shape == (1, 0)
    assert words.shared(stems(texts[0])) == {
        0: ["code"],
        1: ["code", "explain"],
        2: ["code"],
    }


PLAIN = Adapter(np.eye(2, dtype=np.float32), 0.0, np.zeros(2, np.float32), 0.5, 20.0)


def test_the_words_tip_a_near_tie_but_not_a_clear_gap() -> None:
    v = Views(["q"], [0])
    lead = 1.0 / LEXICAL_WEIGHT * 0.02  # a word lead worth 0.02 of similarity
    lexical = np.array([[-lead / 2, lead / 2]], dtype=np.float32)
    near_tie = np.array([[0.51, 0.50, 0.0]])
    assert int(np.argmax(member_logits(near_tie, v, PLAIN))) == 0
    assert int(np.argmax(member_logits(near_tie, v, PLAIN, lexical))) == 1
    clear = np.array([[0.70, 0.50, 0.0]])
    assert int(np.argmax(member_logits(clear, v, PLAIN, lexical))) == 0


def test_centred_words_leave_other_where_the_similarities_put_it() -> None:
    v = Views(["q"], [0])
    sims = np.array([[0.2, 0.2, 0.5]])
    lexical = np.array([[-1.0, 1.0]], dtype=np.float32)
    logp = member_logits(sims, v, PLAIN, lexical)
    assert [*["a", "b"], OTHER][int(np.argmax(logp))] == OTHER
    assert logp[-1] == pytest.approx(member_logits(sims, v, PLAIN)[-1], abs=1e-3)


def test_threads_stemming_at_once_get_the_stems_one_thread_gets() -> None:
    # The router decides in several threads; a stemmer shared between them swapped words
    # mid-stem (wrong stems, IndexErrors). Thread switches are forced often, and the cache is
    # emptied before every word so that each is stemmed anew.
    words = [w + end for w in ("explain", "translat", "organiz", "generat", "connect")
             for end in ("ing", "ed", "ations", "izing", "ers", "fully")]  # fmt: skip
    alone = snowballstemmer.stemmer("english")
    expected = {w: alone.stemWord(w) for w in words}
    wrong: list[object] = []

    def stem_many(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(300):
                lexical._stem.cache_clear()
                word = rnd.choice(words)
                if lexical._stem(word) != expected[word]:
                    wrong.append(word)
        except Exception as e:
            wrong.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=stem_many, args=(seed,)) for seed in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
        lexical._stem.cache_clear()
    assert wrong == []


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(
    descriptions=st.lists(st.text(max_size=200), max_size=6),
    texts=st.lists(st.text(max_size=3000), min_size=1, max_size=4),
)
def test_any_text_and_descriptions_give_finite_centred_scores(
    descriptions: list[str], texts: list[str]
) -> None:
    words = RouteWords.of(descriptions)
    scores = words.scores([stems(t) for t in texts])
    assert scores.shape == (len(texts), len(descriptions))
    assert np.isfinite(scores).all()
    if descriptions:
        assert np.allclose(scores.sum(axis=1), 0.0, atol=1e-3)
    for route, shared in words.shared(stems(texts[0])).items():
        assert 0 <= route < len(descriptions) and shared == sorted(set(shared))
