"""The graceful stop through real Envoy: a gateway under a continuous load (several OpenAI SDK
clients, plain and streamed, plus a few streams of several seconds) is sent SIGTERM; every
request sent before the stop completes, what comes after is refused (never a 5xx, never a cut
answer), the gateway exits 0 once the long streams are done, and its processes are gone.
``up``, and ``plano-extproc envoy`` beside a ``serve``; the readiness listener; the drain's
accept window, its bound and a second signal.

Run with ``-s`` to see the measured drain times."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.fake_providers import FakeOpenAI, Recorded, Reply
from tests.fakes import free_port

from .conftest import KEYS, start_gateway, started_bootstrap
from .test_lifecycle import alive, children_of, wait_gone

pytestmark = pytest.mark.integration

LONG_WORDS = 24  # a long stream's words, one event each
PAUSE_S = 0.25  # between a stream's events: a long stream lasts about 6.5 s
LONG_TEXT = " ".join(f"w{i}" for i in range(LONG_WORDS))
SHORT_TEXT = "short reply"


def config_text(fake: FakeOpenAI, port: int | str = "{port}") -> str:
    return f"""
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: {port}
    timeout: 10s
llm_providers:
  - model: openai/gpt-5.2
    access_key: $FAKE_OPENAI_KEY
    base_url: {fake.base_url()}
    default: true
"""


def answer(request: Recorded) -> Reply:
    """A long stream for a request whose text starts with "long", else a short answer (the
    load's requests are streamed or not, as they ask)."""
    text = FakeOpenAI._last_user_text(request.json)
    if text.startswith("long"):
        return Reply(text=LONG_TEXT, pause_s=PAUSE_S)
    return Reply(text=SHORT_TEXT, pause_s=0.0)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI("fake-openai", api_key=KEYS["FAKE_OPENAI_KEY"]) as provider:
        provider.responder = answer
        yield provider


# -- the load


@dataclass
class Outcome:
    name: str  # unique: the request's text
    streamed: bool
    sent: float
    done: float = 0.0
    ok: bool = False
    error: str = ""  # the exception, when not ok
    status: int | None = None  # an HTTP status the client got instead of a success


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=20)


def _request(client: openai.OpenAI, name: str, streamed: bool, expected: str) -> Outcome:
    outcome = Outcome(name, streamed, time.monotonic())
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": name}]
    try:
        if streamed:
            pieces, finish = [], None
            for chunk in client.chat.completions.create(
                model="openai/gpt-5.2",
                messages=messages,
                stream=True,
            ):
                if chunk.choices:
                    pieces.append(chunk.choices[0].delta.content or "")
                    finish = chunk.choices[0].finish_reason or finish
            text = "".join(pieces)
            outcome.ok = text == expected and finish == "stop"
            outcome.error = "" if outcome.ok else f"incomplete: {text!r} {finish}"
        else:
            reply = client.chat.completions.create(
                model="openai/gpt-5.2",
                messages=messages,
            )
            outcome.ok = reply.choices[0].message.content == expected
            outcome.error = "" if outcome.ok else f"wrong answer: {reply}"
    except openai.APIStatusError as exc:
        outcome.status, outcome.error = exc.status_code, f"{type(exc).__name__}: {exc}"
    except openai.APIError as exc:  # connection refused or reset, or a broken stream
        outcome.error = f"{type(exc).__name__}: {exc!r} {exc.__cause__!r}"
    outcome.done = time.monotonic()
    return outcome


