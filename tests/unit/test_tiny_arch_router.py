"""The tiny Qwen2 ONNX model that stands in for Arch-Router-1.5B in tests."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jinja2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from tests.tiny_arch_router import (
    DEFAULT_SYSTEM,
    build_tiny_arch_router,
    load_weights,
    reference_logits,
)

pytestmark = pytest.mark.unit

ATOL = 1e-4
PROMPT = (
    "<|im_start|>user\nWrite a Python function that sorts a list of numbers<|im_end|>\n"
    '<|im_start|>assistant\n{"route": "code_generation"}'
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_arch_router(tmp_path_factory.mktemp("tiny_arch_router"))


@pytest.fixture(scope="module")
def config(model_dir: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((model_dir / "config.json").read_text())
    return loaded


@pytest.fixture(scope="module")
def session(model_dir: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(model_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def prompt_ids(tokenizer: Tokenizer) -> list[int]:
    ids: list[int] = tokenizer.encode(PROMPT).ids
    return ids


def _layers(config: dict[str, object]) -> int:
    return int(str(config["num_hidden_layers"]))


def _empty_past(config: dict[str, object], batch: int) -> dict[str, np.ndarray]:
    kv = int(str(config["num_key_value_heads"]))
    head_dim = int(str(config["hidden_size"])) // int(str(config["num_attention_heads"]))
    empty = np.zeros((batch, kv, 0, head_dim), dtype=np.float32)
    return {
        f"past_key_values.{i}.{kind}": empty
        for i in range(_layers(config))
        for kind in ("key", "value")
    }


def _run(
    session: ort.InferenceSession,
    config: dict[str, object],
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    position_ids: np.ndarray,
    past: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One forward step; returns the logits and the cache ready to feed as the next past."""
    feed = {
        "input_ids": np.asarray(input_ids, dtype=np.int64),
        "attention_mask": np.asarray(attention_mask, dtype=np.int64),
        "position_ids": np.asarray(position_ids, dtype=np.int64),
        **(past if past is not None else _empty_past(config, len(input_ids))),
    }
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, feed), strict=True))
    present = {
        name.replace("present.", "past_key_values."): value
        for name, value in outputs.items()
        if name.startswith("present.")
    }
    return outputs["logits"], present


def _full(session: ort.InferenceSession, config: dict[str, object], ids: list[int]) -> np.ndarray:
    batch = np.array([ids])
    logits, _ = _run(session, config, batch, np.ones_like(batch), np.arange(len(ids))[None])
    return logits


def test_io_matches_optimum_export(model_dir: Path, config: dict[str, object]) -> None:
    model = onnx.load(str(model_dir / "model.onnx"), load_external_data=False)

    def dims(value: onnx.ValueInfoProto) -> list[str | int]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    total = "past_sequence_length + sequence_length"
    kv_in: list[str | int] = ["batch_size", 2, "past_sequence_length", 16]
    kv_out: list[str | int] = ["batch_size", 2, total, 16]
    expected_in: dict[str, list[str | int]] = {
        "input_ids": ["batch_size", "sequence_length"],
        "attention_mask": ["batch_size", total],
        "position_ids": ["batch_size", "sequence_length"],
    }
    expected_out: dict[str, list[str | int]] = {
        "logits": ["batch_size", "sequence_length", int(str(config["vocab_size"]))]
    }
    for i in range(_layers(config)):
        for kind in ("key", "value"):
            expected_in[f"past_key_values.{i}.{kind}"] = kv_in
            expected_out[f"present.{i}.{kind}"] = kv_out
    assert {v.name: dims(v) for v in model.graph.input} == expected_in
    assert {v.name: dims(v) for v in model.graph.output} == expected_out
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    # Every initializer lives in the external data file.
    assert model.graph.initializer
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    total_bytes = sum(p.stat().st_size for p in model_dir.iterdir())
    assert total_bytes < 2 * 1024 * 1024


