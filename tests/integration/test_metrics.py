"""The metrics endpoint through real Envoy: known traffic, then exact counter values.

`up --metrics-listen` in front of fake providers: model-routed, alias, wildcard, preference
routed and fallback requests, a provider's 5xx and the server's 4xx; one scrape of
/metrics must then show exactly those counts, by the decision's labels, the server's router
counters beside Envoy's, and no string a client chose as a label value."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fake_providers import Failure, FakeOpenAI
from tests.fakes import FakeProvider, free_port

from .conftest import KEYS, Gateway, config_for, start_gateway

pytestmark = pytest.mark.integration

POEM = [{"role": "user", "content": "Write a short poem about autumn leaves on a quiet lake."}]
# Client-chosen strings that must never become a label value.
WILDCARD_ID = "gpt-client-chosen-7f3a"
UNKNOWN_MODEL = "no-such-model-9c1e"
BROKEN_MODEL = "broken-model-31b0"
ROUTE_IN_BODY = "route-from-client-55d2"

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$")


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus' text format: (name, labels) -> value."""
    samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        samples[(match.group(1), labels)] = float(match.group(4))
    return samples


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.fixture(scope="module")
def flaky() -> Iterator[FakeOpenAI]:
    with FakeOpenAI("flaky") as fake:
        yield fake


@pytest.fixture(scope="module")
def metered(
    openai_fake: FakeProvider,
    anthropic_fake: FakeProvider,
    flaky: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, str]]:
    wildcard = (
        "  - model: openai/*\n"
        "    access_key: $FAKE_OPENAI_KEY\n"
        f"    base_url: {openai_fake.base_url()}\n"
        "  - model: openai/gpt-flaky\n"
        "    access_key: $FAKE_OPENAI_KEY\n"
        f"    base_url: {flaky.base_url()}\n"
    )
    metrics_port = free_port()
    gateway = start_gateway(
        config_for(openai_fake, anthropic_fake, wildcard),
        tmp_path_factory.mktemp("metrics"),
        workers=2,
        extra_args=("--metrics-listen", f"127.0.0.1:{metrics_port}", "--token-stats"),
    )
    yield gateway, f"http://127.0.0.1:{metrics_port}/metrics"
    gateway.stop()


def chat(gateway: Gateway, model: str | None, messages: object = None) -> httpx.Response:
    body: dict[str, object] = {"messages": messages or [{"role": "user", "content": "hi"}]}
    if model is not None:
        body["model"] = model
    body["route"] = ROUTE_IN_BODY  # an unknown field a client may send: never a label
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=10)


def test_counts_after_known_traffic(metered: tuple[Gateway, str], flaky: FakeOpenAI) -> None:
    gateway, url = metered
    statuses = [chat(gateway, "openai/gpt-5.2").status_code for _ in range(3)]
    statuses += [chat(gateway, "fast-model").status_code for _ in range(2)]
    statuses.append(chat(gateway, f"openai/{WILDCARD_ID}").status_code)
    statuses += [chat(gateway, "auto", POEM).status_code for _ in range(2)]  # the second: cached
    # Nothing a route fits (the router says `other` or is not confident): the default serves.
    statuses.append(chat(gateway, None, [{"role": "user", "content": "ok"}]).status_code)
    flaky.fail(Failure.error(500))
    statuses.append(chat(gateway, "openai/gpt-flaky").status_code)
    # A bare id no entry names goes to the one wildcard.
    statuses.append(chat(gateway, UNKNOWN_MODEL).status_code)
    # A body that is not JSON: the server's 400, before any decision.
    broken = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=b'{"model": "' + BROKEN_MODEL.encode() + b'", "messages": [',
        headers={"content-type": "application/json"},
        timeout=10,
    )
    statuses.append(broken.status_code)
    assert statuses == [200] * 9 + [500, 200, 400]

    expected = {
        ("openai/gpt-5.2", "direct", "none", "2xx"): 3,
        ("openai/gpt-5.2", "alias", "none", "2xx"): 2,
        ("openai/*", "direct", "none", "2xx"): 2,
        ("anthropic/claude-sonnet-4-5", "preference", "creative_tasks", "2xx"): 2,
        ("openai/gpt-5.2", "default", "none", "2xx"): 1,
        ("openai/gpt-flaky", "direct", "none", "5xx"): 1,
        ("none", "none", "none", "4xx"): 1,
    }
    # Envoy's histograms reach its admin output at its stats flush (every 5 s).
    deadline = time.monotonic() + 20
    while True:
        text = httpx.get(url, timeout=5).text
        samples = parse(text)
        if (
            total(samples, "envoy_plano_upstream_time_ms_count") >= 11
            or time.monotonic() > deadline
        ):
            break
        time.sleep(0.5)

    requests = {
        (
            dict(labels)["model"],
            dict(labels)["routing"],
            dict(labels)["route"],
            dict(labels)["status_class"],
        ): v
        for (name, labels), v in samples.items()
        if name == "envoy_plano_requests"
    }
    assert requests == expected
    # The server's own: one routed by preference twice (once from the decision cache).
    assert value(samples, "plano_router_decisions_total", route="creative_tasks") == 2
    assert total(samples, "plano_router_decisions_total") == 2
    fallbacks = {
        dict(labels)["reason"]: v
        for (n, labels), v in samples.items()
        if n == "plano_router_fallbacks_total"
    }
    assert fallbacks["timeout"] == fallbacks["failure"] == 0
    assert fallbacks["other"] + fallbacks["low_confidence"] == 1
    # Each worker has its own decision cache: the repeat is a hit only on the same worker.
    assert total(samples, "plano_router_decision_seconds_count") == 3
    assert total(samples, "plano_extproc_errors_total") == 0
    # Every request that reached a provider has its upstream time and first byte, by cluster.
    assert total(samples, "envoy_plano_upstream_time_ms_count") == 11
    assert total(samples, "envoy_plano_upstream_ttfb_ms_count") == 11
    # Token usage from the providers' JSON answers (the fakes report 1 in, 2 out each), by
    # the decision's entry; the 500 and the 400 reported none.
    answered = {"openai/gpt-5.2": 6, "openai/*": 2, "anthropic/claude-sonnet-4-5": 2}
    for name, per_answer in (("envoy_plano_input_tokens", 1), ("envoy_plano_output_tokens", 2)):
        counted = {dict(labels)["model"]: v for (n, labels), v in samples.items() if n == name}
        assert counted == {m: n * per_answer for m, n in answered.items()}, name
    # Every value Envoy's stats loggers read was a number (a request without an upstream or
    # without token counts is not given to the logger that would read them).
    assert "non-number" not in gateway.log.read_text()
    # No client-chosen string is a label anywhere, Envoy's stats included.
    for chosen in (
        WILDCARD_ID,
        UNKNOWN_MODEL,
        BROKEN_MODEL,
        ROUTE_IN_BODY,
        "client-key-never-forwarded",
    ):
        assert chosen not in text
    for key in KEYS.values():
        assert key not in text


def test_only_get_metrics_is_served(metered: tuple[Gateway, str]) -> None:
    _, url = metered
    base = url.removesuffix("/metrics")
    for path in ("/", "/stats", "/quitquitquit", "/stats/prometheus", "/metrics/../quitquitquit"):
        assert httpx.get(base + path, timeout=5).status_code == 404
    assert httpx.post(url, timeout=5).status_code == 404
    assert httpx.get(url, timeout=5).status_code == 200
