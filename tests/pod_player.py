"""Plays a pod from its manifest on this machine, as the kubelet would run it, with no cluster:
each container's ``command``/``args`` becomes a local process with the environment the
manifest gives it (Secret and ConfigMap references resolved from the manifests beside it, the
image's ENV from the Dockerfile), its ConfigMap and Secret mounts written as files, native
sidecars started in order (the next once the previous one's startupProbe passed), every probe
polled as declared (``grpc:`` with a real gRPC health client, ``httpGet`` over HTTP), and the
stop in Kubernetes' order (the app containers, then the sidecars in reverse start order, each
SIGTERM'd and given what is left of terminationGracePeriodSeconds).

What is mapped, the same way everywhere (args, env values, mounted files, probes):

- every port the manifest names (declared, probed, in a ``HOST:PORT``, after a ``--*-port``
  flag, a config's ``port:``) -> a free port on 127.0.0.1; ``0.0.0.0`` (the pod's addresses,
  where the kubelet probes) -> ``127.0.0.1``;
- each container's volume mounts -> folders of its own under the work folder (``/tmp`` too);
  an emptyDir that several containers mount -> one folder they share;
- the image's venv (``/opt/venv``) -> this interpreter's, ``PLANO_MODELS_DIR`` -> the models
  ``make models`` built.

It fails (``PodFailure``) when the manifest names something the processes do not use: a
command or flag the CLI refuses (the process exits), a probe on a port nobody serves (the
startupProbe runs out of failureThreshold), a declared port nobody listens on, a mounted
ConfigMap or Secret file that no process of its container opened (inotify), a process that
would ignore SIGTERM as its container's PID 1, or one that does not exit 0 in the grace
period.

Not played: the user ids and the read-only root filesystem (the processes run as this
user), resource limits, the pod's network namespace (everything is on 127.0.0.1 here).
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from inotify_simple import INotify
from inotify_simple import flags as inotify_flags

from tests import kube
from tests.fakes import free_port

IMAGE_VENV = "/opt/venv"
LOCAL_MODELS = Path(os.environ.get("PLANO_MODELS_DIR") or kube.ROOT / "build" / "models")
_SIGTERM_BIT = 1 << (signal.SIGTERM - 1)
_EXT_PROC_METHOD = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"


class PodFailure(AssertionError):
    """The manifest and what its processes do disagree."""


# --- what the kubelet reads ------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    kind: str  # startupProbe, readinessProbe, livenessProbe
    spec: dict[str, Any]
    port: int  # the manifest's port (mapped when polled)

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold", 3))

    @property
    def success_threshold(self) -> int:
        return int(self.spec.get("successThreshold", 1))

    @property
    def initial_delay(self) -> float:
        return float(self.spec.get("initialDelaySeconds", 0))


def probe_once(probe: Probe, port: int) -> str | None:
    """One probe as the kubelet makes it: None when it passed, else why not."""
    spec = probe.spec
    try:
        if "grpc" in spec:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                request = health_pb2.HealthCheckRequest(service=spec["grpc"].get("service", ""))
                status = stub.Check(request, timeout=probe.timeout).status
            if status == health_pb2.HealthCheckResponse.SERVING:
                return None
            return f"gRPC health says {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
        if "httpGet" in spec:
            get = spec["httpGet"]
            if get.get("scheme", "HTTP") != "HTTP":
                raise PodFailure(f"{probe.kind}: only HTTP probes are played")
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=probe.timeout)
            try:
                connection.request("GET", get.get("path", "/"), headers=headers)
                code = connection.getresponse().status
            finally:
                connection.close()
            return None if 200 <= code < 400 else f"HTTP {code}"
        if "tcpSocket" in spec:
            import socket

            with socket.create_connection(("127.0.0.1", port), timeout=probe.timeout):
                return None
    except grpc.RpcError as exc:
        return f"gRPC {exc.code().name}"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    raise PodFailure(f"{probe.kind}: a handler this player does not play: {sorted(spec)}")


# --- mapping the manifest onto this machine ---------------------------------------------------

_HOST_PORT = re.compile(r"(?:\b\d{1,3}(?:\.\d{1,3}){3}|\blocalhost|\[[0-9a-fA-F:]*\]):(\d{2,5})\b")
_CONFIG_PORT = re.compile(r"^\s*port:\s*(\d{2,5})\s*$", re.M)


def named_ports(pod: dict[str, Any], texts: list[str]) -> set[int]:
    """Every port the pod's manifest and mounted files name."""
    ports: set[int] = set()
    for c in kube.containers(pod):
        ports |= c.declared_ports
        ports |= {kube.probe_port(c, p) for p in kube.probes(c).values()}
        argv = c.argv
        for flag, value in itertools.pairwise(argv):
            if flag.startswith("--") and flag.endswith("-port") and value.isdigit():
                ports.add(int(value))
    for text in texts:
        ports |= {int(p) for p in _HOST_PORT.findall(text)}
        ports |= {int(p) for p in _CONFIG_PORT.findall(text)}
    return ports


