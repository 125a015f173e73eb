"""The sidecar pods, played from their manifests on this machine (tests/pod_player.py): the
Deployment's and the Job's containers run as local processes with the env, files and ports
the manifests give them, the native sidecars start in order on their startupProbes, every
probe is polled as declared, the app's traffic goes through the gateway to fake providers
(their base URLs written into the mounted config) with the Secret's placeholder keys, and the
pod stops in Kubernetes' order with every container exiting 0 within the grace period.

The player is tested too: copies of the manifests broken on purpose (a probe on the wrong
port, a flag the CLI refuses, a ConfigMap file nobody reads) must fail it.
"""

from __future__ import annotations

import copy
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import grpc
import httpx
import openai
import pytest
import yaml

from tests import kube
from tests.fake_providers import FakeAnthropic, FakeOpenAI
from tests.fakes import free_port
from tests.pod_player import PodFailure, PodPlayer, playing

pytestmark = pytest.mark.integration

ALL = kube.manifests()
SIDECAR = [m for m in ALL if m.path.parent == kube.SIDECAR]
CLIENT_KEY = "client-key-never-forwarded"


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeOpenAI, FakeAnthropic]]:
    with FakeOpenAI("openai") as o, FakeAnthropic("anthropic") as a:
        yield o, a


@pytest.fixture(autouse=True)
def _clear(fakes: tuple[FakeOpenAI, FakeAnthropic]) -> None:
    for fake in fakes:
        fake.received.clear()


def to_fakes(fakes: tuple[FakeOpenAI, FakeAnthropic]) -> Callable[[str], str]:
    """The mounted config with every provider at the fake of its API: the stand-ins for the
    real providers (nothing else in the config changes)."""
    openai_fake, anthropic_fake = fakes

    def rewrite(text: str) -> str:
        config = yaml.safe_load(text)
        for provider in config.get("model_providers") or config.get("llm_providers") or []:
            name = provider["model"].split("/")[0]
            interface = provider.get("provider_interface", name)
            fake = anthropic_fake if interface in ("anthropic", "claude") else openai_fake
            provider["base_url"] = fake.base_url()
        return yaml.safe_dump(config, sort_keys=False)

    return rewrite


def _player(
    workload: kube.Manifest,
    found: list[kube.Manifest],
    tmp_path: Path,
    fakes: tuple[FakeOpenAI, FakeAnthropic],
) -> PodPlayer:
    return PodPlayer(workload, found, tmp_path, to_fakes(fakes))


def _workload(kind: str, name: str) -> kube.Manifest:
    found = kube.find(SIDECAR, kind, name)
    assert found is not None, f"deploy/kubernetes/sidecar has no {kind} {name}"
    return found


def _secret_values(player: PodPlayer) -> dict[str, str]:
    """The keys the ext_proc container was given (the Secret's placeholders): as variables,
    or as the files of its mounted Secret that VAR_FILE variables name."""
    server = next(r for r in player.running if r.container.argv[1:2] == ["serve"])
    keys = {k: v for k, v in server.env.items() if k.endswith("_API_KEY")}
    for name, path in server.env.items():
        if name.endswith("_API_KEY_FILE"):
            keys[name.removesuffix("_FILE")] = Path(path).read_text().strip()
    return keys


def exercise(player: PodPlayer, fakes: tuple[FakeOpenAI, FakeAnthropic]) -> None:
    """What an app does through the gateway, with both SDKs at the base URLs its env names,
    and what must hold meanwhile: the keys reached the providers and no one else."""
    openai_fake, anthropic_fake = fakes
    app = next(c for c in kube.containers(player.pod) if not c.init)
    env = player.app_env(app)
    client = openai.OpenAI(
        base_url=env["OPENAI_BASE_URL"], api_key=CLIENT_KEY, max_retries=0, timeout=30
    )
    ids = {m.id for m in client.models.list()}
    assert {"fast-model", "openai/gpt-5.2"} <= ids
    raw = client.chat.completions.with_raw_response.create(
        model="fast-model", messages=[{"role": "user", "content": "hello from the pod"}]
    )
    assert raw.headers["x-plano-model"] == "openai/gpt-5.2"
    assert "hello from the pod" in (raw.parse().choices[0].message.content or "")
    chunks = client.chat.completions.create(
        model="creative-model",
        messages=[{"role": "user", "content": "a streamed poem"}],
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # No model named: the router (the image's models, here build/models) decides.
    routed = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Write a poem about the sea at night"}],
    )
    assert routed.headers["x-plano-routing"] in ("preference", "default")
    if "ANTHROPIC_BASE_URL" in env:
        claude = anthropic.Anthropic(
            base_url=env["ANTHROPIC_BASE_URL"], api_key=CLIENT_KEY, max_retries=0, timeout=30
        )
        message = claude.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "hi from the Messages API"}],
        )
        assert message.content
        assert anthropic_fake.received
    keys = _secret_values(player)
    assert keys, "the ext_proc container got no key"
    for fake, header, prefix in (
        (openai_fake, "authorization", "Bearer "),
        (anthropic_fake, "x-api-key", ""),
    ):
        for request in fake.received:
            sent = request.headers.get(header, "")
            assert sent.removeprefix(prefix) in keys.values(), f"{fake.name} got {sent!r}"
    assert openai_fake.received
    # The keys are in the ext_proc container alone: no process of any other container has
    # one in its environment (Envoy and its wrapper included).
    for running in player.running:
        if running.container.argv[1:2] == ["serve"]:
            continue
        for environ in player.tree_environments(running.container.name):
            leaked = [k for k, v in environ.items() if v in keys.values()]
            assert not leaked, f"container {running.container.name} has {leaked}"
    check_health_port_serves_only_health(player)
    check_metrics(player, set(keys.values()))
    player.check_running_probes()
    player.check_mounts_were_read()


