"""router/exemplars.py: training requests lent to a config's routes by description, and a
turn read by its nearest ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from plano_extproc.router.exemplars import Exemplars, lend, nearest, votes


def scores(views: np.ndarray, seen: Exemplars, lent: np.ndarray) -> np.ndarray:
    """What the router adds per view: the nearest requests' votes."""
    top, top_sims = nearest(views, seen)
    return votes(top, top_sims, seen, lent)


pytestmark = pytest.mark.unit


def unit(*rows: list[float]) -> np.ndarray:
    m = np.array(rows, dtype=np.float32)
    normalised: np.ndarray = m / np.linalg.norm(m, axis=1, keepdims=True)
    return normalised


# Two training routes ("write code" along x, "explain code" along y), two requests each.
ROUTES = unit([1, 0, 0], [0, 1, 0])
SEEN = Exemplars(
    requests=unit([1, 0.1, 0], [1, 0, 0.1], [0.1, 1, 0], [0, 1, 0.1]),
    request_route=np.array([0, 0, 1, 1]),
    route_vectors=ROUTES,
    route_names=("write", "explain"),
)


def test_a_training_route_lends_to_the_config_route_its_description_is_near() -> None:
    config = unit([0, 1, 0.05], [1, 0, 0.05])  # explain first, then write
    lent = lend(ROUTES, config)
    assert lent.shape == (2, 2)
    assert lent[0, 1] > 0.9 and lent[0, 0] < 0.05  # write lends to write
    assert lent[1, 0] > 0.9 and lent[1, 1] < 0.05  # explain to explain
    assert (lent.sum(axis=1) < 1.0).all()  # the rest is lent to none


def test_a_training_route_unlike_every_config_route_lends_next_to_nothing() -> None:
    lent = lend(unit([0, 0, 1]), unit([1, 0, 0], [0, 1, 0]))
    assert lent.sum() < 0.01


def test_a_turn_votes_for_the_route_its_nearest_requests_are_lent_to() -> None:
    config = unit([0, 1, 0.05], [1, 0, 0.05])
    lent = lend(ROUTES, config)
    votes = scores(unit([0.9, 0.2, 0]), SEEN, lent)
    assert votes.shape == (1, 2)
    assert votes[0, 1] > votes[0, 0]  # near the "write" requests: the write route
    assert votes.sum() == pytest.approx(0.0, abs=1e-6)  # centred: "other" does not move


def test_nearest_are_in_order_and_bounded_by_the_requests_there_are() -> None:
    top, sims = nearest(unit([1, 0, 0]), SEEN, k=10)
    assert top.shape == (1, 4)
    assert list(sims[0]) == sorted(sims[0], reverse=True)
    assert set(top[0, :2]) == {0, 1}


def test_without_routes_drops_their_requests_only() -> None:
    known = SEEN.without_routes(np.array([True, False]))
    assert list(known.request_route) == [1, 1]
    assert known.route_vectors is SEEN.route_vectors
    lent = lend(ROUTES, unit([1, 0, 0], [0, 1, 0]))
    # A turn near the dropped route's requests now hears only the other route's.
    votes = scores(unit([1, 0.05, 0]), known, lent)
    assert votes[0, 1] > votes[0, 0]


def test_no_exemplars_no_votes() -> None:
    empty = SEEN.without_routes(np.array([True, True]))
    votes = scores(unit([1, 0, 0], [0, 1, 0]), empty, lend(ROUTES, unit([1, 0, 0])))
    assert votes.shape == (2, 1)
    assert not votes.any()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    hnp.arrays(np.float32, (3, 8), elements=st.floats(-1, 1, width=32)),
    hnp.arrays(np.float32, (4, 8), elements=st.floats(-1, 1, width=32)),
    st.integers(1, 6),
)
def test_votes_are_finite_and_centred_for_any_vectors(
    views: np.ndarray, config: np.ndarray, routes: int
) -> None:
    rng = np.random.default_rng(routes)
    seen = Exemplars(
        rng.normal(size=(12, 8)).astype(np.float32),
        rng.integers(0, routes, size=12),
        rng.normal(size=(routes, 8)).astype(np.float32),
        tuple(f"r{i}" for i in range(routes)),
    )
    votes = scores(views, seen, lend(seen.route_vectors, config))
    assert votes.shape == (3, 4)
    assert np.isfinite(votes).all()
    assert np.allclose(votes.sum(axis=1), 0.0, atol=1e-4)
    assert (np.abs(votes) <= 1.0).all()
