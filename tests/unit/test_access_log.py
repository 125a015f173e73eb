"""The access log's config (envoy_config/access_log.py) and what the server adds to the decision
for it; tests/integration/test_access_log.py runs it through real Envoy."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from plano_extproc import cli
from plano_extproc._proto import ext_proc_pb2 as pb
from plano_extproc.apis import ANTHROPIC_MESSAGES, COUNT_TOKENS, OPENAI_CHAT, ClientApi
from plano_extproc.config import parse_config
from plano_extproc.decide import Pending
from plano_extproc.envoy_config import EnvoyOptions, render_bootstrap, validate_with_envoy
from plano_extproc.envoy_config.access_log import FIELDS
from plano_extproc.envoy_config.options import DEFAULT_ACCESS_LOG, DEFAULTS
from plano_extproc.extproc.processor import Processor
from plano_extproc.router.base import RouteChoice
from plano_extproc.wire import ACCESS_LOG_METADATA, AUTH_KEY, METADATA_NAMESPACE
from tests.configs import LISTENER, TWO_PROVIDERS

pytestmark = pytest.mark.unit

CONFIG = (
    LISTENER
    + TWO_PROVIDERS
    + """    routing_preferences:
      - name: creative_tasks
        description: creative writing
  - model: openai/gpt-p
    access_key: $OPENAI_API_KEY
    fallbacks: [anthropic/claude-sonnet-4-5]
