"""A float64 NumPy forward pass of all-MiniLM-L6-v2, written independently of the ONNX builder.

It reads the original safetensors weights and computes BertModel + sentence-transformers
Pooling(mean) + Normalize, so the exported graph can be checked against plain arithmetic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from tokenizers import Tokenizer

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_erf = np.frompyfunc(math.erf, 1, 1)


def pad_batch(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[I64, I64]:
    """Token ids and attention mask, right-padded with [PAD] (id 0) to the longest text."""
    encodings = tokenizer.encode_batch(list(texts))
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(texts), width), dtype=np.int64)
    mask = np.zeros((len(texts), width), dtype=np.int64)
    for row, enc in enumerate(encodings):
        ids[row, : len(enc.ids)] = enc.ids
        mask[row, : len(enc.ids)] = 1
    return ids, mask


class ReferenceEncoder:
    def __init__(self, source_dir: Path) -> None:
        config = json.loads((source_dir / "config.json").read_text())
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        raw = load_file(str(source_dir / "model.safetensors"))
        self.w = {k: v.astype(np.float64) for k, v in raw.items() if v.dtype == np.float32}

    def _layer_norm(self, x: F64, prefix: str) -> F64:
        mu: F64 = x.mean(axis=-1, keepdims=True)
        var: F64 = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        normed = (x - mu) / np.sqrt(var + self.eps)
        return normed * self.w[prefix + ".weight"] + self.w[prefix + ".bias"]

    def _linear(self, x: F64, prefix: str) -> F64:
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]

    def hidden_states(self, ids: I64, mask: I64) -> F64:
        batch, seq = ids.shape
        w = self.w
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.token_type_embeddings.weight"][0]
            + w["embeddings.position_embeddings.weight"][:seq]
        )
        x = self._layer_norm(x, "embeddings.LayerNorm")
        hidden = x.shape[-1]
        head_dim = hidden // self.heads
        keep = mask.astype(bool)[:, None, None, :]  # [batch, 1, 1, seq] over keys

        def split(t: F64) -> F64:
            return t.reshape(batch, seq, self.heads, head_dim).transpose(0, 2, 1, 3)

        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = split(self._linear(x, p + "attention.self.query"))
            k = split(self._linear(x, p + "attention.self.key"))
            v = split(self._linear(x, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim)
            # Masked keys get exactly zero weight; every row keeps [CLS], so no row is empty.
            scores = np.where(keep, scores, -np.inf)
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
            attn = self._linear(context, p + "attention.output.dense")
            x = self._layer_norm(attn + x, p + "attention.output.LayerNorm")
            inter = self._linear(x, p + "intermediate.dense")
            # A ufunc from frompyfunc gives an object array for an array (its stubs allow a float).
            erf = cast(npt.NDArray[np.object_], _erf(inter / math.sqrt(2.0)))
            gelu = 0.5 * inter * (1.0 + erf.astype(np.float64))
            out = self._linear(gelu, p + "output.dense")
            x = self._layer_norm(out + x, p + "output.LayerNorm")
        return x

    def sentence_embeddings(self, ids: I64, mask: I64) -> F64:
        tokens = self.hidden_states(ids, mask)
        m = mask.astype(np.float64)[:, :, None]
        mean = (tokens * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        norm = np.linalg.norm(mean, axis=1, keepdims=True)
        result: F64 = mean / np.maximum(norm, 1e-12)
        return result
