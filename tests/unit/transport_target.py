"""A transport under attack, in its own process so its memory (RSS) can be read alone:
``python -m tests.unit.transport_target ENGINE LIMITS_JSON`` serves the real ext_proc
service (build_server) on 127.0.0.1, prints its port, and runs until stdin closes.

What it logs goes to stderr; the tests read it for tracebacks and internal errors."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from plano_extproc.config import parse_config
from plano_extproc.extproc.h2grpc import Limits
from plano_extproc.extproc.server import build_server

CONFIG = """
listeners:
  egress_traffic:
    max_body_size: 64KiB
llm_providers:
  - model: openai/gpt-5
    default: true
"""


async def main(engine: str, limits: Limits) -> None:
    config = parse_config(CONFIG, "t.yaml", {})
    server = build_server(config, "127.0.0.1:0", None, engine, limits=limits)  # type: ignore[arg-type]
    port = await server.start()
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    # Runs until the test closes our stdin (or dies).
    await loop.run_in_executor(None, sys.stdin.read)
    await server.stop(0)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(message)s")
    # Garbage that happens to be a well-framed message reaches the service, which answers
    # it with a 500 and logs the parse failure: that is the service at work, not the
    # transport, and would drown what the tests look for.
    logging.getLogger("plano_extproc.extproc.server").setLevel(logging.CRITICAL)
    asyncio.run(main(sys.argv[1], Limits(**json.loads(sys.argv[2]))))
