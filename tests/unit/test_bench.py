"""The load benchmark's own parts: its Envoy configs pass Envoy's validation, its bodies
have the sizes it reports, and each benchmark rewrites only its section of RESULTS.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from plano_extproc.envoy_config import validate_with_envoy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import load_bench  # noqa: E402
import loadgen  # noqa: E402
import upstreams  # noqa: E402
from results import write_section  # noqa: E402

pytestmark = pytest.mark.unit


def test_fake_provider_and_floor_configs_pass_envoy_validation() -> None:
    validate_with_envoy(upstreams.fake_provider_bootstrap(18001, 18002, 1 << 24))
    validate_with_envoy(upstreams.floor_bootstrap(18003, [(18004, 18001), (18005, 18006)], 1 << 24))


@pytest.mark.parametrize("size", [1000, 100_000])
def test_chat_bodies_have_the_size_they_are_named_for(size: int) -> None:
    body = load_bench.chat_body("openai/gpt-5.2", size)
    assert 0.9 * size <= len(body) <= 1.1 * size
    parsed = json.loads(body)
    assert parsed["model"] == "openai/gpt-5.2"
    assert "model" not in json.loads(load_bench.chat_body(None, size))
    assert json.loads(load_bench.chat_body("m", size, stream=True))["stream"] is True


def test_each_benchmark_rewrites_only_its_section(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nWritten by hand.\n")
    write_section(results, "load", "## Load\n\nfirst")
    write_section(results, "router", "## Router\n\nfirst")
    write_section(results, "load", "## Load\n\nsecond")
    text = results.read_text()
    assert text.startswith("# Results\n\nWritten by hand.\n")
    assert "second" in text and text.count("## Load") == 1
    assert "## Router\n\nfirst" in text
    assert text.index("## Load") < text.index("## Router")


def test_percentiles() -> None:
    assert loadgen._pct([1.0], 50) == 1.0
    assert loadgen._pct([float(i) for i in range(1, 101)], 50) == pytest.approx(50.5)
    assert loadgen._pct([float(i) for i in range(1, 101)], 99) == pytest.approx(99.01)
