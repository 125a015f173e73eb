"""The embedded router: two small sentence encoders in ONNX, on the CPU.

- all-MiniLM-L6-v2 (English) and
- multilingual-e5-small (about 100 languages),

both served as fused graphs with int8 matmuls (modelbuild; their fp32 exports are checked
against a reference), each followed by a trained linear adapter (modelbuild/train_adapter.py)
that maps route descriptions towards the way users ask. Routes are embedded once per config
load. Each decision embeds a few short views of the conversation in one batch per encoder:

- the latest user turn: the intent to serve. A long turn (a pasted document or code with a
  short instruction) is also read as its first and last lines, where the instruction is;
- the turns before it, newest first, each up to its first CONTEXT_TOKENS tokens: a
  follow-up ("same for this one") carries little meaning of its own, and its context decides
  the route. Each earlier turn counts half as much as the one after it, and an assistant
  turn half as much as a user turn; the shorter the latest turn, the more they tell the
  routes apart (``follow_up_boost``).

An encoder runs a decision's views as one or two batches (``batches``, cut by the views'
lengths alone). A decision that has the cores to itself runs the two side by side; beside
another decision, one after the other (``SharedCores``): the same runs either way, so the
same answer. Each run gets half the cores' threads (``encoder_threads``).

Each encoder scores every route and "other" from those views (``member_logits``, a pure
function of the similarity matrix), each route's score nudged by the votes of the view's
nearest training requests (``exemplars``: requests people wrote for routes whose
descriptions are near this one's) and by the words the view shares with its description
(``lexical``: "explain" in the request and in the description).
MiniLM, the sharper and cheaper reader of English, reads first and decides alone when it is
sure of an English turn (the cascade); otherwise e5 reads too and the two encoders'
log-probabilities are pooled, MiniLM's share shrinking with the share of the turn's words
it knows. On a turn it can hardly read it is not run at all
(``SKIP_SHARE``).
"""

from __future__ import annotations

import functools
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits
from tokenizers import Tokenizer

from ..config import Route, RouterSettings
from ..cores import available_cores
from . import exemplars
from .base import OTHER, RouteChoice, RouterLoadError, probabilities
from .conversation import (
    CHARS_PER_TOKEN,
    CONTEXT_TURNS,
    EDGE_WINDOW,
    Turn,
    conversation,
    latest_user_index,
    reading_for,
)
from .exemplars import Exemplars
from .lexical import RouteWords, stems
from .session import load_session, read_json, require_files

Array = npt.NDArray[Any]
DATA = Path(__file__).parent / "data"
BUILD_HINT = "Build it with `make models`."
MANIFEST = "plano-encoder.json"


# A model run's fixed cost in tokens of one row, for an encoder nobody measured (a
# routing.model_dir's): between the two default encoders'.
RUN_TOKENS = 16


@dataclass(frozen=True)
class MemberSpec:
    """One encoder of the default router: its build directory name, its weight in the
    pooled log-probabilities, its share of ``max_tokens``, and whether it reads only English
    (then its weight shrinks with the share of the latest turn's words it knows, squared:
    MiniLM reads a French request as noise and calls it "other")."""

    name: str
    weight: float
    token_share: float
    english_only: bool = False
    # What one model run costs before its first token, in tokens of one row: mostly reading
    # the weights, whatever the batch (``batches`` weighs it).
    run_tokens: int = RUN_TOKENS


