"""`plano-extproc route`: the server's decision for JSON lines, with the router's scores."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from typing import Any

import pytest

from plano_extproc.cli import main
from plano_extproc.config import parse_config
from plano_extproc.explain import _fallback_reason, route_lines
from plano_extproc.router import OTHER, RouteChoice
from tests.configs import TWO_PROVIDERS

pytestmark = pytest.mark.unit

CONFIG = (
    TWO_PROVIDERS
    + """    routing_preferences:
      - name: creative_writing
        description: writing stories, poems and song lyrics
model_aliases:
  fast-model:
    target: gpt-5.2
"""
)


def run(lines: list[str], *, explain: bool = False) -> tuple[int, list[dict[str, Any]]]:
    config = parse_config(CONFIG, "c.yaml", {"OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a"})
    out = io.StringIO()
    status = asyncio.run(route_lines(config, io.StringIO("\n".join(lines)), out, explain=explain))
    return status, [json.loads(line) for line in out.getvalue().splitlines()]


def test_one_answer_per_line_with_scores_and_latency() -> None:
    poem = {"messages": [{"role": "user", "content": "write a poem about the sea at night"}]}
    alias = {**poem, "model": "fast-model"}
    thanks = {"messages": [{"role": "user", "content": "thanks, that's all!"}], "model": "auto"}
    status, answers = run([json.dumps(poem), "", json.dumps(alias), json.dumps(thanks)])
    assert status == 0 and len(answers) == 3
    routed, aliased, other = answers
    assert routed["route"] == "creative_writing" and routed["routing"] == "preference"
    assert (routed["provider"], routed["model"]) == ("anthropic", "anthropic/claude-sonnet-4-5")
    assert set(routed["scores"]) == {"creative_writing", "other"}
    assert float(routed["latency_ms"]) > 0
    assert (aliased["route"], aliased["routing"], aliased["scores"]) == (None, "alias", {})
    assert (other["route"], other["routing"]) == ("other", "default")
    assert other["fallback"] == "no route fits (other)"
    assert "explain" not in routed


def test_explain_shows_what_the_router_read() -> None:
    line = {
        "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": "a haiku"},
        ]
    }
    _, (answer,) = run([json.dumps(line)], explain=True)
    explain = answer["explain"]
    assert isinstance(explain, dict) and explain["views"] == ["a haiku"]  # never the system prompt
    assert 0 < float(answer["confidence"]) <= 1


def test_bad_lines_get_the_gateways_error_and_exit_1() -> None:
    status, answers = run(["not json", json.dumps({"messages": [], "model": "auto"})])
    assert status == 1
    assert [(a["status"], a["error"]["code"]) for a in answers] == [
        (400, "invalid_json"),
        (400, "invalid_type"),
    ]


def test_the_command_line(
    tmp_path: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    config = Path(str(tmp_path)) / "plano.yaml"
    config.write_text(CONFIG)
    # No keys in the environment: decisions need none, so the route is still shown.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    poem = {"messages": [{"role": "user", "content": "write a poem about the sea at night"}]}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(poem) + "\n"))
    assert main(["route", str(config)]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["route"] == "creative_writing"


def test_a_fallback_says_why_the_router_placed_nothing() -> None:
    config = parse_config(CONFIG, "c.yaml", {"OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a"})
    config = dataclasses.replace(
        config, router=dataclasses.replace(config.router, min_confidence=0.5)
    )
    assert _fallback_reason(None, config) == "router timed out or failed"
    assert _fallback_reason(RouteChoice(OTHER, 0.9, {}), config) == "no route fits (other)"
    assert _fallback_reason(RouteChoice("creative_writing", 0.3, {}), config) == (
        "confidence 0.30 for creative_writing is below min_confidence 0.5"
    )
    # A router model may name a route this config does not have: nothing is placed.
    assert _fallback_reason(RouteChoice("poetry", 0.9, {}), config) == (
        "the router chose poetry, which is not a route of this config"
    )
