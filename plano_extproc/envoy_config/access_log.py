"""The gateway listener's access log: one JSON line per request, written by Envoy.

Envoy knows the request, the response, the upstream and the timings; the decision comes from
the ``plano`` dynamic metadata the server set (wire.py names each key, and says which the
server adds only for the log). That namespace also holds the provider's credential
(``auth``): every field names one key, and nothing here may name the namespace whole, or the
key would be written into every line.

``access_logs`` returns the HTTP connection manager's list; another logger (a gRPC one, say)
is one more entry there.
"""

from __future__ import annotations

from envoy_data_plane.envoy.config.accesslog import v3 as accesslog
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.extensions.access_loggers.file.v3 import FileAccessLog
from envoy_data_plane.envoy.extensions.access_loggers.stream.v3 import (
    StderrAccessLog,
    StdoutAccessLog,
)
from envoy_data_plane.google.protobuf import Any, Struct

from ..wire import ACCESS_LOG_METADATA, AUTH_KEY, MODEL_HEADER
from .common import metadata_value
from .options import EnvoyOptions

FILE_LOGGER = "envoy.access_loggers.file"
# Envoy's own stdout and stderr (its file descriptors 1 and 2). The file logger would open
# /dev/stdout anew, with an offset of its own: where stdout is a file shared with another
# process (`plano-extproc up > gateway.log`), their lines overwrote each other.
STREAM_LOGGERS = {
    "/dev/stdout": ("envoy.access_loggers.stdout", StdoutAccessLog),
    "/dev/stderr": ("envoy.access_loggers.stderr", StderrAccessLog),
}

# What a client sends is written as it came (JSON-escaped by Envoy), cut to this many
# characters: a long path or user agent must not make a line of megabytes.
_CLIENT_TEXT_CHARS = 256


def _client(header: str) -> str:
    return f"%REQ({header}):{_CLIENT_TEXT_CHARS}%"


# field -> Envoy's command operator. Numbers and booleans stay typed in Envoy's JSON (a
# duration is a number, `stream` a boolean); a value Envoy does not have is null.
FIELDS: dict[str, str] = {
    "start_time": "%START_TIME%",  # ISO 8601, UTC, milliseconds: 2026-12-07T03:18:16.433Z
    "method": "%REQ(:METHOD)%",
    # The request's path when it is logged: the client's where the gateway answered, the
    # provider's on a routed request (its route rewrote it, and the router's
    # suppress_envoy_headers keeps no x-envoy-original-path); `api` and `envoy_route` say
    # which endpoint the client called.
    "path": _client(":PATH"),
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    # The decision, each from its own key of the server's metadata (never the namespace).
    **{name: metadata_value(key) for name, key in ACCESS_LOG_METADATA.items()},
    # The member of a fail-over chain that answered (the client's x-plano-model), and how
    # many attempts the request took (the client's x-plano-attempts on a chain's route).
    "served_model": f"%RESP({MODEL_HEADER})%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
    "envoy_route": "%ROUTE_NAME%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_failure": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    "duration_ms": "%DURATION%",
    # From the first byte sent to the provider to the first byte it answered.
    "upstream_ttfb_ms": "%COMMON_DURATION(US_TX_BEG:US_RX_BEG:ms)%",
    # From the first byte sent to the provider to its last.
    "upstream_ms": "%COMMON_DURATION(US_TX_BEG:US_RX_END:ms)%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "user_agent": _client("USER-AGENT"),
}

# The one metadata key no field may read (the test in tests/unit/test_access_log.py checks
# every operator above too).
assert all(AUTH_KEY not in key for key in ACCESS_LOG_METADATA.values())


def access_logs(options: EnvoyOptions) -> list[accesslog.AccessLog]:
    """The gateway listener's access loggers: the JSON file log unless it is off."""
    if options.access_log is None:
        return []
    return [json_log(options.access_log)]


def json_log(path: str) -> accesslog.AccessLog:
    """One JSON object a line, ``FIELDS``, written to ``path``."""
    # json_format keeps values typed: a number stays a number. Text is JSON-escaped.
    log_format = core.SubstitutionFormatString(json_format=Struct.from_dict(dict(FIELDS)))
    stream = STREAM_LOGGERS.get(path)
    if stream is not None:
        name, logger = stream
        return accesslog.AccessLog(name=name, typed_config=Any.pack(logger(log_format=log_format)))
    logger_config = FileAccessLog(path=path, log_format=log_format)
    return accesslog.AccessLog(name=FILE_LOGGER, typed_config=Any.pack(logger_config))