@dataclass
class Mapping:
    """How the manifest's ports and paths land here."""

    ports: dict[int, int]
    paths: dict[str, Path]  # a container path prefix -> a local folder (longest first)

    def text(self, value: str) -> str:
        value = value.replace("0.0.0.0", "127.0.0.1")
        if self.ports:
            alternatives = "|".join(str(p) for p in sorted(self.ports, reverse=True))
            value = re.sub(
                rf"(?<!\d)({alternatives})(?!\d)",
                lambda m: str(self.ports[int(m.group(1))]),
                value,
            )
        if self.paths:
            # One pass: a local folder written in must not be taken for a container path.
            alternatives = "|".join(re.escape(p) for p in self.paths)
            value = re.sub(
                rf"(?<![\w./-])({alternatives})(?![\w.-])",
                lambda m: str(self.paths[m.group(1)]),
                value,
            )
        return value

    def path(self, container_path: str) -> Path:
        return Path(self.text(container_path))


# --- the running pod --------------------------------------------------------------------------


@dataclass
class Running:
    container: kube.Container
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]
    watched: dict[Path, set[str]] = field(default_factory=dict)  # mount folder -> its files
    inotify: INotify | None = None
    watches: dict[int, Path] = field(default_factory=dict)  # inotify watch -> folder
    opened: dict[Path, set[str]] = field(default_factory=dict)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def collect_opens(self) -> None:
        if self.inotify is None:
            return
        for event in self.inotify.read(timeout=0):
            self.opened.setdefault(self.watches[event.wd], set()).add(event.name)