def test_configs_agree_with_tokenizer(model_dir: Path, config: dict[str, object]) -> None:
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    generation = json.loads((model_dir / "generation_config.json").read_text())
    ids = {t: tokenizer.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}

    assert config["model_type"] == "qwen2"
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["vocab_size"] == tokenizer.get_vocab_size()
    assert config["eos_token_id"] == ids["<|im_end|>"]
    assert generation["eos_token_id"] == [ids["<|im_end|>"], ids["<|endoftext|>"]]
    assert tok_config["eos_token"] == "<|im_end|>"
    assert tok_config["pad_token"] == "<|endoftext|>"
    assert tok_config["bos_token"] is None
    decoded = {int(k): v["content"] for k, v in tok_config["added_tokens_decoder"].items()}
    assert decoded == {v: k for k, v in ids.items()}


def test_full_sequence_matches_numpy_reference(
    model_dir: Path, session: ort.InferenceSession, config: dict[str, object], tokenizer: Tokenizer
) -> None:
    # Two unpadded rows of equal length, so batching is covered as well.
    rows = [tokenizer.encode(t).ids[:12] for t in (PROMPT, "The quick brown fox jumps over it")]
    ids = np.array(rows)
    mask, positions = np.ones_like(ids), np.tile(np.arange(ids.shape[1]), (2, 1))
    logits, present = _run(session, config, ids, mask, positions)
    expected = reference_logits(model_dir, ids, mask, positions)
    assert logits.shape == (2, 12, config["vocab_size"])
    np.testing.assert_allclose(logits, expected, atol=ATOL, rtol=0)
    assert present["past_key_values.0.key"].shape == (2, 2, 12, 16)

    # Random weights can still give near-uniform or constant predictions; a router scoring
    # candidates needs neither.
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    assert probs.max(-1).mean() > 20 / int(str(config["vocab_size"]))  # logits.shape[-1]
    assert len(set(logits.argmax(-1).ravel().tolist())) > 6


def test_cached_steps_match_full_forward(
    session: ort.InferenceSession, config: dict[str, object], prompt_ids: list[int]
) -> None:
    full = _full(session, config, prompt_ids)
    k = 9
    prefix = np.array([prompt_ids[:k]])
    logits, past = _run(session, config, prefix, np.ones_like(prefix), np.arange(k)[None])
    np.testing.assert_allclose(logits[0], full[0, :k], atol=ATOL, rtol=0)
    for pos in range(k, len(prompt_ids)):
        step = np.array([[prompt_ids[pos]]])
        logits, past = _run(session, config, step, np.ones((1, pos + 1)), np.array([[pos]]), past)
        assert logits.shape == (1, 1, config["vocab_size"])
        assert past["past_key_values.1.value"].shape[2] == pos + 1
        np.testing.assert_allclose(logits[0, -1], full[0, pos], atol=ATOL, rtol=0)


def test_expanded_cache_scores_candidates_in_one_batch(
    session: ort.InferenceSession, config: dict[str, object], tokenizer: Tokenizer
) -> None:
    """A batch-1 prefill cache repeated to N rows, then N continuations scored at once."""
    prefix = tokenizer.encode("<|im_start|>assistant\n").ids
    texts = ('{"route": "code_generation"}', '{"route": "other"}', "Summarize this article")
    candidates = [tokenizer.encode(t).ids[:3] for t in texts]
    assert all(len(c) == 3 for c in candidates)
    p = np.array([prefix])
    _, past = _run(session, config, p, np.ones_like(p), np.arange(len(prefix))[None])
    n, total = len(candidates), len(prefix) + 3
    expanded = {name: np.repeat(value, n, axis=0) for name, value in past.items()}
    positions = np.tile(np.arange(len(prefix), total), (n, 1))
    logits, _ = _run(
        session, config, np.array(candidates), np.ones((n, total)), positions, expanded
    )
    for row, cand in enumerate(candidates):
        full = _full(session, config, prefix + cand)
        np.testing.assert_allclose(logits[row], full[0, len(prefix) :], atol=ATOL, rtol=0)