def check_metrics(player: PodPlayer, keys: set[str]) -> None:
    """The port the pod's prometheus.io annotations name (on the pod's address) serves the
    gateway's metrics: the server's and Envoy's per-request stats read over the admin socket
    the two gateway containers share; no key; and no other path."""
    template = player.workload.doc["spec"]["template"]
    annotations = template.get("metadata", {}).get("annotations", {})
    # Every workload exercise() plays is scraped: a missing annotation is a failure here,
    # not a reason to check nothing.
    assert annotations.get("prometheus.io/scrape") == "true", annotations
    port = player.ports[int(annotations["prometheus.io/port"])]
    url = f"http://127.0.0.1:{port}{annotations.get('prometheus.io/path', '/metrics')}"
    text = httpx.get(url, timeout=10).text
    assert 'envoy_plano_requests{model="openai/gpt-5.2",routing="alias"' in text, text[-2000:]
    assert "plano_router_decision_seconds_count" in text
    assert not [k for k in keys if k in text]
    assert httpx.get(f"http://127.0.0.1:{port}/stats", timeout=10).status_code == 404


def check_health_port_serves_only_health(player: PodPlayer) -> None:
    """The port the kubelet probes (on the pod's address) answers health and nothing else:
    an ext_proc call there is refused (its answers carry keys)."""
    asked = 0
    for running in player.running:
        for probe in player.probes(running.container).values():
            if "grpc" not in probe.spec:
                continue
            with grpc.insecure_channel(f"127.0.0.1:{player.ports[probe.port]}") as channel:
                call = channel.stream_stream(
                    "/envoy.service.ext_proc.v3.ExternalProcessor/Process",
                    request_serializer=lambda b: b,
                    response_deserializer=lambda b: b,
                )
                with pytest.raises(grpc.RpcError) as refused:
                    list(call(iter([b""]), timeout=5))
                assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
                asked += 1
    assert asked, "no container has a grpc probe: no health port was checked"


def test_the_sidecar_deployment_plays(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    player = _player(_workload("Deployment", "example-app"), SIDECAR, tmp_path, fakes)
    with playing(player):
        exercise(player, fakes)
        # The example app listed the models at start and idles until it is stopped.
        assert "fast-model" in next(r for r in player.apps()).log.read_text()
        took = player.stop_pod()
    assert player.exit_codes == {"app": 0, "envoy": 0, "plano-extproc": 0}
    assert took < player.grace


def test_the_sidecar_job_completes(tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]) -> None:
    player = _player(_workload("Job", "example-job"), SIDECAR, tmp_path, fakes)
    with playing(player):
        # The Job's work: one chat completion through the gateway, then exit 0.
        assert player.wait_app("app", timeout=60) == 0
        log = next(r for r in player.apps()).log.read_text()
        assert "hello in five words" in log, log
        exercise(player, fakes)
        player.stop_pod()
    assert player.exit_codes == {"envoy": 0, "plano-extproc": 0}


# --- the player fails what does not hold ------------------------------------------------------


def _broken(kind: str, name: str, breaks: Callable[[dict[str, Any]], None]) -> kube.Manifest:
    original = _workload(kind, name)
    doc = copy.deepcopy(original.doc)
    breaks(doc)
    return kube.Manifest(original.path, doc)


