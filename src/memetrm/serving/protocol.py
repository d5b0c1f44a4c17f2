"""uvicorn's HTTP/1.1 protocol with a deadline for request headers.

uvicorn closes idle keep-alive connections but waits forever for a request whose headers
trickle in, so a few dozen slow clients hold every connection slot and even ``/health`` gets
503. Here a connection whose headers are not complete within ``header_timeout`` seconds of its
first byte (or of the connection opening) is closed. Body reads are bounded by the app's
body deadline (``Limits.body_timeout_s``).

Requests for ``RESERVED_PATHS`` (``/health``) are exempt from uvicorn's connection limit, so a
load balancer's probe is answered even while idle or hostile clients hold every slot.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

#: paths answered whatever the number of open connections (cheap, and needed by probes)
RESERVED_PATHS = frozenset({"/health"})


class HeaderTimeoutProtocol(H11Protocol):
    header_timeout: float = 10.0

    # uvicorn reads ``limit_concurrency`` right after it has parsed a request's target into
    # ``self.scope``; a reserved path sees no limit
    @property
    def limit_concurrency(self) -> int | None:
        scope = getattr(self, "scope", None)
        if scope is not None and scope.get("path") in RESERVED_PATHS:
            return None
        return self._limit_concurrency

    @limit_concurrency.setter
    def limit_concurrency(self, value: int | None) -> None:
        self._limit_concurrency = value

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._timed_cycle: object | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()  # a new request starts on a kept-alive connection
        super().data_received(data)
        if self.cycle is not None and self.cycle is not self._timed_cycle:
            self._disarm()  # the request line and headers are complete

    def _arm(self) -> None:
        self._timed_cycle = self.cycle
        self._header_timer = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def protocol_with_header_timeout(seconds: float) -> type[HeaderTimeoutProtocol]:
    """A protocol class for ``uvicorn.run(http=...)`` with the given header deadline."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": seconds})
