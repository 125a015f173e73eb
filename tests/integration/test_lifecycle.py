"""`up` runs and stops both processes together; Envoy fails closed without the server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from plano_extproc.config import load_config
from plano_extproc.envoy_config import EnvoyOptions, envoy_binary, render_yaml
from tests.fakes import FakeProvider, free_port

from .conftest import config_for, start_gateway

pytestmark = pytest.mark.integration


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(c) for c in text.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def wait_gone(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def test_sigterm_stops_both(
    openai_fake: FakeProvider, anthropic_fake: FakeProvider, tmp_path: Path
) -> None:
    gw = start_gateway(config_for(openai_fake, anthropic_fake), tmp_path)
    try:
        kids = children_of(gw.process.pid)
        assert len(kids) == 2
        assert httpx.get(f"{gw.url}/v1/models").status_code == 200
        gw.process.send_signal(signal.SIGTERM)
        assert gw.process.wait(timeout=15) == 0
        assert wait_gone(kids)
    finally:
        gw.stop()


def test_server_death_stops_envoy_and_exits_nonzero(
    openai_fake: FakeProvider, anthropic_fake: FakeProvider, tmp_path: Path
) -> None:
    gw = start_gateway(config_for(openai_fake, anthropic_fake), tmp_path)
    try:
        server_pid, envoy_pid = children_of(gw.process.pid)
        os.kill(server_pid, signal.SIGKILL)
        assert gw.process.wait(timeout=15) == 1
        assert wait_gone([envoy_pid])
        assert "ext_proc server exited" in gw.log.read_text()
    finally:
        gw.stop()


def established_to(port: int) -> int:
    """Open TCP connections to 127.0.0.1:``port`` (the server side of each)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if state == "01" and int(local.split(":")[1], 16) == port:
            count += 1
    return count


def test_several_workers_share_the_requests(
    openai_fake: FakeProvider, anthropic_fake: FakeProvider, tmp_path: Path
) -> None:
    gw = start_gateway(config_for(openai_fake, anthropic_fake), tmp_path, workers=2)
    try:
        kids = children_of(gw.process.pid)
        assert len(kids) == 3  # two servers and Envoy
        endpoints = re.search(r"\(ext_proc (.*?), Envoy admin", gw.log.read_text())
        assert endpoints is not None
        ports = [int(p) for p in re.findall(r":(\d+)", endpoints.group(1))]
        assert len(ports) == 2 and ports[1] == ports[0] + 1
        client = gw.client()
        for i in range(6):
            reply = client.chat.completions.create(
                model="fast-model", messages=[{"role": "user", "content": str(i)}]
            )
            assert reply.choices[0].message.content == "from fake-openai"
        # Round robin per stream: Envoy has opened a connection to each worker.
        assert [established_to(p) for p in ports] == [1, 1]
        assert len(openai_fake.received) == 6
    finally:
        gw.stop()


def test_envoy_fails_closed_when_the_server_is_down(
    openai_fake: FakeProvider, anthropic_fake: FakeProvider, tmp_path: Path
) -> None:
    port = free_port()
    config_path = tmp_path / "plano.yaml"
    config_path.write_text(config_for(openai_fake, anthropic_fake).replace("{port}", str(port)))
    config = load_config(config_path, {"FAKE_OPENAI_KEY": "k", "FAKE_ANTHROPIC_KEY": "k"})
    bootstrap = tmp_path / "envoy.yaml"
    admin = free_port()
    bootstrap.write_text(
        render_yaml(config, EnvoyOptions(extproc=(("127.0.0.1", free_port()),), admin_port=admin))
    )  # nothing listens there
    envoy = subprocess.Popen(
        [
            envoy_binary(),
            "-c",
            str(bootstrap),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            "error",
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        start = time.monotonic()
        response = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "openai/gpt-5", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert time.monotonic() - start < 6
        assert 500 <= response.status_code < 600
        error = response.json()["error"]
        assert error["code"] == "router_unavailable"
        assert not openai_fake.received and not anthropic_fake.received
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plano_extproc", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OPENAI_API_KEY": "sk-x"},
    )


def test_validate_command() -> None:
    result = run_cli("validate", "config/plano.yaml")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "openai/gpt-5.2  [default]" in out
    assert "fast-model -> openai/gpt-5.2" in out
    assert "complex_reasoning -> openai/gpt-5: deep analysis" in out
    assert "$ANTHROPIC_API_KEY (NOT SET)" in out


def test_validate_reports_located_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("llm_providers:\n  - model: gpt-5\n  - model: openai/a\n    default: 1\n")
    result = run_cli("validate", str(bad))
    assert result.returncode == 2
    assert f"{bad}:2: llm_providers[0].model: must be 'provider/model-id'" in result.stderr
    assert f"{bad}:4: llm_providers[1].default: must be true or false" in result.stderr


def test_render_envoy_command(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    result = run_cli("render-envoy", "config/plano.yaml", "-o", str(out), "--admin-port", "19901")
    assert result.returncode == 0, result.stderr
    check = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "19901" in out.read_text()