@dataclass
class Load:
    """``clients`` threads sending short requests (every other one streamed) back to back
    until stopped; long streams started on demand."""

    url: str
    clients: int = 4
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for n in range(self.clients):
            self._thread(self._loop, n)

    def long_streams(self, count: int) -> None:
        for n in range(count):
            self._thread(self._long, n)

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return sorted(self.outcomes, key=lambda o: o.sent)

    def _thread(self, target: object, n: int) -> None:
        thread = threading.Thread(target=target, args=(n,), daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _loop(self, n: int) -> None:
        client = _client(self.url)
        i = 0
        while not self._stop.is_set():
            outcome = _request(client, f"short {n}-{i}", i % 2 == 1, SHORT_TEXT)
            self._record(outcome)
            i += 1
            time.sleep(0.01 if outcome.ok else 0.05)

    def _long(self, n: int) -> None:
        self._record(_request(_client(self.url), f"long {n}", True, LONG_TEXT))


@dataclass
class Stopped:
    outcomes: list[Outcome]
    stop_at: float
    exited_at: float
    code: int

    @property
    def before(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.sent < self.stop_at]

    @property
    def after(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.sent >= self.stop_at]


def stop_under_load(
    url: str, process: subprocess.Popen[bytes], long_streams: int = 4, bound: float = 20
) -> Stopped:
    """Load the gateway, start the long streams, SIGTERM it a second later, and keep the
    clients going until a second after it exited."""
    load = Load(url)
    load.start()
    time.sleep(0.5)
    load.long_streams(long_streams)
    time.sleep(1.0)
    stop_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=bound)
    finally:
        exited_at = time.monotonic()
        time.sleep(1.0)
        outcomes = load.stop()
    return Stopped(outcomes, stop_at, exited_at, code)


def assert_graceful(stopped: Stopped, fake: FakeOpenAI, long_streams: int) -> None:
    failed = [o for o in stopped.before if not o.ok]
    assert not failed, f"requests sent before the stop failed: {failed[:5]}"
    longs = [o for o in stopped.outcomes if o.name.startswith("long")]
    assert len(longs) == long_streams and all(o.ok for o in longs), longs
    assert len(stopped.before) > 20  # a real load, not a handful
    # After the stop: served whole (on a connection Envoy still had), or refused / reset.
    # Never an HTTP status (a 5xx of a half-stopped gateway) nor a cut answer.
    unclean = [o for o in stopped.after if not o.ok and (o.status is not None or not o.error)]
    assert not unclean, unclean[:5]
    assert not [o for o in stopped.after if "incomplete" in o.error], stopped.after
    refused = [o for o in stopped.after if not o.ok]
    assert refused, "no request after the stop was refused"
    assert all(not o.ok for o in stopped.after if o.sent > stopped.exited_at)
    # Every request the provider answered reached its client whole, except one that came in
    # after the stop on an idle keep-alive connection at the very moment Envoy went away.
    by_name = {o.name: o for o in stopped.outcomes}
    for received in fake.received:
        outcome = by_name[FakeOpenAI._last_user_text(received.json)]
        assert outcome.ok or outcome.sent >= stopped.stop_at, outcome
    # The gateway waited for the long streams, and no longer than it took them to end.
    last_long = max(o.done for o in longs)
    assert stopped.exited_at >= last_long - 0.3
    assert stopped.exited_at - last_long < 5.0


def report(what: str, stopped: Stopped, log: str, long_streams: int) -> None:
    longs = [o for o in stopped.outcomes if o.name.startswith("long")]
    drained = re.search(r"Envoy drained in ([\d.]+) s", log)
    length = max(o.done - o.sent for o in longs)
    print(
        f"\n{what}: {long_streams} streams of {length:.1f} s, SIGTERM "
        f"{stopped.stop_at - min(o.sent for o in longs):.1f} s in: exited "
        f"{stopped.exited_at - stopped.stop_at:.2f} s after SIGTERM "
        f"({stopped.exited_at - max(o.done for o in longs):.2f} s after the last stream ended; "
        f"Envoy's drain {drained.group(1) if drained else '?'} s); "
        f"{len(stopped.before)} requests before the stop, all whole; after it "
        f"{sum(o.ok for o in stopped.after)} served whole, "
        f"{sum(not o.ok for o in stopped.after)} refused"
    )


# -- up


