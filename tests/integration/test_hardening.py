"""The defects an adversarial run found, each pinned through real Envoy: capacity limits that
answer honestly, Envoy's own errors as JSON, no x-plano-* header but the decision either way,
a body at the size limit, and an admin API and environment that keep provider keys in."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from plano_extproc.envoy_config import EnvoyOptions
from plano_extproc.launcher import admin_get
from plano_extproc.wire import BODY_REWRITE_HEADROOM
from tests.fakes import FakeProvider

from .conftest import KEYS, Gateway, config_for, start_gateway

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Say hello"}]
# More streams than this run by hand: PLANO_CAPACITY_STREAMS=1100 PLANO_CAPACITY_LIMIT=4096
# (every stream must then succeed: none is over the limit).
STREAMS = int(os.environ.get("PLANO_CAPACITY_STREAMS", "12"))
LIMIT = int(os.environ.get("PLANO_CAPACITY_LIMIT", "4"))
HOLD_S = float(os.environ.get("PLANO_CAPACITY_HOLD_S", "2"))


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _envoy_pid(gateway: Gateway) -> int:
    for pid in _children(gateway.process.pid):
        if "envoy" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode():
            return pid
    raise AssertionError("no Envoy child")


def _bootstrap(gateway: Gateway) -> Path:
    text = gateway.log.read_text()
    return Path(text.split("bootstrap ", 1)[1].split(")", 1)[0])


async def _held_streams(url: str, count: int) -> list[tuple[int, str, str, int]]:
    """``count`` streamed chat requests at once: (status, error code, retry-after, chunks)."""
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one() -> tuple[int, str, str, int]:
            body = {"model": "fast-model", "messages": MESSAGES, "stream": True}
            async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                data = [chunk async for chunk in r.aiter_bytes()]
                text = b"".join(data).decode()
                if r.status_code != 200:
                    return (
                        r.status_code,
                        httpx.Response(200, text=text).json()["error"]["code"],
                        r.headers.get("retry-after", ""),
                        0,
                    )
                return 200, "", "", text.count("data: ")

        return await asyncio.gather(*(one() for _ in range(count)))


@pytest.fixture
def held_provider() -> Iterator[FakeProvider]:
    fake = FakeProvider("held", stream_pause_s=HOLD_S).start()
    yield fake
    fake.stop()


def test_over_capacity_is_an_honest_503_never_a_router_error(
    held_provider: FakeProvider, anthropic_fake: FakeProvider, tmp_path: Path
) -> None:
    config = config_for(held_provider, anthropic_fake).replace(
        "max_body_size: 2MiB", f"max_body_size: 2MiB\n    max_concurrent_requests: {LIMIT}"
    )
    gw = start_gateway(config, tmp_path)
    try:
        results = asyncio.run(_held_streams(gw.url, STREAMS))
    finally:
        gw.stop()
    outcomes = Counter((status, code) for status, code, _, _ in results)
    # Envoy holds `limit` requests in flight to a provider and lets up to as many more wait
    # for a connection to free; past that it refuses at once and tells the client to come
    # back. Never a 502 "router_unavailable": the routing service did nothing wrong.
    served = outcomes.pop((200, ""), 0)
    refused = outcomes.pop((503, "gateway_at_capacity"), 0)
    assert not outcomes, outcomes
    print(f"{STREAMS} streams, limit {LIMIT}: {served} served, {refused} refused")
    assert min(STREAMS, LIMIT) <= served <= min(STREAMS, 2 * LIMIT), (served, refused)
    assert all(retry == "1" for status, _, retry, _ in results if status == 503)
    assert all(chunks == 4 for status, _, _, chunks in results if status == 200)  # 3 + [DONE]
    assert len(held_provider.received) == served


def test_envoys_own_errors_are_json(gateway: Gateway, openai_fake: FakeProvider) -> None:
    upgrade = httpx.get(
        f"{gateway.url}/v1/chat/completions",
        headers={"connection": "upgrade", "upgrade": "websocket"},
    )
    assert upgrade.status_code == 403
    assert upgrade.json()["error"]["code"] == "upgrade_not_supported"
    huge = httpx.post(
        f"{gateway.url}/v1/chat/completions", headers={"x-big": "a" * 70_000}, json={}
    )
    assert huge.status_code == 431
    assert huge.headers["content-type"] == "application/json"
    assert huge.json()["error"]["code"] == "request_headers_too_large"
    for raw in (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        b"Content-Length: 3\r\n\r\n{}",
    ):
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(raw)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), answer
        assert b"content-type: application/json" in head.lower()
        error = httpx.Response(200, content=body).json()["error"]
        assert error["code"] == "malformed_request" and error["type"] == "invalid_request_error"
    assert not openai_fake.received


def test_no_x_plano_header_but_the_decision_passes_either_way(
    anthropic_fake: FakeProvider, tmp_path: Path
) -> None:
    spoofing = FakeProvider(
        "spoofing", extra_headers={"x-plano-model": "evil/model", "x-plano-debug": "internals"}
    ).start()
    gw = start_gateway(config_for(spoofing, anthropic_fake), tmp_path)
    try:
        for stream in (False, True):
            response = httpx.post(
                f"{gw.url}/v1/chat/completions",
                json={"model": "fast-model", "messages": MESSAGES, "stream": stream},
                headers={
                    "x-plano-model": "anthropic/claude-sonnet-4-5",
                    "x-plano-anything": "from the client",
                    "cookie": "session=secret",
                    "proxy-authorization": "Basic secret",
                },
            )
            assert response.status_code == 200
            ours = {k: v for k, v in response.headers.items() if k.startswith("x-plano-")}
            assert ours == {"x-plano-model": "openai/gpt-5.2", "x-plano-routing": "alias"}
        assert len(spoofing.received) == 2
        for got in spoofing.received:
            assert not [h for h in got.headers if h.startswith("x-plano-")], got.headers
            assert "cookie" not in got.headers and "proxy-authorization" not in got.headers
    finally:
        gw.stop()
        spoofing.stop()


def _body_of_size(size: int, model: str | None = None) -> bytes:
    head = b'{"messages": [{"role": "user", "content": "'
    tail = b'"}]' + (f', "model": "{model}"'.encode() if model else b"") + b"}"
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_a_body_at_the_limit_gets_its_model_and_one_byte_more_is_refused(
    openai_fake: FakeProvider, anthropic_fake: FakeProvider, tmp_path: Path
) -> None:
    limit = 64 * 1024
    config = config_for(openai_fake, anthropic_fake).replace(
        "max_body_size: 2MiB", f"max_body_size: {limit}"
    )
    gw = start_gateway(config, tmp_path)
    try:
        url = f"{gw.url}/v1/chat/completions"
        # No model: the server puts the default's in, past max_body_size: it must still fit.
        for size in (limit - 1, limit):
            response = httpx.post(url, content=_body_of_size(size))
            assert response.status_code == 200, response.text
            assert (
                response.headers["x-plano-routing"] == "preference"
                or response.headers["x-plano-routing"] == "default"
            )
        assert all(
            len(r.raw_body) > limit - 1 for r in openai_fake.received + anthropic_fake.received
        )
        for size in (limit + 1, limit + BODY_REWRITE_HEADROOM, limit + BODY_REWRITE_HEADROOM + 1):
            response = httpx.post(url, content=_body_of_size(size, "fast-model"))
            assert response.status_code == 413, size
            error = response.json()["error"]
            assert error["code"] == "request_too_large"
            assert f"limit of {limit} bytes" in error["message"]
        log = gw.log.read_text()
        assert "envoy_bug" not in log and "envoy bug" not in log
    finally:
        gw.stop()


def test_admin_is_an_owner_only_socket_and_envoy_never_sees_a_key(gateway: Gateway) -> None:
    bootstrap = _bootstrap(gateway)
    admin = Path(next(p for p in bootstrap.parent.iterdir() if p.suffix == ".sock"))
    mode = admin.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(bootstrap.parent.stat().st_mode) == 0o700
    assert (
        "socket_address:\n      address: 127.0.0.1" not in bootstrap.read_text().split("admin:")[1]
    )
    environ = Path(f"/proc/{_envoy_pid(gateway)}/environ").read_bytes().split(b"\0")
    names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
    assert not names & set(KEYS), names & set(KEYS)
    values = b"\0".join(environ)
    assert not [k for k in KEYS.values() if k.encode() in values]
    # The launcher itself still reads /ready through the socket.
    assert admin_get(EnvoyOptions(admin_socket=str(admin)), "/ready") == (200, b"LIVE\n")
