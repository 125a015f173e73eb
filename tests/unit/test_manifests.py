"""Every manifest under deploy/, offline: the Kubernetes objects against the API schemas that
kubernetes-validate ships (strict: an unknown field fails), at the oldest version with native
sidecars on by default (1.29) and at the newest it has; the custom resources (Gateway API,
Envoy Gateway, Istio), which have no schema there, listed by name and checked for what can be
checked without their CRDs (a known apiVersion/kind, a name, every reference to another
object of deploy/ resolving). Then the invariants the deployment relies on: no key in a
ConfigMap or in the rendered Envoy config, keys only in the ext_proc container, every
container locked down, Envoy's admin never on a network address, probes on ports the
container declares and its command listens on, every command accepted by the CLI, and the
Dockerfile's layout (command path, user, models folder, ports) matching the manifests.

Nothing here starts a process: tests/integration/test_pod.py runs the pods.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from plano_extproc import cli
from plano_extproc.config import load_config
from plano_extproc.envoy_config import render_yaml
from tests import kube

pytestmark = pytest.mark.unit

ALL = kube.manifests()
# The oldest Kubernetes with native sidecars on by default (1.29), and the newest schemas the
# package has.
_MINOR = [v for v in all_versions() if tuple(map(int, v.split(".")[:2])) >= (1, 29)]
VERSIONS = sorted({_MINOR[0], _MINOR[-1]})

# Custom resources: their CRDs are not in kubernetes-validate. Each kind used under deploy/
# must be listed here (a misspelt apiVersion or kind fails), with the fields through which it
# names other objects.
CUSTOM_RESOURCES: dict[tuple[str, str], str] = {
    ("gateway.networking.k8s.io/v1", "GatewayClass"): "Gateway API",
    ("gateway.networking.k8s.io/v1", "Gateway"): "Gateway API",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "Gateway API",
    ("gateway.networking.k8s.io/v1", "GRPCRoute"): "Gateway API",
    ("gateway.networking.k8s.io/v1beta1", "ReferenceGrant"): "Gateway API",
    ("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy"): "Envoy Gateway",
    ("gateway.envoyproxy.io/v1alpha1", "EnvoyProxy"): "Envoy Gateway",
    ("gateway.envoyproxy.io/v1alpha1", "EnvoyPatchPolicy"): "Envoy Gateway",
    ("gateway.envoyproxy.io/v1alpha1", "BackendTrafficPolicy"): "Envoy Gateway",
    ("gateway.envoyproxy.io/v1alpha1", "ClientTrafficPolicy"): "Envoy Gateway",
    ("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy"): "Envoy Gateway",
    ("gateway.envoyproxy.io/v1alpha1", "Backend"): "Envoy Gateway",
    ("gateway.envoyproxy.io/v1alpha1", "HTTPRouteFilter"): "Envoy Gateway",
    ("gateway.networking.k8s.io/v1", "BackendTLSPolicy"): "Gateway API",
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): "Istio",
}
# A reference's kind when it names none: Gateway API's defaults.
_DEFAULT_REF_KIND = {"parentRefs": "Gateway", "backendRefs": "Service"}
_REF_FIELDS = ("parentRefs", "backendRefs", "targetRefs", "targetRef", "extensionRef")

IMAGE_REPO = "ghcr.io/plano-extproc/plano-extproc"
PYPROJECT = tomllib.loads((kube.ROOT / "pyproject.toml").read_text())
IMAGE = f"{IMAGE_REPO}:{PYPROJECT['project']['version']}"


def _ids(found: list[kube.Manifest]) -> list[str]:
    return [m.where for m in found]


KUBERNETES = [m for m in ALL if not kube.is_kustomization(m) and (m.doc["apiVersion"], m.kind)
              not in CUSTOM_RESOURCES]  # fmt: skip
CUSTOM = [m for m in ALL if (m.doc.get("apiVersion"), m.kind) in CUSTOM_RESOURCES]
WORKLOADS = [m for m in ALL if kube.pod_spec(m.doc) is not None]


def _gateway_containers() -> list[tuple[kube.Manifest, dict[str, Any], kube.Container]]:
    """Every container that runs this project's image, with its workload and pod spec."""
    found = []
    for m in WORKLOADS:
        pod = kube.pod_spec(m.doc)
        assert pod is not None
        for c in kube.containers(pod):
            if str(c.spec.get("image", "")).startswith(IMAGE_REPO + ":"):
                found.append((m, pod, c))
    return found