def test_up_stops_gracefully_under_load(fake: FakeOpenAI, tmp_path: Path) -> None:
    gw = start_gateway(config_text(fake), tmp_path)
    try:
        kids = children_of(gw.process.pid)
        assert len(kids) == 2  # the server and Envoy
        stopped = stop_under_load(gw.url, gw.process, long_streams=4)
        log = gw.log.read_text()
        assert stopped.code == 0, log
        assert wait_gone(kids, timeout=5)
        assert_graceful(stopped, fake, long_streams=4)
        assert "Envoy drained in" in log
        report("up", stopped, log, 4)
    finally:
        gw.stop()


# -- plano-extproc envoy, beside a serve of our own


@dataclass
class EnvoyCommand:
    process: subprocess.Popen[bytes]
    log: Path
    port: int
    ready_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def envoy_pid(self) -> int:
        (pid,) = children_of(self.process.pid)
        return pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.send_signal(signal.SIGINT)  # the second: no drain
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Extproc:
    template: str  # the config, "{port}" for the listener's port
    port: int


@pytest.fixture(scope="module")
def module_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI("fake-openai", api_key=KEYS["FAKE_OPENAI_KEY"]) as provider:
        provider.responder = answer
        yield provider


@pytest.fixture(scope="module")
def extproc(module_fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Extproc]:
    """One ``serve`` for the module; each test starts its own ``envoy`` in front of it."""
    config = tmp_path_factory.mktemp("extproc") / "plano.yaml"
    # The server never opens the listener's port: each envoy's own copy names its own.
    config.write_text(config_text(module_fake, port=12000))
    port = free_port()
    log = config.with_suffix(".log")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plano_extproc",
            "serve",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        env={**os.environ, **KEYS},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while b"ext_proc server serving" not in log.read_bytes():
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield Extproc(config_text(module_fake), port)
    finally:
        server.send_signal(signal.SIGTERM)
        # Every envoy has gone: the server has no client left to wait for.
        assert server.wait(timeout=15) == 0, log.read_text()


def start_envoy(extproc: Extproc, tmp_path: Path, *args: str) -> EnvoyCommand:
    port, ready_port = free_port(), free_port()
    config = tmp_path / "plano.yaml"
    config.write_text(extproc.template.replace("{port}", str(port)))
    log = tmp_path / "envoy.log"
    # As in its own container: no provider key in its environment.
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    env["TMPDIR"] = str(tmp_path)  # the private folder goes where $TMPDIR says
    argv = [sys.executable, "-m", "plano_extproc", "envoy", str(config)]
    argv += ["--extproc-port", str(extproc.port), "--concurrency", "1"]
    argv += ["--ready-port", str(ready_port), "--ready-address", "127.0.0.1", *args]
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    command = EnvoyCommand(process, log, port, ready_port)
    bootstrap = started_bootstrap(process, log, "envoy", b"plano Envoy listening", 30)
    if bootstrap is not None:
        assert bootstrap.parent.parent == tmp_path
        return command
    command.stop()
    raise RuntimeError(f"envoy did not start:\n{log.read_text()}")


def test_envoy_command_stops_gracefully_under_load(
    extproc: Extproc, module_fake: FakeOpenAI, tmp_path: Path
) -> None:
    module_fake.received.clear()
    envoy = start_envoy(extproc, tmp_path)
    try:
        envoy_pid = envoy.envoy_pid
        log_text = envoy.log.read_text()
        assert "is not set" not in log_text  # no key warnings: Envoy never holds one
        stopped = stop_under_load(envoy.url, envoy.process, long_streams=3)
        log = envoy.log.read_text()
        assert stopped.code == 0, log
        assert wait_gone([envoy_pid], timeout=5)
        assert_graceful(stopped, module_fake, long_streams=3)
        # The private folder (bootstrap, admin socket) is gone with it.
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("plano-extproc-")]
        report("envoy", stopped, log, 3)
    finally:
        envoy.stop()