# Weights tuned on bench/router/dev.jsonl; e5 reads at most half the budget because it costs
# twice MiniLM per token, which keeps a 256-token decision within the 40 ms p99 target. Run
# costs measured once, by hand, on one thread: MiniLM 0.45 ms a run and 0.07 ms a token of a
# row, e5 2.3 ms and 0.1 ms (twice the layers, a larger vocabulary).
DEFAULT_MEMBERS = (
    MemberSpec("all-MiniLM-L6-v2", 0.5, token_share=1.0, english_only=True, run_tokens=7),
    MemberSpec("multilingual-e5-small", 0.5, token_share=0.5, run_tokens=23),
)
_WORD = re.compile(r"[^\W\d_]+")
# Added to the pooled "other" log-probability, plus the log of the number of routes: the
# routes' share of the softmax grows with their count (a log-sum-exp), "other"'s must keep
# pace. The constant is the development set's best (10 routes: +1.0 in all); the adapters
# learn "other" from small talk and closings, and real off-route requests (a recipe question
# beside coding routes) sit closer to some route than those.
OTHER_BIAS = -1.3
# Decisions run at once (RouterService): two keep both cores busy, a run on each (dev set,
# 2 cores: 117 decisions/s one at a time, 156 two at a time; bench/router/decision_speed.py).
ROUTER_CONCURRENCY = 2
# Model runs at once: two decisions' runs, or a lone decision's two batches side by side
# (SharedCores). Each run gets that share of the cores as its onnxruntime threads, unless
# routing.threads says otherwise: on 2 cores, one thread each. A run's kernels are too small
# to spread well over threads (measured once, by hand: a second thread made a 256-token
# MiniLM run 23% faster, a second batch beside it 35%), and two runs on two one-thread
# sessions never contend for a pool. Against one session of two threads per encoder reading
# whole earlier turns, two callers make 156 instead of 107 decisions a second
# (decision_speed.py against 22467c1).
PARALLEL_RUNS = 2
# The cascade (EncoderRouter.decides_alone): MiniLM decides alone when its top choice has at
# least this probability and the turn is English enough that its vote share is at least
# CASCADE_SHARE of its full weight (about 90% of the turn's words known). Chosen on the
# development set and leave-routes-out together (bench/router/cascade.py, and
# leave_routes_out.py --cascade-confidence): the lowest confidence that loses nothing on the
# development set and at most half a point on routes the adapters never saw (0.4 loses
# nothing on the first but 1.5 points on the second: MiniLM is too sure of itself on routes
# it was not fitted on). MiniLM then decides about 45% of the decisions alone.
CASCADE_CONFIDENCE = 0.6
CASCADE_SHARE = 0.9
# An English-only encoder whose vote share for the turn is below this (it knows under about a
# quarter of the turn's words: another language or script) is not run at all: its vote
# would barely move the pooled answer, and it costs half a decision. Its share goes to the
# others. On the development, held-out and independent sets this skips MiniLM for 5% of the
# decisions (the non-English ones) and changes no answer (0.1 would cost one on the
# independent set; bench/RESULTS.md, "Skipping MiniLM on a turn it cannot read").
SKIP_SHARE = 0.05


# Each earlier turn is read up to this many tokens (the latest turn gets the budget's share):
# a turn of context says what the conversation is about in its first words, and reading it
# whole made a three-turn, 256-token decision cost three latest turns. Measured on the three
# evaluation sets, the fresh routes and leave-routes-out (bench/RESULTS.md, "Batches side by
# side, and 32 tokens of context"): leave-routes-out lost 5 of 4,904 requests by the cut and
# the evaluation sets gained 0 to 2 each; 24 tokens for e5 cost the development set one.
CONTEXT_TOKENS = 32

# onnxruntime fuses each residual Add and the LayerNormalization after it into one
# SkipLayerNormalization kernel, which on this CPU costs twice the pair it replaces (0.36 ms
# against 0.09 + 0.1 ms at 3 x 85 tokens, profiled): an encoder decides 15% faster without it.
# modelbuild's serving graphs leave those pairs unfused for the same reason.
ENCODER_UNFUSED = ("SkipLayerNormFusion",)