GATEWAY = _gateway_containers()


def _role(c: kube.Container) -> str:
    """serve (the ext_proc server) or envoy: the CLI command the container runs."""
    return c.argv[1] if len(c.argv) > 1 else ""


def _parsed(c: kube.Container) -> argparse.Namespace:
    """The container's arguments as the CLI parses them: a flag it does not know fails."""
    try:
        return cli._parser().parse_args(c.argv[1:])
    except SystemExit as exc:  # argparse has printed why
        raise AssertionError(f"container {c.name}: the CLI refuses {c.argv[1:]}") from exc


def _beside(m: kube.Manifest) -> list[kube.Manifest]:
    """The manifests of ``m``'s folder: what its references name (one namespace each)."""
    return [other for other in ALL if other.path.parent == m.path.parent]


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


# --- the schemas ------------------------------------------------------------------------------


def test_deploy_has_the_sidecar_manifests() -> None:
    kinds = {(m.kind, m.name) for m in ALL if m.path.parent == kube.SIDECAR}
    assert {("Deployment", "example-app"), ("Job", "example-job")} <= kinds
    assert {("ConfigMap", "plano-config"), ("Secret", "plano-provider-keys")} <= kinds


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("manifest", KUBERNETES, ids=_ids(KUBERNETES))
def test_kubernetes_objects_match_the_api_schema(manifest: kube.Manifest, version: str) -> None:
    try:
        kubernetes_validate.validate(manifest.doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path)
        pytest.fail(f"{manifest.where} (Kubernetes {version}) at {path}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(
            f"{manifest.where}: no schema for {exc.api_version} {exc.kind}: a custom resource "
            "must be listed in CUSTOM_RESOURCES, anything else is misspelt"
        )


