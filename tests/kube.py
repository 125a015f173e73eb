"""Reading the Kubernetes manifests under deploy/ and the Dockerfile, as the kubelet and the
image builder would, for tests/unit/test_manifests.py and tests/integration/test_pod.py.

Only what those tests need: the documents of every YAML file, a workload's pod spec, its
containers in start order (native sidecars marked), a container's environment as the kubelet
builds it (Secret and ConfigMap references resolved from the manifests, ``$(VAR)``
expanded), probe ports, and the final stage of the Dockerfile (its user, ENV, ENTRYPOINT,
EXPOSE).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SIDECAR = DEPLOY / "kubernetes" / "sidecar"
MESH = DEPLOY / "kubernetes" / "mesh"
DOCKERFILE = ROOT / "Dockerfile"

# Where a workload kind keeps its pod template.
_POD_TEMPLATE = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}

Doc = dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    path: Path
    doc: Doc

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", ""))

    @property
    def name(self) -> str:
        return str(self.doc.get("metadata", {}).get("name", ""))

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}: {self.kind}/{self.name}"


def manifests(root: Path = DEPLOY) -> list[Manifest]:
    """Every YAML document under ``root`` (kustomization files included), in path order."""
    found = []
    for path in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append(Manifest(path, doc))
    return found


def is_kustomization(m: Manifest) -> bool:
    return str(m.doc.get("apiVersion", "")).startswith("kustomize.config.k8s.io/")


def find(found: Iterable[Manifest], kind: str, name: str) -> Manifest | None:
    return next((m for m in found if m.kind == kind and m.name == name), None)


def pod_spec(doc: Doc) -> Doc | None:
    """A workload's pod spec (None for a kind that runs no pods)."""
    path = _POD_TEMPLATE.get(str(doc.get("kind")))
    if path is None:
        return None
    node: Any = doc
    for key in path:
        node = node[key]
    return dict(node)


@dataclass(frozen=True)
class Container:
    spec: Doc
    init: bool  # an init container (a native sidecar when ``sidecar``)
    sidecar: bool  # restartPolicy: Always: runs beside the app, started before it

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def argv(self) -> list[str]:
        return [str(a) for a in [*self.spec.get("command", []), *self.spec.get("args", [])]]

    def port(self, value: int | str) -> int:
        """A probe's port: a number, or the name of one of this container's ports."""
        if isinstance(value, int):
            return value
        for port in self.spec.get("ports", []):
            if port.get("name") == value:
                return int(port["containerPort"])
        raise KeyError(f"container {self.name}: no port named {value!r}")

    @property
    def declared_ports(self) -> set[int]:
        return {int(p["containerPort"]) for p in self.spec.get("ports", [])}


def containers(pod: Doc) -> list[Container]:
    """The pod's containers in the order the kubelet starts them: init containers (native
    sidecars among them) in order, then the app containers."""
    inits = [
        Container(c, True, c.get("restartPolicy") == "Always")
        for c in pod.get("initContainers", [])
    ]
    return inits + [Container(c, False, False) for c in pod.get("containers", [])]


def probes(container: Container) -> dict[str, Doc]:
    return {
        kind: container.spec[kind]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
        if kind in container.spec
    }


def probe_port(container: Container, probe: Doc) -> int:
    for handler in ("grpc", "httpGet", "tcpSocket"):
        if handler in probe:
            return container.port(probe[handler]["port"])
    raise KeyError(f"container {container.name}: a probe without a port: {probe}")


class MissingReference(LookupError):
    pass


def entries(m: Manifest) -> dict[str, str]:
    """A Secret's or ConfigMap's entries as text (a Secret's stringData; its data is base64)."""
    import base64

    found = {k: str(v) for k, v in (m.doc.get("stringData") or {}).items()}
    for key, value in (m.doc.get("data") or {}).items():
        found[key] = base64.b64decode(value).decode() if m.kind == "Secret" else str(value)
    return found


def _data(found: Iterable[Manifest], kind: str, name: str) -> dict[str, str]:
    m = find(found, kind, name)
    if m is None:
        raise MissingReference(f"no {kind} named {name!r} among the manifests")
    return entries(m)