class Encoder:
    """Sentence embeddings from an ONNX encoder: mean-pooled and L2-normalized.

    Two kinds of export are read: ``make models``' builds, whose graph pools and normalizes
    (a ``sentence_embedding`` output), and the standard export of a sentence encoder (optimum,
    sentence-transformers: a ``last_hidden_state`` output, in ``model.onnx`` or
    ``onnx/model.onnx``), pooled over the attention mask and normalized here, in numpy, as
    sentence-transformers does. ``token_type_ids`` is fed as zeros to a model that asks for it.
    """

    def __init__(
        self, model_dir: Path, settings: RouterSettings, run_tokens: int = RUN_TOKENS
    ) -> None:
        self.run_tokens = run_tokens
        manifest = model_dir / MANIFEST
        info = read_json(manifest) if manifest.is_file() else {}
        model_name = str(info.get("serving_model", "model.onnx"))
        standard = model_dir / "onnx" / "model.onnx"  # sentence-transformers' export layout
        if not info and not (model_dir / model_name).is_file() and standard.is_file():
            model_name = "onnx/model.onnx"
        tokenizer_name = str(info.get("serving_tokenizer", "tokenizer.json"))
        require_files(model_dir, (model_name, tokenizer_name), BUILD_HINT)
        model, tokenizer = model_dir / model_name, model_dir / tokenizer_name
        # A tokenizer with a pruned vocabulary numbers its pieces anew: this maps them back
        # to the model's ids (see modelbuild/export_e5.SERVING_TOKENIZER).
        vocab_map = info.get("serving_vocab_map")
        self.vocab_map: Array | None = (
            np.load(model_dir / str(vocab_map)) if vocab_map is not None else None
        )
        # Asymmetric encoders (e5) were trained with a prefix on each side of a match.
        self.query_prefix = str(info.get("query_prefix", ""))
        self.passage_prefix = str(info.get("passage_prefix", ""))
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.words = frozenset(w for w in self.tokenizer.get_vocab() if w.isalpha())
        self.tokenizer.no_truncation()
        self.special_tokens = self.tokenizer.num_special_tokens_to_add(is_pair=False)
        pad = next(
            (t for t in ("[PAD]", "<pad>") if self.tokenizer.token_to_id(t) is not None), None
        )
        self.pad_id = (self.tokenizer.token_to_id(pad) if pad else 0) or 0
        self.tokenizer.no_padding()
        self.session = load_session(model, settings, ENCODER_UNFUSED, encoder_threads(settings))
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if not {"input_ids", "attention_mask"} <= inputs:
            raise RouterLoadError(
                f"{model}: a sentence encoder needs input_ids and attention_mask inputs, "
                f"this model has {sorted(inputs)}"
            )
        self.token_types = "token_type_ids" in inputs
        if "sentence_embedding" in outputs:
            self.output, self.pooled = "sentence_embedding", True
        elif "last_hidden_state" in outputs:
            self.output, self.pooled = "last_hidden_state", False
        else:
            raise RouterLoadError(
                f"{model}: expected a sentence_embedding or last_hidden_state output, "
                f"found {sorted(outputs)}"
            )
        width = outputs[self.output].shape[-1]
        if "dim" not in info and not isinstance(width, int):
            width = int(self.embed(["dimension"], max_tokens=8).shape[1])
        self.dim = int(info.get("dim", width))

    def embed(
        self,
        texts: Sequence[str],
        max_tokens: int | Sequence[int],
        helper: Executor | None = None,
    ) -> Array:
        """[len(texts), dim] unit vectors; each text cut to ``max_tokens`` tokens (one limit
        for all, or one per text).

        Texts whose tokens come out identical are run once: a long turn's opening lines,
        read as its instruction, are often exactly what the whole turn's cut view keeps.
        The rest are run as the batches ``batches`` cuts them into; with a ``helper`` (the
        cores are free: ``SharedCores``) the second batch runs on it while this thread runs
        the first. Either way the same batches run, so the vectors are the same: an int8
        run's activation scales span its rows, and a decision must not depend on the load."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        limits = [max_tokens] * len(texts) if isinstance(max_tokens, int) else list(max_tokens)
        # No token is ever longer than a few characters: cutting a pasted document before
        # tokenizing it saves the work of tokenizing what truncation would drop.
        cut = [t[: n * CHARS_PER_TOKEN] for t, n in zip(texts, limits, strict=True)]
        # Truncated per call, then given the special tokens, as the tokenizer's own truncation
        # does, but without setting it on the shared tokenizer: decisions run concurrently.
        encodings = self.tokenizer.encode_batch(cut, add_special_tokens=False)
        for encoding, limit in zip(encodings, limits, strict=True):
            encoding.truncate(max(limit - self.special_tokens, 1))
        encodings = [self.tokenizer.post_process(e) for e in encodings]
        unique: dict[tuple[int, ...], int] = {}
        where = [unique.setdefault(tuple(e.ids), len(unique)) for e in encodings]
        rows = list(unique)
        first, *rest = batches([len(r) for r in rows], self.run_tokens)
        aside = [helper.submit(self._run, [rows[i] for i in b]) for b in rest] if helper else []
        ran = self._run([rows[i] for i in first])
        vectors = np.empty((len(rows), ran.shape[1]), dtype=np.float32)
        vectors[first] = ran
        for index, batch in enumerate(rest):
            vectors[batch] = aside[index].result() if aside else self._run([rows[i] for i in batch])
        result: Array = vectors[where]
        return result

    def _run(self, rows: Sequence[tuple[int, ...]]) -> Array:
        """One model run: ``rows`` of token ids, padded to the longest."""
        width = max(len(ids) for ids in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for row, tokens in enumerate(rows):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        if self.vocab_map is not None:
            ids = self.vocab_map[ids]
        feed = {"input_ids": ids, "attention_mask": mask}
        if self.token_types:
            feed["token_type_ids"] = np.zeros_like(ids)
        (out,) = self.session.run([self.output], feed)
        vectors: Array = out if self.pooled else mean_pooled(out, mask)
        return vectors


def batches(lengths: Sequence[int], run_tokens: int = 0) -> list[list[int]]:
    """The rows (indices into ``lengths``, token counts) of each model run: longest first,
    in one run or cut in two. A run costs ``run_tokens`` plus its rows times its longest row
    (every row is padded to it). The cut is where the longer of the two runs costs least,
    and is made only when a lone decision gains more by it (its two runs go side by side)
    than a decision among others loses (they go in turn, each paying ``run_tokens``).

    A pure function of the lengths: a conversation is batched alike whatever the load, and
    so decided alike (an int8 run's activation scales span its rows)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    if len(order) < 2:
        return [order] if order else []
    longest = lengths[order[0]]
    whole = run_tokens + len(order) * longest
    cuts = []  # (the two runs side by side, in turn, where to cut)
    for cut in range(1, len(order)):
        first = run_tokens + cut * longest
        second = run_tokens + (len(order) - cut) * lengths[order[cut]]
        cuts.append((max(first, second), first + second, cut))
    side_by_side, in_turn, cut = min(cuts)
    if whole - side_by_side > in_turn - whole:
        return [order[:cut], order[cut:]]
    return [order]


def mean_pooled(hidden: Array, mask: Array) -> Array:
    """sentence-transformers' pooling of ``hidden`` [batch, tokens, dim]: the mean over the
    tokens ``mask`` keeps, then L2 normalization (with its epsilons)."""
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden.astype(np.float32) * weights).sum(axis=1)
    means = summed / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    result: Array = (means / np.maximum(norms, 1e-12)).astype(np.float32)
    return result


