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

from .upstreams import BUILTIN_PROVIDERS, INTERFACES, UPSTREAM_APIS

# Names a client may send to mean "no particular model: let the gateway choose".
AUTO_MODEL_NAMES = frozenset({"", "auto", "plano/auto"})

DEFAULT_PORT = 12000
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# Requests in flight to one provider endpoint (and decisions in flight to the routing
# service) before Envoy answers 503 gateway_at_capacity. Envoy's own default (1,024) cut long
# streams at 1,025; an Envoy stream costs tens of KB, so 4,096 fits a sidecar of any size.
DEFAULT_MAX_CONCURRENT_REQUESTS = 4096
MAX_CONCURRENT_REQUESTS_LIMIT = 1_000_000

ROUTER_KINDS = ("embedded", "arch", "none")
DEVICES = ("cpu", "cuda")
DECODINGS = ("score", "greedy")
# Per router kind: (decision timeout, token budget). The encoder decides in milliseconds on a
# CPU; a 1.5B decoder needs a GPU, and the reference gateway's prompt budget is 2048 tokens.
ROUTER_DEFAULTS = {"embedded": (0.3, 256), "arch": (3.0, 2048), "none": (0.3, 256)}


class ConfigError(Exception):
    """The config cannot be used; ``errors`` holds one located message per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Endpoint:
    """Where a provider's API is: parsed from ``base_url``."""

    scheme: str
    host: str
    port: int
    path_prefix: str  # "" or "/v1", "/openai/v1"...; never ends with "/"

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path_prefix}"


@dataclass(frozen=True)
class RoutingPreference:
    name: str
    description: str


@dataclass(frozen=True)
class Route:
    """A routing preference together with the provider that serves it."""

    name: str
    description: str
    provider: Provider


@dataclass(frozen=True)
class RouterSettings:
    """The ``routing`` section: which router reads conversations, and how."""

    kind: str  # one of ROUTER_KINDS
    model_dir: Path | None  # None: the embedded encoder built into build/models
    device: str  # "cpu" or "cuda" (needs onnxruntime-gpu)
    threads: int  # onnxruntime intra-op threads; 0 lets onnxruntime choose
    timeout_s: float  # a decision slower than this falls back to the default provider
    max_tokens: int  # the token budget for what the router reads
    min_confidence: float  # a chosen route less probable than this falls back to the default
    decoding: str  # arch only: "score" every route's answer, or "greedy" generation
    # Model names (glob patterns) that go through the preference router although the client
    # named them, the named model being the fallback: coding agents always name one.
    route_named_models: tuple[str, ...] = ()


DEFAULT_ROUTER = RouterSettings(
    kind="embedded",
    model_dir=None,
    device="cpu",
    threads=0,
    timeout_s=ROUTER_DEFAULTS["embedded"][0],
    max_tokens=ROUTER_DEFAULTS["embedded"][1],
    min_confidence=0.0,
    decoding="score",
)


@dataclass(frozen=True)
class Provider:
    """One ``llm_providers`` entry: a model served by a provider."""

    provider: str  # "openai"
    model_id: str  # "gpt-5.2": what the upstream receives in the body
    endpoint: Endpoint
    cluster: str  # the Envoy cluster that reaches ``endpoint``
    interface: str  # the API it speaks: "openai" (chat completions) or "anthropic" (Messages)
    auth_header: str
    auth_prefix: str
    access_key: str | None  # None: no key configured, or its variable is unset
    access_key_vars: tuple[str, ...]  # the environment variables the key is made of
    missing_vars: tuple[str, ...]  # of those, the ones that were not set
    default: bool
    routing_preferences: tuple[RoutingPreference, ...]

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model_id}"


@dataclass(frozen=True)
class Alias:
    name: str
    target: Provider


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    message_format: str
    timeout_s: float
    max_body_bytes: int
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS


@dataclass(frozen=True)
class Config:
    source: str
    listener: Listener
    providers: tuple[Provider, ...]
    aliases: Mapping[str, Alias]
    default: Provider | None
    router: RouterSettings = DEFAULT_ROUTER
    # Every routing preference in config order; empty when the router is off (router: none).
    routes: tuple[Route, ...] = ()
    warnings: tuple[str, ...] = ()
    # Lookup tables derived once from ``providers`` for the per-request resolution.
    by_name: Mapping[str, Provider] = field(default_factory=dict)
    by_model_id: Mapping[str, tuple[Provider, ...]] = field(default_factory=dict)

    @property
    def clusters(self) -> dict[str, Endpoint]:
        return {p.cluster: p.endpoint for p in self.providers}

    def model_names(self) -> list[str]:
        """Every name a client may put in ``model``, in config order."""
        return [p.name for p in self.providers] + list(self.aliases)


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


_ENV_REF = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")

