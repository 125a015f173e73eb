"""The pure and local parts of the graceful stop: Envoy's command line, reading its stats, the
drain's steps and bounds against a stand-in admin API, child processes, and the command-line
options of ``up``, ``envoy`` and ``render-envoy``."""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest

from plano_extproc import cli
from plano_extproc.config import parse_config
from plano_extproc.envoy_config import EnvoyOptions
from plano_extproc.envoy_runner import (
    ACTIVE_REQUESTS,
    DrainPolicy,
    DrainReport,
    EnvoyProcess,
    admin_request,
    envoy_command,
    envoy_environment,
    private_bootstrap,
    stat_value,
)
from plano_extproc.processes import Child, StopSignals, spawn, terminate, wait_until
from tests.configs import LISTENER, TWO_PROVIDERS

pytestmark = pytest.mark.unit

CONFIG = LISTENER + TWO_PROVIDERS


# -- Envoy's command line and environment


def test_envoy_command_drains_every_connection_at_once() -> None:
    argv = envoy_command("envoy", Path("/t/envoy.yaml"), None, DrainPolicy())
    assert argv[:3] == ["envoy", "-c", "/t/envoy.yaml"]
    assert "--disable-hot-restart" in argv
    assert argv[argv.index("--drain-strategy") + 1] == "immediate"
    # No accept window: the listeners close at once.
    assert argv[argv.index("--drain-time-s") + 1] == "0"
    assert "--concurrency" not in argv


def test_envoy_command_accept_window_and_concurrency() -> None:
    argv = envoy_command("envoy", Path("e.yaml"), 2, DrainPolicy(seconds=30, accept_seconds=5))
    assert argv[argv.index("--drain-time-s") + 1] == "5"
    assert argv[argv.index("--concurrency") + 1] == "2"


def test_envoy_environment_has_no_key_variables() -> None:
    config = parse_config(CONFIG, "t.yaml", {"OPENAI_API_KEY": "a", "ANTHROPIC_API_KEY": "b"})
    env = {"OPENAI_API_KEY": "a", "ANTHROPIC_API_KEY": "b", "PATH": "/bin", "TMPDIR": "/t"}
    assert envoy_environment(config, env) == {"PATH": "/bin", "TMPDIR": "/t"}


def test_private_bootstrap_lives_under_tmpdir_and_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read-only root filesystem leaves $TMPDIR (an emptyDir) as the one writable place.
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read $TMPDIR again
    config = parse_config(CONFIG, "t.yaml", {})
    with private_bootstrap(config, EnvoyOptions(ready_port=9902)) as (options, bootstrap):
        assert bootstrap.parent.parent == tmp_path
        assert bootstrap.parent.stat().st_mode & 0o777 == 0o700
        assert options.admin_socket == str(bootstrap.parent / "envoy-admin.sock")
        text = bootstrap.read_text()
        assert options.admin_socket in text and "port_value: 9902" in text
        Path(options.admin_socket).touch()  # what Envoy would have made
    assert list(tmp_path.iterdir()) == []


def test_private_bootstrap_keeps_a_named_admin_address(tmp_path: Path) -> None:
    config = parse_config(CONFIG, "t.yaml", {})
    named = EnvoyOptions(admin_socket=str(tmp_path / "a.sock"))
    with private_bootstrap(config, named) as (options, _):
        assert options == named
    with private_bootstrap(config, EnvoyOptions(admin_port=9901)) as (options, _):
        assert options.admin_socket is None and options.admin_port == 9901


# -- stats


def test_stat_value_reads_one_line_of_text_stats() -> None:
    stats = (
        "http.egress_traffic.downstream_rq_active: 3\n"
        "http.egress_traffic.downstream_rq_active_total: 9\n"
        "http.ready.downstream_rq_active: 1\n"
    )
    assert stat_value(stats, ACTIVE_REQUESTS) == 3
    assert stat_value(stats, "http.ready.downstream_rq_active") == 1
    assert stat_value("", ACTIVE_REQUESTS) is None
    assert stat_value("xhttp.egress_traffic.downstream_rq_active: 4\n", ACTIVE_REQUESTS) is None


