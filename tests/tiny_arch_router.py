"""A tiny random Qwen2 decoder laid out like optimum's "text-generation-with-past" ONNX export.

The router loads Katanemo's Arch-Router-1.5B (a Qwen2.5-1.5B fine-tune) from an optimum export
directory. Those weights are not available to tests, so this builds, in well under a second and
without torch, a model of the same architecture with the same graph inputs and outputs, plus a
small byte-level BPE tokenizer and the Hugging Face config files the loader reads:

    model.onnx, model.onnx_data, config.json, generation_config.json,
    tokenizer.json, tokenizer_config.json

Run it as ``python -m tests.tiny_arch_router OUT_DIR`` or ``python tests/tiny_arch_router.py
OUT_DIR``. ``reference_logits`` is an independent NumPy forward pass, so tests can check the
ONNX graph (and the code that drives it) against plain math.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors, trainers
from tokenizers import pre_tokenizers as pre

from plano_extproc.modelbuild.graph import GraphBuilder

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx_data"
OPSET = 17
# IR 8 is what opset 17 shipped with; older onnxruntime builds refuse newer IR versions.
IR_VERSION = 8

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# The BPE vocabulary before the special tokens, which are appended after it as in Qwen2.5.
BPE_VOCAB_SIZE = 637

# Symbolic dimension names as optimum writes them, so code that inspects them sees the same.
BATCH = "batch_size"
SEQ = "sequence_length"
PAST = "past_sequence_length"
TOTAL = "past_sequence_length + sequence_length"

# ChatML as Qwen2.5 renders it (without the tool-calling branches): a default system message
# when the conversation does not start with one, and an open assistant turn on request.
CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}\n"
    "{%- set system_message = messages[0]['content'] -%}\n"
    "{%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "{%- set system_message = '" + DEFAULT_SYSTEM + "' -%}\n"
    "{%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{{- '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' -}}\n"
    "{%- for message in loop_messages -%}\n"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "{{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}\n"
)

# Written for this file. Besides plain English it carries the vocabulary of a routing prompt
# and of its JSON answers, so those tokenize into few, realistic pieces.
CORPUS = """\
You are a helpful assistant designed to pick the best suited route for a conversation.
The available routes are listed inside <routes></routes> XML tags. Each route has a name and a
short description of the kind of request it handles.
<routes>
[{"name": "code_generation", "description": "writing new code, functions, classes or scripts"},
{"name": "code_understanding", "description": "explaining, reviewing or debugging existing code"},
{"name": "summarization", "description": "summarizing long documents, articles or threads"},
{"name": "translation", "description": "translating text between human languages"},
{"name": "casual_chat", "description": "small talk, greetings and general questions"}]
</routes>
The conversation between the user and the assistant is inside <conversation></conversation> tags.
<conversation>
[{"role": "user", "content": "Can you write a Python function that sorts a list of numbers?"}]
</conversation>
Your task is to decide which route best matches the intent of the latest user message.
Follow these instructions carefully:
1. If the latest intent of the user does not match any route, or the request was already
fulfilled, answer with the other route: {"route": "other"}.
2. Otherwise pick the single route whose description fits the intent best.
3. Do not explain your choice. Reply only with the JSON object.
Based on your analysis, respond in the following JSON format: {"route": "route_name"}
{"route": "code_generation"}
{"route": "code_understanding"}
{"route": "summarization"}
{"route": "translation"}
{"route": "casual_chat"}
{"route": "other"}
The quick brown fox jumps over the lazy dog while the farmer watches from the old barn.
A router reads each request, looks at the user's intent, and sends it to the model that fits.
Small models answer quickly and cheaply; large models reason better about difficult problems.
When the weather turns cold in the mountains, the hikers pack warm coats, maps and food.
She opened the window, listened to the rain on the roof, and wrote three letters to friends.
def add(a, b):
    return a + b
for item in items:
    if item.is_ready():
        print(item.name, item.value)
class Router:
    def __init__(self, routes):
        self.routes = routes
    def pick(self, message):
        return self.routes.get(message, "other")
