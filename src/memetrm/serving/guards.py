"""Shared bounds of a serving process: what many requests together may hold or start.

Per-request limits (body size, pixels per image, deadline) do not stop two dozen requests
that are each inside them from exhausting memory or CPU together. Here: a budget of decoded
pixels in flight across requests, work dropped once its client has gone, JSON parsing that
never blocks the event loop or turns into a 500, query strings kept out of the access log, and
freed memory given back to the OS.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive

T = TypeVar("T")

#: longest text field a meme may have, over HTTP and in batch rows (a meme's text is a few
#: sentences; a tokenizer handed megabytes takes seconds and gigabytes)
MAX_TEXT_CHARS = 2000


class PixelBudget:
    """Decoded pixels in flight across all requests; a request waits (on the event loop, within
    its deadline) for room, so N concurrent large images cost at most the budget, not N times
    one image. Used from the event loop only."""

    def __init__(self, pixels: int) -> None:
        self.total, self.used = pixels, 0
        self._waiters: list[asyncio.Future] = []

    async def acquire(self, pixels: int) -> int:
        """Wait for room for ``pixels`` (capped at the budget: a larger image was refused
        before); returns what to ``release``."""
        pixels = min(pixels, self.total)
        while self.used + pixels > self.total:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        self.used += pixels
        return pixels

    def release(self, pixels: int) -> None:
        self.used -= pixels
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self.used == 0 and pixels:
            release_free_memory()


async def in_thread(fn: Callable[..., T], *args: Any,
                    release: Callable[[], None] | None = None) -> T:
    """``fn(*args)`` in a worker thread; ``release`` runs when the thread ends, not when the
    awaiting request is cancelled (timed out, or its client gone): a thread cannot be stopped,
    so what it holds (an OCR slot, its pixels) stays counted until it is done."""
    task = asyncio.ensure_future(run_in_threadpool(fn, *args))

    def done(t: asyncio.Task) -> None:
        if not t.cancelled():
            t.exception()  # retrieved here: its request may have gone
        if release is not None:
            release()

    task.add_done_callback(done)
    return await asyncio.shield(task)


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def unless_disconnected(work: Coroutine[Any, Any, T], receive: Receive,
                              gone: threading.Event) -> T:
    """``work``, cancelled if the client disconnects first (then ``ClientGone``).

    Its waits end at once (for pixels, an OCR slot, or the batch queue, whose future the batcher
    then skips); a thread already running finishes and its result is dropped; ``gone`` is set
    so that threads not started yet skip their work. Call it once the body has been read: the
    next ASGI message is then the disconnect, or the end of the response.
    """
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        if (await receive())["type"] == "http.disconnect":
            gone.set()
            task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if gone.is_set() and current is not None and not current.cancelling():
            raise ClientGone from None
        raise  # cancelled from outside (its deadline): not the client's doing
    finally:
        watcher.cancel()


def header_pixels(data: bytes) -> int:
    """Width x height from the image header (nothing decoded); 0 if it cannot be read, which
    the decoder then reports properly."""
    import io

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            return w * h
    except Exception:  # any unreadable header: the decoder gives the real error
        return 0


def json_structure(raw: bytes) -> int:
    """Commas, colons and opening brackets in a body: a prediction body holds them only in its
    few text fields (base64 has none), so a body with far more is refused before parsing, which
    holds the interpreter lock for as long as it takes (0.5 s for 400,000 keys)."""
    return sum(raw.count(c) for c in (b",", b":", b"[", b"{"))


def parse_json(raw: bytes) -> Any:
    """``json.loads`` for untrusted bodies: deep nesting, huge integers and bad bytes are
    ``ValueError`` (a 400), never a ``RecursionError`` traceback. Run it in a worker thread."""
    try:
        return json.loads(raw)
    except RecursionError as e:
        raise ValueError("nested too deeply") from e
    except (UnicodeDecodeError, ValueError) as e:  # ValueError: also ints over 4,300 digits
        raise ValueError(str(e)) from e


class RedactQuery(logging.Filter):
    """Drops query strings from uvicorn's access log lines: they may carry tokens or keys."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) \
                and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[redacted]", *args[3:])
        return True


def redact_access_log() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuery) for f in logger.filters):
        logger.addFilter(RedactQuery())


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Let the server's many worker threads share a few heap arenas (glibc gives each thread its
    own, up to 8 per core), so memory freed after a burst is reusable and can be trimmed."""
    mallopt = getattr(_libc, "mallopt", None)
    if mallopt is not None:
        mallopt(-8, arenas)  # M_ARENA_MAX


def release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc keeps them per thread arena otherwise, so a
    burst of large decodes leaves the process holding gigabytes)."""
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