def environment(container: Container, found: Iterable[Manifest]) -> dict[str, str]:
    """The variables the kubelet gives ``container``: envFrom, then env in order (each value
    may use ``$(NAME)`` of one defined before it), Secret and ConfigMap keys resolved from
    ``found``. An optional reference to something missing is left out, as the kubelet does."""
    found = list(found)
    env: dict[str, str] = {}
    for source in container.spec.get("envFrom", []):
        prefix = source.get("prefix", "")
        for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            if key in source:
                try:
                    entries = _data(found, kind, source[key]["name"])
                except MissingReference:
                    if source[key].get("optional"):
                        continue
                    raise
                env.update({prefix + k: v for k, v in entries.items()})
    for var in container.spec.get("env", []):
        if "value" in var or "valueFrom" not in var:
            env[var["name"]] = expand(str(var.get("value", "")), env)
            continue
        source = var["valueFrom"]
        for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if key in source:
                ref = source[key]
                try:
                    entries = _data(found, kind, ref["name"])
                    env[var["name"]] = entries[ref["key"]]
                except (MissingReference, KeyError):
                    if not ref.get("optional"):
                        raise MissingReference(
                            f"container {container.name}: {var['name']} from {kind} "
                            f"{ref['name']!r} key {ref['key']!r}: not in the manifests"
                        ) from None
                break
        else:
            raise MissingReference(f"container {container.name}: {var['name']}: {source}")
    return env


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(NAME)`` expansion in command, args and env values: a name not defined
    stays as written, ``$$`` is a literal ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(one, text)


def volume_files(pod: Doc, container: Container, found: Iterable[Manifest]) -> dict[str, str]:
    """The files the kubelet writes into ``container``'s ConfigMap and Secret mounts:
    absolute path in the container -> content."""
    found = list(found)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files: dict[str, str] = {}
    for mount in container.spec.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        for kind, key, name_key in (
            ("ConfigMap", "configMap", "name"),
            ("Secret", "secret", "secretName"),
        ):
            if key not in volume:
                continue
            entries = _data(found, kind, volume[key][name_key])
            items = volume[key].get("items")
            chosen = {i["path"]: entries[i["key"]] for i in items} if items else entries
            sub = mount.get("subPath")
            base = mount["mountPath"].rstrip("/")
            for path, text in chosen.items():
                if sub is None:
                    files[f"{base}/{path}"] = text
                elif sub == path:
                    files[base] = text
    return files


# --- the image ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """The Dockerfile's final stage, and what every stage is built from."""

    bases: tuple[str, ...]  # each stage's FROM image, ARGs substituted
    final: list[tuple[str, str]]  # the final stage's (instruction, value), from its FROM on
    env: dict[str, str]
    user: str
    entrypoint: list[str]
    cmd: list[str]
    exposed: set[int]

    @property
    def uid_gid(self) -> tuple[int, int | None]:
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid) if gid else None

    def run_lines(self) -> list[str]:
        return [value for instruction, value in self.final if instruction == "RUN"]


def image(path: Path = DOCKERFILE) -> Image:
    import json

    parser = DockerfileParser(path=str(path), env_replace=True)
    stages: list[list[tuple[str, str]]] = []
    for item in parser.structure:
        if item["instruction"] == "FROM":
            stages.append([])
        if stages and item["instruction"] != "COMMENT":
            stages[-1].append((item["instruction"], item["value"]))
    final = stages[-1]

    def last(instruction: str) -> str:
        return next((v for i, v in reversed(final) if i == instruction), "")

    exposed = {int(p.split("/")[0]) for i, v in final if i == "EXPOSE" for p in v.split()}
    return Image(
        bases=tuple(parser.parent_images),
        final=final,
        env=dict(parser.envs),
        user=last("USER"),
        entrypoint=json.loads(last("ENTRYPOINT") or "[]"),
        cmd=json.loads(last("CMD") or "[]"),
        exposed=exposed,
    )
