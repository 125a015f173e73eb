"""Real gateways for the integration tests: `plano-extproc up` (Envoy + the ext_proc server)
in front of fake providers, every port picked free on 127.0.0.1, every process stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from plano_extproc.envoy_config import validate_with_envoy
from tests.fakes import FakeProvider, free_port, free_ports

KEYS = {"FAKE_OPENAI_KEY": "sk-fake-openai", "FAKE_ANTHROPIC_KEY": "sk-fake-anthropic"}


@dataclass
class Gateway:
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    config: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key="client-key-never-forwarded",
            max_retries=0,
            timeout=10,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_gateway(
    config_text: str,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    workers: int = 1,
    extra_args: tuple[str, ...] = (),
) -> Gateway:
    port, extproc_port = free_port(), free_ports(workers)
    config = tmp_path / "plano.yaml"
    config.write_text(config_text.replace("{port}", str(port)))
    log = tmp_path / "gateway.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plano_extproc",
            "up",
            str(config),
            "--concurrency",
            "1",
            "--extproc-port",
            str(extproc_port),
            "--workers",
            str(workers),
            *extra_args,
        ],
        env={**os.environ, **(KEYS if env is None else env)},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    gateway = Gateway(port, process, log, config)
    if started_bootstrap(process, log, "gateway", b"plano gateway listening", 60) is not None:
        return gateway
    gateway.stop()
    raise RuntimeError(f"gateway did not start:\n{log.read_text()}")


def started_bootstrap(
    process: subprocess.Popen[bytes], log: Path, what: str, banner: bytes, seconds: float
) -> Path | None:
    """The bootstrap ``process`` (``what``: the gateway, or the envoy command) names in its
    ``banner`` line once it listens, after it passed `envoy --mode validate`, as every
    bootstrap a test runs does; None if it does not listen within ``seconds``. Raises if it
    exits first."""
    listening = re.compile(re.escape(banner) + rb" on .* bootstrap (\S+)\)")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited {process.returncode}:\n{log.read_text()}")
        started = listening.search(log.read_bytes())
        if started:
            bootstrap = Path(started.group(1).decode())
            validate_with_envoy(bootstrap.read_text())
            return bootstrap
        time.sleep(0.1)
    return None


def listener_yaml(max_body_size: str | None = None) -> str:
    """The config's listener section as the tests write it: on the port start_gateway picks
    (its ``{port}`` placeholder), with a 10 s timeout, and a body limit when one is given."""
    text = """
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: {port}
    timeout: 10s
"""
    if max_body_size is not None:
        text += f"    max_body_size: {max_body_size}\n"
    return text


def config_for(openai_fake: FakeProvider, anthropic_fake: FakeProvider, extra: str = "") -> str:
    return (
        listener_yaml("2MiB")
        + f"""llm_providers:
  - model: openai/gpt-5.2
    access_key: $FAKE_OPENAI_KEY
    base_url: {openai_fake.base_url()}
    default: true
  - model: openai/gpt-5
    access_key: $FAKE_OPENAI_KEY
    base_url: {openai_fake.base_url()}
    routing_preferences:
      - name: complex_reasoning
        description: deep analysis and complex problem solving
  - model: anthropic/claude-sonnet-4-5
    access_key: ${{FAKE_ANTHROPIC_KEY}}
    base_url: {anthropic_fake.base_url("/anthropic/v1")}
    provider_interface: openai  # this fake speaks OpenAI's API, as Anthropic's compatible one
    routing_preferences:
      - name: creative_tasks
        description: creative writing and content generation
{extra}
model_aliases:
  fast-model:
    target: gpt-5.2
  reasoning-model:
    target: gpt-5
  creative-model:
    target: claude-sonnet-4-5
"""
    )


@pytest.fixture(scope="session")
def openai_fake() -> Iterator[FakeProvider]:
    fake = FakeProvider("fake-openai", stream_pause_s=1.0).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def anthropic_fake() -> Iterator[FakeProvider]:
    fake = FakeProvider("fake-anthropic").start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def gateway(
    openai_fake: FakeProvider,
    anthropic_fake: FakeProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    down = f"  - model: openai/down-model\n    base_url: http://127.0.0.1:{free_port()}/v1\n"
    gw = start_gateway(
        config_for(openai_fake, anthropic_fake, down), tmp_path_factory.mktemp("gateway")
    )
    yield gw
    gw.stop()


@pytest.fixture(autouse=True)
def _clear_recordings(openai_fake: FakeProvider, anthropic_fake: FakeProvider) -> None:
    openai_fake.received.clear()
    anthropic_fake.received.clear()