def test_left_padding_matches_unpadded(
    model_dir: Path, session: ort.InferenceSession, config: dict[str, object], tokenizer: Tokenizer
) -> None:
    pad = tokenizer.token_to_id("<|endoftext|>")
    short = tokenizer.encode("Which route fits?").ids
    long = tokenizer.encode(PROMPT).ids[: len(short) + 5]
    n_pad = len(long) - len(short)
    ids = np.array([[pad] * n_pad + short, long])
    mask = np.array([[0] * n_pad + [1] * len(short), [1] * len(long)])
    # As transformers' generate does: cumulative positions, padding slots set to 1.
    positions = np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 1)
    logits, past = _run(session, config, ids, mask, positions)

    np.testing.assert_allclose(logits[0, n_pad:], _full(session, config, short)[0], atol=ATOL)
    np.testing.assert_allclose(logits[1], _full(session, config, long)[0], atol=ATOL, rtol=0)
    # Same masking in the NumPy reference, real tokens only.
    expected = reference_logits(model_dir, ids, mask, positions)
    np.testing.assert_allclose(logits[0, n_pad:], expected[0, n_pad:], atol=ATOL, rtol=0)

    # One cached step on the padded batch still matches each unpadded sequence.
    nxt = tokenizer.encode(" yes").ids[:1]
    step_mask = np.concatenate([mask, np.ones((2, 1), dtype=mask.dtype)], axis=1)
    step_pos = np.array([[len(short)], [len(long)]])
    step, _ = _run(session, config, np.array([nxt, nxt]), step_mask, step_pos, past)
    np.testing.assert_allclose(step[0, 0], _full(session, config, short + nxt)[0, -1], atol=ATOL)
    np.testing.assert_allclose(step[1, 0], _full(session, config, long + nxt)[0, -1], atol=ATOL)


def test_build_is_fast_and_deterministic(tmp_path: Path) -> None:
    started = time.perf_counter()
    first = build_tiny_arch_router(tmp_path / "a")
    assert time.perf_counter() - started < 10
    second = build_tiny_arch_router(tmp_path / "b")
    other_seed = build_tiny_arch_router(tmp_path / "c", seed=1)

    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "model.onnx"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    a, b, c = load_weights(first), load_weights(second), load_weights(other_seed)
    assert a.keys() == b.keys() == c.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])

    # Rebuilding in place must not append to the old external data file.
    size = (first / "model.onnx_data").stat().st_size
    build_tiny_arch_router(first)
    assert (first / "model.onnx_data").stat().st_size == size


@pytest.mark.parametrize("trim", [False, True])
def test_chat_template_renders_chatml(model_dir: Path, tokenizer: Tokenizer, trim: bool) -> None:
    template = json.loads((model_dir / "tokenizer_config.json").read_text())["chat_template"]
    # transformers renders with trim_blocks/lstrip_blocks on; plain Jinja must agree.
    env = jinja2.Environment(trim_blocks=trim, lstrip_blocks=trim)
    compiled = env.from_string(template)
    user = [{"role": "user", "content": "Route this: write a sort function."}]

    rendered = compiled.render(messages=user, add_generation_prompt=True)
    assert rendered == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nRoute this: write a sort function.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Pick a route."}, *user]
    assert compiled.render(messages=with_system, add_generation_prompt=False) == (
        "<|im_start|>system\nPick a route.<|im_end|>\n"
        "<|im_start|>user\nRoute this: write a sort function.<|im_end|>\n"
    )

    encoding = tokenizer.encode(rendered)
    start, end = tokenizer.token_to_id("<|im_start|>"), tokenizer.token_to_id("<|im_end|>")
    assert start is not None and end is not None
    assert encoding.ids.count(start) == 3
    assert encoding.ids.count(end) == 2
    assert encoding.ids[0] == start
    assert encoding.tokens[:2] == ["<|im_start|>", "system"]
    assert tokenizer.decode(encoding.ids, skip_special_tokens=False) == rendered
