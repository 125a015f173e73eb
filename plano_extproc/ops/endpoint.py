"""The gateway's one scrape endpoint: ``GET /metrics`` answers the server's metrics followed
by Envoy's own stats in Prometheus' format.

Envoy's stats come from its admin API (``/stats/prometheus?usedonly``), fetched per scrape
over the admin's owner-only Unix socket (or 127.0.0.1 port), which stays off the network:
the admin API can stop Envoy or raise its log level until it logs keys, so this endpoint
forwards that one GET and nothing else. Any other method or path is a 404.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
from collections.abc import Awaitable, Callable

from .. import unix_http
from . import metrics

log = logging.getLogger("plano_extproc.metrics")

PATH = b"/metrics"
ENVOY_STATS = "/stats/prometheus?usedonly"
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
# A scrape waits this long for Envoy's stats, then answers without them.
ENVOY_TIMEOUT_S = 2.0
_MAX_REQUEST = 8192
# Connections served at once (more are closed at once), and how long one may take to send
# its request.
MAX_CLIENTS = 8
REQUEST_TIMEOUT_S = 10.0


async def envoy_stats(admin: str, timeout: float = ENVOY_TIMEOUT_S) -> bytes | None:
    """Envoy's stats from its admin API at ``admin`` (a Unix socket's path, or HOST:PORT);
    None when it does not answer (Envoy starting or gone). Read by http.client in a thread:
    the admin speaks HTTP/1.1 only and may send the stats chunked."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, _fetch, admin, timeout)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        log.warning("Envoy's stats could not be read from %s: %s", admin, exc)
        return None


def _fetch(admin: str, timeout: float) -> bytes:
    status, body = unix_http.request(admin, "GET", ENVOY_STATS, timeout)
    if status != 200:
        raise ValueError(f"the admin answered {status}")
    return body


def handler(
    admin: str | None, exposition: Callable[[], bytes] = metrics.exposition
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    clients = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal clients
        if clients >= MAX_CLIENTS:
            # A scraper needs one connection; past a few, they are not scrapers (the port is
            # on the pod's address): each would hold a read and an admin fetch.
            writer.close()
            return
        clients += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            method, _, rest = head.partition(b" ")
            target = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method != b"GET" or target != PATH:
                writer.write(_response(b"404 Not Found", b"text/plain", b"not found\n"))
            else:
                body = exposition()
                if admin is not None:
                    stats = await envoy_stats(admin)
                    if stats is not None:
                        body += stats
                writer.write(_response(b"200 OK", CONTENT_TYPE, body))
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            clients -= 1
            writer.close()

    return serve


def _response(status: bytes, content_type: bytes, body: bytes) -> bytes:
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\nContent-Type: ",
            content_type,
            b"\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\nConnection: close\r\n\r\n",
            body,
        )
    )


async def start(listen: str, admin: str | None) -> asyncio.Server:
    """The endpoint on ``listen`` (HOST:PORT), with Envoy's stats from ``admin`` if given."""
    host, port = listen.rsplit(":", 1)
    try:
        return await asyncio.start_server(
            handler(admin), host.strip("[]"), int(port), limit=_MAX_REQUEST
        )
    except OSError as exc:
        raise OSError(f"cannot listen on {listen} for metrics: {exc.strerror}") from exc
