"""The int8 models the router serves stay close to the exact fp32 graphs that the export
tests check against their references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from plano_extproc.modelbuild.export_e5 import ensure_e5
from plano_extproc.modelbuild.export_encoder import SERVING_MODEL, ensure_encoder
from plano_extproc.router.embedded import DEFAULT_MEMBERS

pytestmark = pytest.mark.unit

MODELS = Path(__file__).resolve().parents[2] / "build" / "models"
TEXTS = [
    "can u whip up a go program that watches a folder and pings slack",
    "Écris-moi un poème sur la mer en hiver, s'il te plaît.",
    "为什么我的 Python 脚本报 UnicodeDecodeError",
    "thanks, that's all for today!",
    "Summarize this memo for my boss: " + "The quarterly review found costs up 4%. " * 20,
]


def embed(model: Path, tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rows = []
    for text in texts:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        (vector,) = session.run(
            ["sentence_embedding"], {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        )
        rows.append(vector[0])
    return np.array(rows)


@pytest.mark.parametrize("name", [m.name for m in DEFAULT_MEMBERS])
def test_int8_serving_model_is_close_to_fp32(name: str) -> None:
    ensure_encoder(MODELS, quiet=True)
    ensure_e5(MODELS, quiet=True)
    model_dir = MODELS / name
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    exact = embed(model_dir / "model.onnx", tokenizer, TEXTS)
    served = embed(model_dir / SERVING_MODEL, tokenizer, TEXTS)
    cosine = (exact * served).sum(axis=1)
    assert cosine.min() > 0.97, cosine
    # What matters for routing: the similarities between texts barely move.
    assert np.abs(exact @ exact.T - served @ served.T).max() < 0.03


def test_the_pruned_e5_tokenizer_spells_the_same_text() -> None:
    from plano_extproc.config import DEFAULT_ROUTER
    from plano_extproc.modelbuild.export_e5 import SERVING_TOKENIZER
    from plano_extproc.router.embedded import Encoder

    model_dir = ensure_e5(MODELS, quiet=True)
    full = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    pruned = Tokenizer.from_file(str(model_dir / SERVING_TOKENIZER))
    vocab_map = np.load(model_dir / "vocab_map.npy")
    assert pruned.get_vocab_size() < 70_000 < full.get_vocab_size()
    for text in TEXTS:
        exact = full.encode(text).ids
        mapped = vocab_map[pruned.encode(text).ids].tolist()
        # Other pieces maybe, never other text, and only a few more of them.
        assert full.decode(mapped) == full.decode(exact)
        assert len(mapped) <= 1.3 * len(exact)
    # And the router's encoder, which uses it, embeds like the full tokenizer does.
    encoder = Encoder(model_dir, DEFAULT_ROUTER)
    served = encoder.embed(TEXTS, 256)
    reference = embed(model_dir / SERVING_MODEL, full, TEXTS)
    assert ((served * reference).sum(axis=1) > 0.97).all()
