"""The config file: its dataclasses (model.py), how a model name is placed (lookup.py), the
parser that checks and freezes a file (parser.py), and Plano's two formats (formats.py)."""

from __future__ import annotations

from .lookup import Found, NotFound, bad_model_id, lookup
from .model import (
    AUTO_MODEL_NAMES,
    DECODINGS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_PORT,
    DEFAULT_ROUTER,
    DEFAULT_TIMEOUT_S,
    DEVICES,
    MAX_CONCURRENT_REQUESTS_LIMIT,
    ROUTER_DEFAULTS,
    ROUTER_KINDS,
    WILDCARD,
    Alias,
    Config,
    ConfigError,
    Endpoint,
    Listener,
    Provider,
    Route,
    RouterSettings,
    RoutingPreference,
)
from .parser import load_config, parse_config, parse_duration, parse_size

__all__ = [
    "AUTO_MODEL_NAMES",
    "DECODINGS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONCURRENT_REQUESTS",
    "DEFAULT_PORT",
    "DEFAULT_ROUTER",
    "DEFAULT_TIMEOUT_S",
    "DEVICES",
    "MAX_CONCURRENT_REQUESTS_LIMIT",
    "ROUTER_DEFAULTS",
    "ROUTER_KINDS",
    "WILDCARD",
    "Alias",
    "Config",
    "ConfigError",
    "Endpoint",
    "Found",
    "Listener",
    "NotFound",
    "Provider",
    "Route",
    "RouterSettings",
    "RoutingPreference",
    "bad_model_id",
    "load_config",
    "lookup",
    "parse_config",
    "parse_duration",
    "parse_size",
]
