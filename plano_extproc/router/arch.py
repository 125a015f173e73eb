"""Arch-Router: Katanemo's routing LLM (a Qwen2.5-1.5B fine-tune) exported to ONNX.

The model was trained on one prompt (docs/arch-router-prompt.md): the routes and the
conversation as compact JSON inside a fixed instruction, sent as one user message through
the model's own chat template; it answers ``{"route": "<name>"}``. Two ways to read it:

- ``score`` (default): one prefill of the prompt, then one batched step that scores every
  possible answer (each route, and "other") with the KV cache. The answer is always a valid
  route and comes with a probability; it costs one prefill plus one step, not a generation.
- ``greedy``: plain greedy generation with the KV cache, parsed leniently.

Prompt building, trimming and parsing are pure functions; ``OnnxDecoder`` is the only part
that runs the model.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from ..config import Route, RouterSettings
from .base import OTHER, RouteChoice, RouterLoadError, best, probabilities
from .conversation import Turn, conversation, reading_for
from .session import load_session, read_json, require_files

PROMPT_TEMPLATE = """You are a helpful assistant designed to find the best suited route.
You are provided with route description within <routes></routes> XML tags:
<routes>
{routes}
</routes>

<conversation>
{conversation}
</conversation>

Your task is to decide which route is best suit with user intent on the conversation in \
<conversation></conversation> XML tags.  Follow the instruction:
1. If the latest intent from user is irrelevant or user intent is full filled, response with \
other route {{"route": "other"}}.
2. You must analyze the route descriptions and find the best match route for user latest intent.
3. You only response the name of the route that best matches the user's request, use the \
exact name in the <routes></routes>.

Based on your analysis, provide your response in the following JSON formats if you decide to \
match any route:
{{"route": "route_name"}}
"""

MODEL_FILES = ("model.onnx", "decoder_model_merged.onnx")
EXPORT_HINT = (
    "Export Arch-Router with: optimum-cli export onnx --model katanemo/Arch-Router-1.5B "
    "--task text-generation-with-past DIR (see README: Preference routing)."
)
TRUNCATION_MARK = " … "
MIN_CONVERSATION_TOKENS = 64

Array = npt.NDArray[Any]


def compact_json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def routes_json(routes: Sequence[Route]) -> str:
    # Config order: the reference gateway's order is unstable; a stable prompt is cacheable.
    return compact_json([{"name": r.name, "description": r.description} for r in routes])


def message_json(turn: Turn) -> str:
    return compact_json({"role": turn.role, "content": turn.text})


def conversation_json(turns: Sequence[Turn]) -> str:
    return "[" + ",".join(message_json(t) for t in turns) + "]"


def routing_prompt(routes: Sequence[Route], turns: Sequence[Turn]) -> str:
    """The routing instruction, exactly as the model was trained on it."""
    return PROMPT_TEMPLATE.format(
        routes=routes_json(routes), conversation=conversation_json(turns)
    ).rstrip("\n")


class ChatTemplate:
    """The model's own Jinja chat template (tokenizer_config.json), rendered as HF does."""

    def __init__(self, source: str, bos_token: str | None, eos_token: str | None) -> None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = lambda v, indent=None: json.dumps(
            v, ensure_ascii=False, indent=indent
        )
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._template = env.from_string(source)
        self._tokens = {"bos_token": bos_token or "", "eos_token": eos_token or ""}

    def render_user(self, text: str) -> str:
        """One user message and the assistant's turn opened, ready to generate."""
        return self._template.render(
            messages=[{"role": "user", "content": text}],
            add_generation_prompt=True,
            tools=None,
            **self._tokens,
        )


def _raise(message: str) -> NoReturn:
    raise ValueError(message)


def trim_conversation(
    turns: Sequence[Turn],
    budget: int,
    count: Callable[[str], int],
    truncate: Callable[[str, int], str],
) -> list[Turn]:
    """The newest turns whose JSON fits ``budget`` tokens, always including the latest user
    turn (truncated by ``truncate`` if it alone is over budget). ``count`` gives a string's
    token count; one more token is reserved per message for the separating comma."""
    latest_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=None)
    if latest_user is None:
        return []
    # Turns after the latest user turn (an assistant prefill) say nothing of the intent.
    kept: list[Turn] = []
    used = 0
    for i in range(latest_user, -1, -1):
        turn = turns[i]
        cost = count(message_json(turn)) + 1
        if used + cost <= budget:
            kept.append(turn)
            used += cost
            continue
        if i == latest_user:
            overhead = count(message_json(Turn(turn.role, ""))) + 1
            room = max(budget - used - overhead, 1)
            kept.append(Turn(turn.role, truncate(turn.text, room)))
            used = budget
        break  # older turns only fill the room left; once one misses, stop: no gaps
    kept.reverse()
    return kept


