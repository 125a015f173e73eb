"""Plano's config formats end to end, through real Envoy, with the official SDKs.

0. The Azure OpenAI fake itself, against the openai SDK's own Azure client: what it serves
   and what it refuses, as Azure does.
1. Plano's v0.3 example config, as Plano gives it (only the listener's port and address, the
   base_urls and the keys' values are this test's): the default, an alias, ``provider/*``
   wildcards (``openai/<any id>`` and bare ids by model family), Anthropic both natively and
   translated, Azure OpenAI's deployment API, ``/v1/models``, refused ids, and ``validate``
   and ``render-envoy`` + ``envoy --mode validate`` on the file.
2. A config with every provider shape (OpenAI, Anthropic, custom providers under Plano's
   ``provider_interface`` names, Azure explicit and ``azure_openai/*``, ``passthrough_auth``,
   ``headers``, ``http_host``, aliases and top-level ``routing_preferences`` naming
   wildcard-served ids), in Plano's current format and in its legacy one: one module gateway
   per format, every test run against both. Also: ``headers`` values are literal.
3. ``model_providers`` and ``llm_providers`` in one file: a located error.

The fakes answer in each API's wire format and refuse what the real API refuses: the Azure
fake wants its deployment path, the ``api-version`` query and the ``api-key`` header.

"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import RawContentBlockDeltaEvent, TextDelta
from openai.types.chat import ChatCompletionChunk

from plano_extproc.envoy_config import envoy_binary
from tests.fake_providers import Failure, FakeAnthropic, FakeAzureOpenAI, FakeOpenAI, Recorded

from .conftest import Gateway, start_gateway

pytestmark = pytest.mark.integration

OPENAI_KEY = "sk-fake-openai-plano"
ANTHROPIC_KEY = "sk-ant-fake-plano"
AZURE_KEY = "fake-azure-resource-key"
# The variables Plano's example names its keys by.
KEY_ENV = {
    "OPENAI_API_KEY": OPENAI_KEY,
    "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
    "AZURE_API_KEY": AZURE_KEY,
}
GATEWAY_KEYS = (OPENAI_KEY, ANTHROPIC_KEY, AZURE_KEY)
CLIENT_KEY = "client-key-never-forwarded"
# passthrough_auth: what the clients' own keys are, and what the upstreams behind want.
VIRTUAL_KEY = "sk-litellm-virtual-team-key"
CLIENT_ANTHROPIC_KEY = "sk-ant-client-own-key"
TIMEOUT = 20.0
HELLO = [{"role": "user", "content": "Say hello"}]
AZURE_DEFAULT_VERSION = "2024-10-21"
AZURE_DEPLOYMENTS = {
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-4o-prod": "gpt-4o-2024-11-20",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
}


# ---------------------------------------------------------------------------------------------
# Fakes, shared by the module's gateways


@pytest.fixture(scope="module")
def oai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI("fake-openai", api_key=OPENAI_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def ant() -> Iterator[FakeAnthropic]:
    with FakeAnthropic("fake-anthropic", api_key=ANTHROPIC_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def azure() -> Iterator[FakeAzureOpenAI]:
    with FakeAzureOpenAI("fake-azure", api_key=AZURE_KEY, deployments=AZURE_DEPLOYMENTS) as fake:
        yield fake


@pytest.fixture(scope="module")
def virtual() -> Iterator[FakeOpenAI]:
    """An OpenAI-compatible gateway upstream (LiteLLM-like) that checks its own virtual keys."""
    with FakeOpenAI("fake-litellm", api_key=VIRTUAL_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def ant_own() -> Iterator[FakeAnthropic]:
    """Anthropic, reached with the client's own key (passthrough_auth)."""
    with FakeAnthropic("fake-anthropic-own-key", api_key=CLIENT_ANTHROPIC_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def edge() -> Iterator[FakeOpenAI]:
    """A keyless local server (vLLM) reached under another Host name (http_host)."""
    with FakeOpenAI("fake-vllm") as fake:
        yield fake


Fake = FakeOpenAI | FakeAnthropic
# Response headers, as either SDK gives them.
Headers = Mapping[str, str]


@pytest.fixture(autouse=True)
def _fresh(
    oai: FakeOpenAI,
    ant: FakeAnthropic,
    azure: FakeAzureOpenAI,
    virtual: FakeOpenAI,
    ant_own: FakeAnthropic,
    edge: FakeOpenAI,
) -> None:
    for fake in (oai, ant, azure, virtual, ant_own, edge):
        fake.reset()
        fake.extra_headers.clear()


# ---------------------------------------------------------------------------------------------
# Helpers


def oc(gw: Gateway, api_key: str = CLIENT_KEY, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gw.url}/v1", api_key=api_key, max_retries=0, timeout=TIMEOUT, **kwargs
    )


def ac(gw: Gateway, api_key: str = CLIENT_KEY, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gw.url, api_key=api_key, max_retries=0, timeout=TIMEOUT, **kwargs
    )


def openai_chat(
    gw: Gateway, model: str, stream: bool, client: openai.OpenAI | None = None
) -> tuple[Headers, str]:
    """The response headers and the text, with the OpenAI SDK, whole or streamed."""
    client = client or oc(gw)
    if not stream:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO)  # type: ignore[arg-type]
        return raw.headers, raw.parse().choices[0].message.content or ""
    raw_stream = client.chat.completions.with_raw_response.create(
        model=model,
        messages=HELLO,  # type: ignore[arg-type]
        stream=True,
    )
    # Azure's first chunk carries only the prompt's filter results: no choices.
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in raw_stream.parse()
        if isinstance(chunk, ChatCompletionChunk) and chunk.choices
    )
    return raw_stream.headers, text