Please summarize this article about renewable energy, solar panels and wind farms in Europe.
Translate "good morning, how are you today?" into French, Spanish and German.
Why does my program crash with a null pointer exception when the list is empty?
Hello there! How was your weekend? Did you watch the game or go for a walk in the park?
Explain how a hash table stores keys and values, and why lookups are fast on average.
Write a SQL query that returns the ten customers with the highest total order amount.
The meeting is moved to Tuesday at 10:30; bring the quarterly report and the budget numbers.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 1024 2025 3.14 0.5 -7 +12 50% $20
Punctuation and symbols: ( ) [ ] { } < > , . ; : ! ? ' " - _ = + * / \\ | & # @ ~ ^ %
A good answer is short, correct and kind. The user asked a question; the assistant replied.
Routing policies map intents such as coding, writing, math, travel and shopping to models.
Which route should handle a request to debug a failing unit test in a JavaScript project?
The history of the city goes back a thousand years, to a small village beside the river.
Children learn to read by listening to stories, sounding out words and asking questions.
Recipes: mix the flour, sugar and eggs, then bake the cake for thirty minutes at 180 degrees.
Chat turns have roles. The system message sets the rules, the user asks, the assistant answers.
system
You are Qwen, created by Alibaba Cloud. You are a helpful assistant.
user
Can you help me plan a trip to the coast next weekend?
assistant
Of course! Tell me where you are starting from and how you like to travel.
system
user
assistant
"""


@dataclass(frozen=True)
class TinyDims:
    """Model sizes; ``vocab_size`` is filled in from the trained tokenizer."""

    vocab_size: int
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TinyDims:
        return cls(**{k: config[k] for k in cls.__dataclass_fields__})


# ---------------------------------------------------------------------------------------------
# Tokenizer


def build_tokenizer() -> Tokenizer:
    """Train the byte-level BPE tokenizer on ``CORPUS``; Qwen2.5's special tokens come last."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        # Every byte must be reachable, or text outside the corpus would be unencodable.
        initial_alphabet=pre.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(CORPUS.splitlines(keepends=True), trainer=trainer)
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    return tokenizer


def _special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    ids: dict[str, int] = {}
    for token in SPECIAL_TOKENS:
        token_id = tokenizer.token_to_id(token)
        assert token_id is not None, token
        ids[token] = token_id
    return ids


# ---------------------------------------------------------------------------------------------
# Weights


def _random_weights(dims: TinyDims, seed: int) -> dict[str, F32]:
    """Seeded weights, keyed by Hugging Face parameter names.

    Linear weights are stored as [in, out] (PyTorch's Linear weight transposed), the layout an
    ONNX MatMul wants; biases and norm weights are 1-D. The scales are chosen so that the logits
    are far from uniform and greedy decoding does not just repeat one token.
    """
    rng = np.random.default_rng(seed)
    h, inter = dims.hidden_size, dims.intermediate_size
    q_out = dims.num_attention_heads * dims.head_dim
    kv_out = dims.num_key_value_heads * dims.head_dim

    def normal(shape: tuple[int, ...], std: float) -> F32:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def norm_weight() -> F32:
        # Not all ones, so a forward pass that forgets the norm weight is caught by tests.
        return (1.0 + rng.standard_normal(h) * 0.1).astype(np.float32)

    w: dict[str, F32] = {"model.embed_tokens.weight": normal((dims.vocab_size, h), 0.2)}
    for i in range(dims.num_hidden_layers):
        p = f"model.layers.{i}"
        w[f"{p}.input_layernorm.weight"] = norm_weight()
        w[f"{p}.self_attn.q_proj.weight"] = normal((h, q_out), 0.15)
        w[f"{p}.self_attn.q_proj.bias"] = normal((q_out,), 0.1)
        w[f"{p}.self_attn.k_proj.weight"] = normal((h, kv_out), 0.15)
        w[f"{p}.self_attn.k_proj.bias"] = normal((kv_out,), 0.1)
        w[f"{p}.self_attn.v_proj.weight"] = normal((h, kv_out), 0.15)
        w[f"{p}.self_attn.v_proj.bias"] = normal((kv_out,), 0.1)
        w[f"{p}.self_attn.o_proj.weight"] = normal((q_out, h), 0.15)
        w[f"{p}.post_attention_layernorm.weight"] = norm_weight()
        w[f"{p}.mlp.gate_proj.weight"] = normal((h, inter), 0.15)
        w[f"{p}.mlp.up_proj.weight"] = normal((h, inter), 0.15)
        w[f"{p}.mlp.down_proj.weight"] = normal((inter, h), 0.15)
    w["model.norm.weight"] = norm_weight()
    return w


