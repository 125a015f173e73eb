"""The provider-fallback matrix (issue 11): failure kind x plain/streamed x schema pair.

    .venv/bin/python bench/fallback_matrix.py > fallback-matrix.md

Starts four fake providers (tests/fake_providers.py: two OpenAI chat completions, two native
Anthropic Messages, each checking its own key) and one gateway (`plano-extproc up`: Envoy and
the ext_proc server) with the chains of tests/integration/test_fallback.py and a listener
`timeout` of 1 s, all on 127.0.0.1. For each cell the chain's primary fails once in the given
way (or not at all), and one request is sent in the primary's own API (raw HTTP, so the
time to the response headers is the gateway's alone). Printed, as a Markdown table: what each
provider received, in order (provider:model), the client's status, x-plano-model,
x-plano-attempts, the time to the response headers, and what the body was.

Between cells each member's count of failures in a row is reset (the test module's heal),
so outlier detection never skips a member here.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.fake_providers import Failure  # noqa: E402
from tests.fakes import free_port  # noqa: E402
from tests.integration import test_fallback as chains  # noqa: E402
from tests.integration.conftest import Gateway, start_gateway  # noqa: E402

OPENAI, ANTHROPIC = chains.OPENAI, chains.ANTHROPIC
PROMPT = "one two three four five six seven eight"

# Failure kind -> (how the primary fails plain, streamed); None: it answers.
KINDS: dict[str, tuple[Failure | None, Failure | None]] = {
    "none": (None, None),
    "429": (Failure.error(429), Failure.error(429)),
    "429 retry-after: 30": (
        Failure.error(429, retry_after=30),
        Failure.error(429, retry_after=30),
    ),
    "500": (Failure.error(500), Failure.error(500)),
    "502": (Failure.error(502), Failure.error(502)),
    "503": (Failure.error(503), Failure.error(503)),
    "529 (Anthropic's overloaded)": (Failure.error(529), Failure.error(529)),
    "hang 3 s (timeout 1 s)": (Failure.hang(3.0), Failure.hang(3.0)),
    "close before headers": (Failure.disconnect(), Failure.disconnect()),
    "close after headers (plain: half the body; streamed: after 3 events)": (
        Failure.cut(0),
        Failure.cut(3),
    ),
    "400": (Failure.error(400), Failure.error(400)),
}


@dataclass
class Cell:
    received: list[str]
    status: int | str
    model: str
    attempts: str
    headers_ms: float
    body: str


def post(http: httpx.Client, gw: Gateway, api: str, model: str, stream: bool) -> Cell:
    """One raw request in ``api``'s shape: the time to its headers and what its body was."""
    messages = [{"role": "user", "content": PROMPT}]
    if api == OPENAI:
        url, headers = "/v1/chat/completions", {"authorization": "Bearer client-key"}
        body: dict[str, object] = {"model": model, "messages": messages, "stream": stream}
    else:
        url = "/v1/messages"
        headers = {"x-api-key": "client-key", "anthropic-version": "2023-06-01"}
        body = {"model": model, "max_tokens": 256, "messages": messages, "stream": stream}
    started = time.monotonic()
    try:
        with http.stream("POST", gw.url + url, json=body, headers=headers) as response:
            headers_ms = (time.monotonic() - started) * 1000
            try:
                data = response.read().decode(errors="replace")
                outcome = describe(api, response.status_code, data, stream)
            except httpx.HTTPError as error:
                outcome = f"cut short ({type(error).__name__})"
            return Cell(
                [],
                response.status_code,
                response.headers.get("x-plano-model", "-"),
                response.headers.get("x-plano-attempts", "-"),
                headers_ms,
                outcome,
            )
    except httpx.HTTPError as error:
        elapsed = (time.monotonic() - started) * 1000
        return Cell([], type(error).__name__, "-", "-", elapsed, "no response")


def describe(api: str, status: int, data: str, stream: bool) -> str:
    """What the body was: whose answer, complete or not, or the error's type."""
    if status != 200:
        try:
            error = json.loads(data)
            inner = error["error"]
            kind = (inner.get("code") or inner["type"]) if api == OPENAI else inner["type"]
            return f"error {kind}"
        except (ValueError, KeyError, TypeError):
            return f"error ({data[:40]!r})"
    whom = next((name for name in chains.FAKE_NAME.values() if f"from {name}" in data), None)
    if not stream:
        return f"answer from {whom}" if whom else "answer (unknown)"
    done = "data: [DONE]" in data if api == OPENAI else "event: message_stop" in data
    if "event: error" in data or '"error"' in data:
        return "stream ended by an error event"
    text = joined_text(api, data)
    return f"stream {'complete' if done else 'incomplete'}, {text[:30]!r}"


def joined_text(api: str, data: str) -> str:
    pieces = []
    for line in data.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if api == OPENAI:
            pieces += [c["delta"].get("content") or "" for c in event.get("choices", [])]
        elif event.get("type") == "content_block_delta":
            pieces.append(event["delta"].get("text", ""))
    return "".join(pieces)


def who_received(fakes: Mapping[str, chains.Fake]) -> list[str]:
    names = []
    for member in chains.calls(fakes):
        m = chains.MEMBERS.get(member)
        names.append(f"{chains.FAKE_NAME[m.fake]}:{m.model_id}" if m else member)
    return names


