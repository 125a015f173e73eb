"""The plano config file: load it, check every part of it, and freeze it into dataclasses.

``parse_config`` is pure (text + environment in, ``Config`` out) so every error message is
unit-tested; ``load_config`` only adds the file read. All problems are collected and reported
together, each located by file, line and key path, saying what is wrong and what is allowed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..upstreams import BUILTIN_PROVIDERS, INTERFACES, UNSUPPORTED_PROVIDERS, UPSTREAM_APIS
from ..wire import CLIENT_AUTH_HEADERS
from . import formats
from .lookup import BAD_DEPLOYMENT, DEPLOYMENT_NAME, Found, lookup
from .model import (
    DECODINGS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_PORT,
    DEFAULT_RETRY_AFTER_MAX_S,
    DEFAULT_TIMEOUT_S,
    DEVICES,
    MAX_CONCURRENT_REQUESTS_LIMIT,
    RETRY_AFTER_MAX_LIMIT_S,
    ROUTER_DEFAULTS,
    ROUTER_KINDS,
    Alias,
    Chain,
    Config,
    ConfigError,
    Endpoint,
    Listener,
    Provider,
    Route,
    RouterSettings,
    RoutingPreference,
    Target,
    Tracing,
)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    return parse_config(text, str(path), os.environ if env is None else env)


def parse_config(text: str, source: str, env: Mapping[str, str]) -> Config:
    try:
        data = yaml.safe_load(text)
        lines = _line_map(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: not valid YAML: {problem}"]) from exc
    return _Parser(source, lines, env).parse(data)


def parse_duration(value: object) -> float | None:
    """``30s``, ``500ms``, ``2m``, ``1h`` or a bare number of seconds; None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value > 0 else None
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*", value)
    if not m:
        return None
    seconds = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
    return seconds if seconds > 0 else None


def parse_size(value: object) -> int | None:
    """A byte count: ``1048576``, ``512KiB``, ``16MiB``, ``16MB``; None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*", value)
    if not m:
        return None
    units = {"B": 1, "KB": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20, "GB": 10**9, "GiB": 2**30}
    size = int(m.group(1)) * units[m.group(2) or "B"]
    return size if size > 0 else None


def _line_map(node: yaml.Node | None, path: str = "") -> dict[str, int]:
    """Key path (``llm_providers[1].model``) -> 1-based line where its value starts."""
    lines: dict[str, int] = {}
    if node is None:
        return lines
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = f"{path}.{key.value}" if path else str(key.value)
            lines.update(_line_map(value, child))
            lines[child] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_line_map(item, f"{path}[{i}]"))
    return lines


@dataclass
class _Chains:
    """The chains made so far, by their members' names, and who fails over along which."""

    made: dict[tuple[str, ...], Chain] = field(default_factory=dict)
    of_model: dict[str, Chain] = field(default_factory=dict)
    of_alias: dict[str, Chain] = field(default_factory=dict)
    of_route: dict[str, Chain] = field(default_factory=dict)


# The lookup tables a model name is placed by (lookup.lookup's arguments).
_Tables = tuple[Mapping[str, Provider], Mapping[str, tuple[Provider, ...]], Mapping[str, Provider]]

_ENV_REF = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
# A header name as HTTP defines it (a token); values may not break the header line.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

_TOP_KEYS = (
    "version",
    "listeners",
    formats.CURRENT_PROVIDERS,
    formats.LEGACY_PROVIDERS,
    "model_aliases",
    "routing",
    "routing_preferences",
    "tracing",
)
_TRACING_KEYS = ("opentracing_grpc_endpoint", "random_sampling")
_ROUTING_KEYS = (
    "router",
    "model_dir",
    "device",
    "threads",
    "timeout",
    "max_tokens",
    "min_confidence",
    "decoding",
    "route_named_models",
    "route_on_user_only",
)
_LISTENER_KEYS = (
    "address",
    "port",
    "message_format",
    "timeout",
    "max_body_size",
    "max_concurrent_requests",
    "retry_after_max",
)
_LIST_LISTENER_KEYS = ("name", "type", *_LISTENER_KEYS)
_PROVIDER_KEYS = (
    "model",
    "access_key",
    "default",
    "base_url",
    "provider_interface",
    "routing_preferences",
    "headers",
    "http_host",
    "passthrough_auth",
    "api_version",
    "fallbacks",
)
_PREFERENCE_KEYS = ("name", "description")
_TOP_PREFERENCE_KEYS = ("name", "description", "models")
_ALIAS_KEYS = ("target", "fallbacks")


