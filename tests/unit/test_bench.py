"""The load benchmark's own parts: its Envoy configs pass Envoy's validation, its bodies
have the sizes it reports, its fake providers answer in each API's shape, every row has a
floor of its kind, and each benchmark rewrites only its section of RESULTS.md."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from plano_extproc.envoy_config import validate_with_envoy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import load_bench  # noqa: E402
import loadgen  # noqa: E402
import upstreams  # noqa: E402
from results import write_section  # noqa: E402

pytestmark = pytest.mark.unit


def test_fake_provider_and_floor_configs_pass_envoy_validation() -> None:
    validate_with_envoy(upstreams.fake_provider_bootstrap(18001, 18002, 1 << 24))
    validate_with_envoy(upstreams.floor_bootstrap(18003, [(18004, 18001), (18005, 18006)], 1 << 24))


@pytest.mark.parametrize("size", [1000, 100_000])
def test_chat_bodies_have_the_size_they_are_named_for(size: int) -> None:
    body = load_bench.chat_body("openai/gpt-5.2", size)
    assert 0.9 * size <= len(body) <= 1.1 * size
    parsed = json.loads(body)
    assert parsed["model"] == "openai/gpt-5.2"
    assert "model" not in json.loads(load_bench.chat_body(None, size))
    assert json.loads(load_bench.chat_body("m", size, stream=True))["stream"] is True


@pytest.mark.parametrize("size", [1000, 100_000])
def test_messages_bodies_have_the_size_they_are_named_for(size: int) -> None:
    body = load_bench.anthropic_body("anthropic/claude-bench", size)
    assert 0.9 * size <= len(body) <= 1.1 * size
    parsed = json.loads(body)
    assert parsed["model"] == "anthropic/claude-bench"
    assert parsed["max_tokens"] == 512 and isinstance(parsed["system"], str)
    assert [m["role"] for m in parsed["messages"]] == ["user", "assistant", "user"]
    assert "stream" not in parsed
    assert json.loads(load_bench.anthropic_body("m", size, stream=True))["stream"] is True
    assert "model" not in json.loads(load_bench.anthropic_body(None, size))


def test_the_fake_message_is_an_anthropic_message() -> None:
    message = json.loads(upstreams.MESSAGE)
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"] == [{"type": "text", "text": "A fixed answer from the bench."}]
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
    assert set(message["usage"]) == {"input_tokens", "output_tokens"}


def _events(stream: bytes) -> list[tuple[str, Any]]:
    events = []
    for block in stream.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            assert name.startswith("event: ") and data.startswith("data: ")
            payload = json.loads(data.removeprefix("data: "))
            assert payload["type"] == name.removeprefix("event: ")
            events.append((payload["type"], payload))
    return events


def test_the_fake_anthropic_stream_is_in_the_apis_order() -> None:
    first, rest = upstreams._anthropic_stream()
    events = _events(first + rest)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [name for name, _ in _events(first)][-1] == "content_block_delta"  # a token at once
    text = "".join(p["delta"]["text"] for n, p in events if n == "content_block_delta")
    assert text == "A fixed answer."
    delta = dict(events)["message_delta"]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert "output_tokens" in delta["usage"]


async def _ask(port: int, path: str, body: dict[str, object]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(data)}\r\n\r\n".encode() + data
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    out = b""
    while size := int(await reader.readline(), 16):
        out += (await reader.readexactly(size + 2))[:-2]
    await reader.readexactly(2)
    writer.close()
    return out


def test_the_streaming_fake_speaks_each_api_by_path() -> None:
    async def run() -> tuple[bytes, bytes, bytes]:
        server = await asyncio.start_server(
            lambda r, w: upstreams._serve_stream(r, w, 0.0), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        async with server:
            return (
                await _ask(port, "/v1/messages?beta=true", {"stream": True}),
                await _ask(port, "/v1/chat/completions", {"stream": True}),
                await _ask(
                    port,
                    "/v1/chat/completions",
                    {"stream": True, "stream_options": {"include_usage": True}},
                ),
            )

    anthropic, openai, with_usage = asyncio.run(run())
    assert _events(anthropic) == _events(b"".join(upstreams._anthropic_stream()))
    chunks = [c.removeprefix("data: ") for c in openai.decode().split("\n\n") if c]
    assert chunks[-1] == "[DONE]"
    assert [json.loads(c)["object"] for c in chunks[:-1]] == ["chat.completion.chunk"] * 2
    last = json.loads(with_usage.decode().split("\n\n")[-3].removeprefix("data: "))
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 3


def test_every_row_has_a_floor_of_its_kind() -> None:
    cases = load_bench.main_cases()
    for case in cases:
        spec, floor = case.spec, case.floor.spec
        assert floor.floor is None and floor.stream == spec.stream
        assert case.floor in cases
        # The floor is Envoy alone to the gateway's upstream: a same-API row's floor sends
        # the same body, a translated row's the upstream's API.
        upstream = load_bench.ANTHROPIC if (spec.model or "").startswith("anthropic/") else "openai"
        if spec.floor is not None:
            assert floor.api == upstream, case
    assert {"messages", "translated-a2o", "translated-o2a", "stream-a2o", "stream-o2a"} <= {
        c.target for c in cases
    }


def test_each_benchmark_rewrites_only_its_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nWritten by hand.\n")
    write_section(results, "load", "## Load\n\nfirst")
    write_section(results, "router", "## Router\n\nfirst")
    write_section(results, "load", "## Load\n\nsecond")
    text = results.read_text()
    assert text.startswith("# Results\n\nWritten by hand.\n")
    assert "second" in text and text.count("## Load") == 1
    assert "## Router\n\nfirst" in text
    assert text.index("## Load") < text.index("## Router")


def test_each_marked_section_of_results_holds_one_benchmarks_report() -> None:
    # A section written by hand inside another's markers is lost when that benchmark next
    # writes its own (the provider-fallback section once sat inside the router's).
    text = (Path(__file__).parents[2] / "bench" / "RESULTS.md").read_text()
    sections = re.findall(r"<!-- ([\w-]+):begin -->(.*?)<!-- \1:end -->", text, re.S)
    assert sections
    for key, body in sections:
        assert len(re.findall(r"^## ", body, re.M)) == 1, key


def test_percentiles() -> None:
    assert loadgen._pct([1.0], 50) == 1.0
    assert loadgen._pct([float(i) for i in range(1, 101)], 50) == pytest.approx(50.5)
    assert loadgen._pct([float(i) for i in range(1, 101)], 99) == pytest.approx(99.01)