_TOP_KEYS = ("version", "listeners", "llm_providers", "model_aliases", "routing")
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
)
_LISTENER_KEYS = (
    "address",
    "port",
    "message_format",
    "timeout",
    "max_body_size",
    "max_concurrent_requests",
)
_PROVIDER_KEYS = (
    "model",
    "access_key",
    "default",
    "base_url",
    "provider_interface",
    "routing_preferences",
)
_PREFERENCE_KEYS = ("name", "description")
_ALIAS_KEYS = ("target",)


class _Parser:
    def __init__(self, source: str, lines: dict[str, int], env: Mapping[str, str]) -> None:
        self.source = source
        self.lines = lines
        self.env = env
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(self._locate(path, message))

    def _locate(self, path: str, message: str) -> str:
        # A missing key has no line of its own: point at the nearest enclosing one.
        probe = path
        while probe and probe not in self.lines:
            parent = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", probe)
            probe = "" if parent == probe else parent
        line = self.lines.get(probe)
        where = f"{self.source}:{line}" if line else self.source
        return f"{where}: {path}: {message}" if path else f"{where}: {message}"

    def mapping(self, value: object, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"must be a mapping with keys {_one_of(allowed)}")
            return {}
        for key in value:
            if key not in allowed:
                self.error(
                    f"{path}.{key}" if path else str(key),
                    f"unknown key; allowed here: {_one_of(allowed)}",
                )
        return value

    def string(self, value: object, path: str, what: str) -> str | None:
        if isinstance(value, str) and value.strip():
            return value.strip()
        self.error(path, f"must be {what}, got {_show(value)}")
        return None

    def parse(self, data: object) -> Config:
        if data is None:
            data = {}
        top = self.mapping(data, "", _TOP_KEYS)
        listener = self.listener(top.get("listeners"))
        providers = self.providers(top.get("llm_providers"))
        by_name = {p.name: p for p in providers}
        by_model_id: dict[str, tuple[Provider, ...]] = {}
        for p in providers:
            by_model_id[p.model_id] = (*by_model_id.get(p.model_id, ()), p)
        aliases = self.aliases(top.get("model_aliases"), by_name, by_model_id)
        defaults = [p for p in providers if p.default]
        if len(defaults) > 1:
            self.error(
                "llm_providers",
                "more than one provider has default: true "
                f"({', '.join(p.name for p in defaults)}); at most one may",
            )
        router = self.router(top.get("routing"))
        if router.kind == "arch" and router.model_dir is None:
            self.error(
                "routing.model_dir",
                "is required with router: arch: the directory of an Arch-Router ONNX export",
            )
        routes = tuple(
            Route(r.name, r.description, p) for p in providers for r in p.routing_preferences
        )
        if routes and router.kind == "none":
            routes = ()
        if routes and not defaults:
            self.warnings.append(
                self._locate(
                    "llm_providers",
                    "no provider has default: true: requests that fit no route "
                    '("other") will be refused with a 400',
                )
            )
        if self.errors:
            raise ConfigError(self.errors)
        return Config(
            source=self.source,
            listener=listener,
            providers=tuple(providers),
            aliases=aliases,
            default=defaults[0] if defaults else None,
            router=router,
            routes=routes,
            warnings=tuple(self.warnings),
            by_name=by_name,
            by_model_id=by_model_id,
        )

    def listener(self, value: object) -> Listener:
        listeners = self.mapping(value, "listeners", ("egress_traffic",))
        path = "listeners.egress_traffic"
        raw = self.mapping(listeners.get("egress_traffic"), path, _LISTENER_KEYS)
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
        return Listener(
            address=str(address),
            port=port if isinstance(port, int) else DEFAULT_PORT,
            message_format="openai",
            timeout_s=timeout or DEFAULT_TIMEOUT_S,
            max_body_bytes=size or DEFAULT_MAX_BODY_BYTES,
            max_concurrent_requests=concurrent,
        )

    def router(self, value: object) -> RouterSettings:
        raw = self.mapping(value, "routing", _ROUTING_KEYS)
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
                f"must be 1-256 threads, or 0 to let onnxruntime choose, got {_show(threads)}",
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

    def providers(self, value: object) -> list[Provider]:
        if not isinstance(value, list) or not value:
            self.error(
                "llm_providers",
                "must be a non-empty list of providers, each with "
                "at least a 'model: provider/model-id'",
            )
            return []
        providers: list[Provider] = []
        seen_routes: dict[str, str] = {}
        clusters: dict[tuple[str, str, int], str] = {}
        for i, item in enumerate(value):
            path = f"llm_providers[{i}]"
            provider = self.provider(self.mapping(item, path, _PROVIDER_KEYS), path, clusters)
            if provider is None:
                continue
            if any(p.name == provider.name for p in providers):
                self.error(
                    f"{path}.model",
                    f"duplicate model '{provider.name}': each provider/model may be listed once",
                )
                continue
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
                f"must be 'provider/model-id' (e.g. openai/gpt-5), got {_show(model)}",
            )
            return None
        provider_name, model_id = model.strip().split("/", 1)
        spec = BUILTIN_PROVIDERS.get(provider_name)
        base_url = raw.get("base_url")
        if base_url is None and spec is None:
            self.error(
                f"{path}.model",
                f"unknown provider '{provider_name}': give it a "
                f"base_url, or use one of {_one_of(tuple(BUILTIN_PROVIDERS))}",
            )
            return None
        endpoint = self.endpoint(
            base_url if base_url is not None else spec and spec.base_url, f"{path}.base_url"
        )
        if endpoint is None:
            return None
        interface = raw.get("provider_interface", spec.interface if spec else "openai")
        if interface not in INTERFACES:
            self.error(
                f"{path}.provider_interface",
                f"must be one of {_one_of(INTERFACES)}, got {_show(interface)}",
            )
            interface = "openai"
        upstream = UPSTREAM_APIS[interface]
        key, key_vars, missing = self.access_key(raw.get("access_key"), f"{path}.access_key", model)
        default = raw.get("default", False)
        if not isinstance(default, bool):
            self.error(f"{path}.default", f"must be true or false, got {_show(default)}")
        cluster_key = (endpoint.scheme, endpoint.host, endpoint.port)
        if cluster_key not in clusters:
            base = _cluster_safe(f"provider_{provider_name}")
            taken = set(clusters.values())
            name, n = base, 1
            while name in taken:
                n += 1
                name = f"{base}_{n}"
            clusters[cluster_key] = name
        return Provider(
            provider=provider_name,
            model_id=model_id,
            endpoint=endpoint,
            cluster=clusters[cluster_key],
            interface=interface,
            auth_header=upstream.auth_header,
            auth_prefix=upstream.auth_prefix,
            access_key=key,
            access_key_vars=key_vars,
            missing_vars=missing,
            default=default is True,
            routing_preferences=self.preferences(
                raw.get("routing_preferences"), f"{path}.routing_preferences"
            ),
        )

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
        missing = tuple(n for n in names if not self.env.get(n))
        if missing:
            self.warnings.append(
                self._locate(
                    path,
                    f"environment variable {', '.join(missing)} is not set: requests "
                    f"routed to {model} will fail until it is",
                )
            )
            return None, names, missing
        key = _ENV_REF.sub(lambda m: self.env[m.group(1) or m.group(2)], value.strip())
        return key, names, ()

    def preferences(self, value: object, path: str) -> tuple[RoutingPreference, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.error(path, "must be a list of {name, description}")
            return ()
        prefs: list[RoutingPreference] = []
        for i, item in enumerate(value):
            raw = self.mapping(item, f"{path}[{i}]", _PREFERENCE_KEYS)
            name = self.string(raw.get("name"), f"{path}[{i}].name", "a route name")
            desc = self.string(
                raw.get("description"),
                f"{path}[{i}].description",
                "a description of the requests this route serves",
            )
            if name and name.lower() == "other":
                self.error(f"{path}[{i}].name", "'other' is reserved: it means no route fits")
            elif name and desc:
                prefs.append(RoutingPreference(name, desc))
        return tuple(prefs)

    def aliases(
        self,
        value: object,
        by_name: Mapping[str, Provider],
        by_model_id: Mapping[str, tuple[Provider, ...]],
    ) -> dict[str, Alias]:
        raw: dict[Any, Any] = {}
        if isinstance(value, dict):
            raw = value
        elif value is not None:
            self.error("model_aliases", "must be a mapping: alias-name: {target: model}")
        aliases: dict[str, Alias] = {}
        for name, body in raw.items():
            path = f"model_aliases.{name}"
            spec = self.mapping(body, path, _ALIAS_KEYS)
            target = self.string(
                spec.get("target"),
                f"{path}.target",
                "a configured model: provider/model-id or a bare model-id",
            )
            if target is None:
                continue
            if str(name) in by_name:
                self.error(path, f"alias '{name}' has the same name as a configured model")
                continue
            matches = [by_name[target]] if target in by_name else list(by_model_id.get(target, ()))
            if len(matches) == 1:
                aliases[str(name)] = Alias(str(name), matches[0])
            elif not matches:
                self.error(
                    f"{path}.target",
                    f"'{target}' matches no configured model; one of {_one_of(tuple(by_name))}",
                )
            else:
                self.error(
                    f"{path}.target",
                    f"'{target}' matches several models "
                    f"({', '.join(p.name for p in matches)}): write provider/model-id",
                )
        return aliases


def _cluster_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _one_of(allowed: tuple[str, ...]) -> str:
    return ", ".join(allowed) if allowed else "(none)"


def _show(value: object) -> str:
    return "nothing" if value is None else repr(value)