# -- the readiness listener


REFUSED_PATHS = [
    ("GET", "/quitquitquit"),
    ("POST", "/quitquitquit"),
    ("GET", "/config_dump"),
    ("GET", "/stats"),
    ("GET", "/stats?filter=.*"),
    ("POST", "/logging?level=debug"),
    ("POST", "/healthcheck/fail"),
    ("POST", "/drain_listeners"),
    ("GET", "/clusters"),
    ("GET", "/server_info"),
    ("POST", "/ready"),
    ("HEAD", "/ready"),
    ("GET", "/ready/"),
    ("GET", "/READY"),
    ("GET", "//ready"),
    ("GET", "/ready/../stats"),
    ("GET", "/%72eady"),
    ("GET", "/"),
]


def raw_status(port: int, method: str, path: str) -> int:
    """The status for ``path`` sent exactly as written (no client-side normalization)."""
    with httpx.Client(timeout=5) as client:
        request = client.build_request(method, f"http://127.0.0.1:{port}/")
        request.url = request.url.copy_with(raw_path=path.encode())
        return client.send(request).status_code


def test_ready_listener_answers_ready_and_nothing_else(extproc: Extproc, tmp_path: Path) -> None:
    envoy = start_envoy(extproc, tmp_path)
    try:
        ready = httpx.get(f"http://127.0.0.1:{envoy.ready_port}/ready", timeout=5)
        assert (ready.status_code, ready.text) == (200, "LIVE\n")
        assert httpx.get(f"http://127.0.0.1:{envoy.ready_port}/ready?x=1").status_code == 200
        statuses = {
            f"{method} {path}": raw_status(envoy.ready_port, method, path)
            for method, path in REFUSED_PATHS
        }
        assert statuses == {name: 404 for name in statuses}
        # None of them reached the admin API: Envoy still runs, ready, at its usual level.
        time.sleep(0.3)
        assert alive(envoy.envoy_pid) and envoy.process.poll() is None
        assert httpx.get(f"http://127.0.0.1:{envoy.ready_port}/ready").status_code == 200
        assert httpx.get(f"{envoy.url}/v1/models").status_code == 200
    finally:
        envoy.stop()


# -- the accept window, the bound, a second signal


def long_stream(url: str, into: list[Outcome]) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: into.append(_request(_client(url), "long x", True, LONG_TEXT)),
        daemon=True,
    )
    thread.start()
    return thread


def stream_then_signal(
    envoy: EnvoyCommand, sig: signal.Signals
) -> tuple[list[Outcome], threading.Thread, float]:
    """A long stream through ``envoy``, and ``sig`` a second into it: (the stream's outcome
    list, its thread, when the signal was sent)."""
    outcomes: list[Outcome] = []
    thread = long_stream(envoy.url, outcomes)
    time.sleep(1.0)
    sent_at = time.monotonic()
    envoy.process.send_signal(sig)
    return outcomes, thread, sent_at


def test_accept_window_serves_new_connections_with_connection_close(
    extproc: Extproc, tmp_path: Path
) -> None:
    envoy = start_envoy(extproc, tmp_path, "--drain-accept-seconds", "2")
    try:
        outcomes, thread, stop_at = stream_then_signal(envoy, signal.SIGTERM)
        time.sleep(0.5)
        # Within the window: a new connection is served, told to close; /ready says DRAINING.
        models = httpx.get(f"{envoy.url}/v1/models", timeout=5)
        assert models.status_code == 200 and models.headers["connection"] == "close"
        ready = httpx.get(f"http://127.0.0.1:{envoy.ready_port}/ready", timeout=5)
        assert (ready.status_code, ready.text) == (503, "DRAINING\n")
        while time.monotonic() < stop_at + 2.5:
            time.sleep(0.05)
        # After it: refused, the readiness listener too; the stream goes on.
        for url in (f"{envoy.url}/v1/models", f"http://127.0.0.1:{envoy.ready_port}/ready"):
            with pytest.raises(httpx.ConnectError):
                httpx.get(url, timeout=5)
        assert envoy.process.wait(timeout=15) == 0
        thread.join(timeout=10)
        assert [o.ok for o in outcomes] == [True], outcomes
    finally:
        envoy.stop()


