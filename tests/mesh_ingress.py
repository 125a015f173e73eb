"""The Envoy config that the mesh manifests (deploy/kubernetes/mesh/) make at an Envoy Gateway
ingress, for tests/integration/test_mesh_ingress.py: a small converter of exactly the Gateway
API and Envoy Gateway fields those manifests use, so that the test exercises the manifests
themselves rather than a hand-kept copy of what they mean. Any other field, filter or kind
stops it with an error instead of being skipped.

What it makes, as Envoy Gateway's translator does for these objects:

- the Gateway's HTTP listener -> a listener whose http_connection_manager has one ext_proc
  filter per extProc of each EnvoyExtensionPolicy that targets the HTTPRoute (named
  ``envoy.filters.http.ext_proc/<policy>/extproc/<i>``, ``disabled: true``, turned on by a
  per-route ``FilterConfig`` on that route's routes), then the router filter; the processing
  mode (``request`` present: the request headers are sent; ``request.body: Buffered``), the
  failure mode and the message timeout as the policy says; ClientTrafficPolicy's
  ``connection.bufferLimit`` as the listener's buffer limit;
- each rule x match of the HTTPRoute -> a route (PathPrefix -> ``path_separated_prefix``,
  header matches exact), sorted by Gateway API's precedence as Envoy Gateway sorts them (path
  match type, path length, number of header matches, then name); URLRewrite hostname ->
  ``host_rewrite_literal``; RequestHeaderModifier remove -> ``request_headers_to_remove``;
  ``timeouts.request`` -> the route's timeout; an HTTPRouteFilter's directResponse -> a
  ``direct_response``;
- each backendRef to a Backend -> a cluster per rule, its FQDN endpoint, with TLS (SNI, the
  system trust store, the SAN checked) when a BackendTLSPolicy targets the Backend; the
  ext_proc Service -> an HTTP/2 cluster.

``Local`` puts the Services and Backends on 127.0.0.1 ports instead (the fake providers speak
plain HTTP, so a Backend there gets no TLS); without it the clusters name the real hosts, for
``envoy --mode validate``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]

EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
# Envoy Gateway's timeout on the ext_proc gRPC service (Envoy does not apply it to the stream;
# messageTimeout bounds each answer).
_GRPC_SERVICE_TIMEOUT = "10s"
_QUANTITY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}


def load(folder: Path) -> list[Doc]:
    """The objects ``kubectl apply -k folder`` applies, in its kustomization's order."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    namespace = kustomization.get("namespace")
    docs = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((folder / resource).read_text()):
            if doc is None:
                continue
            if namespace and doc["kind"] not in ("GatewayClass", "Namespace"):
                doc.setdefault("metadata", {})["namespace"] = namespace
            docs.append(doc)
    return docs


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    if len(found) != 1:
        raise ValueError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


@dataclass(frozen=True)
class Local:
    """Where the test runs what the manifests name."""

    listener_port: int
    services: dict[str, int] = field(default_factory=dict)  # Service name -> 127.0.0.1 port
    backends: dict[str, int] = field(default_factory=dict)  # Backend name -> 127.0.0.1 port