def run(
    http: httpx.Client,
    gw: Gateway,
    fakes: Mapping[str, chains.Fake],
    api: str,
    model: str,
    stream: bool,
    failures: Mapping[str, list[Failure]],
) -> Cell:
    """One request after queueing ``failures`` (fake -> its next failures)."""
    chains.reset(fakes)
    for fake, queued in failures.items():
        fakes[fake].fail(*queued)
    cell = post(http, gw, api, model, stream)
    time.sleep(0.05)  # any further attempt has arrived by now
    cell.received = who_received(fakes)
    return cell


Row = tuple[str, str, str, Cell]


def matrix(http: httpx.Client, gw: Gateway, fakes: Mapping[str, chains.Fake]) -> list[Row]:
    rows = []
    for kind, (plain_failure, stream_failure) in KINDS.items():
        for stream in (False, True):
            failure = stream_failure if stream else plain_failure
            for schema, model in chains.SCHEMAS.items():
                primary = chains.MEMBERS[chains.CHAINS[model][0]]
                if kind.startswith("529") and primary.api != ANTHROPIC:
                    continue
                queued = {primary.fake: [failure]} if failure is not None else {}
                cell = run(http, gw, fakes, primary.api, model, stream, queued)
                rows.append((kind, "streamed" if stream else "plain", schema, cell))
                chains.heal(gw, fakes, model, http)
    return rows


# The last member's failure when every member of gpt-three (oa1) -> gpt-f (oa2) -> claude-f
# (an2) fails: the first two answer 503 and 429.
LAST: dict[str, Failure] = {
    "500": Failure.error(500),
    "529": Failure.error(529),
    "hang 3 s": Failure.hang(3.0),
    "close before headers": Failure.disconnect(),
}


def all_failing(http: httpx.Client, gw: Gateway, fakes: Mapping[str, chains.Fake]) -> list[Row]:
    rows = []
    for kind, last in LAST.items():
        for stream in (False, True):
            for api in (OPENAI, ANTHROPIC):
                queued = {
                    "oa1": [Failure.error(503)],
                    "oa2": [Failure.error(429, retry_after=30)],
                    "an2": [last],
                }
                cell = run(http, gw, fakes, api, "openai/gpt-three", stream, queued)
                rows.append((f"503, 429, {kind}", "streamed" if stream else "plain", api, cell))
                chains.heal(gw, fakes, "openai/gpt-three", http)
    return rows


def ejection(http: httpx.Client, gw: Gateway, fakes: Mapping[str, chains.Fake]) -> list[Row]:
    """gpt-eject (oa1) -> gpt-f (oa2): the primary answers 503 to every request it gets."""
    rows = []
    for i in range(1, 6):
        queued = {"oa1": [Failure.error(503)]}
        cell = run(http, gw, fakes, OPENAI, "openai/gpt-eject", False, queued)
        rows.append((f"request {i}", "plain", OPENAI, cell))
        if i == 3:
            time.sleep(0.2)  # Envoy's main thread ejects it; the worker learns soon after
    return rows


def table(title: str, intro: str, first: str, third: str, rows: list[Row]) -> None:
    print(f"## {title}\n\n{intro}\n")
    print(
        f"| {first} | mode | {third} | received (in order) | status | x-plano-model | "
        "x-plano-attempts | headers (ms) | body |"
    )
    print("|---|---|---|---|---|---|---|---:|---|")
    for kind, mode, schema, cell in rows:
        received = " → ".join(cell.received) or "(none)"
        print(
            f"| {kind} | {mode} | {schema} | {received} | {cell.status} | {cell.model} | "
            f"{cell.attempts} | {cell.headers_ms:.0f} | {cell.body} |"
        )
    print()


def main() -> int:
    fakes = chains.start_fakes()
    workdir = Path(tempfile.mkdtemp(prefix="fallback-matrix-"))
    gw = start_gateway(chains.gateway_config(fakes, free_port()), workdir, env=chains.KEY_ENV)
    # One client whose connections are kept (a new one costs ~20 ms: its TLS context), and
    # without Nagle's wait.
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    http = httpx.Client(timeout=15, transport=httpx.HTTPTransport(socket_options=nodelay))
    try:
        rows = matrix(http, gw, fakes)
        failing = all_failing(http, gw, fakes)
        ejected = ejection(http, gw, fakes)
    finally:
        http.close()
        gw.stop()
        for fake in fakes.values():
            fake.stop()

    print("# Provider fallback matrix\n")
    print(
        "One gateway (`plano-extproc up`: Envoy + the ext_proc server), listener "
        "`timeout: 1s`, fake providers on 127.0.0.1 (tests/integration/test_fallback.py's "
        "config). *Received*: what each provider got, in order (provider:model). *Headers*: "
        "from sending the request to its response headers (one kept-alive client).\n"
    )
    table(
        "Failure kind x plain/streamed x schema",
        "Two-member chains, named primary>fallback by their API; the client speaks the "
        "primary's API; the primary fails once as the first column says.",
        "failure of the primary",
        "schema",
        rows,
    )
    table(
        "Every member failing",
        "openai/gpt-three (openai-primary) -> openai/gpt-f (openai-fallback) -> "
        "anthropic/claude-f (anthropic-fallback), failing in the order the first column "
        "says; the third column is the client's API.",
        "failures, in order",
        "client",
        failing,
    )
    table(
        "A member that keeps failing (outlier detection)",
        "openai/gpt-eject (openai-primary) -> openai/gpt-f: the primary would answer 503 to "
        "every request; after 3 gateway failures in a row it is ejected for 30 s.",
        "request",
        "client",
        ejected,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
