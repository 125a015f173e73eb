"""Big request bodies are read in a helper process: the event loop never holds a long parse.

The json module's C parser holds the GIL for a whole parse (a 15 MB body: 30-330 ms
measured), so a thread would stall the event loop as much. A body over ``BIG_BODY_BYTES``
goes to a small pool of processes started with the server, inside the ext_proc message as
it came (the server finds the body in it without parsing it: processor.request_body_span); a
helper runs ``read_chat_request`` (pure, resolve.py) and sends back only what the decision
needs: the error, or the model, the turns a router reads and where the model goes in the
body (byte offsets). The server splices the model into the bytes it already holds. Smaller
bodies are parsed in place: for them the round trip would cost more than the parse.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..errors import ErrorReply
from ..resolve import ChatRequest, attach_body, read_chat_request
from ..router.conversation import Reading

log = logging.getLogger("plano_extproc.offload")

# Parsed in place below this: about 1 ms of parse at worst (bodies of numbers parse at
# 50 MB/s, chat text at 300-500 MB/s), against 0.5-1 ms for a round trip to a helper.
BIG_BODY_BYTES = 256 * 1024


def helper_count(cores: int) -> int:
    """How many helpers read big bodies: one, or two where a core is left for the server and
    its router besides them."""
    return max(1, min(2, cores - 1))


class ReaderFailed(Exception):
    """The helper process died (it is replaced for the next body)."""


class BodyReader:
    """A pool of helper processes that read big bodies (``read_chat_request``)."""

    def __init__(self, reading: Reading, workers: int = 1) -> None:
        self.reading = reading
        self._workers = workers
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the server has threads (the router's, onnxruntime's) that a fork
        # would copy mid-flight.
        return ProcessPoolExecutor(
            self._workers,
            multiprocessing.get_context("spawn"),
            initializer=_helper_started,
            initargs=(os.getpid(),),
        )

    def start(self) -> None:
        """Start the helpers and wait until they are ready (they import the parser), so the
        first big body does not pay for it."""
        futures = [
            self._pool.submit(read_chat_request, b"{}", self.reading) for _ in range(self._workers)
        ]
        for future in futures:
            future.result()

    async def read(self, message: bytes, span: tuple[int, int]) -> ChatRequest | ErrorReply:
        """The body at ``message[span[0]:span[1]]`` read by a helper; the request keeps a
        view of ``message`` (no copy of the body here)."""
        loop = asyncio.get_running_loop()
        pool = self._pool
        try:
            request = await loop.run_in_executor(pool, _read, message, span, self.reading)
        except BrokenProcessPool:
            if self._pool is pool:  # the first of the reads it failed replaces it
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            raise ReaderFailed("the helper process that reads big bodies died") from None
        if isinstance(request, ErrorReply):
            return request
        return attach_body(request, memoryview(message)[span[0] : span[1]])

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _read(message: bytes, span: tuple[int, int], reading: Reading) -> ChatRequest | ErrorReply:
    # In the helper: the slice is its own copy, not the server's.
    return read_chat_request(message[span[0] : span[1]], reading)


def _helper_started(server_pid: int) -> None:
    # Ctrl-C reaches the whole process group: the server stops its helpers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(server_pid,), daemon=True).start()


def _exit_with(server_pid: int) -> None:
    # A helper waits for work on a pipe it holds both ends of: a server that was killed
    # (SIGKILL, the OOM killer) would leave it waiting for ever.
    while os.getppid() == server_pid:
        time.sleep(1.0)
    os._exit(0)