_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_ROUTE_FIELD = re.compile(r"""["']?route["']?\s*:\s*["']([^"']*)["']""")


def parse_route(text: str, names: Sequence[str]) -> str:
    """The route in the model's answer, repaired leniently; unknown names count as other."""
    cleaned = _FENCE.sub("", text.strip()).strip()
    candidate: object = None
    start, end = cleaned.find("{"), cleaned.rfind("}")
    if start != -1 and end > start:
        snippet = cleaned[start : end + 1]
        for attempt in (snippet, snippet.replace("'", '"')):
            try:
                candidate = json.loads(attempt)
                break
            except ValueError:
                continue
    route = candidate.get("route") if isinstance(candidate, dict) else None
    if not isinstance(route, str):
        match = _ROUTE_FIELD.search(cleaned)
        route = match.group(1) if match else None
    if isinstance(route, str) and route.strip() in names:
        return route.strip()
    return OTHER


@dataclass(frozen=True)
class DecoderShape:
    layers: int
    kv_heads: int
    head_dim: int


class OnnxDecoder:
    """A causal LM from an optimum "text-generation-with-past" export: prefill, steps with
    the KV cache, greedy generation and candidate scoring."""

    def __init__(self, session: ort.InferenceSession, shape: DecoderShape) -> None:
        self.session = session
        self.shape = shape
        inputs = {i.name: i for i in session.get_inputs()}
        self._has_positions = "position_ids" in inputs
        self._has_branch = "use_cache_branch" in inputs  # older merged exports
        past = inputs.get("past_key_values.0.key")
        if past is None:
            raise RouterLoadError(
                "the ONNX model has no past_key_values inputs: export it with "
                "--task text-generation-with-past"
            )
        self._past_dtype = np.float16 if past.type == "tensor(float16)" else np.float32
        self._outputs = [o.name for o in session.get_outputs()]

    def empty_past(self, batch: int) -> list[Array]:
        s = self.shape
        empty = np.zeros((batch, s.kv_heads, 0, s.head_dim), dtype=self._past_dtype)
        return [empty] * (2 * s.layers)

    def forward(
        self, ids: Array, mask: Array, past: list[Array], past_len: int
    ) -> tuple[Array, list[Array]]:
        """Logits for ``ids`` [batch, seq] after ``past``; returns them and the new cache."""
        feed: dict[str, Array] = {"input_ids": ids, "attention_mask": mask}
        if self._has_positions:
            positions = np.arange(past_len, past_len + ids.shape[1], dtype=np.int64)
            feed["position_ids"] = np.broadcast_to(positions, ids.shape).copy()
        if self._has_branch:
            feed["use_cache_branch"] = np.array([past_len > 0])
        for layer in range(self.shape.layers):
            feed[f"past_key_values.{layer}.key"] = past[2 * layer]
            feed[f"past_key_values.{layer}.value"] = past[2 * layer + 1]
        results = self.session.run(self._outputs, feed)
        named = dict(zip(self._outputs, results, strict=True))
        present = []
        for layer in range(self.shape.layers):
            present += [named[f"present.{layer}.key"], named[f"present.{layer}.value"]]
        return named["logits"], present

    def prefill(self, ids: Sequence[int]) -> tuple[Array, list[Array]]:
        batch = np.array([ids], dtype=np.int64)
        return self.forward(batch, np.ones_like(batch), self.empty_past(1), 0)

    def greedy(
        self, ids: Sequence[int], max_new: int, stop: set[int], use_cache: bool = True
    ) -> list[int]:
        """Greedy generation; ``use_cache=False`` re-reads the whole sequence every step
        (slow, for checking that the cached path gives the same tokens)."""
        out: list[int] = []
        logits, past = self.prefill(ids)
        for _ in range(max_new):
            token = int(np.argmax(logits[0, -1]))
            if token in stop:
                break
            out.append(token)
            if use_cache:
                seen = len(ids) + len(out) - 1
                step = np.array([[token]], dtype=np.int64)
                mask = np.ones((1, seen + 1), dtype=np.int64)
                logits, past = self.forward(step, mask, past, seen)
            else:
                logits, past = self.prefill([*ids, *out])
        return out

    def score(self, ids: Sequence[int], candidates: Sequence[Sequence[int]]) -> list[float]:
        """log P(candidate | ids) for each candidate: one prefill, then one batched step over
        all candidates reusing the prompt's cache (right-padded; causal attention means the
        padding never changes the real positions' logits)."""
        logits, past = self.prefill(ids)
        first = _log_softmax(logits[0, -1])
        scores = [float(first[c[0]]) for c in candidates]
        width = max(len(c) for c in candidates) - 1
        if width <= 0:
            return scores
        n, prompt = len(candidates), len(ids)
        step = np.zeros((n, width), dtype=np.int64)
        mask = np.ones((n, prompt + width), dtype=np.int64)
        for row, c in enumerate(candidates):
            step[row, : len(c) - 1] = c[:-1]
            mask[row, prompt + len(c) - 1 :] = 0
        batch_past = [np.repeat(p, n, axis=0) for p in past]
        step_logits, _ = self.forward(step, mask, batch_past, prompt)
        logp = _log_softmax(step_logits)
        for row, c in enumerate(candidates):
            scores[row] += float(sum(logp[row, j, c[j + 1]] for j in range(len(c) - 1)))
        return scores