def test_a_misspelt_field_fails_the_schema_check() -> None:
    # The check above is only worth something if strict mode refuses what Kubernetes ignores.
    doc = yaml.safe_load((kube.SIDECAR / "deployment.yaml").read_text())
    doc["spec"]["template"]["spec"]["initContainers"][0]["startupprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("manifest", CUSTOM, ids=_ids(CUSTOM))
def test_custom_resources_name_objects_that_exist(manifest: kube.Manifest) -> None:
    assert manifest.name, f"{manifest.where}: metadata.name missing"
    assert isinstance(manifest.doc.get("spec"), dict), f"{manifest.where}: no spec"
    here = _beside(manifest)
    for field, ref in _references(manifest.doc.get("spec", {})):
        kind = ref.get("kind", _DEFAULT_REF_KIND.get(field))
        assert kind, f"{manifest.where}: {field} {ref} names no kind"
        target = kube.find(here, kind, ref["name"])
        assert target is not None, f"{manifest.where}: {field} names {kind}/{ref['name']}, "
        "which no manifest beside it defines"
        if kind == "Service" and "port" in ref:
            ports = {p["port"] for p in target.doc["spec"].get("ports", [])}
            assert ref["port"] in ports, f"{manifest.where}: Service {ref['name']} has no port "
            f"{ref['port']} ({sorted(ports)})"
    if manifest.kind == "Gateway":
        cls = manifest.doc["spec"]["gatewayClassName"]
        assert kube.find(here, "GatewayClass", cls), f"{manifest.where}: no GatewayClass {cls}"


def _references(node: Any, field: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _REF_FIELDS:
                refs = value if isinstance(value, list) else [value]
                found += [(key, r) for r in refs if isinstance(r, dict) and "name" in r]
            found += _references(value, key)
    elif isinstance(node, list):
        for item in node:
            found += _references(item, field)
    return found


@pytest.mark.parametrize(
    "manifest", [m for m in ALL if kube.is_kustomization(m)], ids=lambda m: m.where
)
def test_kustomizations_apply_every_manifest_beside_them(manifest: kube.Manifest) -> None:
    folder = manifest.path.parent
    listed = set(manifest.doc.get("resources", []))
    for entry in listed:
        assert (folder / entry).exists(), f"{manifest.where}: {entry} does not exist"
    # An example Secret is left out on purpose: applying it would overwrite real keys.
    beside = {
        p.name
        for p in folder.glob("*.y*ml")
        if p != manifest.path and not p.name.endswith(".example.yaml")
    }
    assert beside <= listed, f"{manifest.where}: not applied: {sorted(beside - listed)}"


# --- keys -------------------------------------------------------------------------------------

# What a provider credential looks like, beside the Secrets' own values.
_KEY_SHAPES = re.compile(r"\b(sk-[A-Za-z0-9_-]{8,}|AIza[0-9A-Za-z_-]{20,}|Bearer\s+\S{8,})")


def _secret_values() -> set[str]:
    values: set[str] = set()
    for m in ALL:
        if m.kind == "Secret":
            values |= set(kube.entries(m).values())
    return values


@pytest.mark.parametrize(
    "manifest", [m for m in ALL if m.kind == "ConfigMap"], ids=lambda m: m.where
)
def test_no_key_in_any_configmap(manifest: kube.Manifest) -> None:
    secrets = _secret_values()
    assert secrets, "the Secret manifests hold the placeholder keys this test looks for"
    for name, text in (manifest.doc.get("data") or {}).items():
        assert not _KEY_SHAPES.search(text), f"{manifest.where} {name}: a key-shaped value"
        assert not any(s in text for s in secrets), f"{manifest.where} {name}: a Secret's value"
        config = yaml.safe_load(text)
        if isinstance(config, dict):
            providers = config.get("model_providers") or config.get("llm_providers") or []
            for provider in providers:
                key = provider.get("access_key")
                assert key is None or re.fullmatch(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", key), (
                    f"{manifest.where} {name}: {provider['model']}'s access_key must name a "
                    f"variable (from the Secret), not hold a key"
                )


def _mounted_config(m: kube.Manifest, pod: dict[str, Any], c: kube.Container) -> str:
    path = str(_parsed(c).config)
    files = kube.volume_files(pod, c, _beside(m))
    assert path in files, f"{m.where} {c.name}: {path} is not in any mounted ConfigMap"
    return files[path]


def test_only_the_extproc_server_gets_the_keys() -> None:
    assert GATEWAY, "no container runs the gateway's image"
    for m, pod, c in GATEWAY + [(m, p, c) for m, p, c in _app_containers()]:
        uses_secret = any(
            "secretKeyRef" in var.get("valueFrom", {}) for var in c.spec.get("env", [])
        ) or any("secretRef" in source for source in c.spec.get("envFrom", []))
        mounts = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
        mounts_secret = any(v["name"] in mounts for v in c.spec.get("volumeMounts", []))
        if _role(c) != "serve" or not str(c.spec.get("image", "")).startswith(IMAGE_REPO):
            assert not uses_secret and not mounts_secret, f"{m.where} {c.name}: sees a Secret"


def test_the_extproc_server_has_every_key_its_config_names(tmp_path: Path) -> None:
    assert [c for _, _, c in GATEWAY if _role(c) == "serve"], "no serve container to check"
    for m, pod, c in GATEWAY:
        if _role(c) != "serve":
            continue
        config_file = tmp_path / "plano.yaml"
        config_file.write_text(_mounted_config(m, pod, c))
        # The mounted files (the Secret's keys) where this test can read them, and the
        # environment's paths to them (VAR_FILE) moved the same way.
        local = {}
        for path, text in kube.volume_files(pod, c, _beside(m)).items():
            local[path] = tmp_path / "mounts" / path.lstrip("/")
            local[path].parent.mkdir(parents=True, exist_ok=True)
            local[path].write_text(text)
        env = {k: str(local.get(v, v)) for k, v in kube.environment(c, _beside(m)).items()}
        config = load_config(config_file, env)
        missing = {var for p in config.providers for var in p.missing_vars}
        assert not missing, f"{m.where} {c.name}: keys not given: {sorted(missing)}"
        assert config.key_files, f"{m.where} {c.name}: keys not read from files (no rotation)"


def test_the_rendered_envoy_config_holds_no_key(tmp_path: Path) -> None:
    secrets = _secret_values()
    envoys = [(m, pod, c) for m, pod, c in GATEWAY if _role(c) == "envoy"]
    assert envoys
    for m, pod, c in envoys:
        args = _parsed(c)
        config_file = tmp_path / "plano.yaml"
        config_file.write_text(_mounted_config(m, pod, c))
        # Even rendered with every key in its environment, the bootstrap names none of them.
        every_key = {k: v for s in ALL if s.kind == "Secret" for k, v in kube.entries(s).items()}
        config = load_config(config_file, {**kube.environment(c, _beside(m)), **every_key})
        text = render_yaml(config, cli._options(args))
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{m.where} {c.name}: the bootstrap holds a key"


# --- the containers ---------------------------------------------------------------------------


def _app_containers() -> list[tuple[kube.Manifest, dict[str, Any], kube.Container]]:
    found = []
    for m in WORKLOADS:
        pod = kube.pod_spec(m.doc)
        assert pod is not None
        found += [(m, pod, c) for c in kube.containers(pod)]
    return found


@pytest.mark.parametrize(
    ("manifest", "pod", "container"),
    _app_containers(),
    ids=[f"{m.where} {c.name}" for m, _, c in _app_containers()],
)
def test_every_container_is_locked_down(
    manifest: kube.Manifest, pod: dict[str, Any], container: kube.Container
) -> None:
    where = f"{manifest.where} {container.name}"
    pod_level = pod.get("securityContext", {})
    own = container.spec.get("securityContext", {})
    effective = {**pod_level, **own}
    assert effective.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
    uid = effective.get("runAsUser")
    assert isinstance(uid, int) and uid > 0, f"{where}: a numeric runAsUser other than 0"
    assert effective.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
    # These exist only on a container.
    assert own.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
    assert own.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
    assert own.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities"
    assert not own.get("capabilities", {}).get("add"), f"{where}: adds capabilities"
    assert not own.get("privileged"), where
    # With the root filesystem read-only, /tmp is where anything writes: an emptyDir.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tmp = [v for v in container.spec.get("volumeMounts", []) if v["mountPath"] == "/tmp"]
    assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{where}: no emptyDir at /tmp"
    resources = container.spec.get("resources", {})
    assert "memory" in resources.get("requests", {}), f"{where}: no memory request"
    assert "memory" in resources.get("limits", {}), f"{where}: no memory limit"
    assert "cpu" in resources.get("requests", {}), f"{where}: no CPU request"


def test_every_gateway_command_is_one_the_cli_accepts() -> None:
    for m, _, c in GATEWAY:
        assert c.argv[0] == kube.image().entrypoint[0], f"{m.where} {c.name}: {c.argv[0]}"
        assert _role(c) in ("serve", "envoy"), f"{m.where} {c.name}: runs {_role(c)!r}"
        _parsed(c)
    image = kube.image()
    default = {"name": "image default", "command": image.entrypoint, "args": image.cmd}
    _parsed(kube.Container(default, False, False))


def test_envoy_admin_is_never_on_a_network_address(tmp_path: Path) -> None:
    assert [c for _, _, c in GATEWAY if _role(c) == "envoy"], "no envoy container to check"
    for m, pod, c in GATEWAY:
        if _role(c) != "envoy":
            continue
        args = _parsed(c)
        config_file = tmp_path / "plano.yaml"
        config_file.write_text(_mounted_config(m, pod, c))
        bootstrap = yaml.safe_load(render_yaml(load_config(config_file, {}), cli._options(args)))
        address = bootstrap["admin"]["address"]
        if "pipe" in address:
            # The socket in an emptyDir under /tmp that only the gateway's containers mount
            # (the server reads Envoy's stats there for /metrics); never the app's.
            path = address["pipe"]["path"]
            assert path.startswith("/tmp/"), f"{m.where} {c.name}: admin socket {path}"
            holder = max(
                (v for v in c.spec.get("volumeMounts", []) if path.startswith(v["mountPath"])),
                key=lambda v: len(v["mountPath"]),
            )
            for other in kube.containers(pod):
                if other.argv[:1] != c.argv[:1]:  # not the gateway's image's command
                    names = {v["name"] for v in other.spec.get("volumeMounts", [])}
                    assert holder["name"] not in names, f"{m.where}: {other.name} reaches admin"
        else:
            socket = address["socket_address"]
            assert socket["address"] == "127.0.0.1", f"{m.where} {c.name}: admin on {socket}"
            assert socket["port_value"] not in c.declared_ports, f"{m.where}: admin port declared"


def test_probes_target_declared_ports_the_command_listens_on() -> None:
    for m, _, c in GATEWAY:
        args = _parsed(c)
        where = f"{m.where} {c.name}"
        found = kube.probes(c)
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(found), where
        for kind, probe in found.items():
            port = kube.probe_port(c, probe)
            assert port in c.declared_ports, f"{where} {kind}: port {port} not declared"
            if _role(c) == "serve":
                assert "grpc" in probe, f"{where} {kind}: the server's probes are gRPC health"
                assert args.health_listen, f"{where}: no --health-listen"
                host, health = _host_port(args.health_listen)
                assert port == health, f"{where} {kind}: probes {port}, health on {health}"
                assert host in ("0.0.0.0", "::", ""), f"{where}: the kubelet probes the pod IP"
            else:
                assert probe.get("httpGet", {}).get("path") == "/ready", f"{where} {kind}"
                assert port == args.ready_port, f"{where} {kind}: {port} != --ready-port"
        # Every declared port is one a probe or the command uses: no stale declaration.
        served = {kube.probe_port(c, p) for p in found.values()}
        if _role(c) == "serve" and args.metrics_listen:
            served.add(_host_port(args.metrics_listen)[1])
        assert c.declared_ports <= served, f"{where}: declares {c.declared_ports - served}"


def test_the_extproc_port_stays_on_loopback_where_envoy_is_beside_it(tmp_path: Path) -> None:
    checked = 0
    for m in WORKLOADS:
        pod = kube.pod_spec(m.doc)
        assert pod is not None
        ours = [c for c in kube.containers(pod) if (m, pod, c) in GATEWAY]
        servers = [c for c in ours if _role(c) == "serve"]
        envoys = [c for c in ours if _role(c) == "envoy"]
        if not (servers and envoys):
            continue
        checked += 1
        listen = _parsed(servers[0]).listen
        assert _host_port(listen) == ("127.0.0.1", _parsed(envoys[0]).extproc_port), (
            f"{m.where}: ext_proc on {listen}, Envoy looks on {_parsed(envoys[0]).extproc_port}"
        )
        config_file = tmp_path / "plano.yaml"
        config_file.write_text(_mounted_config(m, pod, envoys[0]))
        listener = load_config(config_file, {}).listener
        assert listener.address == "127.0.0.1", f"{m.where}: the listener is for the pod only"
    assert checked, "no workload has ext_proc and Envoy side by side: nothing was checked"


@pytest.mark.parametrize("service", [m for m in ALL if m.kind == "Service"], ids=lambda m: m.where)
def test_services_send_traffic_to_ports_their_pods_listen_on(service: kube.Manifest) -> None:
    selector = service.doc["spec"].get("selector", {})
    pods = [
        (m, pod)
        for m in _beside(service)
        if (pod := kube.pod_spec(m.doc)) is not None
        and selector.items() <= m.doc["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert pods, f"{service.where}: selects no workload beside it"
    for m, pod in pods:
        listening: set[int | str] = set()
        for c in kube.containers(pod):
            listening |= c.declared_ports
            listening |= {p["name"] for p in c.spec.get("ports", []) if "name" in p}
            if (m, pod, c) in GATEWAY and _role(c) == "serve":
                listening.add(_host_port(_parsed(c).listen)[1])
        for port in service.doc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in listening, f"{service.where}: targetPort {target} of {m.where}"


def test_native_sidecars_start_in_order_before_the_app() -> None:
    checked = 0
    for m in WORKLOADS:
        pod = kube.pod_spec(m.doc)
        assert pod is not None
        roles = [_role(c) for c in kube.containers(pod) if (m, pod, c) in GATEWAY]
        if roles != ["serve", "envoy"]:
            continue
        ordered = kube.containers(pod)
        assert [c.sidecar for c in ordered[:2]] == [True, True], f"{m.where}: native sidecars"
        assert all("startupProbe" in c.spec for c in ordered[:2]), m.where
        assert all(not c.init for c in ordered[2:]), f"{m.where}: the app is a main container"
        checked += 1
    assert checked, "no workload runs the gateway as serve + envoy: nothing was checked"


def test_the_app_reaches_the_gateway_at_its_listener(tmp_path: Path) -> None:
    checked = 0
    for m in WORKLOADS:
        pod = kube.pod_spec(m.doc)
        assert pod is not None
        envoys = [c for c in kube.containers(pod) if (m, pod, c) in GATEWAY and _role(c) == "envoy"]
        if not envoys:
            continue
        config_file = tmp_path / "plano.yaml"
        config_file.write_text(_mounted_config(m, pod, envoys[0]))
        listener = load_config(config_file, {}).listener
        for c in kube.containers(pod):
            if c.init:
                continue
            url = kube.environment(c, _beside(m)).get("OPENAI_BASE_URL")
            assert url == f"http://{listener.address}:{listener.port}/v1", f"{m.where} {c.name}"
            checked += 1
    assert checked, "no app container beside an Envoy gateway: nothing was checked"


def test_the_job_runs_the_deployments_sidecars() -> None:
    sidecar = [m for m in ALL if m.path.parent == kube.SIDECAR]
    deployment = kube.find(sidecar, "Deployment", "example-app")
    job = kube.find(sidecar, "Job", "example-job")
    assert deployment is not None and job is not None
    d, j = kube.pod_spec(deployment.doc), kube.pod_spec(job.doc)
    assert d is not None and j is not None
    assert d["initContainers"] == j["initContainers"]
    assert d["volumes"] == j["volumes"]
    for key in ("securityContext", "terminationGracePeriodSeconds"):
        assert d[key] == j[key], key
    assert j["restartPolicy"] == "Never"


def test_the_grace_period_covers_the_drain() -> None:
    for m in WORKLOADS:
        pod = kube.pod_spec(m.doc)
        assert pod is not None
        drains = [
            _parsed(c).drain_seconds or 0
            for c in kube.containers(pod)
            if (m, pod, c) in GATEWAY and getattr(_parsed(c), "drain_seconds", None)
        ]
        if drains:
            grace = pod.get("terminationGracePeriodSeconds", 30)
            assert grace > max(drains), f"{m.where}: grace {grace}s, drains {drains}"


def test_liveness_outlasts_a_drain() -> None:
    """Readiness fails on purpose while a gateway container drains (NOT_SERVING, /ready 503):
    its liveness probe must not restart it meanwhile."""
    for m in WORKLOADS:
        pod = kube.pod_spec(m.doc)
        assert pod is not None
        for c in kube.containers(pod):
            if (m, pod, c) not in GATEWAY:
                continue
            drain = getattr(_parsed(c), "drain_seconds", None) or 25
            probe = c.spec.get("livenessProbe")
            assert probe is not None, f"{m.where} {c.name}: no liveness probe"
            window = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
            assert window > drain + 5, f"{m.where} {c.name}: liveness fails in {window}s"


# --- the image --------------------------------------------------------------------------------


def test_the_image_is_multistage_on_a_pinned_base() -> None:
    image = kube.image()
    assert len(image.bases) >= 2, "a build stage and the final one"
    for base in image.bases:
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", base), f"not pinned: {base}"
    assert image.bases[0] == image.bases[-1], "the venv is built where it runs"


def test_the_final_stage_builds_nothing() -> None:
    image = kube.image()
    compilers = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|pip install)\b")
    for run in image.run_lines():
        assert not compilers.search(run), f"the final stage compiles or installs: {run}"
    copies = [v for i, v in image.final if i == "COPY"]
    assert copies, "the final stage copies nothing in"
    assert all(c.startswith("--from=") for c in copies), "the final stage takes built files only"


def test_the_manifests_command_is_the_images_entrypoint() -> None:
    image = kube.image()
    script = Path(image.entrypoint[0])
    assert script.name in PYPROJECT["project"]["scripts"], "a console script of the package"
    venv = str(script.parent.parent)  # /opt/venv/bin/plano-extproc -> /opt/venv
    copies = [v.split() for i, v in image.final if i == "COPY"]
    assert any(c[-2:] == [venv, venv] for c in copies), f"{venv} is copied into the image"
    assert image.env["PATH"].startswith(f"{venv}/bin:"), "the venv's envoy on PATH"
    for m, _, c in GATEWAY:
        assert c.spec["image"] == IMAGE, f"{m.where} {c.name}: {c.spec['image']}"
        assert c.spec["command"] == image.entrypoint, f"{m.where} {c.name}"


def test_the_image_user_is_the_manifests_user() -> None:
    uid, gid = kube.image().uid_gid
    for m, pod, c in GATEWAY:
        effective = {**pod.get("securityContext", {}), **c.spec.get("securityContext", {})}
        assert effective["runAsUser"] == uid, f"{m.where} {c.name}"
        assert effective.get("runAsGroup", gid) == gid, f"{m.where} {c.name}"


def test_the_models_are_built_where_the_server_reads_them() -> None:
    image = kube.image()
    models = image.env["PLANO_MODELS_DIR"]
    text = kube.DOCKERFILE.read_text()
    for module in ("export_encoder", "export_e5"):
        assert f"plano_extproc.modelbuild.{module} --models-dir {models}" in text, module
    copies = [v.split() for i, v in image.final if i == "COPY"]
    assert any(c[-2:] == [models, models] for c in copies), f"{models} is copied into the image"


def test_the_image_exposes_the_probed_ports() -> None:
    probed = {kube.probe_port(c, p) for _, _, c in GATEWAY for p in kube.probes(c).values()}
    assert kube.image().exposed == probed


def test_dockerignore_lets_in_what_the_build_copies() -> None:
    ignore = (kube.ROOT / ".dockerignore").read_text().split()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, "everything else (the venv, build/) stays out of the context"
    copied: set[str] = set()
    text = kube.DOCKERFILE.read_text()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied |= set(line.split()[1:-1])
    assert copied and copied <= allowed, f"copied but ignored: {copied - allowed}"


def test_the_models_the_image_keeps_are_enough_for_the_router(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Dockerfile deletes what only building needs after the model build: applied to a
    tree of links to the models `make models` built, the router still loads and decides."""
    from dockerfile_parse import DockerfileParser

    from plano_extproc.router import default_models_dir, load_router

    models = kube.image().env["PLANO_MODELS_DIR"]
    built = default_models_dir()
    image_models = tmp_path / "models"
    for path in built.rglob("*"):
        if path.is_file():
            link = image_models / path.relative_to(built)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    runs = [i["value"] for i in DockerfileParser(str(kube.DOCKERFILE)).structure
            if i["instruction"] == "RUN" and "rm -rf" in i["value"]]  # fmt: skip
    removed = [w for run in runs for w in run.split("rm -rf", 1)[1].split() if w.startswith(models)]
    assert removed, "the build removes nothing: the image would carry the downloads"
    for pattern in removed:
        for match in image_models.glob(pattern.removeprefix(models + "/")):
            if match.is_dir() and not match.is_symlink():
                shutil.rmtree(match)
            else:
                match.unlink()
    assert not (image_models / "_download").exists()
    config_file = tmp_path / "plano.yaml"
    configmap = kube.find([m for m in ALL if m.path.parent == kube.SIDECAR], "ConfigMap",
                          "plano-config")  # fmt: skip
    assert configmap is not None
    config_file.write_text(configmap.doc["data"]["plano.yaml"])
    # The router on what the image keeps decides as the router on everything make builds.
    asks = [
        [{"role": "user", "content": "Write a poem about the sea at night"}],
        [{"role": "user", "content": "Prove that the square root of 2 is irrational."}],
        [{"role": "user", "content": "Résume ce texte en trois phrases, s'il te plaît."}],
    ]
    choices = []
    for models_dir in (built, image_models):
        monkeypatch.setenv("PLANO_MODELS_DIR", str(models_dir))
        router = load_router(load_config(config_file, {}))
        assert router is not None
        choices.append([router.choose(ask) for ask in asks])
    for full, kept in zip(*choices, strict=True):
        assert kept.route == full.route
        assert kept.scores == pytest.approx(full.scores, abs=1e-6)