class _Parser:
    def __init__(self, source: str, lines: dict[str, int], env: Mapping[str, str]) -> None:
        self.source = source
        self.lines = lines
        self.env = env
        self.errors: list[str] = []
        self.warnings: list[str] = []
        # The files keys were read from (VAR_FILE): a reload watches them.
        self.key_files: list[str] = []
        # Plano's keys this gateway does not implement, as found (key path, how to name it):
        # named in one warning.
        self.unimplemented: list[tuple[str, str]] = []
        # Fallback lists as written (value, key path), resolved once every model is known:
        # per explicit provider entry, per alias; and the models of top-level routes.
        self.provider_fallbacks: dict[str, tuple[object, str]] = {}
        self.alias_fallbacks: dict[str, tuple[object, str]] = {}
        self.route_models: dict[str, list[Target]] = {}

    def error(self, path: str, message: str) -> None:
        self.errors.append(self._locate(path, message))

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(self._locate(path, message))

    def _line(self, path: str) -> int | None:
        # A missing key has no line of its own: the nearest enclosing one.
        probe = path
        while probe and probe not in self.lines:
            parent = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", probe)
            probe = "" if parent == probe else parent
        return self.lines.get(probe)

    def _locate(self, path: str, message: str) -> str:
        line = self._line(path)
        where = f"{self.source}:{line}" if line else self.source
        return f"{where}: {path}: {message}" if path else f"{where}: {message}"

    def mapping(
        self,
        value: object,
        path: str,
        allowed: tuple[str, ...],
        unimplemented: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """``value`` as a mapping of ``allowed`` keys; Plano's ``unimplemented`` ones are
        noted for the warning, any other key is an error."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping with keys {_one_of(allowed)}")
            return {}
        for key in value:
            where = f"{path}.{key}" if path else str(key)
            if key in unimplemented:
                self.unimplemented.append((where, where))
            elif key not in allowed:
                self.error(where, f"unknown key; allowed here: {_one_of(allowed)}")
        return value

    def string(self, value: object, path: str, what: str) -> str | None:
        if isinstance(value, str) and value.strip():
            return value.strip()
        self.error(path, f"must be {what}, got {_show(value)}")
        return None

    def flag(self, raw: Mapping[str, Any], key: str, path: str) -> bool:
        value = raw.get(key, False)
        if not isinstance(value, bool):
            self.error(f"{path}.{key}", f"must be true or false, got {_show(value)}")
        return value is True

    def parse(self, data: object) -> Config:
        if data is None:
            data = {}
        # A tracing section that names no collector is ignored, and said so with the rest.
        tracing_section = data.get("tracing") if isinstance(data, dict) else None
        names_collector = (
            isinstance(tracing_section, dict) and "opentracing_grpc_endpoint" in tracing_section
        )
        ignored = formats.UNIMPLEMENTED_TOP + (() if names_collector else ("tracing",))
        top = self.mapping(data, "", _TOP_KEYS, ignored)
        version = top.get("version")
        if version is not None and version not in formats.VERSIONS:
            self.error(
                "version", f"must be one of {_one_of(formats.VERSIONS)}, got {_show(version)}"
            )
        provider_key = self.provider_key(top)
        listener = self.listener(top.get("listeners"))
        providers = self.providers(top.get(provider_key), provider_key)
        by_name = {p.name: p for p in providers}
        by_model_id: dict[str, tuple[Provider, ...]] = {}
        for p in providers:
            if not p.wildcard:
                by_model_id[p.model_id] = (*by_model_id.get(p.model_id, ()), p)
        wildcards = {p.provider: p for p in providers if p.wildcard}
        tables = (by_name, by_model_id, wildcards)
        aliases = self.aliases(top.get("model_aliases"), tables)
        defaults = [p for p in providers if p.default]
        if len(defaults) > 1:
            self.error(
                provider_key,
                "more than one provider has default: true "
                f"({', '.join(p.name for p in defaults)}); at most one may",
            )
        router = self.router(top.get("routing"))
        if router.kind == "arch" and router.model_dir is None:
            self.error(
                "routing.model_dir",
                "is required with router: arch: the directory of an Arch-Router ONNX export",
            )
        routes = [Route(r.name, r.description, p) for p in providers for r in p.routing_preferences]
        routes += self.top_preferences(top.get("routing_preferences"), routes, tables)
        if routes and router.kind == "none":
            routes = []
        chains = self.chains(tables, aliases, routes)
        tracing = self.tracing(top.get("tracing")) if names_collector else None
        if routes and not defaults:
            self.warn(
                provider_key,
                "no provider has default: true: requests that fit no route "
                '("other") will be refused with a 400',
            )
        if self.unimplemented:
            named = ", ".join(
                f"{label} (line {self._line(key)})" for key, label in self.unimplemented
            )
            self.warnings.append(
                f"{self.source}: Plano keys this gateway does not implement yet are ignored: "
                f"{named}"
            )
        if self.errors:
            # One problem reached two ways (a cycle from two of its models) is said once.
            raise ConfigError(list(dict.fromkeys(self.errors)))
        return Config(
            source=self.source,
            listener=listener,
            providers=tuple(providers),
            aliases=aliases,
            default=defaults[0] if defaults else None,
            router=router,
            routes=tuple(routes),
            warnings=tuple(self.warnings),
            format=formats.describe(provider_key, top.get("listeners"), version),
            by_name=by_name,
            by_model_id=by_model_id,
            wildcards=wildcards,
            chains={c.id: c for c in chains.made.values()},
            chain_of_model=chains.of_model,
            chain_of_alias=chains.of_alias,
            chain_of_route=chains.of_route,
            key_files=tuple(dict.fromkeys(self.key_files)),
            tracing=tracing,
        )

    def tracing(self, value: object) -> Tracing | None:
        """Plano's ``tracing`` section: spans go to ``opentracing_grpc_endpoint`` (an OTLP/gRPC
        collector, ``http://host:port``) for ``random_sampling`` percent of requests (100
        unless given; 0 traces nothing). Without an endpoint nothing is traced (Plano would
        send to localhost:4317, where its own CLI starts a collector; here a gateway never
        sends anywhere it was not told): the section is named in the unimplemented keys'
        warning, as it was before tracing was implemented."""
        if value is None:
            return None
        raw = self.mapping(value, "tracing", _TRACING_KEYS, formats.UNIMPLEMENTED_TRACING)
        sampling = raw.get("random_sampling", 100)
        path = "tracing.random_sampling"
        if (
            isinstance(sampling, bool)
            or not isinstance(sampling, int | float)
            or not 0 <= sampling <= 100
        ):
            self.error(path, f"must be a percentage from 0 to 100, got {_show(sampling)}")
            return None
        path = "tracing.opentracing_grpc_endpoint"
        text = raw["opentracing_grpc_endpoint"]
        allowed = "an OTLP/gRPC collector's http://host:port, e.g. http://127.0.0.1:4317"
        if not isinstance(text, str) or not text.strip():
            self.error(path, f"must be {allowed}, got {_show(text)}")
            return None
        try:
            parts = urlsplit(text.strip() if "//" in text else f"http://{text.strip()}")
            port = parts.port
        except ValueError as exc:
            self.error(path, f"{exc}: must be {allowed}")
            return None
        if parts.scheme == "https":
            self.error(path, "a collector over TLS is not supported yet: give http://host:port")
            return None
        if parts.scheme != "http" or not parts.hostname or parts.path.strip("/") or parts.query:
            self.error(path, f"must be {allowed}, got {_show(text)}")
            return None
        if sampling == 0:
            return None
        return Tracing(host=parts.hostname, port=port or 4317, sampling_percent=float(sampling))

    def provider_key(self, top: Mapping[str, Any]) -> str:
        """Which key lists the providers: Plano's current one or its legacy one, never both
        (they are one list under two names, and a file with both is half migrated)."""
        current, legacy = formats.CURRENT_PROVIDERS, formats.LEGACY_PROVIDERS
        if current in top and legacy in top:
            second = max((current, legacy), key=lambda k: self.lines.get(k, 0))
            self.error(
                second,
                f"{current} (Plano's current format) and {legacy} (its legacy format) are "
                "the same list under two names: give one",
            )
        return legacy if legacy in top and current not in top else current

    def listener(self, value: object) -> Listener:
        if isinstance(value, list):
            return self.listener_list(value)
        listeners = self.mapping(
            value, "listeners", ("egress_traffic",), formats.UNIMPLEMENTED_LEGACY_LISTENERS
        )
        path = "listeners.egress_traffic"
        return self.listener_fields(
            self.mapping(listeners.get("egress_traffic"), path, _LISTENER_KEYS), path
        )

    def listener_list(self, items: list[Any]) -> Listener:
        """Plano's list of listeners: the one of ``type: model`` is this gateway; the
        others (prompt and agent gateways) are Plano features it does not have."""
        found: list[tuple[dict[str, Any], str]] = []
        for i, item in enumerate(items):
            path = f"listeners[{i}]"
            raw = self.mapping(item, path, _LIST_LISTENER_KEYS, formats.UNIMPLEMENTED_LISTENER)
            kind = raw.get("type")
            if kind not in formats.LISTENER_TYPES:
                self.error(
                    f"{path}.type",
                    f"must be one of {_one_of(formats.LISTENER_TYPES)}, got {_show(kind)}",
                )
            elif kind != formats.MODEL_LISTENER:
                self.unimplemented.append((path, f"{path} (type: {kind})"))
            elif found:
                self.error(
                    path,
                    f"a second listener of type: model (the first is {found[0][1]}): "
                    "this gateway serves one",
                )
            else:
                found.append((raw, path))
        if not found:
            self.error(
                "listeners",
                "has no listener of type: model, the LLM gateway this is: add one, e.g. "
                "{type: model, name: model_listener, port: 12000}",
            )
            return self.listener_fields({}, "listeners")
        return self.listener_fields(*found[0])

    def listener_fields(self, raw: Mapping[str, Any], path: str) -> Listener:
        address = raw.get("address", "0.0.0.0")
        if not isinstance(address, str) or not address:
            self.error(f"{path}.address", f"must be an IP address, got {_show(address)}")
        port = raw.get("port", DEFAULT_PORT)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            self.error(f"{path}.port", f"must be a port number 1-65535, got {_show(port)}")
        fmt = raw.get("message_format", "openai")
        if fmt != "openai":
            self.error(f"{path}.message_format", f"must be 'openai', got {_show(fmt)}")
        timeout = parse_duration(raw.get("timeout", DEFAULT_TIMEOUT_S))
        if timeout is None:
            self.error(
                f"{path}.timeout",
                f"must be a duration such as 30s, 500ms, 2m or 1h, got {_show(raw.get('timeout'))}",
            )
        size = parse_size(raw.get("max_body_size", DEFAULT_MAX_BODY_BYTES))
        if size is None:
            self.error(
                f"{path}.max_body_size",
                f"must be a size such as 16MiB, 512KiB or a byte count, got "
                f"{_show(raw.get('max_body_size'))}",
            )
        concurrent = raw.get("max_concurrent_requests", DEFAULT_MAX_CONCURRENT_REQUESTS)
        if (
            isinstance(concurrent, bool)
            or not isinstance(concurrent, int)
            or not 1 <= concurrent <= MAX_CONCURRENT_REQUESTS_LIMIT
        ):
            self.error(
                f"{path}.max_concurrent_requests",
                f"must be a whole number from 1 to {MAX_CONCURRENT_REQUESTS_LIMIT}, got "
                f"{_show(concurrent)}",
            )
            concurrent = DEFAULT_MAX_CONCURRENT_REQUESTS
        retry_after = raw.get("retry_after_max", f"{DEFAULT_RETRY_AFTER_MAX_S}s")
        retry_after_s = 0.0 if retry_after in (0, "0", "0s") else parse_duration(retry_after)
        if (
            retry_after_s is None
            or retry_after_s > RETRY_AFTER_MAX_LIMIT_S
            or (retry_after_s != int(retry_after_s))
        ):
            self.error(
                f"{path}.retry_after_max",
                f"must be whole seconds from 0 (never) to {RETRY_AFTER_MAX_LIMIT_S}s, e.g. 2s, "
                f"got {_show(retry_after)}",
            )
            retry_after_s = DEFAULT_RETRY_AFTER_MAX_S
        return Listener(
            address=str(address),
            port=port if isinstance(port, int) else DEFAULT_PORT,
            message_format="openai",
            timeout_s=timeout or DEFAULT_TIMEOUT_S,
            max_body_bytes=size or DEFAULT_MAX_BODY_BYTES,
            max_concurrent_requests=concurrent,
            retry_after_max_s=int(retry_after_s),
        )

    def router(self, value: object) -> RouterSettings:
        raw = self.mapping(value, "routing", _ROUTING_KEYS, formats.UNIMPLEMENTED_ROUTING)
        # Plano's switch to keep a tool loop on one model; this gateway's router reads only
        # what the person typed, so every request of a turn gets one route without it.
        user_only = raw.get("route_on_user_only", True)
        if not isinstance(user_only, bool):
            self.error(
                "routing.route_on_user_only", f"must be true or false, got {_show(user_only)}"
            )
        elif not user_only:
            self.warn(
                "routing.route_on_user_only",
                "false is not available: this gateway's router always reads only what the "
                "person typed, so the requests of one agent turn get one route",
            )
        kind = raw.get("router", "embedded")
        if kind not in ROUTER_KINDS:
            self.error(
                "routing.router", f"must be one of {_one_of(ROUTER_KINDS)}, got {_show(kind)}"
            )
            kind = "embedded"
        default_timeout, default_budget = ROUTER_DEFAULTS[kind]
        model_dir: Path | None = None
        if raw.get("model_dir") is not None:
            text = self.string(raw["model_dir"], "routing.model_dir", "a directory path")
            if text is not None:
                # Relative to the config file, so a config and its model can move together.
                path = Path(os.path.expanduser(text))
                model_dir = path if path.is_absolute() else Path(self.source).parent / path
        device = raw.get("device", "cpu")
        if device not in DEVICES:
            self.error("routing.device", f"must be one of {_one_of(DEVICES)}, got {_show(device)}")
        threads = raw.get("threads", 0)
        if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= 256:
            self.error(
                "routing.threads",
                f"must be 1-256 threads, or 0 to let the router choose, got {_show(threads)}",
            )
            threads = 0
        timeout = parse_duration(raw.get("timeout", default_timeout))
        if timeout is None:
            self.error(
                "routing.timeout",
                f"must be a duration such as 300ms or 2s, got {_show(raw.get('timeout'))}",
            )
        budget = raw.get("max_tokens", default_budget)
        if isinstance(budget, bool) or not isinstance(budget, int) or not 32 <= budget <= 32768:
            self.error("routing.max_tokens", f"must be a token count 32-32768, got {_show(budget)}")
            budget = default_budget
        confidence = raw.get("min_confidence", 0.0)
        if (
            isinstance(confidence, bool)
            or not isinstance(confidence, int | float)
            or not 0.0 <= confidence <= 1.0
        ):
            self.error(
                "routing.min_confidence", f"must be a number from 0 to 1, got {_show(confidence)}"
            )
            confidence = 0.0
        decoding = raw.get("decoding", "score")
        if decoding not in DECODINGS:
            self.error(
                "routing.decoding", f"must be one of {_one_of(DECODINGS)}, got {_show(decoding)}"
            )
        return RouterSettings(
            kind=str(kind),
            model_dir=model_dir,
            device=str(device) if device in DEVICES else "cpu",
            threads=threads,
            timeout_s=timeout or default_timeout,
            max_tokens=budget,
            min_confidence=float(confidence),
            decoding=str(decoding) if decoding in DECODINGS else "score",
            route_named_models=self.model_patterns(raw.get("route_named_models")),
        )

    def model_patterns(self, value: object) -> tuple[str, ...]:
        path = "routing.route_named_models"
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.error(
                path,
                "must be a list of model names or glob patterns (e.g. ['claude-*']), "
                f"got {_show(value)}",
            )
            return ()
        return tuple(value)

    def providers(self, value: object, key: str) -> list[Provider]:
        if not isinstance(value, list) or not value:
            self.error(
                key,
                "must be a non-empty list of providers (model_providers, or llm_providers in "
                "Plano's legacy format), each with at least a 'model: provider/model-id' "
                "(or provider/* for any model id)",
            )
            return []
        providers: list[Provider] = []
        seen_routes: dict[str, str] = {}
        clusters: dict[tuple[str, str, int], str] = {}
        for i, item in enumerate(value):
            path = f"{key}[{i}]"
            raw = self.mapping(item, path, _PROVIDER_KEYS, formats.UNIMPLEMENTED_PROVIDER)
            provider = self.provider(raw, path, clusters)
            if provider is None:
                continue
            if any(p.name == provider.name for p in providers):
                self.error(
                    f"{path}.model",
                    f"duplicate model '{provider.name}': each provider/model may be listed once",
                )
                continue
            if raw.get("fallbacks") is not None:
                if provider.wildcard:
                    self.error(
                        f"{path}.fallbacks",
                        f"'{provider.name}' stands for any model id, so it has no fallbacks of "
                        "its own: give them to a model, or to an alias",
                    )
                else:
                    self.provider_fallbacks[provider.name] = (raw["fallbacks"], f"{path}.fallbacks")
            for j, pref in enumerate(provider.routing_preferences):
                if pref.name in seen_routes:
                    self.error(
                        f"{path}.routing_preferences[{j}].name",
                        f"duplicate route name '{pref.name}' (also on "
                        f"{seen_routes[pref.name]}): route names must be unique",
                    )
                seen_routes.setdefault(pref.name, provider.name)
            providers.append(provider)
        return providers

    def provider(
        self, raw: dict[str, Any], path: str, clusters: dict[tuple[str, str, int], str]
    ) -> Provider | None:
        if "model" not in raw:
            self.error(f"{path}.model", "is required: 'provider/model-id', e.g. openai/gpt-5")
            return None
        model = raw["model"]
        if not isinstance(model, str) or "/" not in model.strip("/"):
            self.error(
                f"{path}.model",
                "must be 'provider/model-id' (e.g. openai/gpt-5) or 'provider/*' (any model "
                f"id of that provider), got {_show(model)}",
            )
            return None
        provider_name, model_id = model.strip().split("/", 1)
        spec = BUILTIN_PROVIDERS.get(provider_name)
        base_url = raw.get("base_url")
        if base_url is None and (spec is None or spec.base_url is None):
            if provider_name in UNSUPPORTED_PROVIDERS:
                self.error(
                    f"{path}.model",
                    f"{provider_name} is not supported: {UNSUPPORTED_PROVIDERS[provider_name]} "
                    "(an OpenAI-compatible endpoint of it can be given as base_url)",
                )
            elif spec is None:
                self.error(
                    f"{path}.model",
                    f"unknown provider '{provider_name}': give it a "
                    f"base_url, or use one of {_one_of(tuple(BUILTIN_PROVIDERS))}",
                )
            else:
                self.error(f"{path}.base_url", f"is required for {provider_name}: {spec.note}")
            return None
        endpoint = self.endpoint(
            base_url if base_url is not None else spec and spec.base_url, f"{path}.base_url"
        )
        if endpoint is None:
            return None
        interface = self.interface(raw, path, spec.interface if spec else "openai")
        upstream = UPSTREAM_APIS[interface]
        default = self.flag(raw, "default", path)
        passthrough = self.flag(raw, "passthrough_auth", path)
        # With passthrough_auth the configured key is never sent: nothing to resolve or warn of.
        key, key_vars, missing = (
            (None, (), ())
            if passthrough
            else self.access_key(raw.get("access_key"), f"{path}.access_key", model)
        )
        wildcard = model_id == "*"
        if wildcard and default:
            self.error(
                f"{path}.default",
                f"'{model}' stands for any model id, so it cannot be the default: put "
                f"default: true on a model, e.g. {provider_name}/<model-id>",
            )
        if wildcard and raw.get("routing_preferences"):
            self.error(
                f"{path}.routing_preferences",
                f"'{model}' stands for any model id, so it cannot serve a route: list the "
                f"model that serves it, e.g. {provider_name}/<model-id>",
            )
        if passthrough and raw.get("access_key") is not None:
            self.warn(
                f"{path}.access_key",
                "is not used: passthrough_auth: true sends the client's own credential",
            )
        api_version = self.api_version(raw, path, provider_name, spec.api_version if spec else None)
        if api_version is not None and not wildcard and not DEPLOYMENT_NAME.fullmatch(model_id):
            self.error(f"{path}.model", f"'{model_id}': {BAD_DEPLOYMENT}")
        cluster_key = (endpoint.scheme, endpoint.host, endpoint.port)
        if cluster_key not in clusters:
            base = _cluster_safe(f"provider_{provider_name}")
            taken = set(clusters.values())
            name, n = base, 1
            while name in taken:
                n += 1
                name = f"{base}_{n}"
            clusters[cluster_key] = name
        auth_header = spec.auth_header if spec and spec.auth_header else upstream.auth_header
        auth_prefix = spec.auth_prefix if spec and spec.auth_header else upstream.auth_prefix
        return Provider(
            provider=provider_name,
            model_id=model_id,
            endpoint=endpoint,
            cluster=clusters[cluster_key],
            interface=interface,
            auth_header=auth_header,
            auth_prefix=auth_prefix,
            access_key=key,
            access_key_vars=key_vars,
            missing_vars=missing,
            default=default,
            routing_preferences=self.preferences(
                raw.get("routing_preferences"), f"{path}.routing_preferences"
            ),
            api_version=api_version,
            headers=self.headers(raw.get("headers"), f"{path}.headers", auth_header),
            http_host=self.http_host(raw.get("http_host"), f"{path}.http_host"),
            passthrough_auth=passthrough,
            families=spec.families if spec else (),
        )

    def interface(self, raw: Mapping[str, Any], path: str, default: str) -> str:
        """``provider_interface``: ours (openai, anthropic) or Plano's names for them."""
        value = raw.get("provider_interface", default)
        if value in INTERFACES:
            return str(value)
        if isinstance(value, str) and value in formats.PLANO_INTERFACES:
            return formats.PLANO_INTERFACES[value]
        where = f"{path}.provider_interface"
        if isinstance(value, str) and value in formats.UNSUPPORTED_INTERFACES:
            self.error(
                where,
                f"{value} ({formats.UNSUPPORTED_INTERFACES[value]}) is not an API this gateway "
                f"speaks; it speaks {_one_of(INTERFACES)} (and Plano's names for them: "
                f"{_one_of(tuple(formats.PLANO_INTERFACES))})",
            )
        else:
            allowed = (*INTERFACES, *formats.PLANO_INTERFACES)
            self.error(where, f"must be one of {_one_of(allowed)}, got {_show(value)}")
        return "openai"

    def api_version(
        self, raw: Mapping[str, Any], path: str, provider: str, default: str | None
    ) -> str | None:
        value = raw.get("api_version")
        if value is None:
            return default
        if default is None:
            self.error(
                f"{path}.api_version",
                "is for Azure OpenAI (azure_openai/...) only: other providers take no api-version",
            )
            return None
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,40}", value):
            self.error(
                f"{path}.api_version",
                f"must be an Azure OpenAI API version such as {default}, got {_show(value)}",
            )
            return default
        return value

    def headers(self, value: object, path: str, auth_header: str) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            self.error(path, "must be a mapping of header name to value")
            return ()
        out: list[tuple[str, str]] = []
        # Credentials go in access_key (or come from the client with passthrough_auth).
        reserved = {"host", "content-length", "transfer-encoding", auth_header.lower()}
        reserved.update(CLIENT_AUTH_HEADERS)
        for name, text in value.items():
            where = f"{path}.{name}"
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                self.error(where, "is not a valid header name")
            elif name.lower() in reserved or name.lower().startswith("x-plano-"):
                self.error(
                    where,
                    "is set by the gateway itself (the key goes in access_key, the Host in "
                    "http_host)",
                )
            elif not isinstance(text, str) or any(c in text for c in "\r\n\0"):
                self.error(where, f"must be a one-line text value, got {_show(text)}")
            elif _ENV_REF.search(text):
                # The value is written into Envoy's config file: no secrets there.
                self.error(
                    where,
                    "takes a literal value: it is written into Envoy's config, so a secret "
                    "belongs in access_key",
                )
            else:
                out.append((name.lower(), text))
        return tuple(out)

    def http_host(self, value: object, path: str) -> str | None:
        if value is None:
            return None
        match = isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9.-]+(?::(\d{1,5}))?", value)
        if not match or (match.group(1) is not None and not 1 <= int(match.group(1)) <= 65535):
            self.error(path, f"must be a host name, optionally with :port, got {_show(value)}")
            return None
        return str(value)

    def endpoint(self, value: object, path: str) -> Endpoint | None:
        allowed = (
            "an http(s) URL with a host, e.g. https://api.example.com/v1 or "
            "http://127.0.0.1:8000/v1"
        )
        if not isinstance(value, str) or not value.strip():
            self.error(path, f"must be {allowed}, got {_show(value)}")
            return None
        try:
            parts = urlsplit(value.strip())
            port = parts.port
        except ValueError as exc:
            self.error(path, f"{exc}: must be {allowed}")
            return None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.error(path, f"must be {allowed}, got {_show(value)}")
            return None
        if parts.query or parts.fragment or parts.username or parts.password:
            self.error(
                path,
                "must not carry a query, fragment or user info; put the key "
                f"in access_key. Allowed: {allowed}",
            )
            return None
        return Endpoint(
            scheme=parts.scheme,
            host=parts.hostname,
            port=port or (443 if parts.scheme == "https" else 80),
            path_prefix=parts.path.rstrip("/"),
        )

    def access_key(
        self, value: object, path: str, model: str
    ) -> tuple[str | None, tuple[str, ...], tuple[str, ...]]:
        if value is None:
            return None, (), ()
        if not isinstance(value, str) or not value.strip():
            self.error(path, f"must be a key or $ENV_VAR / ${{ENV_VAR}}, got {_show(value)}")
            return None, (), ()
        names = tuple(a or b for a, b in _ENV_REF.findall(value))
        values = {n: self.env_value(n, path) for n in names}
        missing = tuple(n for n in names if not values[n])
        if missing:
            self.warnings.append(
                self._locate(
                    path,
                    f"environment variable {', '.join(missing)} is not set: requests "
                    f"routed to {model} will fail until it is",
                )
            )
            return None, names, missing
        key = _ENV_REF.sub(lambda m: values[m.group(1) or m.group(2)] or "", value.strip())
        return key, names, ()

    def env_value(self, name: str, path: str) -> str | None:
        """``$NAME``'s value: the variable, or when it is unset and ``NAME_FILE`` is set, the
        content of that file (a Kubernetes Secret mounted as files), without its trailing
        newline. The file is re-read on every reload, so a key rotates without a restart."""
        value = self.env.get(name)
        if value:
            return value
        file = self.env.get(f"{name}_FILE")
        if not file:
            return None
        self.key_files.append(file)
        try:
            return Path(file).read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            self.error(path, f"{name}_FILE={file}: cannot read the key: {reason}")
            return None

    def preferences(self, value: object, path: str) -> tuple[RoutingPreference, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.error(path, "must be a list of {name, description}")
            return ()
        prefs = (
            self.preference(self.mapping(item, f"{path}[{i}]", _PREFERENCE_KEYS), f"{path}[{i}]")
            for i, item in enumerate(value)
        )
        return tuple(p for p in prefs if p is not None)

    def preference(self, raw: Mapping[str, Any], path: str) -> RoutingPreference | None:
        name = self.string(raw.get("name"), f"{path}.name", "a route name")
        desc = self.string(
            raw.get("description"),
            f"{path}.description",
            "a description of the requests this route serves",
        )
        if name and name.lower() == "other":
            self.error(f"{path}.name", "'other' is reserved: it means no route fits")
        elif name and desc:
            return RoutingPreference(name, desc)
        return None

    def top_preferences(self, value: object, inline: list[Route], tables: _Tables) -> list[Route]:
        """Plano's top-level ``routing_preferences`` (v0.4): each route names its models."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.error("routing_preferences", "must be a list of {name, description, models}")
            return []
        taken = {r.name: r.model for r in inline}
        routes: list[Route] = []
        for i, item in enumerate(value):
            path = f"routing_preferences[{i}]"
            raw = self.mapping(item, path, _TOP_PREFERENCE_KEYS, formats.UNIMPLEMENTED_PREFERENCE)
            pref = self.preference(raw, path)
            models = raw.get("models")
            if not isinstance(models, list) or not models:
                self.error(
                    f"{path}.models",
                    "must be a non-empty list of configured models: the first serves the route",
                )
                continue
            found = [self.target(m, f"{path}.models[{j}]", tables) for j, m in enumerate(models)]
            if pref is None or found[0] is None:
                continue
            # The first serves the route; the others are its fallbacks, in order.
            self.route_models[pref.name] = [f for f in found if f is not None]
            if pref.name in taken:
                self.error(
                    f"{path}.name",
                    f"duplicate route name '{pref.name}' (also on {taken[pref.name]}): "
                    "route names must be unique",
                )
                continue
            route = Route(pref.name, pref.description, found[0].provider, found[0].model_id)
            taken[pref.name] = route.model
            routes.append(route)
        return routes

    def chains(self, tables: _Tables, aliases: Mapping[str, Alias], routes: list[Route]) -> _Chains:
        """The fail-over chains: a model's own fallbacks (a provider entry's ``fallbacks``,
        followed through theirs), an alias's, and a top-level route's further models."""
        own = {
            name: self.fallback_list(value, path, tables)
            for name, (value, path) in self.provider_fallbacks.items()
        }
        paths = {name: path for name, (_, path) in self.provider_fallbacks.items()}
        chains = _Chains()

        def expand(target: Target, seen: tuple[str, ...]) -> list[Target] | None:
            """``target`` then its fallbacks, each followed through its own; None on a cycle."""
            if target.name in seen:
                cycle = " -> ".join((*seen[seen.index(target.name) :], target.name))
                self.error(paths.get(seen[-1], ""), f"the fallbacks form a cycle: {cycle}")
                return None
            members = [target]
            for fallback in own.get(target.name, []):
                more = expand(fallback, (*seen, target.name))
                if more is None:
                    return None
                extend(members, more)
            return members

        def extend(members: list[Target], more: list[Target]) -> None:
            """``more`` after ``members``, less the models already in it."""
            seen = {m.name for m in members}
            members += [m for m in more if m.name not in seen]

        def chain_of(members: list[Target] | None) -> Chain | None:
            if members is None or len(members) < 2:
                return None
            key = tuple(m.name for m in members)
            if key not in chains.made:
                chains.made[key] = Chain(f"chain_{len(chains.made) + 1}", tuple(members))
            return chains.made[key]

        for name in own:
            provider = tables[0][name]
            chain = chain_of(expand(Target(provider, provider.model_id), ()))
            if chain is not None:
                chains.of_model[name] = chain
        for name, (value, path) in self.alias_fallbacks.items():
            alias = aliases[name]
            first = Target(alias.target, alias.model_id or alias.target.model_id)
            listed = self.fallback_list(value, path, tables)
            if first.name in {t.name for t in listed}:
                self.error(path, f"'{first.name}' is the alias's own target, not a fallback")
                continue
            # The target, then each fallback followed through its own (one that leads back
            # to the target adds nothing: the target has been tried).
            members = [first]
            for fallback in listed:
                more = expand(fallback, ())
                if more is None:
                    break
                extend(members, more)
            else:
                chain = chain_of(members)
                if chain is not None:
                    chains.of_alias[name] = chain
        for route in routes:
            listed = self.route_models.get(route.name, [])
            members = []
            for target in listed:
                more = expand(target, ())
                if more is None:
                    break
                extend(members, more)
            chain = chain_of(members) if len(listed) > 1 else None
            if chain is not None:
                chains.of_route[route.name] = chain
        return chains

    def fallback_list(self, value: object, path: str, tables: _Tables) -> list[Target]:
        """``fallbacks``: models in order, each a name or Plano's ``{target: name}``."""
        if not isinstance(value, list) or not value:
            self.error(
                path,
                "must be a list of models to try in order, e.g. [anthropic/claude-sonnet-4-5] "
                f"or [{{target: anthropic/claude-sonnet-4-5}}], got {_show(value)}",
            )
            return []
        targets = []
        for i, item in enumerate(value):
            where = f"{path}[{i}]"
            if isinstance(item, dict):
                item = self.mapping(item, where, ("target",)).get("target")
                where += ".target"
            found = self.target(item, where, tables)
            if found is not None:
                targets.append(found)
        return targets

    def target(self, value: object, path: str, tables: _Tables) -> Found | None:
        """A model an alias or a route names, placed as a client's ``model`` would be."""
        name = self.string(
            value,
            path,
            "a configured model: provider/model-id, a bare model-id, or provider/<id> "
            "for a provider/* entry",
        )
        if name is None:
            return None
        found = lookup(name, *tables)
        if isinstance(found, Found):
            return found
        if found.bad_id:
            self.error(path, f"'{name}': {found.bad_id}")
        elif found.candidates or found.unclaimed:
            could_be = found.candidates or tuple(w.replace("*", name) for w in found.unclaimed)
            self.error(
                path,
                f"'{name}' is ambiguous: it could be {', '.join(could_be)}: "
                "write provider/model-id",
            )
        else:
            self.error(
                path,
                f"'{name}' matches no configured model; one of {_one_of(tuple(tables[0]))}",
            )
        return None

    def aliases(self, value: object, tables: _Tables) -> dict[str, Alias]:
        raw: dict[Any, Any] = {}
        if isinstance(value, dict):
            raw = value
        elif value is not None:
            self.error("model_aliases", "must be a mapping: alias-name: {target: model}")
        aliases: dict[str, Alias] = {}
        for name, body in raw.items():
            path = f"model_aliases.{name}"
            spec = self.mapping(body, path, _ALIAS_KEYS)
            if str(name) in tables[0]:
                self.error(path, f"alias '{name}' has the same name as a configured model")
                continue
            found = self.target(spec.get("target"), f"{path}.target", tables)
            if found is not None:
                aliases[str(name)] = Alias(str(name), found.provider, found.model_id)
                if spec.get("fallbacks") is not None:
                    self.alias_fallbacks[str(name)] = (spec["fallbacks"], f"{path}.fallbacks")
        return aliases


def _cluster_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _one_of(allowed: tuple[str, ...]) -> str:
    return ", ".join(allowed) if allowed else "(none)"


def _show(value: object) -> str:
    return "nothing" if value is None else repr(value)