def test_drain_report_says_what_happened() -> None:
    assert DrainReport(3.24, 0).describe() == "Envoy drained in 3.2 s"
    assert "2 request(s) in flight: cut" in DrainReport(25.0, 2).describe()
    assert "did not answer" in DrainReport(0.0, None).describe()


# -- the drain, against a stand-in admin API


class FakeAdmin:
    """Answers the admin paths the drain uses; ``active`` is the in-flight gauge's readings,
    the last one repeated."""

    def __init__(self, active: list[int]) -> None:
        self.active = list(active)
        self.calls: list[tuple[str, str, float]] = []
        admin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                admin.calls.append(("GET", self.path, time.monotonic()))
                if self.path.startswith("/stats?filter="):
                    value = admin.active.pop(0) if len(admin.active) > 1 else admin.active[0]
                    self._answer(f"{ACTIVE_REQUESTS}: {value}\n")
                else:
                    self._answer("LIVE\n")

            def do_POST(self) -> None:
                admin.calls.append(("POST", self.path, time.monotonic()))
                self._answer("OK\n")

            def _answer(self, text: str) -> None:
                data = text.encode()
                self.send_response(200)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def posts(self) -> list[str]:
        return [path for method, path, _ in self.calls if method == "POST"]

    def stats_reads(self) -> list[float]:
        return [at for method, path, at in self.calls if path.startswith("/stats")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Running:
    """A stand-in for Envoy's Popen: still running until told otherwise."""

    returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


@pytest.fixture
def admin() -> Iterator[FakeAdmin]:
    yield (fake := FakeAdmin([0]))
    fake.close()


def envoy_for(admin: FakeAdmin, process: Running | None = None) -> EnvoyProcess:
    # A stand-in for the Popen: draining only polls it.
    child = cast(Child, process or Running())
    return EnvoyProcess(child, EnvoyOptions(admin_port=admin.port))


def test_drain_fails_health_then_drains_listeners_then_waits_for_idle(admin: FakeAdmin) -> None:
    admin.active = [2, 1, 0, 1, 0, 0]
    report = envoy_for(admin).drain(DrainPolicy(seconds=10))
    assert admin.posts() == ["/healthcheck/fail", "/drain_listeners?graceful"]
    assert report.left == 0
    # Two idle readings in a row, not the first 0 followed by 1.
    assert len(admin.stats_reads()) == 6
    assert report.seconds < 2


def test_drain_waits_out_the_accept_window_before_reading(admin: FakeAdmin) -> None:
    start = time.monotonic()
    report = envoy_for(admin).drain(DrainPolicy(seconds=10, accept_seconds=1))
    assert report.left == 0
    assert min(admin.stats_reads()) - start >= 1.0
    assert 1.0 <= report.seconds < 2.5


def test_drain_is_bounded_and_reports_what_is_left(admin: FakeAdmin) -> None:
    admin.active = [3]
    report = envoy_for(admin).drain(DrainPolicy(seconds=0.6))
    assert report.left == 3
    assert 0.6 <= report.seconds < 1.5


def test_a_hurry_ends_the_drain(admin: FakeAdmin) -> None:
    admin.active = [1]
    start = time.monotonic()
    report = envoy_for(admin).drain(
        DrainPolicy(seconds=30), hurry=lambda: time.monotonic() - start > 0.3
    )
    assert report.left == 1 and report.seconds < 1.5


def test_drain_ends_when_envoy_has_exited(admin: FakeAdmin) -> None:
    admin.active = [1]
    gone = Running()
    gone.returncode = 0
    report = envoy_for(admin, gone).drain(DrainPolicy(seconds=30))
    assert report.left is None and report.seconds < 1


def test_drain_without_an_admin_api_returns_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    envoy = EnvoyProcess(Running(), EnvoyOptions(admin_port=port))  # type: ignore[arg-type]
    report = envoy.drain(DrainPolicy(seconds=30))
    assert report.left is None and report.seconds < 1


def test_admin_request_over_the_unix_socket(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def address_string(self) -> str:
            return "unix"

        def do_POST(self) -> None:
            seen.append(("POST", self.path))
            self.send_response(200)
            self.send_header("content-length", "3")
            self.end_headers()
            self.wfile.write(b"OK\n")

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    path = str(tmp_path / "admin.sock")
    server = Server(path, Handler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        options = EnvoyOptions(admin_socket=path)
        assert admin_request(options, "POST", "/healthcheck/fail") == (200, b"OK\n")
        assert seen == [("POST", "/healthcheck/fail")]
    finally:
        server.shutdown()
        server.server_close()


# -- child processes and signals


def test_spawned_children_have_their_own_process_group() -> None:
    # A terminal's Ctrl-C goes to the foreground group: it must reach the parent alone.
    child = spawn([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert os.getpgid(child.pid) == child.pid != os.getpgid(0)
    finally:
        assert terminate([child]) == [-signal.SIGTERM]


def test_terminate_kills_what_ignores_sigterm() -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print(1, flush=True); time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"1\n"
    start = time.monotonic()
    assert terminate([child], timeout=0.5) == [-signal.SIGKILL]
    assert time.monotonic() - start < 3


def test_stop_signals_count_and_end_a_wait() -> None:
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        signals = StopSignals().install()
        assert not signals.requested
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        start = time.monotonic()
        assert not wait_until(lambda: False, [], 10, signals)
        assert time.monotonic() - start < 2
        assert signals.requested and not signals.hurry
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.hurry
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def test_wait_until_stops_when_a_child_exits() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not wait_until(lambda: False, [child], 10)


# -- command-line options


def parse(*argv: str) -> Any:
    return cli._parser().parse_args(list(argv))


def test_envoy_command_options() -> None:
    args = parse(
        "envoy",
        "c.yaml",
        "--extproc-port",
        "10000",
        "--admin-socket",
        "/tmp/envoy-admin.sock",
        "--ready-port",
        "9902",
        "--concurrency",
        "2",
        "--drain-seconds",
        "30",
        "--drain-accept-seconds",
        "5",
    )
    assert args.run is cli._envoy and args.keyless
    options = cli._options(args)
    assert options.extproc == (("127.0.0.1", 10000),)
    assert options.admin_socket == "/tmp/envoy-admin.sock" and options.admin_port is None
    assert (options.ready_address, options.ready_port) == ("0.0.0.0", 9902)
    assert args.concurrency == 2
    assert cli._drain(args) == DrainPolicy(seconds=30.0, accept_seconds=5)


def test_drain_defaults_and_up_takes_the_same_options() -> None:
    args = parse("up", "c.yaml", "--ready-port", "9902", "--ready-address", "::")
    assert cli._drain(args) == DrainPolicy(seconds=25.0, accept_seconds=0)
    assert cli._options(args).ready_address == "::"
    assert not getattr(args, "keyless", False)
    render = parse("render-envoy", "c.yaml", "--ready-port", "9902")
    assert cli._options(render).ready_port == 9902
    assert not hasattr(render, "drain_seconds")


@pytest.mark.parametrize(
    "argv",
    [
        ("envoy", "c.yaml", "--drain-seconds", "-1"),
        ("envoy", "c.yaml", "--drain-accept-seconds", "-1"),
        ("envoy", "c.yaml", "--drain-accept-seconds", "1.5"),
        ("up", "c.yaml", "--drain-seconds", "soon"),
    ],
)
def test_bad_drain_options_are_refused(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)


def test_an_accept_window_longer_than_the_drain_is_refused() -> None:
    args = parse("envoy", "c.yaml", "--drain-seconds", "3", "--drain-accept-seconds", "5")
    with pytest.raises(SystemExit, match="must not exceed"):
        cli._drain(args)


def test_envoy_command_does_not_warn_about_unset_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Envoy's container has no provider keys, by design: their absence is not news there.
    config = tmp_path / "plano.yaml"
    config.write_text(CONFIG)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    ran: list[str] = []

    def command(name: str) -> Callable[[object, object], int]:
        def run(config: object, args: object) -> int:
            ran.append(name)
            return 0

        return run

    monkeypatch.setattr(cli, "_envoy", command("envoy"))
    monkeypatch.setattr(cli, "_up", command("up"))
    assert cli.main(["envoy", str(config)]) == 0
    assert "is not set" not in capsys.readouterr().err
    assert cli.main(["up", str(config)]) == 0
    assert "OPENAI_API_KEY is not set" in capsys.readouterr().err
    assert ran == ["envoy", "up"]
