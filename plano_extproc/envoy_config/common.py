"""Small builders every part of the bootstrap uses: addresses, headers, metadata references, JSON
bodies in each client API's error shape.
"""

from __future__ import annotations

import json

from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.listener import v3 as listener
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm
from envoy_data_plane.envoy.type.matcher.v3 import (
    MetadataMatcher,
    MetadataMatcherPathSegment,
    StringMatcher,
    ValueMatcher,
)
from envoy_data_plane.google.protobuf import Any, Struct

from ..apis import OPENAI_CHAT, ClientApi
from ..wire import (
    METADATA_NAMESPACE,
)
from .options import DEFAULT_ADMIN_SOCKET, EnvoyOptions


def address(host: str, port: int) -> core.Address:
    return core.Address(socket_address=core.SocketAddress(address=host, port_value=port))


def admin_address(options: EnvoyOptions, mode: int = 0) -> core.Address:
    """Where Envoy's admin API is: 127.0.0.1:PORT, or its Unix socket. ``mode`` is the
    socket's file mode where Envoy creates it (the admin itself); 0 leaves it unset (a
    cluster that connects to it)."""
    if options.admin_port is not None:
        return address("127.0.0.1", options.admin_port)
    path = options.admin_socket or DEFAULT_ADMIN_SOCKET
    return core.Address(pipe=core.Pipe(path=path, mode=mode))


def header(key: str, value: str, only_if_absent: bool = False) -> core.HeaderValueOption:
    # keep_empty_value stays false: a header whose metadata key is absent is left out.
    action = core.HeaderValueOptionHeaderAppendAction
    return core.HeaderValueOption(
        header=core.HeaderValue(key=key, value=value),
        append_action=action.ADD_IF_ABSENT if only_if_absent else action.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def metadata_value(key: str) -> str:
    return f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{key})%"


def metadata_is(key: str, value: str) -> MetadataMatcher:
    return MetadataMatcher(
        filter=METADATA_NAMESPACE,
        path=[MetadataMatcherPathSegment(key=key)],
        value=ValueMatcher(string_match=StringMatcher(exact=value)),
    )


def json_text(value: object) -> core.SubstitutionFormatString:
    # Text, not json_format: that one writes every number as a string ("created": "0.0").
    return core.SubstitutionFormatString(
        text_format_source=core.DataSource(inline_string=json.dumps(value).replace("%", "%%")),
        content_type="application/json",
    )


def json_error(
    message: str,
    code: str,
    param: str | None = None,
    status: int = 400,
    api: ClientApi = OPENAI_CHAT,
) -> core.SubstitutionFormatString:
    return core.SubstitutionFormatString(
        json_format=error_struct(message, code, param, api=api, status=status)
    )


def error_struct(
    message: str,
    code: str,
    param: str | None = None,
    type_: str = "invalid_request_error",
    api: ClientApi = OPENAI_CHAT,
    status: int = 400,
) -> Struct:
    """An error body in ``api``'s shape. In json_format Envoy JSON-escapes
    %LOCAL_REPLY_BODY%."""
    return Struct.from_dict(api.error_object(status, message, type_, param, code))


def http_filter(name: str, config: object) -> hcm.HttpFilter:
    return hcm.HttpFilter(name=name, typed_config=Any.pack(config))


# The network filter that serves HTTP: what split_bootstrap (dynamic.py) looks for too.
HCM_FILTER = "envoy.filters.network.http_connection_manager"


def manager_chains(manager: hcm.HttpConnectionManager) -> list[listener.FilterChain]:
    """A listener's one filter chain: ``manager`` serving HTTP on every connection."""
    return [
        listener.FilterChain(
            filters=[
                listener.Filter(
                    name=HCM_FILTER,
                    typed_config=Any.pack(manager),
                )
            ]
        )
    ]
