"""RouterService's decision cache: repeats of what the router reads are answered on the event
loop without the router; timeouts and failures are never remembered; the size is bounded."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Sequence

import pytest

from plano_extproc.config import DEFAULT_ROUTER, Route, parse_config
from plano_extproc.router.base import RouteChoice
from plano_extproc.router.conversation import reading_for
from plano_extproc.router.service import RouterService

pytestmark = pytest.mark.unit

CONFIG = """
llm_providers:
  - model: openai/gpt-5.2
    access_key: k
    default: true
  - model: anthropic/claude-sonnet-4-5
    access_key: k
    routing_preferences:
      - name: creative_writing
        description: writing stories, poems and song lyrics
      - name: code_generation
        description: writing new code from a specification
"""


def routes(extra: str = "") -> tuple[Route, ...]:
    return parse_config(CONFIG + extra, "c.yaml", {}).routes


class CountingRouter:
    """Reads as the embedded router does; counts its decisions and where they ran."""

    def __init__(self, route_list: tuple[Route, ...] | None = None, *, fail: bool = False):
        self.routes = route_list if route_list is not None else routes()
        self.reading = reading_for(DEFAULT_ROUTER)
        self.calls = 0
        self.fail = fail
        self.delay = 0.0
        self.threads: set[str] = set()

    def choose(self, messages: Sequence[object]) -> RouteChoice:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model exploded")
        scores = {"code_generation": 0.8, "creative_writing": 0.1, "other": 0.1}
        return RouteChoice("code_generation", 0.8, scores, {"views": ["..."]})


def user(text: str) -> dict[str, object]:
    return {"role": "user", "content": text}


def agent_steps(request: str, steps: int) -> list[list[dict[str, object]]]:
    """What an agent sends on each tool step: the same request, then the calls and results."""
    messages: list[dict[str, object]] = [{"role": "system", "content": "you are an agent"}]
    messages.append(user(request))
    sent = [list(messages)]
    for i in range(steps):
        call = {"id": f"c{i}", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": f"file{i}.py"})
        sent.append(list(messages))
    return sent


def ask(service: RouterService, conversations: Sequence[Sequence[object]]) -> list[object]:
    async def main() -> list[object]:
        return [await service.choose(c) for c in conversations]

    return asyncio.run(main())


def test_an_agents_tool_steps_are_decided_once() -> None:
    router = CountingRouter()
    service = RouterService(router, timeout_s=1.0)
    answers = ask(service, agent_steps("write a go service that pings slack", 10))
    service.close()
    assert router.calls == 1
    assert all(isinstance(a, RouteChoice) and a.route == "code_generation" for a in answers)
    first, *rest = answers
    assert isinstance(first, RouteChoice) and first.explain["cached"] is False
    assert all(isinstance(a, RouteChoice) and a.explain["cached"] is True for a in rest)
    assert all(a.scores == first.scores for a in rest)  # type: ignore[attr-defined]
    assert (service.cache_hits, service.cache_misses) == (10, 1)


def test_a_hit_never_goes_to_the_router_thread() -> None:
    router = CountingRouter()
    service = RouterService(router, timeout_s=1.0)
    ask(service, [[user("a haiku about tea")]])
    service.close()  # the router thread is gone: only the cache can answer now
    (again,) = ask(service, [[user("a haiku about tea")]])
    assert isinstance(again, RouteChoice) and again.explain["cached"] is True
    assert router.calls == 1 and router.threads == {"plano-router_0"}


def test_what_the_router_reads_decides_a_miss() -> None:
    router = CountingRouter()
    service = RouterService(router, timeout_s=1.0)
    asked: list[list[object]] = [
        [user("a haiku about tea")],
        [user("a haiku about coffee")],  # another request
        [user("in go please"), {"role": "assistant", "content": "ok"}, user("a haiku about tea")],
        [user("in rust please"), {"role": "assistant", "content": "ok"}, user("a haiku about tea")],
        [{"role": "assistant", "content": "hi"}, user("a haiku about tea")],  # context differs
    ]
    ask(service, asked)
    assert router.calls == len(asked)
    # Unread parts change nothing: the system prompt, tool messages, images, an assistant
    # turn after the latest user turn.
    unread: list[list[object]] = [
        [{"role": "system", "content": "terse"}, user("a haiku about tea")],
        [user("a haiku about tea"), {"role": "tool", "tool_call_id": "x", "content": "out"}],
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a haiku about tea"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            }
        ],
        [user("a haiku about tea"), {"role": "assistant", "content": "Steam"}],
    ]
    ask(service, unread)
    service.close()
    assert router.calls == len(asked)


def test_a_turn_older_than_the_router_reads_does_not_matter() -> None:
    router = CountingRouter()
    service = RouterService(router, timeout_s=1.0)
    recent = [user("b"), {"role": "assistant", "content": "c"}, user("d"), user("e")]
    ask(service, [[user("old one"), *recent], [user("older still"), *recent]])
    service.close()
    assert router.calls == 1  # the embedded router reads three turns before the latest


def test_the_routes_are_part_of_the_key() -> None:
    a = RouterService(CountingRouter(), timeout_s=1.0)
    more = routes("      - name: translation\n        description: translating text\n")
    b = RouterService(CountingRouter(more), timeout_s=1.0)
    messages = [user("a haiku about tea")]
    assert a.cache_key(messages) != b.cache_key(messages)
    assert a.cache_key(messages) == RouterService(CountingRouter(), 1.0).cache_key(messages)
    a.close()
    b.close()


def test_the_cache_is_a_bounded_lru() -> None:
    router = CountingRouter()
    service = RouterService(router, timeout_s=1.0, cache_entries=8)
    ask(service, [[user(f"request {i}")] for i in range(8)])
    ask(service, [[user("request 0")]])  # used again: now the most recent
    ask(service, [[user(f"request {i}")] for i in range(8, 20)])
    assert service.cache_size() == 8
    assert router.calls == 20
    ask(service, [[user("request 19")], [user("request 12")]])  # still held
    assert router.calls == 20
    ask(service, [[user("request 0")], [user("request 1")]])  # evicted
    service.close()
    assert router.calls == 22 and service.cache_size() == 8


def test_timeouts_and_failures_are_not_cached() -> None:
    failing = CountingRouter(fail=True)
    service = RouterService(failing, timeout_s=1.0)
    assert ask(service, [[user("x")], [user("x")]]) == [None, None]
    service.close()
    assert failing.calls == 2 and service.cache_size() == 0

    slow = CountingRouter()
    slow.delay = 0.3
    service = RouterService(slow, timeout_s=0.05)
    assert ask(service, [[user("x")]]) == [None]
    time.sleep(0.35)  # the late answer arrives after its deadline: it is dropped
    slow.delay = 0.0
    (answer,) = ask(service, [[user("x")]])
    service.close()
    assert isinstance(answer, RouteChoice) and answer.explain["cached"] is False
    assert slow.calls == 2


def test_nothing_to_read_is_not_cached() -> None:
    router = CountingRouter()
    service = RouterService(router, timeout_s=1.0)
    ask(service, [[], [{"role": "system", "content": "s"}], []])
    service.close()
    assert router.calls == 3 and service.cache_size() == 0


def test_a_hit_costs_well_under_a_millisecond() -> None:
    router = CountingRouter()
    service = RouterService(router, timeout_s=1.0)
    # A long agent conversation with a long request: the hit still reads only what the
    # router reads (bounded by max_tokens), hashes it and looks it up.
    steps = agent_steps("refactor this module:\n" + "x = 1\n" * 20_000, 40)
    ask(service, [steps[0]])
    conversation = steps[-1]

    async def timed() -> list[float]:
        costs = []
        for _ in range(2000):
            started = time.perf_counter()
            await service.choose(conversation)
            costs.append(time.perf_counter() - started)
        return costs

    costs = asyncio.run(timed())
    service.close()
    assert router.calls == 1
    median = statistics.median(costs)
    print(f"cache hit: median {median * 1e6:.1f} us, p99 {sorted(costs)[1979] * 1e6:.1f} us")
    assert median < 1e-3


def test_route_explain_says_when_a_decision_came_from_the_cache() -> None:
    import io
    import json

    from plano_extproc.explain import route_lines

    config = parse_config(CONFIG, "c.yaml", {})
    line = json.dumps({"messages": [user("write a python function that parses dates")]})
    tool_step = json.dumps(
        {
            "messages": [
                user("write a python function that parses dates"),
                {"role": "assistant", "content": "Reading the module first."},
            ]
        }
    )
    out = io.StringIO()
    status = asyncio.run(
        route_lines(config, io.StringIO(f"{line}\n{tool_step}\n"), out, explain=True)
    )
    first, second = (json.loads(a) for a in out.getvalue().splitlines())
    assert status == 0
    assert first["explain"]["cached"] is False and second["explain"]["cached"] is True
    assert first["route"] == second["route"] == "code_generation"
    assert first["scores"] == second["scores"]
    assert first["explain"]["views"] == second["explain"]["views"]
