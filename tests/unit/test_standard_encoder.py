"""A user's own sentence encoder (``routing.model_dir``) in the standard ONNX export
(optimum, sentence-transformers): a ``last_hidden_state`` output, pooled over the attention
mask and normalized by the router in numpy. The tiny model here is built with the model
builds' shared graph builder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from plano_extproc.config import DEFAULT_ROUTER, RouterSettings, parse_config
from plano_extproc.modelbuild.graph import GraphBuilder
from plano_extproc.router import RouterLoadError
from plano_extproc.router.embedded import Encoder, EncoderRouter, mean_pooled

pytestmark = pytest.mark.unit

WORDS = ["[PAD]", "[UNK]", "write", "a", "poem", "about", "the", "sea", "fix", "this", "bug"]
WORDS += ["python", "code", "stories", "poems", "song", "lyrics", "new", "from", "spec"]
DIM = 16


def build_encoder(out: Path, *, layout: str = "optimum", output: str = "last_hidden_state") -> Path:
    """A word-embedding "encoder": last_hidden_state = tanh(word + type embeddings) through
    a linear layer; enough to check the interface, the pooling and the normalization."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    g = GraphBuilder()
    words = g.const("word_embeddings", rng.normal(size=(len(WORDS), DIM)))
    types = g.const("type_embeddings", rng.normal(size=(2, DIM)) * 0.1)
    x = g.op(
        "Add",
        [
            g.op("Gather", [words, "input_ids"], "word", axis=0),
            g.op("Gather", [types, "token_type_ids"], "type", axis=0),
        ],
        "embedded",
    )
    x = g.op("Tanh", [x], "tanh")
    weight = rng.normal(size=(DIM, DIM)).astype(np.float32)
    hidden = g.linear(x, weight, np.zeros(DIM, np.float32), "dense")
    g.nodes.append(helper.make_node("Identity", [hidden], [output], name="out"))
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
            for n in ("input_ids", "attention_mask", "token_type_ids")]  # fmt: skip
    # sentence-transformers' export leaves the hidden size symbolic: the router measures it.
    width: int | str = "hidden" if layout == "sentence-transformers" else DIM
    shape = ["batch", "sequence", width]
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, shape)]
    graph = helper.make_graph(g.nodes, "tiny_encoder", ints, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out.mkdir(parents=True)
    where = out / "onnx" if layout == "sentence-transformers" else out
    where.mkdir(exist_ok=True)
    onnx.save(model, str(where / "model.onnx"))
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(out / "tokenizer.json"))
    return out


def settings(model_dir: Path) -> RouterSettings:
    return dataclasses.replace(DEFAULT_ROUTER, model_dir=model_dir, threads=1)


def reference(model_dir: Path, texts: list[str]) -> np.ndarray:
    """sentence-transformers' mean pooling + normalization, one text at a time (no padding),
    from the raw model output."""
    import onnxruntime as ort

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    path = model_dir / "model.onnx"
    if not path.is_file():
        path = model_dir / "onnx" / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rows = []
    for text in texts:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        (hidden,) = session.run(None, {**feed, "token_type_ids": np.zeros_like(ids)})
        mean = hidden[0].mean(axis=0)
        rows.append(mean / np.linalg.norm(mean))
    return np.array(rows)


@pytest.mark.parametrize("layout", ["optimum", "sentence-transformers"])
def test_a_standard_export_is_pooled_and_normalized(tmp_path: Path, layout: str) -> None:
    model_dir = build_encoder(tmp_path / "my-encoder", layout=layout)
    encoder = Encoder(model_dir, settings(model_dir))
    assert (encoder.output, encoder.pooled, encoder.token_types, encoder.dim) == (
        "last_hidden_state",
        False,
        True,
        DIM,
    )
    # Different lengths in one batch: padding must not change any text's vector.
    texts = ["write a poem about the sea", "fix this python bug", "sea"]
    got = encoder.embed(texts, max_tokens=64)
    assert got.shape == (3, DIM) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(got, reference(model_dir, texts), atol=1e-5)


def test_mean_pooling_ignores_masked_tokens() -> None:
    hidden = np.array([[[3.0, 4.0], [100.0, -7.0]], [[0.0, 0.0], [0.0, 0.0]]], np.float32)
    mask = np.array([[1, 0], [0, 0]])
    pooled = mean_pooled(hidden, mask)
    np.testing.assert_allclose(pooled[0], [0.6, 0.8], atol=1e-6)
    assert np.all(np.isfinite(pooled)) and np.all(pooled[1] == 0)  # nothing to pool: zeros


def test_the_router_uses_a_users_encoder_alone(tmp_path: Path) -> None:
    model_dir = build_encoder(tmp_path / "my-encoder")
    config = parse_config(
        f"""
llm_providers:
  - model: openai/gpt-5.2
    access_key: k
    default: true
  - model: anthropic/claude-sonnet-4-5
    access_key: k
    routing_preferences:
      - name: creative_writing
        description: stories poems song lyrics
      - name: code_generation
        description: new python code from a spec
routing:
  model_dir: {model_dir}
""",
        str(tmp_path / "c.yaml"),
        {},
    )
    router = EncoderRouter.load(tmp_path / "unused", config.routes, config.router)
    assert [m.spec.name for m in router.members] == ["my-encoder"]
    choice = router.choose([{"role": "user", "content": "write a poem about the sea"}])
    assert set(choice.scores) == {"creative_writing", "code_generation", "other"}
    assert abs(sum(choice.scores.values()) - 1) < 1e-6


def test_an_encoder_without_a_known_output_is_refused(tmp_path: Path) -> None:
    model_dir = build_encoder(tmp_path / "odd", output="logits")
    with pytest.raises(RouterLoadError, match="sentence_embedding or last_hidden_state"):
        Encoder(model_dir, settings(model_dir))