def adapter_path(model_dir: Path) -> Path:
    """The trained adapter for the encoder in ``model_dir`` (see modelbuild/train_adapter.py)."""
    return DATA / f"adapter-{model_dir.name}.npz"


def route_text(name: str, description: str) -> str:
    """What a route is embedded as: its name in words, then its description."""
    return f"{name.replace('_', ' ').replace('-', ' ')}: {description}"


# A follow-up ("which of those first?", "now for windows") says little of its own, and its
# few words can sit nearer a neighbouring route than its conversation's. The shorter the
# latest turn, the more its context tells the routes apart: up to FOLLOW_UP_BOOST times the
# adapter's context weight again for a one-word turn, falling to nothing extra at
# FOLLOW_UP_WORDS words. The extra counts each route's context score less the best one's, so
# it lifts no route towards "other": whether a short turn fits any route at all ("thanks,
# bye") stays a question about the turn itself. Chosen on the development set, the fresh
# routes and leave-routes-out together (bench/RESULTS.md, "Short follow-ups"): follow-ups
# gain 5 to 9 points there, topic shifts to a terse new request lose about one.
FOLLOW_UP_WORDS = 12
FOLLOW_UP_BOOST = 2.0
_WORD_RUN = re.compile(r"\w+")
# Scripts written without spaces between words: a word for every two of their characters.
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def words_in(text: str) -> float:
    """About how many words ``text`` holds, in any script; counted up to FOLLOW_UP_WORDS."""
    count = 0.0
    for match in _WORD_RUN.finditer(text):
        unspaced = len(_UNSPACED.findall(match.group()))
        count += max(1.0, unspaced / 2) if unspaced else 1.0
        if count >= FOLLOW_UP_WORDS:
            break
    return count


def follow_up_boost(latest: str) -> float:
    """How much more than the adapter's weight the context counts after ``latest``."""
    return FOLLOW_UP_BOOST * max(0.0, 1.0 - words_in(latest) / FOLLOW_UP_WORDS)