class PodPlayer:
    def __init__(
        self,
        workload: kube.Manifest,
        found: list[kube.Manifest],
        workdir: Path,
        rewrite_config: Callable[[str], str] = lambda text: text,
        run_apps: bool = True,
    ) -> None:
        pod = kube.pod_spec(workload.doc)
        if pod is None:
            raise ValueError(f"{workload.where} runs no pod")
        self.workload, self.pod, self.found = workload, pod, found
        self.workdir = workdir
        self.image = kube.image()
        self.rewrite_config = rewrite_config
        self.run_apps = run_apps
        self.grace = float(pod.get("terminationGracePeriodSeconds", 30))
        self.running: list[Running] = []
        self.exit_codes: dict[str, int] = {}
        files = [
            text for c in kube.containers(pod) for text in kube.volume_files(pod, c, found).values()
        ]
        env_texts = [v for c in kube.containers(pod) for v in kube.environment(c, found).values()]
        texts = files + env_texts + [a for c in kube.containers(pod) for a in c.argv]
        ports = named_ports(pod, texts)
        self.ports = {port: free_port() for port in sorted(ports)}

    # -- one container

    def _mapping(self, c: kube.Container) -> Mapping:
        root = self.workdir / c.name
        paths: dict[str, Path] = {}
        for mount in c.spec.get("volumeMounts", []):
            # An emptyDir that several containers mount is one folder for them all (the
            # gateway's admin socket); any other mount, a folder of the container's own.
            if mount["name"] in self._shared_empty_dirs():
                local = self.workdir / "shared" / mount["name"]
            else:
                local = root / mount["mountPath"].strip("/")
            paths[mount["mountPath"].rstrip("/")] = local
        if self._ours(c):
            paths[IMAGE_VENV] = Path(sys.prefix)
            paths[self.image.env["PLANO_MODELS_DIR"]] = LOCAL_MODELS
        ordered = dict(sorted(paths.items(), key=lambda kv: -len(kv[0])))
        return Mapping(self.ports, ordered)

    def _shared_empty_dirs(self) -> set[str]:
        empty = {v["name"] for v in self.pod.get("volumes", []) if "emptyDir" in v}
        mounts = [
            m["name"] for c in kube.containers(self.pod) for m in c.spec.get("volumeMounts", [])
        ]
        return {name for name in empty if mounts.count(name) > 1}

    def _ours(self, c: kube.Container) -> bool:
        return c.argv[:1] == self.image.entrypoint[:1]

    def _environment(self, c: kube.Container, mapping: Mapping) -> dict[str, str]:
        env: dict[str, str] = {}
        if self._ours(c):
            env.update({k: mapping.text(v) for k, v in self.image.env.items()})
        env["PATH"] = f"{Path(sys.prefix) / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        env.update({k: mapping.text(v) for k, v in kube.environment(c, self.found).items()})
        return env

    def _write_mounts(self, c: kube.Container, mapping: Mapping) -> dict[Path, set[str]]:
        """The ConfigMap and Secret files, written where the container's process looks;
        every other mount (emptyDir) an empty folder. Returns the folders of written files."""
        for mount in c.spec.get("volumeMounts", []):
            mapping.path(mount["mountPath"]).mkdir(parents=True, exist_ok=True)
        written: dict[Path, set[str]] = {}
        for path, text in kube.volume_files(self.pod, c, self.found).items():
            local = mapping.path(path)
            local.parent.mkdir(parents=True, exist_ok=True)
            content = mapping.text(text)
            if _is_plano_config(content):
                content = self.rewrite_config(content)
            local.write_text(content)
            written.setdefault(local.parent, set()).add(local.name)
        return written

    def start(self, c: kube.Container) -> Running:
        mapping = self._mapping(c)
        watched = self._write_mounts(c, mapping)
        argv = [mapping.text(kube.expand(a, kube.environment(c, self.found))) for a in c.argv]
        if not argv or shutil.which(argv[0]) is None:
            raise PodFailure(f"container {c.name}: {c.argv[:1]} cannot run here ({argv[:1]})")
        env = self._environment(c, mapping)
        inotify = INotify() if watched else None
        watches: dict[int, Path] = {}
        for folder in watched:
            assert inotify is not None
            watches[inotify.add_watch(folder, inotify_flags.OPEN)] = folder
        log = self.workdir / f"{c.name}.log"
        cwd = mapping.path(self.image_workdir) if self._ours(c) else self.workdir
        cwd.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        running = Running(c, process, log, env, watched, inotify, watches)
        self.running.append(running)
        return running

    @property
    def image_workdir(self) -> str:
        return next((v for i, v in reversed(self.image.final) if i == "WORKDIR"), "/tmp")

    # -- probes

    def wait_probe(self, running: Running, probe: Probe, budget: float | None = None) -> None:
        """Polls ``probe`` as the kubelet does until it passes successThreshold times in a
        row; fails after failureThreshold failures in a row, or if the process exits."""
        c = running.container
        port = self.ports[probe.port]
        time.sleep(probe.initial_delay)
        failures, successes, why = 0, 0, ""
        while True:
            started = time.monotonic()
            if running.process.poll() is not None:
                raise PodFailure(
                    f"container {c.name} exited ({running.process.returncode}) before its "
                    f"{probe.kind} passed:\n{running.tail()}"
                )
            result = probe_once(probe, port)
            if result is None:
                successes += 1
                if successes >= probe.success_threshold:
                    return
            else:
                failures, successes, why = failures + 1, 0, result
                if failures >= probe.failure_threshold:
                    raise PodFailure(
                        f"container {c.name}: {probe.kind} on port {probe.port} failed "
                        f"{failures} times in a row ({why}); the kubelet would restart it:\n"
                        f"{running.tail()}"
                    )
            time.sleep(max(0.0, probe.period - (time.monotonic() - started)))

    def probes(self, c: kube.Container) -> dict[str, Probe]:
        return {kind: Probe(kind, p, kube.probe_port(c, p)) for kind, p in kube.probes(c).items()}

    # -- the pod's life

    def start_pod(self) -> None:
        for c in kube.containers(self.pod):
            if not c.init:
                continue
            running = self.start(c)
            if not c.sidecar:  # a plain init container runs to completion first
                code = running.process.wait(timeout=120)
                if code != 0:
                    raise PodFailure(f"init container {c.name} exited {code}:\n{running.tail()}")
                continue
            startup = self.probes(c).get("startupProbe")
            if startup is not None:
                self.wait_probe(running, startup)
        for c in kube.containers(self.pod):
            if not c.init and self.run_apps:
                self.start(c)
        self.check_running_probes()
        self.check_declared_ports()

    def sidecars(self) -> list[Running]:
        return [r for r in self.running if r.container.sidecar]

    def apps(self) -> list[Running]:
        return [r for r in self.running if not r.container.init]

    def check_running_probes(self) -> None:
        for running in self.sidecars() + self.apps():
            for kind in ("readinessProbe", "livenessProbe"):
                probe = self.probes(running.container).get(kind)
                if probe is not None:
                    self.wait_probe(running, probe)

    def check_declared_ports(self) -> None:
        import socket

        for running in self.running:
            for port in running.container.declared_ports:
                try:
                    with socket.create_connection(("127.0.0.1", self.ports[port]), timeout=2):
                        pass
                except OSError as exc:
                    raise PodFailure(
                        f"container {running.container.name} declares port {port}, where "
                        f"nothing listens ({exc})"
                    ) from exc

    def check_mounts_were_read(self) -> None:
        for running in self.running:
            running.collect_opens()
            for folder, names in running.watched.items():
                unread = names - running.opened.get(folder, set())
                if unread:
                    raise PodFailure(
                        f"container {running.container.name}: mounted {sorted(unread)} in "
                        f"{folder.name}, which no process of it opened"
                    )

    def app_env(self, c: kube.Container) -> dict[str, str]:
        """An app container's environment as its process sees it (ports mapped)."""
        return self._environment(c, self._mapping(c))

    def wait_app(self, name: str, timeout: float) -> int:
        running = next(r for r in self.running if r.container.name == name)
        try:
            return running.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PodFailure(f"app container {name} did not finish:\n{running.tail()}") from None

    def stop_pod(self) -> float:
        """Kubernetes' order: the app containers, then the sidecars in reverse start order;
        all within terminationGracePeriodSeconds. Returns how long the stop took."""
        started = time.monotonic()
        deadline = started + self.grace
        apps = [r for r in self.apps() if r.process.poll() is None]
        for running in apps:
            self._terminate(running)
        for running in apps:
            self._wait_exit(running, deadline)
        for running in reversed(self.sidecars()):
            self._terminate(running)
            self._wait_exit(running, deadline)
        return time.monotonic() - started

    def _terminate(self, running: Running) -> None:
        c = running.container
        hook = c.spec.get("lifecycle", {}).get("preStop")
        if hook is not None:
            self._pre_stop(running, hook)
        if running.process.poll() is not None:
            raise PodFailure(
                f"container {c.name} exited ({running.process.returncode}) before its stop:\n"
                f"{running.tail()}"
            )
        caught = _caught_signals(running.process.pid)
        if not caught & _SIGTERM_BIT:
            raise PodFailure(
                f"container {c.name}: its process does not catch SIGTERM; as its container's "
                "PID 1 it would ignore it and be killed at the end of the grace period"
            )
        running.process.send_signal(signal.SIGTERM)

    def _pre_stop(self, running: Running, hook: dict[str, Any]) -> None:
        if "sleep" in hook:
            time.sleep(float(hook["sleep"]["seconds"]))
        elif "exec" in hook:
            mapping = self._mapping(running.container)
            argv = [mapping.text(a) for a in hook["exec"]["command"]]
            subprocess.run(argv, env=running.env, check=True, timeout=self.grace)
        else:
            raise PodFailure(f"container {running.container.name}: preStop {sorted(hook)}")

    def _wait_exit(self, running: Running, deadline: float) -> None:
        name = running.container.name
        try:
            code = running.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise PodFailure(
                f"container {name} still ran at the end of terminationGracePeriodSeconds "
                f"({self.grace:g} s):\n{running.tail()}"
            ) from None
        self.exit_codes[name] = code
        if code != 0:
            raise PodFailure(f"container {name} exited {code} on SIGTERM:\n{running.tail()}")

    def kill_all(self) -> None:
        """Whatever still runs (a failed test): killed by process group, then reaped."""
        for running in self.running:
            if running.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(running.process.pid, signal.SIGKILL)
                running.process.wait()
            if running.inotify is not None:
                running.inotify.close()

    def tree_environments(self, name: str) -> list[dict[str, str]]:
        """The environment of every process of container ``name`` (the root and its
        descendants), as /proc shows them."""
        running = next(r for r in self.running if r.container.name == name)
        found = []
        for pid in _tree(running.process.pid):
            with contextlib.suppress(OSError):
                raw = Path(f"/proc/{pid}/environ").read_bytes()
                found.append(
                    dict(
                        e.split("=", 1)
                        for e in raw.decode(errors="replace").split("\0")
                        if "=" in e
                    )
                )
        return found


@contextlib.contextmanager
def playing(player: PodPlayer) -> Iterator[PodPlayer]:
    try:
        player.start_pod()
        yield player
    finally:
        player.kill_all()


def _is_plano_config(text: str) -> bool:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(doc, dict) and ("model_providers" in doc or "llm_providers" in doc)


def _caught_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def _tree(pid: int) -> list[int]:
    found = [pid]
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            found += _tree(int(child))
    return found