def _inv_freq(dims: TinyDims) -> F32:
    exponents = np.arange(0, dims.head_dim, 2, dtype=np.int64).astype(np.float32) / dims.head_dim
    return (1.0 / (dims.rope_theta**exponents)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# ONNX graph (built with the shared plano_extproc.modelbuild.graph.GraphBuilder)


def _rms_norm(g: GraphBuilder, x: str, weight: str, eps: float, scope: str) -> str:
    var = g.node("ReduceMean", g.node("Mul", x, x, scope=scope), axes=[-1], keepdims=1, scope=scope)
    eps_c = g.constant(np.array(eps, dtype=np.float32))
    denom = g.node("Sqrt", g.node("Add", var, eps_c, scope=scope), scope=scope)
    return g.node("Mul", g.node("Div", x, denom, scope=scope), weight, scope=scope)


def _rotary(g: GraphBuilder, x: str, cos: str, sin: str, half: int, scope: str) -> str:
    """``x * cos + rotate_half(x) * sin`` with rotate_half(x) = cat(-x[..., h:], x[..., :h])."""
    last = g.ints(-1)
    x1 = g.node("Slice", x, g.ints(0), g.ints(half), last, scope=scope)
    x2 = g.node("Slice", x, g.ints(half), g.ints(2 * half), last, scope=scope)
    rotated = g.node("Concat", g.node("Neg", x2, scope=scope), x1, axis=-1, scope=scope)
    return g.node(
        "Add",
        g.node("Mul", x, cos, scope=scope),
        g.node("Mul", rotated, sin, scope=scope),
        scope=scope,
    )


def _linear(g: GraphBuilder, weight_prefix: str, src: str, scope: str, *, bias: bool) -> str:
    out = g.node("MatMul", src, f"{weight_prefix}.weight", scope=scope)
    return g.node("Add", out, f"{weight_prefix}.bias", scope=scope) if bias else out


def _heads(g: GraphBuilder, x: str, n_heads: int, head_dim: int, scope: str) -> str:
    """[b, s, n*d] -> [b, n, s, d]."""
    shaped = g.node("Reshape", x, g.ints(0, 0, n_heads, head_dim), scope=scope)
    return g.node("Transpose", shaped, perm=[0, 2, 1, 3], scope=scope)


def _repeat_kv(g: GraphBuilder, x: str, dims: TinyDims, scope: str) -> str:
    """[b, kv, t, d] -> [b, heads, t, d]; query head h reads kv head h // n_rep, as in HF."""
    n_rep = dims.num_attention_heads // dims.num_key_value_heads
    grown = g.node("Unsqueeze", x, g.ints(2), scope=scope)
    grown = g.node("Expand", grown, g.ints(1, 1, n_rep, 1, 1), scope=scope)
    target = g.ints(0, dims.num_attention_heads, -1, dims.head_dim)
    return g.node("Reshape", grown, target, scope=scope)


def _build_model(dims: TinyDims, weights: dict[str, F32]) -> onnx.ModelProto:
    g = GraphBuilder()
    for name, array in weights.items():
        g.initializer(name, array)
    d, half = dims.head_dim, dims.head_dim // 2
    n_layers, n_heads, n_kv = (
        dims.num_hidden_layers,
        dims.num_attention_heads,
        dims.num_key_value_heads,
    )

    # Key positions run 0..past+seq; query i sits at past+i. The causal mask comes from these
    # cache positions (as in transformers), while rotary angles come from position_ids, which
    # for left-padded rows differ from cache positions.
    sc = "/model/mask"
    one = g.scalar_i64(1)
    seq_len = g.node("Shape", "input_ids", start=1, end=2, scope=sc)
    past_len = g.node("Shape", "past_key_values.0.key", start=2, end=3, scope=sc)
    total_len = g.node("Add", past_len, seq_len, scope=sc)
    past_s = g.node("Squeeze", past_len, g.ints(0), scope=sc)
    total_s = g.node("Squeeze", total_len, g.ints(0), scope=sc)
    q_pos = g.node("Range", past_s, total_s, one, scope=sc)
    k_pos = g.node("Range", g.scalar_i64(0), total_s, one, scope=sc)
    causal = g.node(
        "LessOrEqual",
        g.node("Unsqueeze", k_pos, g.ints(0), scope=sc),
        g.node("Unsqueeze", q_pos, g.ints(1), scope=sc),
        scope=sc,
    )
    keys_kept = g.node("Cast", "attention_mask", to=TensorProto.BOOL, scope=sc)
    keys_kept = g.node("Unsqueeze", keys_kept, g.ints(1, 2), scope=sc)
    allowed = g.node("And", causal, keys_kept, scope=sc)  # [b, 1, s, t]
    masked = g.constant(np.array(np.finfo(np.float32).min, dtype=np.float32))

    sc = "/model/rotary_emb"
    positions = g.node("Cast", "position_ids", to=TensorProto.FLOAT, scope=sc)
    positions = g.node("Unsqueeze", positions, g.ints(-1), scope=sc)
    freqs = g.node(
        "Mul", positions, g.initializer("model.rotary_emb.inv_freq", _inv_freq(dims)), scope=sc
    )
    angles = g.node("Concat", freqs, freqs, axis=-1, scope=sc)
    cos = g.node("Unsqueeze", g.node("Cos", angles, scope=sc), g.ints(1), scope=sc)
    sin = g.node("Unsqueeze", g.node("Sin", angles, scope=sc), g.ints(1), scope=sc)

    scale = g.constant(np.array(d**-0.5, dtype=np.float32))
    hidden = g.node(
        "Gather", "model.embed_tokens.weight", "input_ids", axis=0, scope="/model/embed"
    )
    for i in range(n_layers):
        p = f"model.layers.{i}"
        sc = f"/{p}/self_attn"
        x = _rms_norm(g, hidden, f"{p}.input_layernorm.weight", dims.rms_norm_eps, sc)

        q = _heads(g, _linear(g, f"{p}.self_attn.q_proj", x, sc, bias=True), n_heads, d, sc)
        k = _heads(g, _linear(g, f"{p}.self_attn.k_proj", x, sc, bias=True), n_kv, d, sc)
        v = _heads(g, _linear(g, f"{p}.self_attn.v_proj", x, sc, bias=True), n_kv, d, sc)
        q = _rotary(g, q, cos, sin, half, sc)
        k = _rotary(g, k, cos, sin, half, sc)
        key = g.node(
            "Concat", f"past_key_values.{i}.key", k, axis=2, scope=sc, out=f"present.{i}.key"
        )
        value = g.node(
            "Concat", f"past_key_values.{i}.value", v, axis=2, scope=sc, out=f"present.{i}.value"
        )
        keys_t = g.node("Transpose", _repeat_kv(g, key, dims, sc), perm=[0, 1, 3, 2], scope=sc)
        scores = g.node("Mul", g.node("MatMul", q, keys_t, scope=sc), scale, scope=sc)
        scores = g.node("Where", allowed, scores, masked, scope=sc)
        probs = g.node("Softmax", scores, axis=-1, scope=sc)
        ctx = g.node("MatMul", probs, _repeat_kv(g, value, dims, sc), scope=sc)
        ctx = g.node("Transpose", ctx, perm=[0, 2, 1, 3], scope=sc)
        ctx = g.node("Reshape", ctx, g.ints(0, 0, n_heads * d), scope=sc)
        hidden = g.node(
            "Add", hidden, _linear(g, f"{p}.self_attn.o_proj", ctx, sc, bias=False), scope=sc
        )

        sc = f"/{p}/mlp"
        x = _rms_norm(g, hidden, f"{p}.post_attention_layernorm.weight", dims.rms_norm_eps, sc)
        gate = _linear(g, f"{p}.mlp.gate_proj", x, sc, bias=False)
        silu = g.node("Mul", gate, g.node("Sigmoid", gate, scope=sc), scope=sc)
        act = g.node("Mul", silu, _linear(g, f"{p}.mlp.up_proj", x, sc, bias=False), scope=sc)
        hidden = g.node(
            "Add", hidden, _linear(g, f"{p}.mlp.down_proj", act, sc, bias=False), scope=sc
        )

    sc = "/lm_head"
    hidden = _rms_norm(g, hidden, "model.norm.weight", dims.rms_norm_eps, "/model/norm")
    # Tied embeddings: one stored matrix; onnxruntime folds this Transpose at load time.
    lm_head = g.node("Transpose", "model.embed_tokens.weight", perm=[1, 0], scope=sc)
    g.node("MatMul", hidden, lm_head, scope=sc, out="logits")

    kv_in: list[str | int] = [BATCH, n_kv, PAST, d]
    kv_out: list[str | int] = [BATCH, n_kv, TOTAL, d]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [BATCH, SEQ]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [BATCH, TOTAL]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, [BATCH, SEQ]),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [BATCH, SEQ, dims.vocab_size])
    ]
    for i in range(n_layers):
        for kind in ("key", "value"):
            inputs.append(
                helper.make_tensor_value_info(
                    f"past_key_values.{i}.{kind}", TensorProto.FLOAT, kv_in
                )
            )
            outputs.append(
                helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT, kv_out)
            )

    graph = helper.make_graph(g.nodes, "tiny_qwen2", inputs, outputs, initializer=g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="tests.tiny_arch_router",
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _save_model(model: onnx.ModelProto, out_dir: Path) -> None:
    data = out_dir / DATA_FILE
    # onnx appends to an existing external-data file, so a rebuild in place must start empty.
    data.unlink(missing_ok=True)
    onnx.save_model(
        model,
        str(out_dir / MODEL_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
        size_threshold=0,
    )


# ---------------------------------------------------------------------------------------------
# Config files


def _config(dims: TinyDims, ids: dict[str, int]) -> dict[str, Any]:
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": ids[ENDOFTEXT],
        "eos_token_id": ids[IM_END],
        "hidden_act": "silu",
        "hidden_size": dims.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": dims.intermediate_size,
        "max_position_embeddings": dims.max_position_embeddings,
        "max_window_layers": dims.num_hidden_layers,
        "model_type": "qwen2",
        "num_attention_heads": dims.num_attention_heads,
        "num_hidden_layers": dims.num_hidden_layers,
        "num_key_value_heads": dims.num_key_value_heads,
        "rms_norm_eps": dims.rms_norm_eps,
        "rope_scaling": None,
        "rope_theta": dims.rope_theta,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": dims.vocab_size,
    }


def _generation_config(ids: dict[str, int]) -> dict[str, Any]:
    return {
        "bos_token_id": ids[ENDOFTEXT],
        "do_sample": False,
        "eos_token_id": [ids[IM_END], ids[ENDOFTEXT]],
        "pad_token_id": ids[ENDOFTEXT],
    }


def _tokenizer_config(ids: dict[str, int]) -> dict[str, Any]:
    added = {
        str(ids[token]): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token in SPECIAL_TOKENS
    }
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "errors": "replace",
        "model_max_length": 4096,
        "pad_token": ENDOFTEXT,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Public entry points


def build_tiny_arch_router(out_dir: Path, *, seed: int = 0) -> Path:
    """Write the tiny model, tokenizer and configs into ``out_dir`` and return it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    ids = _special_ids(tokenizer)
    dims = TinyDims(vocab_size=tokenizer.get_vocab_size(with_added_tokens=True))
    model = _build_model(dims, _random_weights(dims, seed))
    _save_model(model, out_dir)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "config.json", _config(dims, ids))
    _write_json(out_dir / "generation_config.json", _generation_config(ids))
    _write_json(out_dir / "tokenizer_config.json", _tokenizer_config(ids))
    return out_dir


def load_weights(out_dir: Path) -> dict[str, F32]:
    """The initializers of ``model.onnx`` (external data included), by name."""
    model = onnx.load(str(Path(out_dir) / MODEL_FILE), load_external_data=True)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def reference_logits(
    out_dir: Path,
    input_ids: npt.ArrayLike,
    attention_mask: npt.ArrayLike,
    position_ids: npt.ArrayLike,
) -> F32:
    """Qwen2 forward pass in NumPy over the full sequence (no cache): [batch, seq, vocab].

    Written from the transformers math rather than from the ONNX graph, so the two check each
    other. Query rows whose keys are all masked (left padding) softmax over uniform scores, as
    the graph does; their values are meaningless either way.
    """
    out_dir = Path(out_dir)
    dims = TinyDims.from_config(json.loads((out_dir / "config.json").read_text()))
    w = load_weights(out_dir)
    ids = np.asarray(input_ids, dtype=np.int64)
    mask = np.asarray(attention_mask, dtype=np.int64)
    pos = np.asarray(position_ids, dtype=np.int64)
    b, s = ids.shape
    n_heads, n_kv, d = dims.num_attention_heads, dims.num_key_value_heads, dims.head_dim

    def rms(x: F32, weight: F32) -> F32:
        var = np.mean(x * x, axis=-1, keepdims=True)
        scaled: F32 = weight * (x / np.sqrt(var + np.float32(dims.rms_norm_eps)))
        return scaled.astype(np.float32)

    def split(x: F32, n: int) -> F32:
        return x.reshape(b, s, n, d).transpose(0, 2, 1, 3)

    def rotate_half(x: F32) -> F32:
        return np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)

    freqs = pos[..., None].astype(np.float32) * _inv_freq(dims)
    angles = np.concatenate([freqs, freqs], axis=-1)[:, None]  # [b, 1, s, d]
    cos, sin = np.cos(angles), np.sin(angles)
    allowed = np.tril(np.ones((s, s), dtype=bool))[None, None] & (mask[:, None, None, :] != 0)

    h = w["model.embed_tokens.weight"][ids]
    for i in range(dims.num_hidden_layers):
        p = f"model.layers.{i}."
        x = rms(h, w[p + "input_layernorm.weight"])
        q = split(x @ w[p + "self_attn.q_proj.weight"] + w[p + "self_attn.q_proj.bias"], n_heads)
        k = split(x @ w[p + "self_attn.k_proj.weight"] + w[p + "self_attn.k_proj.bias"], n_kv)
        v = split(x @ w[p + "self_attn.v_proj.weight"] + w[p + "self_attn.v_proj.bias"], n_kv)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = np.repeat(k, n_heads // n_kv, axis=1)
        v = np.repeat(v, n_heads // n_kv, axis=1)
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(d**-0.5)
        scores = np.where(allowed, scores, np.finfo(np.float32).min)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs = scores / scores.sum(axis=-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, s, n_heads * d)
        h = h + ctx @ w[p + "self_attn.o_proj.weight"]
        x = rms(h, w[p + "post_attention_layernorm.weight"])
        gate = x @ w[p + "mlp.gate_proj.weight"]
        act = gate / (1.0 + np.exp(-gate)) * (x @ w[p + "mlp.up_proj.weight"])
        h = h + act @ w[p + "mlp.down_proj.weight"]
    h = rms(h, w["model.norm.weight"])
    return (h @ w["model.embed_tokens.weight"].T).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out_dir = build_tiny_arch_router(args.out_dir, seed=args.seed)
    elapsed = time.perf_counter() - started
    for path in sorted(out_dir.iterdir()):
        print(f"{path.stat().st_size:>9}  {path}")
    print(f"built in {elapsed:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