def test_drain_is_bounded_by_drain_seconds(extproc: Extproc, tmp_path: Path) -> None:
    envoy = start_envoy(extproc, tmp_path, "--drain-seconds", "1.5")
    try:
        outcomes, thread, stop_at = stream_then_signal(envoy, signal.SIGTERM)
        assert envoy.process.wait(timeout=10) == 0
        assert 1.5 <= time.monotonic() - stop_at < 5.0
        thread.join(timeout=10)
        # The stream outlived the bound: cut, and the client knows it.
        assert len(outcomes) == 1 and not outcomes[0].ok and outcomes[0].status is None
        assert "1 request(s) in flight: cut" in envoy.log.read_text()
    finally:
        envoy.stop()


def test_a_second_signal_ends_the_drain(extproc: Extproc, tmp_path: Path) -> None:
    envoy = start_envoy(extproc, tmp_path)
    try:
        outcomes, thread, _ = stream_then_signal(envoy, signal.SIGINT)
        time.sleep(0.5)
        assert envoy.process.poll() is None  # draining: the stream has seconds to go
        second = time.monotonic()
        envoy.process.send_signal(signal.SIGINT)
        assert envoy.process.wait(timeout=10) == 0
        assert time.monotonic() - second < 1.5
        thread.join(timeout=10)
        assert len(outcomes) == 1 and not outcomes[0].ok
    finally:
        envoy.stop()


def test_envoy_command_exits_1_when_envoy_dies(extproc: Extproc, tmp_path: Path) -> None:
    envoy = start_envoy(extproc, tmp_path)
    try:
        os.kill(envoy.envoy_pid, signal.SIGKILL)
        assert envoy.process.wait(timeout=10) == 1
        assert "Envoy exited with -9" in envoy.log.read_text()
    finally:
        envoy.stop()


def _can_unshare_pids() -> bool:
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "true"], timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def zombies_of(pid: int) -> list[int]:
    return [c for c in children_of(pid) if not alive(c)]


@pytest.mark.skipif(not _can_unshare_pids(), reason="needs unshare --pid (CAP_SYS_ADMIN)")
def test_envoy_command_as_a_containers_pid_1(extproc: Extproc, tmp_path: Path) -> None:
    """In its own PID namespace, as a container's main process is: SIGTERM (which PID 1
    ignores without a handler) stops it gracefully, and an orphan it inherits is reaped."""
    port = free_port()
    config = tmp_path / "plano.yaml"
    config.write_text(extproc.template.replace("{port}", str(port)))
    log = tmp_path / "envoy.log"
    # sh leaves a child behind and becomes the command: PID 1 inherits an orphan.
    argv = ["unshare", "--pid", "--fork", "--kill-child", "sh", "-c", 'sleep 0.3 & exec "$@"']
    argv += ["sh", sys.executable, "-m", "plano_extproc", "envoy", str(config)]
    argv += ["--extproc-port", str(extproc.port), "--concurrency", "1"]
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    unshare = subprocess.Popen(
        argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while b"plano Envoy listening" not in log.read_bytes():
            assert unshare.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        (pid_1,) = children_of(unshare.pid)
        time.sleep(0.5)  # the orphan has exited by now
        assert len(children_of(pid_1)) == 1  # Envoy; the orphan was reaped
        assert not zombies_of(pid_1)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 200
        os.kill(pid_1, signal.SIGTERM)
        assert unshare.wait(timeout=15) == 0, log.read_text()
        assert "Envoy drained in" in log.read_text()
    finally:
        if unshare.poll() is None:
            os.killpg(unshare.pid, signal.SIGKILL)
            unshare.wait()
