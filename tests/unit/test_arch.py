"""The Arch-Router backend on a tiny random Qwen2 of the same ONNX shape (see
tests/tiny_arch_router.py): the prompt byte for byte, trimming, the KV cache, scoring,
parsing, and load errors. The real 1.5B model loads through the same code."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from plano_extproc.config import DEFAULT_ROUTER, RouterSettings, parse_config
from plano_extproc.router.arch import (
    ArchRouter,
    parse_route,
    routing_prompt,
    trim_conversation,
)
from plano_extproc.router.base import OTHER, RouterLoadError
from plano_extproc.router.conversation import Turn, conversation
from tests.tiny_arch_router import DEFAULT_SYSTEM, build_tiny_arch_router

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parents[1] / "golden" / "arch_prompt.txt"
CONFIG = """
llm_providers:
  - model: openai/gpt-5.2
    default: true
  - model: anthropic/claude-sonnet-4-5
    routing_preferences:
      - name: code_generation
        description: writing new code from a specification
      - name: résumé_review
        description: feedback on CVs, cover letters and "career" moves
"""
ROUTES = parse_config(CONFIG, "c.yaml", {}).routes
ARCH = dataclasses.replace(DEFAULT_ROUTER, kind="arch", max_tokens=2048, timeout_s=3.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_arch_router(tmp_path_factory.mktemp("arch"))


def router(model_dir: Path, **changes: object) -> ArchRouter:
    settings: RouterSettings = dataclasses.replace(ARCH, **changes)  # type: ignore[arg-type]
    return ArchRouter.load(model_dir, ROUTES, settings)


def test_the_prompt_is_the_trained_format_byte_for_byte() -> None:
    turns = [
        Turn("user", "hi there"),
        Turn("assistant", "Hello! How can I help?"),
        Turn("user", "écris une fonction qui trie une liste\nen Python, s'il te plaît"),
    ]
    assert routing_prompt(ROUTES, turns) == GOLDEN.read_text(encoding="utf-8")


def test_the_prompt_goes_through_the_models_chat_template(model_dir: Path) -> None:
    r = router(model_dir)
    turns = [Turn("user", "sort a list in python")]
    text = r.tokenizer.decode(r.prompt_ids(turns)[0], skip_special_tokens=False)
    assert text == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{routing_prompt(ROUTES, turns)}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def count_words(text: str) -> int:
    return len(text.split())


def cut_words(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def test_trimming_keeps_the_newest_turns_within_budget() -> None:
    turns = [
        Turn("user" if i % 2 == 0 else "assistant", f"turn {i} " + "w " * 10) for i in range(9)
    ]
    # Each message's JSON is 13 words, plus one for its comma: three fit in 42, not in 41.
    assert trim_conversation(turns, 42, count_words, cut_words) == turns[-3:]
    assert trim_conversation(turns, 41, count_words, cut_words) == turns[-2:]
    assert trim_conversation(turns, 10_000, count_words, cut_words) == turns


def test_trimming_truncates_an_over_long_latest_turn_rather_than_dropping_it() -> None:
    turns = [Turn("user", "earlier"), Turn("user", "x " * 500)]
    kept = trim_conversation(turns, 50, count_words, cut_words)
    assert len(kept) == 1 and kept[0].role == "user"
    assert 0 < count_words(kept[0].text) < 50


def test_trimming_ignores_an_assistant_prefill_after_the_latest_user_turn() -> None:
    turns = [Turn("user", "write a poem"), Turn("assistant", "Roses are")]
    assert trim_conversation(turns, 100, count_words, cut_words) == turns[:1]
    assert trim_conversation([Turn("assistant", "hi")], 100, count_words, cut_words) == []


def test_the_rendered_prompt_stays_within_the_token_budget(model_dir: Path) -> None:
    budget = router(model_dir)._overhead + 120  # the instruction alone is ~400 tiny tokens
    r = router(model_dir, max_tokens=budget)
    long_paste = "Please review this contract. " + "The party shall indemnify. " * 299 + "End."
    turns = [
        Turn("user", "an old question " * 30),
        Turn("assistant", "an old answer"),
        Turn("user", long_paste),
    ]
    ids, kept = r.prompt_ids(turns)
    assert budget - 20 <= len(ids) <= budget
    assert len(kept) == 1  # only the latest turn fits, truncated at both ends kept
    assert kept[0].text.startswith("Please review this contract.")
    assert " … " in kept[0].text and kept[0].text.endswith("indemnify. End.")


def test_greedy_decoding_with_the_cache_gives_the_same_tokens_as_without(model_dir: Path) -> None:
    r = router(model_dir)
    ids, _ = r.prompt_ids([Turn("user", "write me a function that parses dates")])
    cached = r.decoder.greedy(ids, 12, set())
    uncached = r.decoder.greedy(ids, 12, set(), use_cache=False)
    assert len(cached) == 12 and cached == uncached
    assert len(set(cached)) > 1  # a random model, but not a constant one


def test_batched_scoring_equals_one_full_forward_per_answer(model_dir: Path) -> None:
    r = router(model_dir)
    ids, _ = r.prompt_ids([Turn("user", "improve my CV please")])
    fast = r.decoder.score(ids, r._answer_ids)
    for answer, score in zip(r._answer_ids, fast, strict=True):
        logits, _ = r.decoder.prefill([*ids, *answer[:-1]])
        logp = logits[0].astype(np.float64)
        logp = logp - np.log(np.exp(logp - logp.max(-1, keepdims=True)).sum(-1, keepdims=True))
        logp -= logits[0].max(-1, keepdims=True)
        full = sum(float(logp[len(ids) - 1 + j, t]) for j, t in enumerate(answer))
        assert score == pytest.approx(full, abs=1e-3)


def test_scoring_answers_a_valid_route_with_probabilities(model_dir: Path) -> None:
    choice = router(model_dir).choose([{"role": "user", "content": "write a parser in go"}])
    assert set(choice.scores) == {"code_generation", "résumé_review", OTHER}
    assert sum(choice.scores.values()) == pytest.approx(1.0)
    assert choice.route in choice.scores and choice.confidence == max(choice.scores.values())
    assert 0 < float(choice.explain["answer_mass"]) <= 1  # type: ignore[arg-type]


def test_greedy_mode_parses_what_the_model_wrote(model_dir: Path) -> None:
    choice = router(model_dir, decoding="greedy").choose([{"role": "user", "content": "hello"}])
    # A random tiny model writes no valid JSON: that must come out as "other", not a crash.
    assert choice.route in {"code_generation", "résumé_review", OTHER}
    assert isinstance(choice.explain["answer"], str)


def test_no_user_turn_is_other(model_dir: Path) -> None:
    choice = router(model_dir).choose([{"role": "system", "content": "be nice"}])
    assert choice.route == OTHER


@pytest.mark.parametrize(
    ("answer", "route"),
    [
        ('{"route": "code_generation"}', "code_generation"),
        ("{'route': 'code_generation'}", "code_generation"),
        ('```json\n{"route": "code_generation"}\n```', "code_generation"),
        ('Sure! {"route": "résumé_review"} is best.', "résumé_review"),
        ('{"route": "code_generation"', "code_generation"),
        ('{"route": " code_generation "}', "code_generation"),
        ('{"route": "other"}', OTHER),
        ('{"route": "weather"}', OTHER),
        ('{"route": null}', OTHER),
        ("I think code generation", OTHER),
        ("", OTHER),
    ],
)
def test_answers_are_parsed_leniently(answer: str, route: str) -> None:
    assert parse_route(answer, ["code_generation", "résumé_review"]) == route


def test_a_missing_export_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(RouterLoadError, match="optimum-cli export onnx"):
        ArchRouter.load(tmp_path, ROUTES, ARCH)


def test_cuda_without_onnxruntime_gpu_is_a_clear_error(model_dir: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(RouterLoadError, match="onnxruntime-gpu"):
        router(model_dir, device="cuda")


def test_a_huge_conversation_gives_the_prompt_the_whole_one_did(model_dir: Path) -> None:
    # The router reads newest first and no more than its budget can hold: the prompt is the
    # one trimming the whole conversation by token counts gave.
    r = router(model_dir, max_tokens=1200)
    paste = "Please review this contract. " + "The party shall indemnify. " * 10_000 + "End."
    for latest in ("short question in the end", paste):
        messages = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "w " * 10}
            for i in range(20_000)
        ] + [{"role": "user", "content": latest}, {"role": "assistant", "content": "prefill"}]
        whole = r.prompt_ids(conversation(messages))
        assert r.prompt_ids(conversation(messages, r.reading)) == whole
        assert len(conversation(messages, r.reading)) < 1200