"""
)
ENV = {"OPENAI_API_KEY": "sk-unit-openai", "ANTHROPIC_API_KEY": "sk-unit-anthropic"}


def config() -> Any:
    return parse_config(CONFIG, "t.yaml", ENV)


def loggers(options: EnvoyOptions = DEFAULTS) -> list[dict[str, Any]]:
    boot: Any = render_bootstrap(config(), options)
    (gateway,) = [x for x in boot["static_resources"]["listeners"] if x["name"] == "egress_traffic"]
    manager = gateway["filter_chains"][0]["filters"][0]["typed_config"]
    return list(manager.get("access_log", []))


# --- the config ------------------------------------------------------------------------------


def test_every_metadata_field_names_one_key_and_never_the_credential() -> None:
    """The `plano` namespace holds the provider's key: a field that named the namespace whole
    (or `auth`) would write it into every line."""
    operators = re.compile(r"%DYNAMIC_METADATA\(([^)]*)\)%")
    named = []
    for name, operator in FIELDS.items():
        for reference in operators.findall(operator):
            namespace, _, key = reference.partition(":")
            assert namespace == METADATA_NAMESPACE and key, (name, operator)
            assert ":" not in key and key != AUTH_KEY, (name, operator)
            named.append(key)
        # No other operator that could dump metadata or filter state whole.
        assert not re.search(r"%(METADATA|FILTER_STATE|CEL|DYNAMIC_METADATA)\(", operator) or (
            operators.fullmatch(operator)
        ), (name, operator)
    assert sorted(named) == sorted(ACCESS_LOG_METADATA.values())
    assert AUTH_KEY not in ACCESS_LOG_METADATA.values()


def test_the_default_is_one_json_line_per_request_on_envoys_stdout() -> None:
    (logger,) = loggers()
    assert DEFAULT_ACCESS_LOG == "/dev/stdout"
    # Envoy's own file descriptor, not /dev/stdout opened anew (README: why).
    assert logger["name"] == "envoy.access_loggers.stdout"
    config_ = logger["typed_config"]
    assert config_["@type"].endswith("stream.v3.StdoutAccessLog")
    assert config_["log_format"]["json_format"] == FIELDS
    assert "filter" not in logger  # every request, errors included


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/dev/stderr", "envoy.access_loggers.stderr"),
        ("/var/log/plano/access.log", "envoy.access_loggers.file"),
    ],
)
def test_the_log_can_go_elsewhere(path: str, name: str) -> None:
    (logger,) = loggers(EnvoyOptions(access_log=path))
    assert logger["name"] == name
    assert logger["typed_config"]["log_format"]["json_format"] == FIELDS
    if name.endswith("file"):
        assert logger["typed_config"]["path"] == path


def test_off_means_no_logger() -> None:
    assert loggers(EnvoyOptions(access_log=None)) == []


@pytest.mark.parametrize("flag", ["/tmp/plano-access.log", "off", None])
def test_the_cli_flag_reaches_the_bootstrap(tmp_path: Path, flag: str | None) -> None:
    config_path = tmp_path / "plano.yaml"
    config_path.write_text(CONFIG)
    out = tmp_path / "envoy.yaml"
    argv = ["render-envoy", str(config_path), "-o", str(out)]
    argv += ["--access-log", flag] if flag is not None else []
    assert cli.main(argv) == 0
    text = out.read_text()
    boot = yaml.safe_load(text)
    (gateway,) = [x for x in boot["static_resources"]["listeners"] if x["name"] == "egress_traffic"]
    logs = gateway["filter_chains"][0]["filters"][0]["typed_config"].get("access_log", [])
    if flag == "off":
        assert logs == []
    elif flag is None:
        assert [x["name"] for x in logs] == ["envoy.access_loggers.stdout"]
    else:
        assert [x["typed_config"]["path"] for x in logs] == [flag]
    validate_with_envoy(text)


# --- what the server adds to the decision ----------------------------------------------------


def answer_metadata(answer: object) -> dict[str, Any]:
    assert isinstance(answer, pb.ProcessingResponse), answer
    metadata = json_format.MessageToDict(answer.dynamic_metadata)
    fields: dict[str, Any] = metadata[METADATA_NAMESPACE]
    return fields


def body(model: str | None, stream: bool | None = None, api: ClientApi = OPENAI_CHAT) -> bytes:
    value: dict[str, Any] = {"messages": [{"role": "user", "content": "a poem, please"}]}
    if model is not None:
        value["model"] = model
    if api is not OPENAI_CHAT:
        value["max_tokens"] = 16
    if stream is not None:
        value["stream"] = stream
    return json.dumps(value).encode()


@pytest.mark.parametrize("api", [OPENAI_CHAT, ANTHROPIC_MESSAGES, COUNT_TOKENS])
@pytest.mark.parametrize("stream", [None, False, True, "yes"])
def test_the_decision_names_the_clients_api_and_stream(api: ClientApi, stream: Any) -> None:
    processor = Processor(config())
    answer = processor.on_request_body(body("anthropic/claude-sonnet-4-5", stream, api), api)
    fields = answer_metadata(answer)
    assert fields["api"] == api.metadata
    assert fields["stream"] is (stream is True)  # only a JSON true asks for a stream
    assert "router_ms" not in fields  # the router did not run
    assert fields["model"] == "anthropic/claude-sonnet-4-5"


def test_templates_are_kept_apart_by_api_and_stream() -> None:
    processor = Processor(config())
    seen = set()
    for api in (OPENAI_CHAT, ANTHROPIC_MESSAGES):
        for stream in (False, True):
            for _ in range(2):  # the second comes from the cache
                fields = answer_metadata(processor.on_request_body(body("gpt-5.2", stream), api))
                assert (fields["api"], fields["stream"]) == (api.metadata, stream)
                seen.add((fields["api"], fields["stream"]))
    assert len(seen) == 4


def test_the_routers_time_is_in_a_preference_routed_answer_only() -> None:
    processor = Processor(config())
    pending = processor.on_request_body(body(None, True))
    assert isinstance(pending, Pending)
    choice = RouteChoice("creative_tasks", 0.9, {"creative_tasks": 0.9, "other": 0.1})
    fields = answer_metadata(processor.on_route_choice(pending, choice, router_ms=12.3456))
    assert fields["router_ms"] == 12.346
    assert fields["routing"] == "preference" and fields["route"] == "creative_tasks"
    assert (fields["api"], fields["stream"]) == ("openai", True)
    # The cached template was copied, not stamped: the next answers of the same decision
    # carry no time of their own but their own.
    again = answer_metadata(processor.on_route_choice(pending, choice))
    assert "router_ms" not in again
    direct = answer_metadata(processor.on_request_body(body("anthropic/claude-sonnet-4-5", True)))
    assert "router_ms" not in direct
    # No router answer (it failed or timed out): the time is there all the same.
    fields = answer_metadata(processor.on_route_choice(pending, None, router_ms=50.0))
    assert fields["router_ms"] == 50.0 and fields["routing"] == "default"
