"""The mesh ingress manifests (deploy/kubernetes/mesh/) agree with the config they carry: every
provider endpoint the router can choose has a rule for its x-plano-upstream value, whose
Backend is that endpoint (TLS exactly when it is https) and whose Host is the endpoint's.
tests/integration/test_mesh_ingress.py routes traffic through them."""

from __future__ import annotations

from pathlib import Path

import pytest

from plano_extproc.config import parse_config
from plano_extproc.extproc.decision_headers import upstream_name
from plano_extproc.wire import PROVIDER_HEADER, UPSTREAM_HEADER
from tests.mesh_ingress import Doc, load, one

pytestmark = pytest.mark.unit

MESH = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "mesh"
DOCS = load(MESH)


def _rules() -> dict[str, Doc]:
    """The HTTPRoute's rules by the x-plano-upstream value they match."""
    route = one(DOCS, "HTTPRoute", "plano-llm")
    found: dict[str, Doc] = {}
    for rule in route["spec"]["rules"]:
        for match in rule.get("matches", []):
            for header in match.get("headers", []):
                assert header["name"] == UPSTREAM_HEADER, header
                found[header["value"]] = rule
    return found


def test_every_endpoint_of_the_config_has_its_rule_and_backend() -> None:
    text = one(DOCS, "ConfigMap", "plano-config")["data"]["plano.yaml"]
    config = parse_config(text, "plano.yaml", {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"})
    rules = _rules()
    endpoints = {upstream_name(p.endpoint): p for p in config.providers}
    assert set(endpoints) == set(rules), "a rule per endpoint, and no stale one"
    for name, provider in endpoints.items():
        rule = rules[name]
        (ref,) = rule["backendRefs"]
        backend = one(DOCS, "Backend", ref["name"])
        (endpoint,) = backend["spec"]["endpoints"]
        assert endpoint["fqdn"] == {
            "hostname": provider.endpoint.host,
            "port": provider.endpoint.port,
        }
        tls = [
            d for d in DOCS
            if d["kind"] == "BackendTLSPolicy" and d["spec"]["targetRefs"][0]["name"] == ref["name"]
        ]  # fmt: skip
        assert bool(tls) == provider.endpoint.tls, name
        if tls:
            assert tls[0]["spec"]["validation"]["hostname"] == provider.endpoint.host
        filters = {f["type"]: f for f in rule["filters"]}
        host = provider.http_host or provider.endpoint.host
        assert filters["URLRewrite"]["urlRewrite"] == {"hostname": host}
        removed = set(filters["RequestHeaderModifier"]["requestHeaderModifier"]["remove"])
        assert removed == {UPSTREAM_HEADER, PROVIDER_HEADER}, "the selectors never leave"
        # The mesh rewrites no path: the router's own paths are the providers' at /v1.
        assert provider.endpoint.path_prefix == "/v1" or provider.api_version, name


def test_only_the_ingress_reaches_the_routers_port() -> None:
    policy = one(DOCS, "NetworkPolicy", "plano-extproc")["spec"]
    service = one(DOCS, "Service", "plano-extproc")["spec"]
    gateway = one(DOCS, "Gateway", "plano-llm")["metadata"]
    (to_router, health) = policy["ingress"]
    assert [p["port"] for p in to_router["ports"]] == [service["ports"][0]["targetPort"]]
    (peer,) = to_router["from"]
    labels = peer["podSelector"]["matchLabels"]
    assert labels["gateway.envoyproxy.io/owning-gateway-name"] == gateway["name"]
    assert labels["gateway.envoyproxy.io/owning-gateway-namespace"] == gateway["namespace"]
    assert "from" not in health and [p["port"] for p in health["ports"]] == [10001]
    assert policy["egress"] == [] and "Egress" in policy["policyTypes"]


def test_the_policy_targets_the_route_and_its_service() -> None:
    policy = one(DOCS, "EnvoyExtensionPolicy", "plano-router")["spec"]
    assert policy["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "plano-llm"}
    ]
    (ext_proc,) = policy["extProc"]
    assert ext_proc["processingMode"] == {"request": {"body": "Buffered"}}
    assert ext_proc["failOpen"] is False