def encoder_threads(settings: RouterSettings) -> int:
    """onnxruntime threads for each encoder run: routing.threads, or the cores this process
    may use (its CPU limit included) shared among PARALLEL_RUNS runs."""
    if settings.threads:
        return settings.threads
    return max(1, available_cores() // PARALLEL_RUNS)


class SharedCores:
    """Whether a decision has the cores to itself. Then it runs its second batch of each
    encoder on a helper thread beside the first (``Encoder.embed``); when another decision
    runs too, the cores are taken and its batches run in turn. One per process: a config
    reload's old and new routers share the cores as well. With fewer cores than
    PARALLEL_RUNS (a container limited to one CPU) nothing runs side by side: a second
    batch would only wait for the first's core."""

    def __init__(self, side_by_side: bool) -> None:
        self.side_by_side = side_by_side
        self._lock = threading.Lock()
        self._deciding = 0
        self._helper = ThreadPoolExecutor(1, thread_name_prefix="plano-router-batch")

    @contextmanager
    def deciding(self) -> Iterator[Executor | None]:
        """For the length of a decision: the helper when the decision is alone (and batches
        may run side by side), else None."""
        with self._lock:
            self._deciding += 1
            alone = self._deciding == 1
        try:
            yield self._helper if alone and self.side_by_side else None
        finally:
            with self._lock:
                self._deciding -= 1


CORES = SharedCores(side_by_side=available_cores() >= PARALLEL_RUNS)


@dataclass(frozen=True)
class Views:
    """The texts a decision embeds, and which of them are which."""

    texts: list[str]
    latest: list[int]  # the latest user turn (whole, then its first and last lines)
    context: list[int] = field(default_factory=list)  # earlier turns, newest first
    # How much each earlier turn counts beside the others (``context_weight``); none given:
    # the newest counts most, halving with each turn back.
    context_weights: list[float] = field(default_factory=list)
    # How much more than the adapter's weight the context counts after this latest turn
    # (``follow_up_boost``; 0 after a full request).
    boost: float = 0.0


# Lines at either end of a long turn, up to this many characters, are read as its instruction.
EDGE_CHARS = 240
LONG_TURN_CHARS = 600


def views(turns: Sequence[Turn]) -> Views | None:
    """The views of a conversation a decision embeds; None if it has no user turn."""
    latest = latest_user_index(turns)
    if latest is None:
        return None
    text = turns[latest].text
    texts = [text]
    if len(text) > LONG_TURN_CHARS:
        # The edges are looked for near the ends only: splitting a whole pasted document
        # into lines would cost as much as the document.
        head = _edge(_lines(text[:EDGE_WINDOW]))
        tail = _edge(list(reversed(_lines(text[-EDGE_WINDOW:]))), reverse=True)
        texts += [t for t in (head, tail) if t and t != text]
    latest_ix = list(range(len(texts)))
    context_ix: list[int] = []
    weights: list[float] = []
    for turn in reversed(turns[max(0, latest - CONTEXT_TURNS) : latest]):
        weights.append(context_weight(turn, len(context_ix)))
        context_ix.append(len(texts))
        texts.append(turn.text)
    return Views(texts, latest_ix, context_ix, weights, follow_up_boost(text) if weights else 0.0)


# An assistant turn's share of the context beside a user turn's: the adapters learn the
# context's weight from a user's earlier request, and an answer ("Sure, here it is: ...")
# says less about the task than the request it answered (development set: 81.0% against
# 80.6% at 1.0; leave-routes-out: see bench/RESULTS.md).
ASSISTANT_WEIGHT = 0.5


def context_weight(turn: Turn, age: int) -> float:
    """The newest earlier turn counts most (halving with each turn back)."""
    return 0.5**age * (ASSISTANT_WEIGHT if turn.role == "assistant" else 1.0)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _edge(lines: list[str], reverse: bool = False) -> str:
    picked: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) > EDGE_CHARS and picked:
            break
        picked.append(line[:EDGE_CHARS])
        size += len(line)
    return "\n".join(reversed(picked) if reverse else picked)


@dataclass(frozen=True)
class Adapter:
    """What modelbuild/train_adapter.py learned for one encoder: ``w`` maps route
    descriptions towards the way users ask; "other" scores ``threshold + q . other`` from the
    latest turn; the context counts ``context`` times the latest turn; ``scale`` sharpens the
    softmax."""

    w: Array
    threshold: float
    other: Array
    context: float
    scale: float
    # The requests it was fitted on, embedded by the same encoder (router/exemplars.py);
    # None for an encoder nobody trained an adapter for, or whose exemplars were not built.
    exemplars: Exemplars | None = None

    @classmethod
    def for_model(cls, model_dir: Path, dim: int) -> Adapter:
        """The adapter trained for the encoder in ``model_dir``, with the exemplars
        ``make models`` embedded beside it."""
        seen = exemplars.load(model_dir / exemplars.FILE_NAME)
        return cls.load(adapter_path(model_dir), dim, seen)

    @classmethod
    def load(cls, path: Path, dim: int, seen: Exemplars | None = None) -> Adapter:
        if not path.is_file():
            # An encoder nobody trained an adapter for: plain cosine similarity.
            eye = np.eye(dim, dtype=np.float32)
            return cls(eye, 0.2, np.zeros(dim, np.float32), context=0.5, scale=20.0)
        with np.load(path) as data:
            return cls(
                data["w"],
                float(data["threshold"]),
                data["other"],
                float(data["context"]),
                float(data["scale"]),
                seen,
            )


