"""Preference routing without a model: what the router reads, how its answer becomes a
decision, the ``routing`` config section, and the service's deadline and failure rules."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from plano_extproc.config import Config, ConfigError, Route, parse_config
from plano_extproc.errors import ErrorReply
from plano_extproc.resolve import ASK_ROUTER, Decision, resolve, resolve_preference
from plano_extproc.router.base import OTHER, RouteChoice, probabilities
from plano_extproc.router.conversation import Turn, conversation
from plano_extproc.router.embedded import Adapter, Views, member_logits, views
from plano_extproc.router.service import RouterService

pytestmark = pytest.mark.unit

CONFIG = """
llm_providers:
  - model: openai/gpt-5.2
    access_key: $OPENAI_API_KEY
    default: true
  - model: openai/gpt-5
    access_key: $OPENAI_API_KEY
    routing_preferences:
      - name: complex_reasoning
        description: deep analysis and complex problem solving
  - model: anthropic/claude-sonnet-4-5
    access_key: $ANTHROPIC_API_KEY
    routing_preferences:
      - name: creative_tasks
        description: creative writing and content generation
model_aliases:
  fast-model:
    target: gpt-5.2
"""
KEYS = {"OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a"}


def config(extra: str = "", env: dict[str, str] | None = None) -> Config:
    return parse_config(CONFIG + extra, "p.yaml", KEYS if env is None else env)


def choice(route: str, confidence: float = 0.9) -> RouteChoice:
    return RouteChoice(route, confidence, {route: confidence})


def test_the_router_reads_user_and_assistant_text_only() -> None:
    messages: list[object] = [
        {"role": "system", "content": "You are a lawyer."},
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": "  "},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is in this picture?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "text", "text": "a poem about it please"},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
        {"role": "tool", "content": "42", "tool_call_id": "1"},
        {"role": "assistant", "content": "Here is one."},
        "not a message",
        {"role": "user", "content": 7},
        # The last human message: the router reads up to it (the answer before it too).
        {"role": "user", "content": "shorter, please"},
    ]
    assert conversation(messages) == [
        Turn("user", "what is in this picture?\na poem about it please"),
        Turn("assistant", "Here is one."),
        Turn("user", "shorter, please"),
    ]


def test_no_model_asks_the_router_only_when_routes_exist() -> None:
    assert resolve(None, config()) is ASK_ROUTER
    decision = resolve("fast-model", config())  # an alias is never re-routed
    assert isinstance(decision, Decision) and decision.routing == "alias"
    off = config("routing:\n  router: none\n")
    assert off.routes == ()
    decision = resolve(None, off)
    assert isinstance(decision, Decision) and decision.routing == "default"


def test_a_chosen_route_goes_to_its_provider() -> None:
    decision = resolve_preference(choice("creative_tasks"), config())
    assert isinstance(decision, Decision)
    assert (decision.provider.name, decision.routing, decision.route) == (
        "anthropic/claude-sonnet-4-5",
        "preference",
        "creative_tasks",
    )


@pytest.mark.parametrize(
    "answer",
    [None, choice(OTHER), choice("no_such_route"), choice("creative_tasks", confidence=0.3)],
    ids=["timeout-or-failure", "other", "unknown-route", "low-confidence"],
)
def test_fallbacks_go_to_the_default(answer: RouteChoice | None) -> None:
    decision = resolve_preference(answer, config("routing:\n  min_confidence: 0.5\n"))
    assert isinstance(decision, Decision)
    assert (decision.provider.name, decision.routing, decision.route) == (
        "openai/gpt-5.2",
        "default",
        None,
    )


def test_a_route_whose_key_is_missing_is_a_clear_500() -> None:
    decision = resolve_preference(choice("creative_tasks"), config(env={"OPENAI_API_KEY": "o"}))
    assert isinstance(decision, ErrorReply)
    assert (decision.status, decision.code) == (500, "missing_api_key")
    assert "ANTHROPIC_API_KEY" in decision.message


def test_other_without_a_default_is_a_400_and_a_warning() -> None:
    text = CONFIG.replace("    default: true\n", "")
    cfg = parse_config(text, "p.yaml", KEYS)
    assert any("no provider has default: true" in w for w in cfg.warnings)
    decision = resolve_preference(choice(OTHER), cfg)
    assert isinstance(decision, ErrorReply) and decision.status == 400


def test_routing_section_defaults_and_keys(tmp_path: object) -> None:
    router = config().router
    assert (router.kind, router.device, router.timeout_s, router.max_tokens) == (
        "embedded",
        "cpu",
        0.3,
        256,
    )
    arch = config(
        "routing:\n  router: arch\n  model_dir: models/arch\n  device: cuda\n  threads: 4\n"
        "  timeout: 2s\n  max_tokens: 1024\n  min_confidence: 0.4\n  decoding: greedy\n"
    ).router
    assert arch.model_dir is not None and arch.model_dir.as_posix() == "models/arch"
    assert (arch.kind, arch.device, arch.threads, arch.timeout_s) == ("arch", "cuda", 4, 2.0)
    assert (arch.max_tokens, arch.min_confidence, arch.decoding) == (1024, 0.4, "greedy")
    assert config("routing:\n  router: arch\n  model_dir: /m\n").router.timeout_s == 3.0


def test_routing_section_errors_are_located() -> None:
    with pytest.raises(ConfigError) as info:
        config(
            "routing:\n  router: gpt\n  device: tpu\n  threads: -1\n  timeout: soon\n"
            "  max_tokens: 5\n  min_confidence: 2\n  decoding: beam\n  colour: red\n"
        )
    assert info.value.errors == [
        "p.yaml:27: routing.colour: unknown key; allowed here: router, model_dir, device, "
        "threads, timeout, max_tokens, min_confidence, decoding, route_named_models, "
        "route_on_user_only",
        "p.yaml:20: routing.router: must be one of embedded, arch, none, got 'gpt'",
        "p.yaml:21: routing.device: must be one of cpu, cuda, got 'tpu'",
        "p.yaml:22: routing.threads: must be 1-256 threads, or 0 to let the router choose, got -1",
        "p.yaml:23: routing.timeout: must be a duration such as 300ms or 2s, got 'soon'",
        "p.yaml:24: routing.max_tokens: must be a token count 32-32768, got 5",
        "p.yaml:25: routing.min_confidence: must be a number from 0 to 1, got 2",
        "p.yaml:26: routing.decoding: must be one of score, greedy, got 'beam'",
    ]
    with pytest.raises(ConfigError) as info:
        config("routing:\n  router: arch\n")
    assert info.value.errors == [
        "p.yaml:19: routing.model_dir: is required with router: arch: the directory of an "
        "Arch-Router ONNX export"
    ]


def test_probabilities_are_a_softmax() -> None:
    p = probabilities(["a", "b", "c"], [1000.0, 1000.0, 0.0])
    assert p["a"] == pytest.approx(0.5) and p["c"] == pytest.approx(0.0)
    assert sum(p.values()) == pytest.approx(1.0)


# --- the embedded router's views and scoring, on made-up similarities ---

NAMES = ["coding", "poetry"]
PLAIN = Adapter(np.eye(2), 0.0, np.zeros(2), context=0.5, scale=20.0)


def test_views_read_the_latest_turn_then_its_context() -> None:
    turns = [
        Turn("user", "write a sorting function"),
        Turn("assistant", "def sort(x): ..."),
        Turn("user", "now in rust"),
    ]
    v = views(turns)
    assert v is not None
    assert v.texts == ["now in rust", "def sort(x): ...", "write a sorting function"]
    assert (v.latest, v.context) == ([0], [1, 2])
    assert views([Turn("assistant", "hello")]) is None


def test_views_read_a_long_turn_at_both_ends() -> None:
    paste = "\n".join(f"line {i} of a long contract clause about liability" for i in range(40))
    v = views([Turn("user", "translate this to German please:\n" + paste)])
    assert v is not None and len(v.latest) == 3
    assert v.texts[1].startswith("translate this to German please:")
    assert v.texts[2].endswith("line 39 of a long contract clause about liability")


def argmax(logits: np.ndarray) -> str:
    return [*NAMES, OTHER][int(np.argmax(logits))]


def test_member_logits_prefer_the_closest_route_and_other_below_it() -> None:
    v = Views(["q"], [0])
    # Columns: coding, poetry, then the score "other" gets from this view.
    high = member_logits(np.array([[0.6, 0.2, 0.3]]), v, PLAIN)
    assert argmax(high) == "coding"
    assert np.exp(high).sum() == pytest.approx(1.0)
    assert argmax(member_logits(np.array([[0.1, 0.05, 0.3]]), v, PLAIN)) == OTHER


def test_a_long_turn_counts_its_best_edge() -> None:
    v = Views(["whole paste", "translate this:", "last lines"], [0, 1, 2])
    sims = np.array([[0.5, 0.2, 0.0], [0.1, 0.7, 0.0], [0.2, 0.1, 0.0]])
    assert argmax(member_logits(sims, v, PLAIN)) == "poetry"


def test_context_decides_a_vague_follow_up_but_not_a_closing() -> None:
    v = Views(["same for this one", "write a sorting function"], [0], [1])
    follow_up = np.array([[0.25, 0.27, 0.2], [0.7, 0.1, 0.0]])
    assert argmax(member_logits(follow_up, v, PLAIN)) == "coding"
    # "other" is judged on the latest turn alone: a clear closing is not a coding request.
    closing = np.array([[0.0, 0.0, 0.6], [0.7, 0.1, 0.0]])
    assert argmax(member_logits(closing, v, PLAIN)) == OTHER


def test_a_clear_new_request_beats_its_context() -> None:
    v = Views(["write me a sonnet about rain", "write a sorting function"], [0], [1])
    sims = np.array([[0.1, 0.8, 0.2], [0.7, 0.1, 0.0]])
    assert argmax(member_logits(sims, v, PLAIN)) == "poetry"


# --- the service: off the event loop, with a deadline ---


class SlowRouter:
    routes: tuple[Route, ...] = ()

    def __init__(self, delay: float, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.calls = 0
        self.threads: set[str] = set()

    def choose(self, messages: Sequence[object]) -> RouteChoice:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model exploded")
        return choice("creative_tasks")


def test_the_service_runs_the_router_off_the_event_loop() -> None:
    router = SlowRouter(0.05)
    service = RouterService(router, timeout_s=1.0)

    async def main() -> tuple[RouteChoice | None, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        result = await service.choose([])
        task.cancel()
        return result, ticks

    result, ticks = asyncio.run(main())
    service.close()
    assert result is not None and result.route == "creative_tasks"
    assert ticks >= 3  # the loop kept turning while the router worked
    assert router.threads == {"plano-router_0"}


def test_a_slow_or_failing_router_answers_none() -> None:
    slow = RouterService(SlowRouter(0.5), timeout_s=0.05)
    failing = RouterService(SlowRouter(0.0, fail=True), timeout_s=1.0)
    assert asyncio.run(slow.choose([])) is None
    assert asyncio.run(failing.choose([])) is None
    slow.close()
    failing.close()


@pytest.mark.parametrize(("concurrency", "threads"), [(None, 1), (2, 2), (0, 1), ("2", 1)])
def test_a_router_that_allows_it_decides_several_at_once(concurrency: object, threads: int) -> None:
    router = SlowRouter(0.2)
    if concurrency is not None:
        router.concurrency = concurrency  # type: ignore[attr-defined]
    service = RouterService(router, timeout_s=2.0)

    async def four() -> tuple[list[RouteChoice | None], float]:
        started = time.monotonic()
        answers = await asyncio.gather(*(service.choose([]) for _ in range(4)))
        return list(answers), time.monotonic() - started

    answers, elapsed = asyncio.run(four())
    service.close()
    assert all(a is not None and a.route == "creative_tasks" for a in answers)
    assert len(router.threads) == threads
    # Four 0.2 s decisions: 0.8 s one at a time, 0.4 s two at a time.
    assert 0.2 * 4 / threads - 0.05 <= elapsed < 0.2 * 4 / threads + 0.3


def test_a_decision_done_after_its_deadline_is_dropped_when_the_loop_wakes_late() -> None:
    # The event loop blocked past both the deadline and the decision's end (a busy machine):
    # asyncio.wait_for would hand back the ready answer, but it missed its deadline.
    router = SlowRouter(0.05)
    service = RouterService(router, timeout_s=0.01)

    async def blocked() -> RouteChoice | None:
        pending = asyncio.ensure_future(service.choose([]))
        await asyncio.sleep(0)  # the decision starts in its thread
        time.sleep(0.2)  # the loop is blocked until the decision is long done
        return await pending

    assert asyncio.run(blocked()) is None
    service.close()
    assert router.calls == 1


def test_decisions_that_expired_in_the_queue_are_skipped() -> None:
    router = SlowRouter(0.2)
    service = RouterService(router, timeout_s=0.1)

    async def burst() -> list[RouteChoice | None]:
        return list(await asyncio.gather(*(service.choose([]) for _ in range(5))))

    assert asyncio.run(burst()) == [None] * 5
    time.sleep(0.3)
    service.close()
    assert router.calls == 1  # the other four waited past their deadline and never ran


def test_validate_shows_the_router() -> None:
    from plano_extproc.summary import summarize

    text = summarize(config("routing:\n  timeout: 250ms\n"))
    assert "router: embedded (the encoders `make models` builds), device cpu, timeout 250ms" in text
    assert "no model named -> the router; other or fallback -> openai/gpt-5.2" in text
    assert "no model named -> openai/gpt-5.2" in summarize(config("routing:\n  router: none\n"))
