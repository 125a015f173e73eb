"""The mesh ingress (deploy/kubernetes/mesh/) on real Envoy: the Envoy config that its Gateway,
HTTPRoute, Backends and EnvoyExtensionPolicy make at an Envoy Gateway ingress
(tests/mesh_ingress.py converts the manifests themselves), in front of the ext_proc server
started as the manifests' Deployment starts it (its args, the ConfigMap's config, the
Secret's key names, with 127.0.0.1 and free ports for the pod's addresses), and fake
providers in place of the Backends' hosts. Real traffic from the openai and anthropic SDKs.

What this does not check: Envoy Gateway's own translation (no cluster here). The converter
writes what Envoy Gateway makes of these objects (its ext_proc filter, off but for the
policy's routes, before the router; the rules in Gateway API's order), and refuses any field
it does not convert; the fakes speak plain HTTP, so the Backends' TLS is checked by
`envoy --mode validate` of the config with the real hosts only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import grpc
import httpx
import openai
import pytest
import yaml
from anthropic import Anthropic
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from openai import OpenAI

from plano_extproc.envoy_config import envoy_binary, system_ca_bundle, validate_with_envoy
from tests.fake_providers import FakeAnthropic, FakeOpenAI, Recorded
from tests.fakes import free_port
from tests.mesh_ingress import Local, bootstrap, load, one

pytestmark = pytest.mark.integration

MESH = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "mesh"
KEYS = {"OPENAI_API_KEY": "sk-mesh-openai-test", "ANTHROPIC_API_KEY": "sk-mesh-anthropic-test"}
CLIENT_KEY = "client-key-never-forwarded"
POEM = "Write a short poem about autumn leaves falling on a quiet lake."
ANALYSIS = (
    "Prove that there are infinitely many prime numbers, and explain each step of the reasoning."
)
SMALL_TALK = "thanks, that's all"


@dataclass
class Mesh:
    url: str
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    vllm: FakeOpenAI
    logs: Path

    def fakes(self) -> list[FakeOpenAI | FakeAnthropic]:
        return [self.openai, self.anthropic, self.vllm]

    # The fields above shadow the SDK modules in this class's annotations: hence the classes.
    def openai_client(self) -> OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20
        )

    def anthropic_client(self) -> Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=CLIENT_KEY, max_retries=0, timeout=20)


def _pod_command(
    docs: list[dict[str, Any]], workdir: Path
) -> tuple[list[str], dict[str, str], int, int]:
    """The Deployment's container as local processes run it: its argv with the mounted config
    written to ``workdir`` and its addresses on 127.0.0.1, the env its Secret refs give it,
    and the ext_proc and health ports."""
    deployment = one(docs, "Deployment", "plano-extproc")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["/opt/venv/bin/plano-extproc"]  # the image's console script
    args = list(container["args"])
    # The config: the ConfigMap mounted where the args name it.
    (mount,) = [m for m in container["volumeMounts"] if args[1].startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_map = one(docs, "ConfigMap", volume["configMap"]["name"])
    config = workdir / "plano.yaml"
    config.write_text(config_map["data"][args[1].rsplit("/", 1)[1]])
    args[1] = str(config)
    # Its addresses: what the Service and the probes name, each on a free local port.
    service = one(docs, "Service", "plano-extproc")
    (service_port,) = service["spec"]["ports"]
    health_port = container["startupProbe"]["grpc"]["port"]
    ports = {}
    for flag, port in (("--listen", service_port["targetPort"]), ("--health-listen", health_port)):
        at = args.index(flag) + 1
        assert args[at] == f"0.0.0.0:{port}", (flag, args[at])
        ports[flag] = free_port()
        args[at] = f"127.0.0.1:{ports[flag]}"
    assert "--decision-headers" in args
    # The keys: files of the mounted Secret, which VAR_FILE variables name (written here with
    # the test's keys), or variables from the Secret.
    env = {}
    secret_mounts = {
        m["mountPath"]: v["secret"]["secretName"]
        for m in container["volumeMounts"]
        for v in pod["volumes"]
        if v["name"] == m["name"] and "secret" in v
    }
    for var in container["env"]:
        if "valueFrom" in var:
            env[var["name"]] = KEYS[var["valueFrom"]["secretKeyRef"]["key"]]
            continue
        folder, _, key = var["value"].rpartition("/")
        assert var["name"].endswith("_FILE") and folder in secret_mounts, var
        key_file = workdir / "keys" / key
        key_file.parent.mkdir(exist_ok=True)
        key_file.write_text(KEYS[key] + "\n")  # as a Secret's file may end
        env[var["name"]] = str(key_file)
    return args, env, ports["--listen"], ports["--health-listen"]


def _wait_serving(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"ext_proc server exited:\n{log.read_text()}")
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"ext_proc server not SERVING:\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    workdir = tmp_path_factory.mktemp("mesh")
    docs = load(MESH)
    args, env, extproc_port, health_port = _pod_command(docs, workdir)
    fakes = Mesh(
        url="",
        openai=FakeOpenAI("openai", api_key=KEYS["OPENAI_API_KEY"]).start(),
        anthropic=FakeAnthropic("anthropic", api_key=KEYS["ANTHROPIC_API_KEY"]).start(),
        vllm=FakeOpenAI("vllm").start(),
        logs=workdir,
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        server_log = workdir / "extproc.log"
        server = subprocess.Popen(
            [sys.executable, "-m", "plano_extproc", *args],
            env={**os.environ, **env},
            stdout=server_log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        processes.append(server)
        listener = free_port()
        local = Local(
            listener_port=listener,
            services={"plano-extproc": extproc_port},
            backends={"openai": fakes.openai.port, "anthropic": fakes.anthropic.port,
                      "vllm": fakes.vllm.port},
        )  # fmt: skip
        config = workdir / "envoy.yaml"
        config.write_text(yaml.safe_dump(bootstrap(docs, local), sort_keys=False))
        validate_with_envoy(config.read_text())
        envoy_log = workdir / "envoy.log"
        envoy = subprocess.Popen(
            [envoy_binary(), "-c", str(config), "--concurrency", "1", "--log-level", "warn",
             "--disable-hot-restart"],
            stdout=envoy_log.open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        processes.append(envoy)
        _wait_serving(health_port, server, server_log)
        fakes.url = f"http://127.0.0.1:{listener}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{fakes.url}/v1/models", timeout=1)
                break
            except httpx.TransportError:
                if envoy.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Envoy did not start:\n{envoy_log.read_text()}") from None
                time.sleep(0.1)
        yield fakes
    finally:
        for process in reversed(processes):  # Envoy first: the server then drains at once
            _stop(process)
        for fake in fakes.fakes():
            fake.stop()


@pytest.fixture(autouse=True)
def _clear(mesh: Mesh) -> None:
    for fake in mesh.fakes():
        fake.received.clear()


def only(mesh: Mesh, fake: FakeOpenAI | FakeAnthropic) -> Recorded:
    """The one request ``fake`` got, when no other provider got any; checked for what must
    never reach a provider."""
    others = [f for f in mesh.fakes() if f is not fake]
    assert not any(f.received for f in others), [(f.name, f.received) for f in others]
    (got,) = fake.received
    for name, value in got.headers.items():
        assert CLIENT_KEY not in value, f"the client's key reached {fake.name} in {name}"
        assert not name.startswith("x-plano-"), f"{name} reached {fake.name}"
    assert "cookie" not in got.headers
    return got


def nothing_sent(mesh: Mesh) -> None:
    assert not any(f.received for f in mesh.fakes())


# --- the manifests ---------------------------------------------------------------------------


def test_the_ingress_config_with_the_real_hosts_passes_envoy_validate() -> None:
    config = bootstrap(load(MESH), ca_bundle=system_ca_bundle())
    validate_with_envoy(yaml.safe_dump(config, sort_keys=False))
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    tls = [c for c in clusters.values() if "transport_socket" in c]
    snis = sorted(c["transport_socket"]["typed_config"]["sni"] for c in tls)
    assert snis == ["api.anthropic.com", "api.openai.com"]  # vLLM in the cluster: plain HTTP


def test_the_ext_proc_filter_is_before_the_router_as_the_policy_says() -> None:
    config = bootstrap(load(MESH))
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters = manager["typed_config"]["http_filters"]
    assert [f["name"].split("/")[0] for f in filters] == [
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.router",
    ]
    ext_proc = filters[0]["typed_config"]
    assert ext_proc["processing_mode"]["request_header_mode"] == "SEND"
    assert ext_proc["processing_mode"]["request_body_mode"] == "BUFFERED"
    assert ext_proc["processing_mode"]["response_header_mode"] == "SKIP"
    assert ext_proc["failure_mode_allow"] is False and ext_proc["message_timeout"] == "5s"


# --- routed traffic: the OpenAI SDK ----------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "sent"),
    [("gpt-5.2", "gpt-5.2"), ("openai/gpt-5.2", "gpt-5.2"), ("fast-model", "gpt-5.2"),
     ("reasoning-model", "gpt-5"), ("openai/gpt-5-mini", "gpt-5-mini")],
)  # fmt: skip
def test_a_named_model_reaches_openai_with_the_gateways_key(
    mesh: Mesh, model: str, sent: str
) -> None:
    reply = mesh.openai_client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}]
    )
    assert reply.choices[0].message.content == "from openai: Hi"
    got = only(mesh, mesh.openai)
    assert got.route == "/v1/chat/completions"
    assert got.headers["authorization"] == f"Bearer {KEYS['OPENAI_API_KEY']}"
    assert got.headers["host"] == "api.openai.com"  # the rule's URLRewrite hostname
    assert got.json["model"] == sent
    assert int(got.headers["content-length"]) == len(got.raw_body)


@pytest.mark.parametrize(
    ("text", "sent"), [(POEM, "gpt-4.1"), (ANALYSIS, "gpt-5"), (SMALL_TALK, "gpt-5.2")]
)
def test_no_model_is_routed_by_preference_or_to_the_default(
    mesh: Mesh, text: str, sent: str
) -> None:
    mesh.openai_client().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": text}]
    )
    assert only(mesh, mesh.openai).json["model"] == sent


def test_a_streamed_answer_passes(mesh: Mesh) -> None:
    stream = mesh.openai_client().chat.completions.create(
        model="fast-model", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "from openai: Hi"
    assert only(mesh, mesh.openai).json["stream"] is True


def test_a_model_in_the_cluster_gets_no_credential_at_all(mesh: Mesh) -> None:
    mesh.openai_client().chat.completions.create(
        model="vllm/qwen3-8b", messages=[{"role": "user", "content": "Hi"}]
    )
    got = only(mesh, mesh.vllm)
    assert "authorization" not in got.headers and "x-api-key" not in got.headers
    assert got.headers["host"] == "vllm.llm.svc.cluster.local"
    assert got.json["model"] == "qwen3-8b"


def test_a_body_past_envoy_gateways_default_buffer_passes(mesh: Mesh) -> None:
    # 200 KB: over Envoy Gateway's 32 KiB default, within the ClientTrafficPolicy's limit.
    text = "word " * 40_000
    mesh.openai_client().chat.completions.create(
        model="fast-model", messages=[{"role": "user", "content": text}]
    )
    got = only(mesh, mesh.openai)
    assert got.json["messages"][0]["content"] == text


def test_a_clients_selector_headers_cannot_choose_the_route(mesh: Mesh) -> None:
    response = httpx.post(
        f"{mesh.url}/v1/chat/completions",
        json={"model": "gpt-5.2", "messages": [{"role": "user", "content": "Hi"}]},
        headers={
            "authorization": f"Bearer {CLIENT_KEY}",
            "x-api-key": CLIENT_KEY,
            "cookie": f"session={CLIENT_KEY}",
            "x-plano-upstream": "vllm.llm.svc.cluster.local:8000",
            "x-plano-provider": "vllm/qwen3-8b",
        },
        timeout=20,
    )
    assert response.status_code == 200, response.text
    assert only(mesh, mesh.openai).json["model"] == "gpt-5.2"


# --- routed traffic: the Anthropic SDK -------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude", "anthropic/claude-opus-4-1"])
def test_an_anthropic_model_reaches_anthropic_with_the_gateways_key(mesh: Mesh, model: str) -> None:
    reply = mesh.anthropic_client().messages.create(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
    )
    assert reply.content[0].text == "from anthropic: Hi"  # type: ignore[union-attr]
    got = only(mesh, mesh.anthropic)
    assert got.route == "/v1/messages"
    assert got.headers["x-api-key"] == KEYS["ANTHROPIC_API_KEY"]
    assert "authorization" not in got.headers
    assert got.headers["host"] == "api.anthropic.com"
    assert got.json["model"] == ("claude-opus-4-1" if "opus" in model else "claude-sonnet-4-5")


def test_an_anthropic_stream_passes(mesh: Mesh) -> None:
    with mesh.anthropic_client().messages.stream(
        model="claude", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "from anthropic: Hi"
    only(mesh, mesh.anthropic)


def test_anthropic_version_is_added_only_when_the_client_sent_none(mesh: Mesh) -> None:
    body = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]}
    for sent in (None, "2023-06-01"):
        headers = {"x-api-key": CLIENT_KEY}
        if sent is not None:
            headers["anthropic-version"] = sent
        response = httpx.post(f"{mesh.url}/v1/messages", json=body, headers=headers, timeout=20)
        assert response.status_code == 200, response.text
        got = only(mesh, mesh.anthropic)
        assert got.headers["anthropic-version"] == "2023-06-01"
        mesh.anthropic.received.clear()


def test_token_counts(mesh: Mesh) -> None:
    client = mesh.anthropic_client()
    messages: Any = [{"role": "user", "content": "How many tokens is this?"}]
    counted = client.messages.count_tokens(model="claude-sonnet-4-5", messages=messages)
    assert counted.input_tokens > 0
    assert only(mesh, mesh.anthropic).route == "/v1/messages/count_tokens"
    mesh.anthropic.received.clear()
    # An OpenAI model cannot count: the router estimates, no provider is asked.
    estimated = client.messages.count_tokens(model="gpt-5.2", messages=messages)
    assert estimated.input_tokens > 0
    nothing_sent(mesh)


# --- what is refused, in the client's shape --------------------------------------------------


def test_a_bad_model_is_the_openai_clients_400(mesh: Mesh) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        mesh.openai_client().chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "Hi"}]
        )
    error = caught.value.body
    assert isinstance(error, dict) and error["type"] == "invalid_request_error"
    assert error["code"] in ("model_not_found", "model_ambiguous"), error
    nothing_sent(mesh)


def test_a_bad_model_is_the_anthropic_clients_400(mesh: Mesh) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        mesh.anthropic_client().messages.create(
            model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
        )
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error", body
    assert body["error"]["type"] == "invalid_request_error"
    nothing_sent(mesh)


def test_a_request_that_needs_translation_is_refused_not_misrouted(mesh: Mesh) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        mesh.openai_client().chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "Hi"}]
        )
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "translation_unavailable", error
    assert "/v1/messages" in error["message"]
    with pytest.raises(anthropic.BadRequestError) as refused:
        mesh.anthropic_client().messages.create(
            model="gpt-5.2", max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
        )
    body = refused.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert "/v1/chat/completions" in body["error"]["message"]
    nothing_sent(mesh)


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/v1/models", 404, "unknown_url"), ("POST", "/v1/chat/completions", 400,
     "missing_body"), ("GET", "/v1/chat/completions", 405, "method_not_allowed")],
)  # fmt: skip
def test_what_the_router_answers_itself(
    mesh: Mesh, method: str, path: str, status: int, code: str
) -> None:
    response = httpx.request(method, f"{mesh.url}{path}", timeout=20)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.text)["error"]["code"] == code
    nothing_sent(mesh)