def _log_softmax(x: Array) -> Array:
    x = x.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    result: Array = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return result


class ArchRouter:
    """The Arch-Router backend: builds the prompt, trims by real token counts, decodes."""

    def __init__(
        self,
        routes: tuple[Route, ...],
        settings: RouterSettings,
        tokenizer: Tokenizer,
        template: ChatTemplate,
        decoder: OnnxDecoder,
        stop_ids: set[int],
        end_id: int,
    ) -> None:
        self.routes = routes
        self.settings = settings
        self.tokenizer = tokenizer
        self.template = template
        self.decoder = decoder
        self.stop_ids = stop_ids
        self.names = [r.name for r in routes]
        self.reading = reading_for(settings)
        # Every possible answer, tokenized once: the JSON the model was trained to write,
        # then end-of-turn, so "code" cannot win as a prefix of "code_review".
        self._answers = [*self.names, OTHER]
        self._answer_ids = [
            [*self._encode('{"route": ' + json.dumps(name, ensure_ascii=False) + "}"), end_id]
            for name in self._answers
        ]
        self._max_new = max(len(a) for a in self._answer_ids) + 8
        # What the prompt costs with an empty conversation: the room left is the budget's.
        self._overhead = len(self._encode(self.template.render_user(routing_prompt(routes, []))))
        if settings.max_tokens < self._overhead + MIN_CONVERSATION_TOKENS:
            raise RouterLoadError(
                f"routing.max_tokens is {settings.max_tokens}, but the routing instruction and "
                f"routes alone take {self._overhead} tokens: allow at least "
                f"{self._overhead + MIN_CONVERSATION_TOKENS}"
            )

    @classmethod
    def load(
        cls, model_dir: Path, routes: tuple[Route, ...], settings: RouterSettings
    ) -> ArchRouter:
        model_file = next((model_dir / n for n in MODEL_FILES if (model_dir / n).is_file()), None)
        if model_file is None:
            raise RouterLoadError(f"{model_dir}: no {' or '.join(MODEL_FILES)}. {EXPORT_HINT}")
        require_files(
            model_dir, ("tokenizer.json", "tokenizer_config.json", "config.json"), EXPORT_HINT
        )
        config = read_json(model_dir / "config.json")
        tok_config = read_json(model_dir / "tokenizer_config.json")
        template = tok_config.get("chat_template")
        if not isinstance(template, str):
            raise RouterLoadError(f"{model_dir}/tokenizer_config.json: no chat_template")
        try:
            heads = int(config["num_attention_heads"])
            shape = DecoderShape(
                layers=int(config["num_hidden_layers"]),
                kv_heads=int(config.get("num_key_value_heads", heads)),
                head_dim=int(config.get("head_dim") or int(config["hidden_size"]) // heads),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RouterLoadError(f"{model_dir}/config.json: not a decoder config: {exc}") from exc
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        eos_token = _token_text(tok_config.get("eos_token"))
        stop_ids = _stop_ids(config, model_dir, tokenizer, eos_token)
        if not stop_ids:
            raise RouterLoadError(f"{model_dir}: no end-of-sequence token in its configs")
        # The answer ends with the chat template's end of turn, which is the eos_token.
        end_id = tokenizer.token_to_id(eos_token) if eos_token else None
        return cls(
            routes,
            settings,
            tokenizer,
            ChatTemplate(template, _token_text(tok_config.get("bos_token")), eos_token),
            OnnxDecoder(load_session(model_file, settings), shape),
            stop_ids,
            end_id if end_id is not None else min(stop_ids),
        )

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _truncate(self, text: str, tokens: int) -> str:
        """Keep the head and the tail of an over-long turn: the instruction is usually at
        one end of a long paste."""
        encoding = self.tokenizer.encode(text, add_special_tokens=False)
        offsets = encoding.offsets
        if len(offsets) <= tokens:
            return text
        head = max(tokens * 2 // 3, 1)
        tail = max(tokens - head - 2, 0)  # the mark costs about two tokens
        cut = text[: offsets[head - 1][1]]
        if tail:
            cut += TRUNCATION_MARK + text[offsets[len(offsets) - tail][0] :]
        return cut

    def prompt_ids(self, turns: Sequence[Turn]) -> tuple[list[int], list[Turn]]:
        """The rendered prompt's token ids within the budget, and the turns it holds."""
        budget = max(self.settings.max_tokens - self._overhead, 16)
        kept = trim_conversation(turns, budget, self._count, self._truncate)
        ids = self._encode(self.template.render_user(routing_prompt(self.routes, kept)))
        # Token counts of the parts do not add up exactly when joined: shrink until it fits.
        while len(ids) > self.settings.max_tokens and budget > 16:
            budget = budget * 9 // 10
            kept = trim_conversation(turns, budget, self._count, self._truncate)
            ids = self._encode(self.template.render_user(routing_prompt(self.routes, kept)))
        return ids, kept

    def choose(self, messages: Sequence[object]) -> RouteChoice:
        started = time.perf_counter()
        turns = conversation(messages, self.reading)
        ids, kept = self.prompt_ids(turns)
        if not kept:
            return RouteChoice(OTHER, 1.0, {OTHER: 1.0}, {"reason": "no user turn to read"})
        explain: dict[str, object] = {"prompt_tokens": len(ids), "turns_read": len(kept)}
        if self.settings.decoding == "greedy":
            out = self.decoder.greedy(ids, self._max_new, self.stop_ids)
            answer = self.tokenizer.decode(out)
            route = parse_route(answer, self.names)
            explain["answer"] = answer
            scores = {name: float(name == route) for name in self._answers}
            choice = RouteChoice(route, 1.0, scores, explain)
        else:
            logps = self.decoder.score(ids, self._answer_ids)
            scores = probabilities(self._answers, logps)
            route, confidence = best(scores)
            # How much of the model's mass these answers hold: low means it wanted to say
            # something else, which --explain shows.
            explain["answer_mass"] = float(f"{sum(math.exp(v) for v in logps):.3g}")
            choice = RouteChoice(route, confidence, scores, explain)
        explain["decode_ms"] = round((time.perf_counter() - started) * 1e3, 2)
        return choice


def _token_text(value: object) -> str | None:
    # tokenizer_config.json writes special tokens as strings or as AddedToken objects.
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _stop_ids(
    config: dict[str, Any], model_dir: Path, tokenizer: Tokenizer, eos_token: str | None
) -> set[int]:
    ids: set[int] = set()
    sources: list[object] = [config.get("eos_token_id")]
    generation = model_dir / "generation_config.json"
    if generation.is_file():
        sources.append(read_json(generation).get("eos_token_id"))
    for source in sources:
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list):
            ids.update(i for i in source if isinstance(i, int))
    if eos_token is not None:
        token = tokenizer.token_to_id(eos_token)
        if token is not None:
            ids.add(token)
    return ids