# How much the votes of a view's nearest training requests count beside its similarity
# (exemplars.votes: shares of a vote, centred over the routes). Chosen on the development
# set and leave-routes-out (bench/RESULTS.md, "Requests the router has seen").
EXEMPLAR_WEIGHT = 0.3

# How much a route's description words found in a view count beside its similarity
# (lexical.RouteWords.scores, in units of word weight: a word only one route of ten uses
# weighs 2.4). Chosen on the development set and leave-routes-out (bench/RESULTS.md, "The
# words a request shares with a route's description").
LEXICAL_WEIGHT = 0.01


def member_logits(sims: Array, v: Views, adapter: Adapter, lexical: Array | None = None) -> Array:
    """Log-probabilities over the routes then "other", from ``sims`` [len(v.texts), routes + 1]
    (the last column is each view's "other" score) and ``lexical`` [len(v.texts), routes]
    (the words each view shares with each route's description, ``RouteWords.scores``)."""
    routes = sims[:, :-1]
    if lexical is not None:
        routes = routes + LEXICAL_WEIGHT * lexical
    score = routes[v.latest[0]]
    if len(v.latest) > 1:
        # The best of the whole turn and its edges: a short instruction around a long paste.
        score = np.maximum(score, routes[v.latest[1:]].max(axis=0))
    if v.context:
        # A follow-up inherits its context's route.
        weights = np.array(v.context_weights or [0.5**i for i in range(len(v.context))])
        context = (routes[v.context] * weights[:, None]).sum(axis=0) / weights.sum()
        score = score + adapter.context * (context + v.boost * (context - context.max()))
    # Whether anything fits is a question about the latest turn alone: "thanks, bye" after
    # a coding session is not a coding request.
    logits = adapter.scale * np.append(score, sims[v.latest[0], -1])
    shifted = logits - logits.max()
    result: Array = shifted - np.log(np.exp(shifted).sum())
    return result