def bootstrap(
    docs: list[Doc],
    local: Local | None = None,
    ca_bundle: str = "/etc/ssl/certs/ca-certificates.crt",
) -> Doc:
    gateway = one(docs, "Gateway")
    routes = [d for d in docs if d["kind"] == "HTTPRoute" and _attached(d, gateway)]
    (listener,) = gateway["spec"]["listeners"]
    _only(listener, {"name", "protocol", "port", "allowedRoutes"}, "Gateway listener")
    if listener["protocol"] != "HTTP":
        raise ValueError(f"listener protocol {listener['protocol']}: only HTTP is converted")
    clusters: list[Doc] = []
    filters: list[Doc] = []
    envoy_routes: list[tuple[tuple[int, ...], Doc]] = []
    for route in routes:
        names = []
        for policy in docs:
            if policy["kind"] == "EnvoyExtensionPolicy" and _targets(policy, route):
                for index, ext_proc in enumerate(policy["spec"]["extProc"]):
                    name, http_filter, cluster = _ext_proc(policy, index, ext_proc, docs, local)
                    filters.append(http_filter)
                    clusters.append(cluster)
                    names.append(name)
        envoy_routes += _routes(route, names, docs, local, clusters, ca_bundle)
    # Gateway API's precedence as Envoy Gateway sorts it; equal keys keep the rules' order.
    ordered = [r for _, r in sorted(envoy_routes, key=lambda kr: kr[0], reverse=True)]
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
        ".v3.HttpConnectionManager",
        "stat_prefix": "http-80",
        "route_config": {
            "name": "plano-llm",
            "virtual_hosts": [{"name": "plano-llm", "domains": ["*"], "routes": ordered}],
        },
        "http_filters": [
            *filters,
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    address = ("127.0.0.1", local.listener_port) if local else ("0.0.0.0", listener["port"])
    envoy_listener: Doc = {
        "name": f"{gateway['metadata']['namespace']}/{gateway['metadata']['name']}/http",
        "address": _address(*address),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
    limit = _buffer_limit(docs, gateway)
    if limit is not None:
        envoy_listener["per_connection_buffer_limit_bytes"] = limit
    return {"static_resources": {"listeners": [envoy_listener], "clusters": clusters}}


def _attached(route: Doc, gateway: Doc) -> bool:
    return any(
        ref["name"] == gateway["metadata"]["name"] and ref.get("kind", "Gateway") == "Gateway"
        for ref in route["spec"]["parentRefs"]
    )


def _targets(policy: Doc, target: Doc) -> bool:
    return any(
        ref["kind"] == target["kind"] and ref["name"] == target["metadata"]["name"]
        for ref in policy["spec"]["targetRefs"]
    )


def _only(node: Doc, allowed: set[str], what: str) -> None:
    unknown = set(node) - allowed
    if unknown:
        raise ValueError(f"{what}: {sorted(unknown)} is not converted")


def _ext_proc(
    policy: Doc, index: int, spec: Doc, docs: list[Doc], local: Local | None
) -> tuple[str, Doc, Doc]:
    _only(spec, {"backendRefs", "processingMode", "messageTimeout", "failOpen"}, "extProc")
    (ref,) = spec["backendRefs"]
    if ref.get("kind", "Service") != "Service":
        raise ValueError("extProc backendRefs: only a Service is converted")
    service = one(docs, "Service", ref["name"])
    namespace = policy["metadata"]["namespace"]
    port = ref["port"]
    if port not in [p["port"] for p in service["spec"]["ports"]]:
        raise ValueError(f"Service {ref['name']} has no port {port}")
    config_name = f"envoyextensionpolicy/{namespace}/{policy['metadata']['name']}/extproc/{index}"
    name = f"envoy.filters.http.ext_proc/{config_name}"
    mode = {
        "request_header_mode": "SKIP",
        "response_header_mode": "SKIP",
        "request_body_mode": "NONE",
        "response_body_mode": "NONE",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }
    modes = spec.get("processingMode", {})
    _only(modes, {"request", "response"}, "extProc.processingMode")
    for phase in ("request", "response"):
        if phase in modes:
            _only(modes[phase] or {}, {"body"}, f"extProc.processingMode.{phase}")
            mode[f"{phase}_header_mode"] = "SEND"
            body = (modes[phase] or {}).get("body")
            if body is not None:
                mode[f"{phase}_body_mode"] = {
                    "Buffered": "BUFFERED",
                    "Streamed": "STREAMED",
                    "BufferedPartial": "BUFFERED_PARTIAL",
                }[body]
    config: Doc = {
        "@type": EXT_PROC_TYPE,
        "grpc_service": {
            "envoy_grpc": {
                "cluster_name": config_name,
                "authority": f"{ref['name']}.{namespace}:{port}",
            },
            "timeout": _GRPC_SERVICE_TIMEOUT,
        },
        "processing_mode": mode,
        "failure_mode_allow": bool(spec.get("failOpen", False)),
    }
    if "messageTimeout" in spec:
        config["message_timeout"] = _duration(spec["messageTimeout"])
    http_filter = {"name": name, "disabled": True, "typed_config": config}
    if local is not None:
        host, cluster_type = "127.0.0.1", "STATIC"
        port = local.services[ref["name"]]
    else:
        host, cluster_type = f"{ref['name']}.{namespace}.svc.cluster.local", "STRICT_DNS"
    cluster = _cluster(config_name, cluster_type, host, port)
    cluster["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    return name, http_filter, cluster


def _routes(
    route: Doc,
    ext_procs: list[str],
    docs: list[Doc],
    local: Local | None,
    clusters: list[Doc],
    ca_bundle: str,
) -> list[tuple[tuple[int, ...], Doc]]:
    out = []
    namespace, name = route["metadata"]["namespace"], route["metadata"]["name"]
    _only(route["spec"], {"parentRefs", "rules"}, "HTTPRoute spec")
    for i, rule in enumerate(route["spec"]["rules"]):
        _only(rule, {"matches", "filters", "backendRefs", "timeouts"}, "HTTPRoute rule")
        rule_name = f"httproute/{namespace}/{name}/rule/{i}"
        action: Doc = {}
        extra: Doc = {}
        for f in rule.get("filters", []):
            _filter(f, action, extra, docs)
        refs = rule.get("backendRefs", [])
        if refs:
            (ref,) = refs
            if (ref.get("group"), ref.get("kind")) != ("gateway.envoyproxy.io", "Backend"):
                raise ValueError(f"{rule_name}: only an Envoy Gateway Backend is converted")
            clusters.append(
                _backend_cluster(
                    rule_name, one(docs, "Backend", ref["name"]), docs, local, ca_bundle
                )
            )
            action["cluster"] = rule_name
            timeout = rule.get("timeouts", {}).get("request")
            if timeout is not None:
                action["timeout"] = _duration(timeout)
        elif "direct_response" not in extra:
            raise ValueError(f"{rule_name}: no backendRefs and no direct response")
        for j, match in enumerate(rule.get("matches") or [{}]):
            envoy_match, key = _match(match)
            envoy_route: Doc = {"name": f"{rule_name}/match/{j}/*", "match": envoy_match, **extra}
            if "direct_response" not in extra:
                envoy_route["route"] = dict(action)
            if ext_procs:
                envoy_route["typed_per_filter_config"] = {
                    n: {
                        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                        "config": {},
                    }
                    for n in ext_procs
                }
            out.append((key, envoy_route))
    return out


def _filter(f: Doc, action: Doc, extra: Doc, docs: list[Doc]) -> None:
    kind = f["type"]
    if kind == "URLRewrite":
        rewrite = f["urlRewrite"]
        _only(rewrite, {"hostname"}, "URLRewrite")
        action["host_rewrite_literal"] = rewrite["hostname"]
    elif kind == "RequestHeaderModifier":
        modifier = f["requestHeaderModifier"]
        _only(modifier, {"remove"}, "RequestHeaderModifier")
        extra.setdefault("request_headers_to_remove", []).extend(
            h.lower() for h in modifier["remove"]
        )
    elif kind == "ExtensionRef":
        ref = f["extensionRef"]
        if (ref["group"], ref["kind"]) != ("gateway.envoyproxy.io", "HTTPRouteFilter"):
            raise ValueError(f"ExtensionRef to {ref['kind']} is not converted")
        spec = one(docs, "HTTPRouteFilter", ref["name"])["spec"]
        _only(spec, {"directResponse"}, "HTTPRouteFilter")
        direct = spec["directResponse"]
        _only(direct, {"statusCode", "contentType", "body"}, "directResponse")
        body = direct["body"]
        if body["type"] != "Inline":
            raise ValueError("directResponse body: only Inline is converted")
        extra["direct_response"] = {
            "status": direct.get("statusCode", 200),
            "body": {"inline_string": body["inline"]},
        }
        if "contentType" in direct:
            extra["response_headers_to_add"] = [
                {
                    "header": {"key": "content-type", "value": direct["contentType"]},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ]
    else:
        raise ValueError(f"HTTPRoute filter {kind} is not converted")


def _match(match: Doc) -> tuple[Doc, tuple[int, ...]]:
    """The route match, and its precedence key (Envoy Gateway's order: Exact > regex > prefix
    path, the longer path, more header matches, more exact ones)."""
    _only(match, {"path", "headers"}, "HTTPRoute match")
    path = match.get("path", {"type": "PathPrefix", "value": "/"})
    value = path["value"]
    envoy: Doc
    if path["type"] == "PathPrefix":
        rank = 0
        trimmed = value.rstrip("/")
        envoy = {"path_separated_prefix": trimmed} if trimmed else {"prefix": "/"}
    elif path["type"] == "Exact":
        rank, envoy = 2, {"path": value}
    else:
        raise ValueError(f"path match {path['type']} is not converted")
    headers = []
    for h in match.get("headers", []):
        if h.get("type", "Exact") != "Exact":
            raise ValueError("only Exact header matches are converted")
        headers.append({"name": h["name"].lower(), "string_match": {"exact": h["value"]}})
    if headers:
        envoy["headers"] = headers
    return envoy, (rank, len(value), len(headers), len(headers))


def _backend_cluster(
    name: str, backend: Doc, docs: list[Doc], local: Local | None, ca_bundle: str
) -> Doc:
    _only(backend["spec"], {"endpoints"}, "Backend spec")
    (endpoint,) = backend["spec"]["endpoints"]
    host, port = endpoint["fqdn"]["hostname"], endpoint["fqdn"]["port"]
    backend_name = backend["metadata"]["name"]
    if local is not None:
        # The fake providers listen on 127.0.0.1 in plain HTTP: no TLS to them.
        return _cluster(name, "STATIC", "127.0.0.1", local.backends[backend_name])
    cluster = _cluster(name, "STRICT_DNS", host, port)
    for policy in docs:
        if policy["kind"] == "BackendTLSPolicy" and _targets(policy, backend):
            validation = policy["spec"]["validation"]
            _only(validation, {"wellKnownCACertificates", "hostname"}, "BackendTLSPolicy")
            if validation["wellKnownCACertificates"] != "System":
                raise ValueError("only the System trust store is converted")
            sni = validation["hostname"]
            cluster["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3"
                    ".UpstreamTlsContext",
                    "sni": sni,
                    "common_tls_context": {
                        "validation_context": {
                            "trusted_ca": {"filename": ca_bundle},
                            "match_typed_subject_alt_names": [
                                {"san_type": "DNS", "matcher": {"exact": sni}}
                            ],
                        }
                    },
                },
            }
    return cluster


def _cluster(name: str, kind: str, host: str, port: int) -> Doc:
    return {
        "name": name,
        "type": kind,
        "connect_timeout": "10s",
        "dns_lookup_family": "V4_PREFERRED",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}],
        },
    }


def _buffer_limit(docs: list[Doc], gateway: Doc) -> int | None:
    for policy in docs:
        if policy["kind"] == "ClientTrafficPolicy" and _targets(policy, gateway):
            _only(policy["spec"], {"targetRefs", "connection"}, "ClientTrafficPolicy")
            _only(policy["spec"]["connection"], {"bufferLimit"}, "ClientTrafficPolicy.connection")
            return _quantity(str(policy["spec"]["connection"]["bufferLimit"]))
    return None


def _quantity(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]i|[kMG])?", text)
    if match is None:
        raise ValueError(f"quantity {text!r} is not converted")
    return int(match.group(1)) * _QUANTITY.get(match.group(2) or "", 1)


def _duration(text: str) -> str:
    """A Gateway API duration (1h2m3s, 500ms) as a protobuf Duration's JSON text."""
    if not re.fullmatch(r"(\d+(h|m|s|ms))+", text):
        raise ValueError(f"duration {text!r}")
    seconds = 0.0
    for amount, unit in re.findall(r"(\d+)(ms|h|m|s)", text):
        seconds += int(amount) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return f"{seconds:g}s"


def _address(host: str, port: int) -> Doc:
    return {"socket_address": {"address": host, "port_value": port}}
