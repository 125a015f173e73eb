"""The committed adapters are what ``make adapters`` fits from the tree as it is.

The router's adapters (plano_extproc/router/data/*.npz) are serving data fitted on
modelbuild/data with the encoders as they embed at serving time. Editing the training data,
the fit, or how an encoder reads a text (batching, truncation) without re-fitting leaves
adapters that no command in the tree produces, and the benchmarks then measure a router
nobody can rebuild (the adapters shipped before this test had been fitted before the
encoders' batching changed; re-fitted, the development set's count moved from 231 to 229 of
279 and the independent set's from 195 to 200 of 253). This re-fits both
(about 70 s of two cores) and compares. The fit is deterministic (seeded, numpy); the
tolerance only allows for float rounding on another processor, far below the 0.02 a stale
adapter differed by.
"""

from __future__ import annotations

import numpy as np
import pytest

from plano_extproc.config import DEFAULT_ROUTER
from plano_extproc.modelbuild import train_adapter as ta
from plano_extproc.router import default_models_dir
from plano_extproc.router.embedded import DEFAULT_MEMBERS, Encoder, adapter_path

pytestmark = pytest.mark.unit

TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def corpus() -> ta.Corpus:
    return ta.read_corpus()


@pytest.mark.parametrize("member", [spec.name for spec in DEFAULT_MEMBERS])
def test_the_committed_adapter_is_a_refit_of_the_tree(member: str, corpus: ta.Corpus) -> None:
    model_dir = default_models_dir() / member
    with np.load(adapter_path(model_dir)) as committed_file:
        committed = {key: committed_file[key] for key in committed_file.files}
    # The scale is the one hyper-parameter `make adapters` sets per encoder (the Makefile).
    hyper = ta.Hyper(scale=float(committed["scale"]))
    vectors = ta.embed_corpus(Encoder(model_dir, DEFAULT_ROUTER), corpus)
    refit = ta.fit_adapter(corpus, vectors, hyper)
    assert sorted(refit) == sorted(committed)
    for key, value in refit.items():
        difference = float(np.abs(value - committed[key]).max())
        assert difference <= TOLERANCE, (
            f"{adapter_path(model_dir).name}: {key} differs from a re-fit by {difference:.4f}; "
            "run `make adapters` and re-measure the router (bench/router_bench.py)"
        )