def anthropic_chat(
    gw: Gateway, model: str, stream: bool, client: anthropic.Anthropic | None = None
) -> tuple[Headers, str]:
    """The response headers and the text, with the Anthropic SDK, whole or streamed."""
    client = client or ac(gw)
    if not stream:
        raw = client.messages.with_raw_response.create(
            model=model,
            max_tokens=256,
            messages=HELLO,  # type: ignore[arg-type]
        )
        message = raw.parse()
        text = "".join(block.text for block in message.content if block.type == "text")
        return raw.headers, text
    raw_stream = client.messages.with_raw_response.create(
        model=model,
        max_tokens=256,
        messages=HELLO,  # type: ignore[arg-type]
        stream=True,
    )
    pieces: list[str] = []
    kinds: list[str] = []
    for event in raw_stream.parse():
        assert not isinstance(event, tuple), event
        kinds.append(event.type)
        if isinstance(event, RawContentBlockDeltaEvent) and isinstance(event.delta, TextDelta):
            pieces.append(event.delta.text)
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    return raw_stream.headers, "".join(pieces)


def chat(gw: Gateway, client: str, model: str, stream: bool, **kwargs: Any) -> tuple[Headers, str]:
    if client == "openai":
        return openai_chat(gw, model, stream, oc(gw, **kwargs))
    return anthropic_chat(gw, model, stream, ac(gw, **kwargs))


def only(fake: Fake, *others: Fake) -> Recorded:
    """The one request ``fake`` received; no other fake was called."""
    for other in others:
        assert not other.received, f"{other.name} was called: {other.received}"
    assert len(fake.received) == 1, fake.received
    return fake.received[0]


def clean(got: Recorded) -> None:
    """No client credential and no x-plano-* header reached the provider."""
    for name, value in got.raw_headers:
        assert CLIENT_KEY not in value, (name, value)
    assert not [name for name in got.headers if name.startswith("x-plano-")], got.headers
    assert "cookie" not in got.headers


def no_gateway_key(got: Recorded) -> None:
    for name, value in got.raw_headers:
        for key in GATEWAY_KEYS:
            assert key not in value, (name, value)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plano_extproc", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **KEY_ENV},
    )


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line of ``text`` that starts with ``needle``."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(needle):
            return number
    raise AssertionError(f"{needle!r} not in the config")


