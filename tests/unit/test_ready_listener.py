"""The readiness listener (``--ready-port``): absent by default; when asked for, it routes exactly
``GET /ready`` to the admin API and answers everything else 404 itself."""

from __future__ import annotations

from typing import Any

import pytest

from plano_extproc.config import Config, parse_config
from plano_extproc.envoy_config import EnvoyOptions, render_bootstrap, render_yaml
from plano_extproc.envoy_config import validate_with_envoy as envoy_validates
from tests.configs import LISTENER, OPENAI_DEFAULT

pytestmark = pytest.mark.unit

CONFIG = LISTENER + OPENAI_DEFAULT


def config() -> Config:
    return parse_config(CONFIG, "test.yaml", {"OPENAI_API_KEY": "sk-x"})


def listeners(boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in boot["static_resources"]["listeners"]}


def clusters(boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in boot["static_resources"]["clusters"]}


def manager(listener: dict[str, Any]) -> dict[str, Any]:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]  # type: ignore[no-any-return]


def endpoint_address(cluster: dict[str, Any]) -> dict[str, Any]:
    endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert len(endpoints) == 1
    return endpoints[0]["endpoint"]["address"]  # type: ignore[no-any-return]


def test_no_ready_listener_unless_asked() -> None:
    boot = render_bootstrap(config(), EnvoyOptions())
    assert list(listeners(boot)) == ["egress_traffic"]
    assert "plano_admin" not in clusters(boot)


def test_ready_listener_routes_only_get_ready_to_the_admin_socket() -> None:
    options = EnvoyOptions(admin_socket="/run/x/admin.sock", ready_port=9902)
    boot: dict[str, Any] = render_bootstrap(config(), options)
    assert list(listeners(boot)) == ["egress_traffic", "ready"]
    ready = listeners(boot)["ready"]
    assert ready["address"] == {"socket_address": {"address": "0.0.0.0", "port_value": 9902}}
    hcm = manager(ready)
    # No ext_proc, no header mutation: the router alone.
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.router"]
    (host,) = hcm["route_config"]["virtual_hosts"]
    assert host["domains"] == ["*"]
    only_ready, rest = host["routes"]
    assert only_ready["match"] == {
        "path": "/ready",
        "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
    }
    assert only_ready["route"]["cluster"] == "plano_admin"
    assert rest["match"] == {"prefix": "/"}
    assert rest["direct_response"] == {"status": 404}
    # The admin API itself stays on its owner-only socket; the cluster reaches it there.
    assert boot["admin"]["address"] == {"pipe": {"path": "/run/x/admin.sock", "mode": 0o600}}
    assert endpoint_address(clusters(boot)["plano_admin"]) == {
        "pipe": {"path": "/run/x/admin.sock"}
    }


def test_ready_listener_reaches_an_admin_port_on_loopback() -> None:
    options = EnvoyOptions(admin_port=9901, ready_port=9902, ready_address="::")
    boot = render_bootstrap(config(), options)
    assert listeners(boot)["ready"]["address"]["socket_address"] == {
        "address": "::",
        "port_value": 9902,
    }
    assert endpoint_address(clusters(boot)["plano_admin"]) == {
        "socket_address": {"address": "127.0.0.1", "port_value": 9901}
    }


def test_the_gateway_listener_is_the_same_with_or_without_it() -> None:
    without = render_bootstrap(config(), EnvoyOptions())
    with_ready = render_bootstrap(config(), EnvoyOptions(ready_port=9902))
    assert listeners(with_ready)["egress_traffic"] == listeners(without)["egress_traffic"]
    assert {k: v for k, v in clusters(with_ready).items() if k != "plano_admin"} == clusters(
        without
    )


@pytest.mark.parametrize(
    "options",
    [
        EnvoyOptions(ready_port=9902),
        EnvoyOptions(admin_port=9901, ready_port=9902, ready_address="127.0.0.1"),
    ],
    ids=["admin-socket", "admin-port"],
)
def test_ready_listener_passes_envoy_validation(options: EnvoyOptions) -> None:
    envoy_validates(render_yaml(config(), options))
