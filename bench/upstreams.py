"""What the load benchmark puts behind and beside the gateway: a fake provider fast enough
never to be the bottleneck, a streaming fake provider, and "Envoy alone" (the floor).

The fast provider is a second Envoy answering every request with a fixed chat.completion
(``direct_response``), or, at a path ending in ``/messages``, with a fixed Anthropic Messages
response: it costs a few microseconds per request, far less than anything in front of it.
The streaming provider must pause between chunks, which ``direct_response`` cannot, so it is
a small asyncio server run as its own process; it streams OpenAI's chunks (and the usage
chunk when the request asks for it), or Anthropic's events at a path ending in
``/messages``:

    python bench/upstreams.py stream --port PORT [--pause-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket

import yaml

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1764115200,
        "model": "gpt-5.2",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "A fixed answer from the bench."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 250, "completion_tokens": 8, "total_tokens": 258},
    },
    separators=(",", ":"),
)


# Anthropic's Messages API, as its native upstreams answer (a path ending in /messages).
MESSAGE = json.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "claude-bench",
        "content": [{"type": "text", "text": "A fixed answer from the bench."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 250, "output_tokens": 8},
    },
    separators=(",", ":"),
)
MESSAGES_PATH = r".*/messages"  # what the fakes answer in Anthropic's shape (query aside)


def _event(name: str, payload: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _anthropic_stream() -> tuple[bytes, bytes]:
    """Anthropic's event stream in two parts, as the API sends it: what comes at once (the
    message's start, its text block's start, a ping, the first text delta), then the rest
    (one more delta, the block's stop, message_delta with the stop reason and the final
    usage, message_stop)."""
    start: dict[str, object] = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "claude-bench",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 250, "output_tokens": 1},
    }

    def delta(text: str) -> bytes:
        return _event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            },
        )

    first = (
        _event("message_start", {"type": "message_start", "message": start})
        + _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        + _event("ping", {"type": "ping"})
        + delta("A fixed")
    )
    rest = (
        delta(" answer.")
        + _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 3},
            },
        )
        + _event("message_stop", {"type": "message_stop"})
    )
    return first, rest


def _chunk(content: str, finish: str | None = None, usage: bool = False) -> bytes:
    """One chat.completion.chunk; with ``usage``, the last one OpenAI sends when the request
    asked for ``stream_options.include_usage``: no choices, the usage."""
    delta = {"content": content} if content else {}
    event: dict[str, object] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1764115200,
        "model": "gpt-5.2",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        event["choices"] = []
        event["usage"] = {"prompt_tokens": 250, "completion_tokens": 3, "total_tokens": 253}
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


def _wants_usage(body: bytes) -> bool:
    if b"include_usage" not in body:
        return False
    options = json.loads(body).get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _address(port: int) -> dict[str, object]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _http_manager(stat_prefix: str, routes: list[dict[str, object]]) -> dict[str, object]:
    router = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
            "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": stat_prefix,
            "route_config": {
                "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]
            },
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    # As the gateway's router filter: no x-envoy-* timing headers.
                    "typed_config": {"@type": router, "suppress_envoy_headers": True},
                }
            ],
        },
    }


def _bootstrap(
    admin_port: int, listeners: list[dict[str, object]], clusters: list[dict[str, object]]
) -> str:
    return yaml.safe_dump(
        {
            "admin": {"address": _address(admin_port)},
            "static_resources": {"listeners": listeners, "clusters": clusters},
        },
        sort_keys=False,
    )


def fake_provider_bootstrap(port: int, admin_port: int, buffer_limit: int) -> str:
    """An Envoy that answers a path ending in ``/messages`` with ``MESSAGE`` and every other
    request with ``COMPLETION``."""
    json_type = [{"header": {"key": "content-type", "value": "application/json"}}]
    routes: list[dict[str, object]] = [
        {
            "match": {"safe_regex": {"regex": MESSAGES_PATH}},
            "direct_response": {"status": 200, "body": {"inline_string": MESSAGE}},
            "response_headers_to_add": json_type,
        },
        {
            "match": {"prefix": "/"},
            "direct_response": {"status": 200, "body": {"inline_string": COMPLETION}},
            "response_headers_to_add": json_type,
        },
    ]
    listener = {
        "name": "provider",
        "address": _address(port),
        "per_connection_buffer_limit_bytes": buffer_limit,
        "filter_chains": [{"filters": [_http_manager("provider", routes)]}],
    }
    return _bootstrap(admin_port, [listener], [])


def floor_bootstrap(admin_port: int, pairs: list[tuple[int, int]], buffer_limit: int) -> str:
    """Envoy alone: each (listen port, upstream port) pair is a plain proxy, with the same
    listener buffer limit and router settings as the gateway's Envoy."""
    listeners: list[dict[str, object]] = []
    clusters: list[dict[str, object]] = []
    for i, (listen, upstream) in enumerate(pairs):
        name = f"upstream_{i}"
        route: dict[str, object] = {
            "match": {"prefix": "/"},
            "route": {"cluster": name, "timeout": "0s"},
        }
        listeners.append(
            {
                "name": f"floor_{i}",
                "address": _address(listen),
                "per_connection_buffer_limit_bytes": buffer_limit,
                "filter_chains": [{"filters": [_http_manager(f"floor_{i}", [route])]}],
            }
        )
        clusters.append(
            {
                "name": name,
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": name,
                    "endpoints": [
                        {"lb_endpoints": [{"endpoint": {"address": _address(upstream)}}]}
                    ],
                },
            }
        )
    return _bootstrap(admin_port, listeners, clusters)


async def _serve_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pause: float
) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    done = b"data: [DONE]\n\n"
    openai = _chunk("A fixed"), _chunk(" answer.", "stop") + done
    with_usage = openai[0], _chunk(" answer.", "stop") + _chunk("", usage=True) + done
    anthropic = _anthropic_stream()
    try:
        while True:
            headers = await reader.readuntil(b"\r\n\r\n")
            target = headers.split(b" ", 2)[1].split(b"?", 1)[0]
            length = 0
            for line in headers.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            if target.endswith(b"/messages"):
                first, rest = anthropic
            else:
                first, rest = with_usage if _wants_usage(body) else openai
            writer.write(head + b"%x\r\n%s\r\n" % (len(first), first))
            await writer.drain()
            await asyncio.sleep(pause)
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve_stream(port: int, pause: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve_stream(r, w, pause), "127.0.0.1", port, limit=1 << 24, backlog=1024
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["stream"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pause-ms", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(serve_stream(args.port, args.pause_ms / 1000))


if __name__ == "__main__":
    main()