class Member:
    """One encoder with its adapter and the routes embedded for it."""

    def __init__(
        self, spec: MemberSpec, encoder: Encoder, adapter: Adapter, routes: Sequence[Route]
    ) -> None:
        self.spec = spec
        self.encoder = encoder
        self.adapter = adapter
        texts = [encoder.passage_prefix + route_text(r.name, r.description) for r in routes]
        vectors = encoder.embed(texts, max_tokens=128)
        # q . (W d) for every route, then q . other + threshold: one matrix product per
        # decision. Adapting the routes once equals adapting every comparison.
        self.columns = np.vstack([vectors @ adapter.w.T, adapter.other[None, :]])
        self.bias = np.zeros(len(routes) + 1, dtype=np.float32)
        self.bias[-1] = adapter.threshold
        # How much each training route's requests vote for each of this config's routes.
        self.seen = adapter.exemplars
        self.lent = None if self.seen is None else exemplars.lend(self.seen.route_vectors, vectors)

    def logits(
        self,
        v: Views,
        max_tokens: int,
        lexical: Array,
        helper: Executor | None = None,
        nearest: list[str] | None = None,
    ) -> Array:
        """This encoder's log-probabilities for the decision (``member_logits``)."""
        sims = self.similarities(v, max_tokens, helper, nearest)
        return member_logits(sims, v, self.adapter, lexical)

    def similarities(
        self,
        v: Views,
        max_tokens: int,
        helper: Executor | None = None,
        nearest: list[str] | None = None,
    ) -> Array:
        """[views, routes + 1]: each view against each route, then "other". ``nearest``,
        when given, gets the training routes of the latest turn's three nearest requests
        (for ``--explain``)."""
        budget = max(int(max_tokens * self.spec.token_share) // len(v.texts), 32)
        context = min(budget, CONTEXT_TOKENS)
        limits = [budget if i in v.latest else context for i in range(len(v.texts))]
        prefix = self.encoder.query_prefix
        vectors = self.encoder.embed([prefix + t for t in v.texts], limits, helper)
        result: Array = vectors @ self.columns.T + self.bias
        if self.seen is not None and self.lent is not None:
            # Each route's similarity gains its share of the view's nearest requests' votes.
            top, top_sims = exemplars.nearest(vectors, self.seen)
            result[:, :-1] += EXEMPLAR_WEIGHT * exemplars.votes(top, top_sims, self.seen, self.lent)
            if nearest is not None:
                routes = self.seen.request_route[top[v.latest[0], :3]]
                nearest += [self.seen.route_names[r] for r in routes]
        return result


def pooled(weights: Sequence[float], logps: Sequence[Array], *, ensemble: bool) -> Array:
    """The log-probabilities (routes then "other") of the encoders that ran, pooled with their
    vote shares; in a router of several encoders (``ensemble``, even when one alone ran),
    "other" is moved by OTHER_BIAS (see there)."""
    total: Array = np.asarray(weights, dtype=np.float64) @ np.vstack(logps)
    if ensemble:
        total[-1] += OTHER_BIAS + math.log(len(total) - 1)
    return total


@functools.cache
def one_blas_thread() -> None:
    """numpy's BLAS (OpenBLAS) starts a thread per core for a product as large as the
    exemplar votes' (the views against 2,719 requests) and leaves them spinning after it: on
    2 cores they took the CPU from the encoders' onnxruntime threads, 5 ms more a 256-token
    decision instead of about 1. Every product a decision makes is small, and onnxruntime
    has the cores: one BLAS thread, for the whole process (threadpoolctl, the library that
    scikit-learn uses for this, rather than environment variables read only at import)."""
    threadpool_limits(limits=1, user_api="blas")


class EncoderRouter:
    def __init__(
        self, routes: tuple[Route, ...], settings: RouterSettings, members: Sequence[Member]
    ) -> None:
        one_blas_thread()
        self.routes = routes
        self.settings = settings
        self.members = list(members)
        self.names = [r.name for r in routes]
        self.route_words = RouteWords.of([route_text(r.name, r.description) for r in routes])
        self.reading = reading_for(settings)
        # Above 1, MiniLM never decides alone (the benchmark's both-encoders figures).
        self.cascade_confidence = CASCADE_CONFIDENCE
        # choose() is safe in several threads (onnxruntime sessions are; the tokenizers are
        # never reconfigured per call): RouterService runs this many decisions at once.
        self.concurrency = ROUTER_CONCURRENCY

    @classmethod
    def load(
        cls, models_dir: Path, routes: tuple[Route, ...], settings: RouterSettings
    ) -> EncoderRouter:
        """The default pair of encoders from ``models_dir``, or the one encoder that
        ``routing.model_dir`` names."""
        if settings.model_dir is not None:
            specs = [(MemberSpec(settings.model_dir.name, 1.0, 1.0), settings.model_dir)]
        else:
            specs = [(spec, models_dir / spec.name) for spec in DEFAULT_MEMBERS]
        members = []
        for spec, model_dir in specs:
            encoder = Encoder(model_dir, settings, spec.run_tokens)
            adapter = Adapter.for_model(model_dir, encoder.dim)
            members.append(Member(spec, encoder, adapter, routes))
        return cls(routes, settings, members)

    def weights(self, latest: str) -> list[float]:
        """Each encoder's share of the vote for this turn: an English-only encoder counts
        as much as it knows the turn's words."""
        words = [w.lower() for w in _WORD.findall(latest[:2000])]
        raw = []
        for member in self.members:
            known = 1.0
            if member.spec.english_only and words:
                known = sum(w in member.encoder.words for w in words) / len(words)
            raw.append(member.spec.weight * known**2)
        total = sum(raw) or 1.0
        return [w / total for w in raw]

    def skipping(self, weights: list[float]) -> list[float]:
        """``weights`` with the English-only encoders below SKIP_SHARE set to 0 and their
        share given to the others, in proportion (unchanged when none is skipped, or when
        every encoder would be)."""
        skipped = [
            m.spec.english_only and w < SKIP_SHARE
            for m, w in zip(self.members, weights, strict=True)
        ]
        kept = sum(w for w, skip in zip(weights, skipped, strict=True) if not skip)
        if not any(skipped) or kept <= 0.0:
            return weights
        return [0.0 if skip else w / kept for w, skip in zip(weights, skipped, strict=True)]

    def decides_alone(self, weight: float, logp: Array, confidence: float | None = None) -> bool:
        """Whether the first encoder's answer stands without asking the others (a cascade):
        when the turn is in words it knows (its vote share is near its full weight) and it
        is sure of its choice. The others cost most of a decision (e5 reads at twice
        MiniLM's cost per token) and, on the development set, change almost none of the
        answers MiniLM is this sure of."""
        full_share = self.members[0].spec.weight / sum(m.spec.weight for m in self.members)
        threshold = self.cascade_confidence if confidence is None else confidence
        sure = float(np.exp(logp.max())) >= threshold
        return weight >= CASCADE_SHARE * full_share and sure

    def settled(
        self,
        weights: Sequence[float],
        logps: Sequence[Array | None],
        confidence: float | None = None,
    ) -> Array | None:
        """The decision's log-probabilities (routes then "other") once the encoders run so
        far settle it, else None: the next encoder must run. ``logps`` holds the first
        encoders' log-probabilities in the members' order (None for one not run, its vote
        share 0). The first encoder settles it alone when ``decides_alone``; otherwise
        every encoder's vote is pooled. A pure function of its arguments and the router's
        settings: the benchmarks replay decisions through it (bench/router/cascade.py)."""
        ensemble = len(self.members) > 1
        first = logps[0] if len(logps) == 1 else None
        if first is not None and ensemble and self.decides_alone(weights[0], first, confidence):
            return first
        if len(logps) < len(self.members):
            return None
        ran = [(w, lp) for w, lp in zip(weights, logps, strict=True) if lp is not None]
        return pooled([w for w, _ in ran], [lp for _, lp in ran], ensemble=ensemble)

    def description_words(self, v: Views) -> tuple[Array, dict[str, list[str]]]:
        """The words each view shares with each route's description (``RouteWords.scores``,
        for ``member_logits``), and, for ``--explain``, those of the latest turn by route;
        each view is read for its words once."""
        found = [stems(text) for text in v.texts]
        shared = self.route_words.shared(found[v.latest[0]])
        return self.route_words.scores(found), {self.names[i]: w for i, w in shared.items()}

    def choose(self, messages: Sequence[object]) -> RouteChoice:
        started = time.perf_counter()
        v = views(conversation(messages, self.reading))
        if v is None:
            return RouteChoice(OTHER, 1.0, {OTHER: 1.0}, {"reason": "no user turn to read"})
        names = [*self.names, OTHER]
        explain: dict[str, object] = {"views": [t[:80] for t in v.texts]}
        if v.context:
            # How much each earlier view counts (they follow the latest turn's in "views"),
            # and how much more the context tells the routes apart after a short turn.
            explain["context_weights"] = [round(w, 3) for w in v.context_weights]
            explain["follow_up_boost"] = round(v.boost, 3)
        lexical, shared = self.description_words(v)
        if shared:
            explain["description_words"] = shared
        weights = self.skipping(self.weights(v.texts[v.latest[0]]))
        explain["weights"] = {
            m.spec.name: round(w, 3) for m, w in zip(self.members, weights, strict=True)
        }
        logps: list[Array | None] = []  # each encoder's so far, in order; None: not run
        final: Array | None = None
        with CORES.deciding() as helper:
            explain["batches"] = "side by side" if helper else "in turn"
            for member, weight in zip(self.members, weights, strict=True):
                if weight == 0.0:
                    explain["not_run"] = member.spec.name
                    logps.append(None)
                else:
                    # The first encoder that runs: its nearest training requests, for --explain.
                    nearest: list[str] | None = None if "nearest_requests" in explain else []
                    logp = member.logits(v, self.settings.max_tokens, lexical, helper, nearest)
                    if nearest:
                        explain["nearest_requests"] = nearest
                    logps.append(logp)
                    explain[member.spec.name] = {
                        n: round(float(np.exp(p)), 3) for n, p in zip(names, logp, strict=True)
                    }
                final = self.settled(weights, logps)
                if final is not None:
                    break
        assert final is not None  # settled() always answers once every encoder has run
        if len(logps) < len(self.members):
            explain["decided_by"] = self.members[0].spec.name
        scores = probabilities(names, final.tolist())
        route = max(scores, key=lambda n: scores[n])
        explain["decide_ms"] = round((time.perf_counter() - started) * 1e3, 2)
        return RouteChoice(route, scores[route], scores, explain)