def envoy_validates(config: Path, tmp_path: Path) -> None:
    out = tmp_path / f"{config.stem}.envoy.yaml"
    rendered = run_cli("render-envoy", str(config), "-o", str(out))
    assert rendered.returncode == 0, rendered.stderr
    check = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def openai_error(info: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    body = info.value.body
    assert isinstance(body, dict), body
    return body


# ---------------------------------------------------------------------------------------------
# 0. The Azure fake is faithful: the openai SDK's own Azure client, pointed straight at it


def azure_client(fake: FakeAzureOpenAI, **kwargs: Any) -> openai.AzureOpenAI:
    options: dict[str, Any] = {
        "azure_endpoint": fake.url,
        "api_key": AZURE_KEY,
        "api_version": AZURE_DEFAULT_VERSION,
        "max_retries": 0,
        "timeout": TIMEOUT,
    }
    return openai.AzureOpenAI(**(options | kwargs))


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_azure_fake_serves_the_sdks_azure_client(azure: FakeAzureOpenAI, stream: bool) -> None:
    client = azure_client(azure)
    if stream:
        stream_ = client.chat.completions.create(model="gpt-5-mini", messages=HELLO, stream=True)  # type: ignore[arg-type]
        chunks = [c for c in stream_ if isinstance(c, ChatCompletionChunk)]
        assert chunks[0].choices == [] and chunks[0].model == ""  # the prompt's filter results
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert {c.model for c in chunks[1:]} == {"gpt-5-mini-2025-08-07"}
    else:
        completion = client.chat.completions.create(model="gpt-5-mini", messages=HELLO)  # type: ignore[arg-type]
        text = completion.choices[0].message.content or ""
        assert completion.model == "gpt-5-mini-2025-08-07"  # the deployment's model
        extra = completion.model_extra or {}
        assert extra["prompt_filter_results"][0]["content_filter_results"]["hate"]
    assert text == "from fake-azure: Say hello"
    (got,) = azure.received
    assert got.route == "/openai/deployments/gpt-5-mini/chat/completions"
    assert got.query["api-version"] == [AZURE_DEFAULT_VERSION]
    assert got.headers["api-key"] == AZURE_KEY and "authorization" not in got.headers
    assert azure.deployment(got) == "gpt-5-mini"


AZURE_REFUSALS = [
    # (path and query, headers, status, Azure's error code)
    ("/openai/deployments/gpt-5-mini/chat/completions", {"api-key": AZURE_KEY}, 404, "404"),
    ("/v1/chat/completions?api-version=2024-10-21", {"api-key": AZURE_KEY}, 404, "404"),
    (
        "/openai/deployments/gpt-5-mini/chat/completions?api-version=2099-01-01",
        {"api-key": AZURE_KEY},
        400,
        "BadRequest",
    ),
    (
        "/openai/deployments/gpt-5-mini/chat/completions?api-version=2024-10-21"
        "&api-version=2024-06-01",
        {"api-key": AZURE_KEY},
        400,
        "BadRequest",
    ),
    ("/openai/deployments/gpt-5-mini/chat/completions?api-version=2024-10-21", {}, 401, "401"),
    (
        "/openai/deployments/gpt-5-mini/chat/completions?api-version=2024-10-21",
        {"authorization": f"Bearer {AZURE_KEY}"},
        401,
        "401",
    ),
    (
        "/openai/deployments/gpt-5-mini/chat/completions?api-version=2024-10-21",
        {"api-key": "wrong"},
        401,
        "401",
    ),
    (
        "/openai/deployments/not-deployed/chat/completions?api-version=2024-10-21",
        {"api-key": AZURE_KEY},
        404,
        "DeploymentNotFound",
    ),
]


@pytest.mark.parametrize(("path", "headers", "status", "code"), AZURE_REFUSALS)
def test_azure_fake_refuses_as_azure_does(
    azure: FakeAzureOpenAI, path: str, headers: dict[str, str], status: int, code: str
) -> None:
    response = httpx.post(
        azure.url + path, json={"messages": HELLO}, headers=headers, timeout=TIMEOUT
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    assert set(error) == {"code", "message"}
    assert response.headers["apim-request-id"]
    assert len(azure.received) == 1  # recorded all the same


def test_azure_fake_passes_openais_own_checks_on(azure: FakeAzureOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        azure_client(azure).chat.completions.create(model="gpt-5-mini", messages=[])
    assert openai_error(info)["code"] == "empty_array"
    azure.fail(Failure.error(429, retry_after=2))
    with pytest.raises(openai.RateLimitError) as limited:
        azure_client(azure).chat.completions.create(model="gpt-5-mini", messages=HELLO)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "2"
    assert openai_error(limited)["code"] == "429"


# ---------------------------------------------------------------------------------------------
# 1. Plano's v0.3 example config


def plano_example(oai: FakeOpenAI, ant: FakeAnthropic, azure: FakeAzureOpenAI) -> str:
    """Plano's v0.3 example as its docs give it; only the listener's port (free) and address
    (loopback), the base_urls and the keys' values (KEY_ENV) are this test's."""
    return f"""\
version: v0.3.0
listeners:
  - type: model
    name: model_listener
    address: 127.0.0.1
    port: {{port}}
model_providers:
  - model: openai/gpt-5-mini-2025-08-07
    access_key: $OPENAI_API_KEY
    base_url: {oai.base_url()}
    default: true
  - model: openai/*
    access_key: $OPENAI_API_KEY
    base_url: {oai.base_url()}
  - model: anthropic/*
    access_key: $ANTHROPIC_API_KEY
    base_url: {ant.base_url()}
  - model: azure_openai/gpt-5-mini
    access_key: $AZURE_API_KEY
    base_url: {azure.url}
model_aliases:
  arch.summarize.v1:
    target: gpt-5-mini-2025-08-07
routing:
  route_on_user_only: true
tracing:
  random_sampling: 100
"""


@pytest.fixture(scope="module")
def plano(
    oai: FakeOpenAI,
    ant: FakeAnthropic,
    azure: FakeAzureOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    gw = start_gateway(
        plano_example(oai, ant, azure), tmp_path_factory.mktemp("plano-v03"), env=KEY_ENV
    )
    yield gw
    gw.stop()


def check_openai_upstream(got: Recorded, model: str, stream: bool) -> None:
    assert got.method == "POST" and got.route == "/v1/chat/completions"
    assert got.json["model"] == model
    assert (got.json.get("stream") is True) == stream
    assert got.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert "x-api-key" not in got.headers and "api-key" not in got.headers
    clean(got)


def check_anthropic_upstream(got: Recorded, model: str, stream: bool) -> None:
    assert got.method == "POST" and got.route == "/v1/messages"
    assert got.json["model"] == model
    assert (got.json.get("stream") is True) == stream
    assert got.headers["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in got.headers
    assert got.headers["anthropic-version"]
    clean(got)


def check_azure_upstream(
    got: Recorded, deployment: str, stream: bool, api_version: str = AZURE_DEFAULT_VERSION
) -> None:
    assert got.method == "POST"
    assert got.route == f"/openai/deployments/{deployment}/chat/completions"
    assert got.query["api-version"] == [api_version]
    assert got.json["model"] == deployment
    assert (got.json.get("stream") is True) == stream
    assert got.headers["api-key"] == AZURE_KEY
    assert "authorization" not in got.headers and "x-api-key" not in got.headers
    clean(got)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_no_model_goes_to_the_default(
    plano: Gateway, oai: FakeOpenAI, ant: FakeAnthropic, azure: FakeAzureOpenAI, stream: bool
) -> None:
    # The SDK insists on a model: "auto" names none.
    headers, text = openai_chat(plano, "auto", stream)
    assert text == "from fake-openai: Say hello"
    assert headers["x-plano-model"] == "openai/gpt-5-mini-2025-08-07"
    assert headers["x-plano-routing"] == "default"
    check_openai_upstream(only(oai, ant, azure), "gpt-5-mini-2025-08-07", stream)
    oai.reset()
    # No model at all, as a plain HTTP client may send it.
    response = httpx.post(
        f"{plano.url}/v1/chat/completions",
        json={"messages": HELLO, "stream": stream},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-plano-routing"] == "default"
    assert only(oai, ant, azure).json["model"] == "gpt-5-mini-2025-08-07"


def test_anthropic_client_naming_no_model_gets_the_default_translated(
    plano: Gateway, oai: FakeOpenAI, ant: FakeAnthropic
) -> None:
    headers, text = anthropic_chat(plano, "auto", stream=False)
    assert text == "from fake-openai: Say hello"
    assert headers["x-plano-model"] == "openai/gpt-5-mini-2025-08-07"
    check_openai_upstream(only(oai, ant), "gpt-5-mini-2025-08-07", stream=False)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_alias(plano: Gateway, oai: FakeOpenAI, ant: FakeAnthropic, stream: bool) -> None:
    headers, text = openai_chat(plano, "arch.summarize.v1", stream)
    assert text == "from fake-openai: Say hello"
    assert headers["x-plano-model"] == "openai/gpt-5-mini-2025-08-07"
    assert headers["x-plano-routing"] == "alias"
    check_openai_upstream(only(oai, ant), "gpt-5-mini-2025-08-07", stream)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_openai_wildcard_passes_any_id(
    plano: Gateway, oai: FakeOpenAI, ant: FakeAnthropic, azure: FakeAzureOpenAI, stream: bool
) -> None:
    headers, text = openai_chat(plano, "openai/gpt-4.1", stream)
    assert text == "from fake-openai: Say hello"
    assert headers["x-plano-model"] == "openai/gpt-4.1"
    assert headers["x-plano-routing"] == "direct"
    check_openai_upstream(only(oai, ant, azure), "gpt-4.1", stream)


@pytest.mark.parametrize(
    ("model", "served", "upstream"),
    [
        ("gpt-4o", "openai/gpt-4o", "openai"),
        ("o3-mini", "openai/o3-mini", "openai"),
        ("claude-sonnet-4-5", "anthropic/claude-sonnet-4-5", "anthropic"),
        # An explicit entry wins over the wildcard whose family the id is of.
        ("gpt-5-mini-2025-08-07", "openai/gpt-5-mini-2025-08-07", "openai"),
    ],
)
@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_bare_ids_go_to_the_wildcard_of_their_family(
    plano: Gateway,
    oai: FakeOpenAI,
    ant: FakeAnthropic,
    azure: FakeAzureOpenAI,
    client: str,
    model: str,
    served: str,
    upstream: str,
) -> None:
    headers, text = chat(plano, client, model, stream=False)
    assert headers["x-plano-model"] == served
    assert headers["x-plano-routing"] == "direct"
    if upstream == "openai":
        assert text == "from fake-openai: Say hello"
        check_openai_upstream(only(oai, ant, azure), model, stream=False)
    else:
        assert text == "from fake-anthropic: Say hello"
        check_anthropic_upstream(only(ant, oai, azure), model, stream=False)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("client", ["anthropic", "openai"], ids=["native", "translated"])
def test_anthropic_wildcard(
    plano: Gateway,
    oai: FakeOpenAI,
    ant: FakeAnthropic,
    azure: FakeAzureOpenAI,
    client: str,
    stream: bool,
) -> None:
    headers, text = chat(plano, client, "anthropic/claude-opus-4-1", stream)
    assert text == "from fake-anthropic: Say hello"
    assert headers["x-plano-model"] == "anthropic/claude-opus-4-1"
    got = only(ant, oai, azure)
    check_anthropic_upstream(got, "claude-opus-4-1", stream)
    if client == "openai":  # translated: Anthropic requires max_tokens, the gateway adds it
        assert got.json["max_tokens"] == 4096


def test_azure_deployment_reaches_its_path_with_api_key_only(
    plano: Gateway, oai: FakeOpenAI, azure: FakeAzureOpenAI
) -> None:
    """What reaches Azure, whatever Azure answers: the deployment path (the client's query
    kept), the resource key in api-key, no client credential."""
    response = httpx.post(
        f"{plano.url}/v1/chat/completions?trace=abc",
        json={"model": "azure_openai/gpt-5-mini", "messages": HELLO},
        headers={"authorization": f"Bearer {CLIENT_KEY}", "x-plano-model": "openai/spoofed"},
        timeout=TIMEOUT,
    )
    assert response.headers["x-plano-model"] == "azure_openai/gpt-5-mini"
    assert response.headers["x-plano-routing"] == "direct"
    got = only(azure, oai)
    assert got.route == "/openai/deployments/gpt-5-mini/chat/completions"
    assert got.query["trace"] == ["abc"]
    assert got.json["model"] == "gpt-5-mini"
    assert got.headers["api-key"] == AZURE_KEY
    assert "authorization" not in got.headers
    clean(got)


def test_bare_deployment_id_is_the_explicit_azure_entry(
    plano: Gateway, oai: FakeOpenAI, azure: FakeAzureOpenAI
) -> None:
    # gpt-5-mini is of OpenAI's family, but an explicit entry has it: Azure serves it.
    response = httpx.post(
        f"{plano.url}/v1/chat/completions",
        json={"model": "gpt-5-mini", "messages": HELLO},
        timeout=TIMEOUT,
    )
    assert response.headers["x-plano-model"] == "azure_openai/gpt-5-mini"
    assert only(azure, oai).route == "/openai/deployments/gpt-5-mini/chat/completions"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_azure_round_trip_with_the_version_in_the_query(
    plano: Gateway, oai: FakeOpenAI, azure: FakeAzureOpenAI, client: str, stream: bool
) -> None:
    """The whole Azure path with both SDKs (the Anthropic one translated), the client
    naming an api-version itself (the gateway sets its own over it: the test below)."""
    version = {"api-version": AZURE_DEFAULT_VERSION}
    headers, text = chat(plano, client, "azure_openai/gpt-5-mini", stream, default_query=version)
    assert text == "from fake-azure: Say hello"
    assert headers["x-plano-model"] == "azure_openai/gpt-5-mini"
    assert headers["x-plano-routing"] == "direct"
    check_azure_upstream(only(azure, oai), "gpt-5-mini", stream)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_azure_api_version_is_set_by_the_gateway(
    plano: Gateway, oai: FakeOpenAI, azure: FakeAzureOpenAI, stream: bool
) -> None:
    headers, text = openai_chat(plano, "azure_openai/gpt-5-mini", stream)
    assert text == "from fake-azure: Say hello"
    assert headers["x-plano-model"] == "azure_openai/gpt-5-mini"
    check_azure_upstream(only(azure, oai), "gpt-5-mini", stream)


def test_azure_api_version_overrides_the_clients_and_keeps_the_rest_of_the_query(
    plano: Gateway, azure: FakeAzureOpenAI
) -> None:
    response = httpx.post(
        f"{plano.url}/v1/chat/completions?api-version=1999-01-01&trace=abc",
        json={"model": "azure_openai/gpt-5-mini", "messages": HELLO},
        timeout=TIMEOUT,
    )
    (got,) = azure.received
    assert got.query == {"api-version": [AZURE_DEFAULT_VERSION], "trace": ["abc"]}
    assert response.status_code == 200, response.text


def test_models_endpoint(plano: Gateway, oai: FakeOpenAI, ant: FakeAnthropic) -> None:
    response = httpx.get(f"{plano.url}/v1/models", timeout=TIMEOUT)
    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    assert [(m["id"], m["owned_by"]) for m in listing["data"]] == [
        ("openai/gpt-5-mini-2025-08-07", "openai"),
        ("azure_openai/gpt-5-mini", "azure_openai"),
        ("arch.summarize.v1", "plano"),
    ]
    assert listing["data"][2]["target"] == "openai/gpt-5-mini-2025-08-07"
    assert listing["accepts_any_model_id"] == ["openai/*", "anthropic/*"]
    # The SDK reads it too; one entry by id.
    assert [m.id for m in oc(plano).models.list()] == [m["id"] for m in listing["data"]]
    assert oc(plano).models.retrieve("arch.summarize.v1").id == "arch.summarize.v1"
    assert not oai.received and not ant.received


REFUSED = [
    ("openai/*", "model_not_found", "stands for any model id"),
    ("anthropic/*", "model_not_found", "stands for any model id"),
    ("openai/has space", "model_not_found", "without spaces"),
    ("openai/", "model_not_found", ""),
    ("openai/" + "x" * 300, "model_not_found", "1-256"),
    # A provider prefix nothing is configured for, of no model family.
    ("mistral/mistral-large-latest", "model_ambiguous", "openai/*, anthropic/*"),
]


@pytest.mark.parametrize(("model", "code", "says"), REFUSED, ids=[m[:20] for m, _, _ in REFUSED])
def test_refused_ids_are_openai_400s(
    plano: Gateway,
    oai: FakeOpenAI,
    ant: FakeAnthropic,
    azure: FakeAzureOpenAI,
    model: str,
    code: str,
    says: str,
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_chat(plano, model, stream=False)
    error = openai_error(info)
    assert error["code"] == code and error["param"] == "model", error
    assert error["type"] == "invalid_request_error"
    assert says in error["message"], error
    assert not oai.received and not ant.received and not azure.received


@pytest.mark.parametrize(("model", "code", "says"), REFUSED, ids=[m[:20] for m, _, _ in REFUSED])
def test_refused_ids_are_anthropic_400s(
    plano: Gateway,
    oai: FakeOpenAI,
    ant: FakeAnthropic,
    azure: FakeAzureOpenAI,
    model: str,
    code: str,
    says: str,
) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_chat(plano, model, stream=True)
    body = info.value.body
    assert isinstance(body, dict), body
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert says in body["error"]["message"], body
    assert not oai.received and not ant.received and not azure.received


def test_validate_names_the_format_and_warns_once_about_tracing(
    oai: FakeOpenAI, ant: FakeAnthropic, azure: FakeAzureOpenAI, tmp_path: Path
) -> None:
    text = plano_example(oai, ant, azure).replace("{port}", "12000")
    config = tmp_path / "plano_config.yaml"
    config.write_text(text)
    result = run_cli("validate", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "format: Plano v0.3+ (model_providers, listeners as a list, version v0.3.0)" in out
    assert "listener: 127.0.0.1:12000" in out
    assert "openai/*  [any model id]" in out and "anthropic/*  [any model id]" in out
    assert "arch.summarize.v1 -> openai/gpt-5-mini-2025-08-07" in out
    warnings = [line for line in (out + result.stderr).splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, warnings
    assert f"tracing (line {line_of(text, 'tracing:')})" in warnings[0], warnings
    # Nothing else is called unimplemented: route_on_user_only is a key this gateway has.
    assert "routing" not in warnings[0] and "listeners" not in warnings[0], warnings
    envoy_validates(config, tmp_path)


# ---------------------------------------------------------------------------------------------
# 2. Every provider shape, in Plano's current format and in its legacy one


def every_shape(
    legacy: bool,
    oai: FakeOpenAI,
    ant: FakeAnthropic,
    azure: FakeAzureOpenAI,
    virtual: FakeOpenAI,
    ant_own: FakeAnthropic,
    edge: FakeOpenAI,
) -> str:
    if legacy:
        head = """\
version: v0.1.0
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: {port}
    timeout: 10s
llm_providers:
"""
        # The legacy format's routes sit on their provider.
        creative = """\
    routing_preferences:
      - name: creative_tasks
        description: creative writing and content generation
"""
        top_creative = ""
    else:
        head = """\
version: v0.4.0
listeners:
  - type: model
    name: model_listener
    address: 127.0.0.1
    port: {port}
    timeout: 10s
model_providers:
"""
        creative = ""
        top_creative = """\
  - name: creative_tasks
    description: creative writing and content generation
    models: [anthropic/claude-sonnet-4-5, openai/gpt-4.1]
"""
    return (
        head
        + f"""\
  # OpenAI, explicit: the default
  - model: openai/gpt-4.1
    access_key: $OPENAI_API_KEY
    base_url: {oai.base_url()}
    default: true
  # OpenAI, any model id
  - model: openai/*
    access_key: $OPENAI_API_KEY
    base_url: {oai.base_url()}
  # Anthropic's Messages API, explicit
  - model: anthropic/claude-sonnet-4-5
    access_key: $ANTHROPIC_API_KEY
    base_url: {ant.base_url()}
{creative}\
  # Custom providers under Plano's interface names: claude is Anthropic's API...
  - model: corp_claude/claude-haiku-4-5
    access_key: $ANTHROPIC_API_KEY
    base_url: {ant.base_url()}
    provider_interface: claude
  # ... groq an OpenAI-compatible one
  - model: corp_llm/llama-3.3-70b
    access_key: $OPENAI_API_KEY
    base_url: {oai.base_url()}
    provider_interface: groq
  # Azure OpenAI: a deployment with its own api_version, and any deployment
  - model: azure_openai/gpt-4o-prod
    access_key: $AZURE_API_KEY
    base_url: {azure.url}
    api_version: 2025-01-01-preview
  - model: azure_openai/*
    access_key: $AZURE_API_KEY
    base_url: {azure.url}
  # The clients' own keys
  - model: litellm/team-model
    base_url: {virtual.base_url()}
    passthrough_auth: true
  - model: anthropic/claude-opus-4-1
    base_url: {ant_own.base_url()}
    passthrough_auth: true
  # Literal extra headers
  - model: openai/gpt-4.1-mini
    access_key: $OPENAI_API_KEY
    base_url: {oai.base_url()}
    headers:
      x-team: research
      openai-project: proj_fake
  # Another Host name
  - model: vllm/llama-3.1-8b-instruct
    base_url: {edge.base_url()}
    http_host: llm.internal.example
model_aliases:
  reasoning:
    target: openai/o3
  nano:
    target: azure_openai/gpt-4.1-nano
routing:
  timeout: 3s
routing_preferences:
{top_creative}\
  - name: complex_reasoning
    description: deep analysis and complex problem solving
    models: [openai/o3]
"""
    )


@pytest.fixture(scope="module", params=["current", "legacy"])
def shapes(
    request: pytest.FixtureRequest,
    oai: FakeOpenAI,
    ant: FakeAnthropic,
    azure: FakeAzureOpenAI,
    virtual: FakeOpenAI,
    ant_own: FakeAnthropic,
    edge: FakeOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    legacy = request.param == "legacy"
    text = every_shape(legacy, oai, ant, azure, virtual, ant_own, edge)
    gw = start_gateway(text, tmp_path_factory.mktemp(f"shapes-{request.param}"), env=KEY_ENV)
    yield gw
    gw.stop()


def is_legacy(gw: Gateway) -> bool:
    return "llm_providers:" in gw.config.read_text()


def test_every_shape_validates(shapes: Gateway, tmp_path: Path) -> None:
    result = run_cli("validate", str(shapes.config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    if is_legacy(shapes):
        assert (
            "format: legacy Plano (llm_providers, listeners.egress_traffic, version v0.1.0)" in out
        )
    else:
        assert "format: Plano v0.3+ (model_providers, listeners as a list, version v0.4.0)" in out
    assert "azure_openai/gpt-4o-prod" in out and "api-version 2025-01-01-preview" in out
    assert "azure_openai/*  [any model id]" in out
    assert "the client's own key (passthrough_auth)" in out
    assert "complex_reasoning -> openai/o3" in out
    assert "nano -> azure_openai/gpt-4.1-nano" in out
    assert "not implement" not in out + result.stderr
    envoy_validates(shapes.config, tmp_path)


# model -> (which fake, the model it receives, the credential header and value it gets)
SHAPES: dict[str, tuple[str, str, str, str]] = {
    "openai/gpt-4.1": ("oai", "gpt-4.1", "authorization", f"Bearer {OPENAI_KEY}"),
    "openai/o4-mini": ("oai", "o4-mini", "authorization", f"Bearer {OPENAI_KEY}"),
    "anthropic/claude-sonnet-4-5": ("ant", "claude-sonnet-4-5", "x-api-key", ANTHROPIC_KEY),
    "corp_claude/claude-haiku-4-5": ("ant", "claude-haiku-4-5", "x-api-key", ANTHROPIC_KEY),
    "corp_llm/llama-3.3-70b": ("oai", "llama-3.3-70b", "authorization", f"Bearer {OPENAI_KEY}"),
    "azure_openai/gpt-4o-prod": ("azure", "gpt-4o-prod", "api-key", AZURE_KEY),
    "azure_openai/gpt-4.1-nano": ("azure", "gpt-4.1-nano", "api-key", AZURE_KEY),
    "openai/gpt-4.1-mini": ("oai", "gpt-4.1-mini", "authorization", f"Bearer {OPENAI_KEY}"),
    "vllm/llama-3.1-8b-instruct": ("edge", "llama-3.1-8b-instruct", "", ""),
}
AZURE_VERSIONS = {
    "azure_openai/gpt-4o-prod": "2025-01-01-preview",
    "azure_openai/gpt-4.1-nano": AZURE_DEFAULT_VERSION,
}


@pytest.fixture
def fakes(
    oai: FakeOpenAI,
    ant: FakeAnthropic,
    azure: FakeAzureOpenAI,
    virtual: FakeOpenAI,
    ant_own: FakeAnthropic,
    edge: FakeOpenAI,
) -> dict[str, Fake]:
    return {
        "oai": oai,
        "ant": ant,
        "azure": azure,
        "virtual": virtual,
        "ant_own": ant_own,
        "edge": edge,
    }


def the_one_request(fakes: dict[str, Fake], name: str) -> Recorded:
    return only(fakes[name], *(fake for other, fake in fakes.items() if other != name))


@pytest.mark.parametrize("model", list(SHAPES))
@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_each_shape_gets_its_own_credential_and_never_the_clients(
    shapes: Gateway, fakes: dict[str, Fake], client: str, model: str
) -> None:
    """Every credential a client may send (and cookies, and x-plano-* headers) stops at
    the gateway; the provider gets its own key in its own header, and only that."""
    fake_name, model_id, auth_header, auth_value = SHAPES[model]
    query = {"api-version": AZURE_VERSIONS[model]} if model in AZURE_VERSIONS else {}
    spoof = {
        "x-api-key": CLIENT_KEY,
        "api-key": CLIENT_KEY,
        "cookie": f"session={CLIENT_KEY}",
        "proxy-authorization": f"Basic {CLIENT_KEY}",
        "x-plano-model": "openai/spoofed",
        "x-plano-anything": "spoofed",
    }
    headers, text = chat(
        shapes, client, model, stream=False, default_query=query, default_headers=spoof
    )
    assert text == f"from {fakes[fake_name].name}: Say hello"
    assert headers["x-plano-model"] == model
    assert headers["x-plano-routing"] == "direct"
    got = the_one_request(fakes, fake_name)
    assert got.json["model"] == model_id
    clean(got)
    credentials = {"authorization", "x-api-key", "api-key"}
    if auth_header:
        assert got.headers[auth_header] == auth_value
    assert not (credentials - {auth_header}) & set(got.headers), got.headers


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_custom_claude_interface_speaks_anthropics_api(
    shapes: Gateway, fakes: dict[str, Fake], stream: bool
) -> None:
    headers, text = openai_chat(shapes, "claude-haiku-4-5", stream)  # a bare id it has
    assert text == "from fake-anthropic: Say hello"
    assert headers["x-plano-model"] == "corp_claude/claude-haiku-4-5"
    check_anthropic_upstream(the_one_request(fakes, "ant"), "claude-haiku-4-5", stream)


@pytest.mark.parametrize(
    ("model", "served"),
    [
        ("gpt-4.1", "openai/gpt-4.1"),  # explicit entries win over both wildcards
        ("gpt-4o-prod", "azure_openai/gpt-4o-prod"),
        ("reasoning", "openai/o3"),  # an alias of a wildcard-served id
        ("nano", "azure_openai/gpt-4.1-nano"),
    ],
)
def test_explicit_entries_and_aliases_in_front_of_wildcards(
    shapes: Gateway, fakes: dict[str, Fake], model: str, served: str
) -> None:
    query = {"api-version": AZURE_DEFAULT_VERSION}
    if served == "azure_openai/gpt-4o-prod":
        query = {"api-version": "2025-01-01-preview"}
    headers, _ = openai_chat(shapes, model, stream=False, client=oc(shapes, default_query=query))
    assert headers["x-plano-model"] == served
    provider, model_id = served.split("/", 1)
    fake_name = "azure" if provider == "azure_openai" else "oai"
    got = the_one_request(fakes, fake_name)
    assert got.json["model"] == model_id
    if fake_name == "azure":
        assert got.route == f"/openai/deployments/{model_id}/chat/completions"


def test_a_bare_id_two_wildcards_claim_is_ambiguous(
    shapes: Gateway, fakes: dict[str, Fake]
) -> None:
    # gpt-4o is of OpenAI's family, which openai/* and azure_openai/* both serve.
    with pytest.raises(openai.BadRequestError) as info:
        openai_chat(shapes, "gpt-4o", stream=False)
    error = openai_error(info)
    assert error["code"] == "model_ambiguous", error
    assert "openai/gpt-4o" in error["message"] and "azure_openai/gpt-4o" in error["message"]
    assert not any(fake.received for fake in fakes.values())


@pytest.mark.parametrize(
    "deployment", ["has space", "..", ".hidden", "../../admin", "a/b", "x" * 65, "*"]
)
def test_azure_wildcard_refuses_what_is_no_deployment_name(
    shapes: Gateway, fakes: dict[str, Fake], deployment: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_chat(shapes, f"azure_openai/{deployment}", stream=False)
    assert openai_error(info)["code"] == "model_not_found"
    assert not any(fake.received for fake in fakes.values())


def test_azure_wildcard_unknown_deployment_is_azures_own_404(
    shapes: Gateway, fakes: dict[str, Fake]
) -> None:
    client = oc(shapes, default_query={"api-version": AZURE_DEFAULT_VERSION})
    with pytest.raises(openai.NotFoundError) as info:
        openai_chat(shapes, "azure_openai/not-deployed", stream=False, client=client)
    assert openai_error(info)["code"] == "DeploymentNotFound"
    got = the_one_request(fakes, "azure")
    assert got.route == "/openai/deployments/not-deployed/chat/completions"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", list(AZURE_VERSIONS))
def test_azure_round_trip_explicit_and_wildcard(
    shapes: Gateway, fakes: dict[str, Fake], model: str, stream: bool
) -> None:
    version = AZURE_VERSIONS[model]
    client = oc(shapes, default_query={"api-version": version})
    headers, text = openai_chat(shapes, model, stream, client=client)
    assert text == "from fake-azure: Say hello"
    assert headers["x-plano-model"] == model
    deployment = model.split("/", 1)[1]
    check_azure_upstream(the_one_request(fakes, "azure"), deployment, stream, version)


@pytest.mark.parametrize("model", list(AZURE_VERSIONS))
def test_azure_api_version_explicit_key_and_default(
    shapes: Gateway, fakes: dict[str, Fake], model: str
) -> None:
    _, text = openai_chat(shapes, model, stream=False)
    assert text == "from fake-azure: Say hello"
    deployment = model.split("/", 1)[1]
    check_azure_upstream(the_one_request(fakes, "azure"), deployment, False, AZURE_VERSIONS[model])


@pytest.mark.parametrize("model", list(AZURE_VERSIONS))
def test_no_x_plano_header_crosses_the_azure_route_either_way(
    shapes: Gateway, azure: FakeAzureOpenAI, model: str
) -> None:
    """The Azure routes carry a per-route header_mutation config (the api-version): the
    filter-level rules (no x-plano-* header but the decision's) still apply both ways."""
    azure.extra_headers.update(
        {"x-plano-model": "evil/model", "x-plano-route": "evil", "x-plano-extra": "leak"}
    )
    response = httpx.post(
        f"{shapes.url}/v1/chat/completions",
        params={"api-version": AZURE_VERSIONS[model]},
        json={"model": model, "messages": HELLO},
        headers={"x-plano-model": "openai/spoofed", "x-plano-routing": "spoofed"},
        timeout=TIMEOUT,
    )
    assert response.headers["x-plano-model"] == model
    assert response.headers["x-plano-routing"] == "direct"
    assert "x-plano-route" not in response.headers
    assert "x-plano-extra" not in response.headers
    (got,) = azure.received
    assert not [name for name in got.headers if name.startswith("x-plano-")], got.headers
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("client", ["openai", "anthropic"])
def test_passthrough_auth_sends_the_clients_own_key(
    shapes: Gateway, fakes: dict[str, Fake], client: str, stream: bool
) -> None:
    # Both SDKs send their key as Authorization: Bearer, this provider's auth header.
    headers, text = chat(shapes, client, "litellm/team-model", stream, api_key=VIRTUAL_KEY)
    assert text == "from fake-litellm: Say hello"
    assert headers["x-plano-model"] == "litellm/team-model"
    got = the_one_request(fakes, "virtual")
    assert got.headers["authorization"] == f"Bearer {VIRTUAL_KEY}"
    no_gateway_key(got)


def test_passthrough_auth_without_a_client_key_is_the_providers_401(
    shapes: Gateway, fakes: dict[str, Fake]
) -> None:
    response = httpx.post(
        f"{shapes.url}/v1/chat/completions",
        json={"model": "litellm/team-model", "messages": HELLO},
        timeout=TIMEOUT,
    )
    assert response.status_code == 401, response.text
    got = the_one_request(fakes, "virtual")
    assert "authorization" not in got.headers
    no_gateway_key(got)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(
    ("header", "value"),
    [("x-api-key", CLIENT_ANTHROPIC_KEY), ("authorization", f"Bearer {CLIENT_ANTHROPIC_KEY}")],
    ids=["api-key", "bearer-token"],
)
def test_passthrough_auth_anthropic_native_with_the_clients_header(
    shapes: Gateway, fakes: dict[str, Fake], stream: bool, header: str, value: str
) -> None:
    """The client's credential reaches the Anthropic provider as sent: an API key in
    x-api-key, or an OAuth token as Authorization: Bearer (Claude Code's subscription
    login), and nothing else."""
    response = httpx.post(
        f"{shapes.url}/v1/messages",
        json={"model": "anthropic/claude-opus-4-1", "max_tokens": 64, "messages": HELLO}
        | ({"stream": True} if stream else {}),
        headers={header: value, "anthropic-version": "2023-06-01"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-plano-model"] == "anthropic/claude-opus-4-1"
    assert "fake-anthropic-own-key" in response.text  # streamed: a piece per word
    got = the_one_request(fakes, "ant_own")
    assert got.headers[header] == value
    other = "authorization" if header == "x-api-key" else "x-api-key"
    assert other not in got.headers
    no_gateway_key(got)


def test_passthrough_auth_anthropic_native_with_the_anthropic_sdk(
    shapes: Gateway, fakes: dict[str, Fake]
) -> None:
    _, text = anthropic_chat(
        shapes,
        "anthropic/claude-opus-4-1",
        stream=False,
        client=ac(shapes, api_key=CLIENT_ANTHROPIC_KEY),
    )
    assert text == "from fake-anthropic-own-key: Say hello"
    no_gateway_key(the_one_request(fakes, "ant_own"))


def test_configured_headers_reach_only_their_provider(shapes: Gateway, oai: FakeOpenAI) -> None:
    client = oc(shapes, default_headers={"x-team": "client-says-otherwise"})
    openai_chat(shapes, "openai/gpt-4.1-mini", stream=False, client=client)
    openai_chat(shapes, "openai/gpt-4.1", stream=False)
    with_headers, without = oai.received
    assert with_headers.headers["x-team"] == "research"  # the config's value wins
    assert with_headers.headers["openai-project"] == "proj_fake"
    assert "x-team" not in without.headers and "openai-project" not in without.headers


def test_header_values_are_literal(oai: FakeOpenAI, tmp_path: Path) -> None:
    """A '%' in a configured header value is text, not one of Envoy's format commands (which
    would refuse to load, or fill in request data or the gateway's own metadata)."""
    config = f"""\
version: v0.3.0
listeners:
  - type: model
    name: model_listener
    address: 127.0.0.1
    port: {{port}}
model_providers:
  - model: openai/gpt-4.1
    access_key: $OPENAI_API_KEY
    base_url: {oai.base_url()}
    headers:
      x-budget: "50%"
      x-template: "%REQ(x-client-secret)% and %DYNAMIC_METADATA(plano:auth)%"
"""
    gw = start_gateway(config, tmp_path, env=KEY_ENV)
    try:
        client = oc(gw, default_headers={"x-client-secret": "client-secret-value"})
        openai_chat(gw, "openai/gpt-4.1", stream=False, client=client)
    finally:
        gw.stop()
    (got,) = oai.received
    assert got.headers["x-budget"] == "50%"
    assert got.headers["x-template"] == (
        "%REQ(x-client-secret)% and %DYNAMIC_METADATA(plano:auth)%"
    )


def test_http_host_is_the_host_the_provider_sees(
    shapes: Gateway, oai: FakeOpenAI, edge: FakeOpenAI
) -> None:
    openai_chat(shapes, "vllm/llama-3.1-8b-instruct", stream=False)
    openai_chat(shapes, "openai/gpt-4.1", stream=False)
    (got,) = edge.received
    assert got.headers["host"] == "llm.internal.example"
    # Elsewhere the Host is the provider's own (its base_url's), never the gateway's.
    assert oai.received[0].headers["host"] == f"127.0.0.1:{oai.port}"


POEM = [{"role": "user", "content": "Write a short poem about autumn leaves on a quiet lake."}]
ANALYSIS = [
    {
        "role": "user",
        "content": "Prove that there are infinitely many prime numbers, and explain each step "
        "of the reasoning.",
    }
]


@pytest.mark.parametrize(
    ("messages", "route", "served", "fake_name"),
    [
        (POEM, "creative_tasks", "anthropic/claude-sonnet-4-5", "ant"),
        # The route's model is served by the openai/* wildcard.
        (ANALYSIS, "complex_reasoning", "openai/o3", "oai"),
    ],
    ids=["creative", "reasoning"],
)
def test_routing_preferences_first_model_serves(
    shapes: Gateway,
    fakes: dict[str, Fake],
    messages: list[dict[str, str]],
    route: str,
    served: str,
    fake_name: str,
) -> None:
    raw = oc(shapes).chat.completions.with_raw_response.create(model="auto", messages=messages)  # type: ignore[arg-type]
    assert raw.headers["x-plano-routing"] == "preference"
    assert raw.headers["x-plano-route"] == route
    assert raw.headers["x-plano-model"] == served
    assert the_one_request(fakes, fake_name).json["model"] == served.split("/", 1)[1]


# ---------------------------------------------------------------------------------------------
# 3. Both provider keys in one file


def test_model_providers_and_llm_providers_together_is_a_located_error(tmp_path: Path) -> None:
    text = """\
version: v0.3.0
listeners:
  - type: model
    name: model_listener
    port: 12000
model_providers:
  - model: openai/gpt-4.1
    access_key: $OPENAI_API_KEY
llm_providers:
  - model: anthropic/claude-sonnet-4-5
    access_key: $ANTHROPIC_API_KEY
"""
    config = tmp_path / "mixed.yaml"
    config.write_text(text)
    result = run_cli("validate", str(config))
    assert result.returncode != 0
    located = re.search(
        rf"{re.escape(str(config))}:(\d+): llm_providers: .*model_providers.*llm_providers",
        result.stderr,
    )
    assert located, result.stderr
    assert int(located.group(1)) == line_of(text, "llm_providers:")
    assert "OK" not in result.stdout