def _extproc(doc: dict[str, Any]) -> dict[str, Any]:
    spec = kube.pod_spec(doc)
    assert spec is not None
    return next(c for c in spec["initContainers"] if "serve" in c["args"])


def test_a_probe_on_the_wrong_port_fails_the_player(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    def wrong_port(doc: dict[str, Any]) -> None:
        probe = _extproc(doc)["startupProbe"]
        probe["grpc"]["port"] = 10002  # the health service is on 10001
        probe["failureThreshold"] = 5  # fail in seconds, not two minutes

    workload = _broken("Deployment", "example-app", wrong_port)
    player = _player(workload, SIDECAR, tmp_path, fakes)
    with (
        pytest.raises(PodFailure, match="startupProbe on port 10002 failed 5 times"),
        playing(player),
    ):
        pass


def test_a_flag_the_cli_refuses_fails_the_player(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    workload = _broken(
        "Deployment",
        "example-app",
        lambda doc: _extproc(doc)["args"].extend(["--health-port", "10001"]),
    )
    player = _player(workload, SIDECAR, tmp_path, fakes)
    with pytest.raises(PodFailure, match=r"exited \(2\) before its startupProbe"), playing(player):
        pass


def test_a_config_file_nobody_reads_fails_the_player(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    configmap = kube.find(SIDECAR, "ConfigMap", "plano-config")
    assert configmap is not None
    doc = copy.deepcopy(configmap.doc)
    doc["data"]["extra.yaml"] = "nothing: reads this\n"
    found = [m for m in SIDECAR if m is not configmap] + [kube.Manifest(configmap.path, doc)]
    player = _player(_workload("Deployment", "example-app"), found, tmp_path, fakes)
    with playing(player), pytest.raises(PodFailure, match=r"mounted \['extra.yaml'\]"):
        player.check_mounts_were_read()


# --- the mesh ingress's router: the ext_proc server alone ------------------------------------

MESH = [m for m in ALL if m.path.parent == kube.MESH]


@pytest.mark.skipif(
    kube.find(MESH, "Deployment", "plano-extproc") is None,
    reason="deploy/kubernetes/mesh has no plano-extproc Deployment",
)
def test_the_mesh_router_deployment_plays(tmp_path: Path) -> None:
    """The mesh's ext_proc Deployment played as the kubelet would, behind the ingress Envoy
    that tests/mesh_ingress.py makes from the mesh manifests, its Service on the port the
    played pod listens on."""
    from plano_extproc.envoy_config import envoy_binary
    from tests.mesh_ingress import Local, bootstrap, load

    workload = kube.find(MESH, "Deployment", "plano-extproc")
    assert workload is not None
    service = kube.find(MESH, "Service", "plano-extproc")
    assert service is not None
    # The server only decides at the ingress: the providers are the ingress's Backends, so
    # the config is played as it is.
    player = PodPlayer(workload, MESH, tmp_path)
    with (
        FakeOpenAI("openai") as openai_fake,
        FakeAnthropic("anthropic") as anthropic_fake,
        FakeOpenAI("vllm") as vllm_fake,
        playing(player),
    ):
        (port,) = service.doc["spec"]["ports"]
        listener = free_port()
        local = Local(
            listener_port=listener,
            services={service.name: player.ports[port["targetPort"]]},
            backends={"openai": openai_fake.port, "anthropic": anthropic_fake.port,
                      "vllm": vllm_fake.port},
        )  # fmt: skip
        config = tmp_path / "ingress.yaml"
        config.write_text(yaml.safe_dump(bootstrap(load(kube.MESH), local), sort_keys=False))
        log = tmp_path / "ingress.log"
        with log.open("wb") as out:
            ingress = subprocess.Popen(
                [envoy_binary(), "-c", str(config), "--concurrency", "1", "-l", "warn",
                 "--disable-hot-restart"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{listener}/v1",
                api_key=CLIENT_KEY,
                max_retries=3,
                timeout=30,
            )
            reply = client.chat.completions.create(
                model="fast-model", messages=[{"role": "user", "content": "through the mesh"}]
            )
            assert "through the mesh" in (reply.choices[0].message.content or ""), log.read_text()
            keys = _secret_values(player)
            (request,) = openai_fake.received
            assert request.headers["authorization"].removeprefix("Bearer ") in keys.values()
        finally:
            # The ingress goes first: the server's drain then ends as its connections close.
            ingress.send_signal(signal.SIGTERM)
            ingress.wait(timeout=10)
        check_health_port_serves_only_health(player)
        player.check_running_probes()
        player.check_mounts_were_read()
        took = player.stop_pod()
    assert player.exit_codes == {"plano-extproc": 0}
    assert took < player.grace
