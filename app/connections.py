"""Connections with deadlines: uvicorn's HTTP protocols with a bound on time and size before a
request's head is whole, and the ops port's app.

uvicorn runs no timer before a connection's first response, and its keep-alive timer stops at
the first byte of the next request: a socket that sends part of a request head, or nothing, stays
open for ever and counts against ``limit_concurrency`` (a few hundred of them and every request,
probes included, gets 503). httptools, auto's choice, also buffers a head of any size before the
middleware can count it. Here, whichever parser runs:

- a request head must be whole within ``header_timeout_s``: of the connection's opening for its
  first request, of the first byte of a later one that arrives in pieces (the time between
  requests is uvicorn's keep-alive timer, ``keep_alive_s``). Else the connection is closed.
- the bytes received before the head is whole are counted as they arrive: past
  ``max_header_bytes`` the answer is 431 with ``connection: close``, having read at most the limit
  plus one read of the socket (asyncio reads 256 KiB at most).

The cost per request is two state checks per read (with h11, also a look at its buffer after each
response): a head that arrives whole in one read (nearly every head) never arms a timer; one timer
handle per connection, and one per head that arrives in pieces.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol

from .api.errors import render

OPS_PATHS = frozenset(("/health", "/ready", "/metrics"))
OPS_LIMIT_CONCURRENCY = 32  # connections to the ops port before 503: probes and a scraper need a few


class HeadDeadline:
    """What both protocols share; a subclass of one of uvicorn's HTTP protocols mixes it in."""

    header_timeout_s: float = 5.0
    max_header_bytes: int = 16_384
    # uvicorn's protocols have these
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    flow: FlowControl
    cycle: Any

    _head_timer = None  # asyncio.TimerHandle while a head is awaited in pieces
    _head_bytes = 0  # bytes of the head awaited, counted as they arrive

    def connection_made(self, transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_expired)

    def connection_lost(self, exc) -> None:
        super().connection_lost(exc)  # type: ignore[misc]
        self._disarm()

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _in_flight(self) -> bool:
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    def _track(self, counting: bool, awaiting: bool, n: int) -> None:
        """After a read of ``n`` bytes: ``counting``, the read belongs to the head awaited (it was
        awaited before the read and no message ended inside it); ``awaiting``, a head is awaited now."""
        if not awaiting:  # the head is whole (or the connection failed)
            self._head_bytes = 0
            if self._head_timer is not None:
                self._disarm()
            return
        if self.transport.is_closing():
            return
        self._head_bytes = self._head_bytes + n if counting else 0
        if self._head_bytes > self.max_header_bytes:
            self._refuse()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_expired)

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._in_flight():  # a pipelined head awaited while the response before it runs: that first
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_expired)
        else:
            self.transport.close()

    def _refuse(self) -> None:
        if self._in_flight():  # not into the middle of a response: stop reading, refuse after it
            self.flow.pause_reading()
            return
        self._disarm()
        body = render(431, "payload_too_large", f"the request line and headers passed the "
                      f"{self.max_header_bytes:,}-byte limit before they ended").body
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        self.transport.close()


class H11WithDeadlines(HeadDeadline, H11Protocol):
    """h11 awaits a head exactly when the client's side of the connection is IDLE."""

    def data_received(self, data: bytes) -> None:
        counting = self.conn.their_state is h11.IDLE
        super().data_received(data)
        self._track(counting, self.conn.their_state is h11.IDLE, len(data))

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The start of a pipelined head, read while the response ran, waits in h11's buffer: its
        # deadline starts now (a head that came whole is parsed by now, the state no longer IDLE).
        if (self._head_timer is None and self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]
                and not self.transport.is_closing()):
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_expired)

    def send_400_response(self, msg: str) -> None:
        # h11's own bound on an incomplete head (h11_max_incomplete_event_size = max_header_bytes)
        # fails the parse before _track counts the read: a 431 too. What h11 holds is that head.
        if len(self.conn.trailing_data[0]) > self.max_header_bytes:
            self._refuse()
        else:
            super().send_400_response(msg)


def _httptools_class():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsWithDeadlines(HeadDeadline, HttpToolsProtocol):
        """httptools says where a head ends (on_headers_complete) and where the next may begin
        (on_message_complete), in callbacks during a read."""

        _awaiting = True
        _counting = True

        def data_received(self, data: bytes) -> None:
            self._counting = self._awaiting
            super().data_received(data)
            self._track(self._counting, self._awaiting, len(data))

        def on_headers_complete(self) -> None:
            self._awaiting = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._awaiting = True
            self._counting = False  # the next head begins inside this read: counted from the next one
            super().on_message_complete()

    return HttpToolsWithDeadlines


def protocol_class(http: str, header_timeout_s: float, max_header_bytes: int) -> type:
    """The protocol for the ``http`` setting (auto: httptools when installed, as uvicorn picks),
    with these limits."""
    base: type = H11WithDeadlines
    if http != "h11":
        try:
            base = _httptools_class()
        except ImportError:
            if http == "httptools":
                raise
    return type(base.__name__, (base,), {"header_timeout_s": header_timeout_s, "max_header_bytes": max_header_bytes})


def ops_app(app):
    """The ops port's app: the probes and /metrics of ``app`` (same service, middleware and
    handlers), any other path a 404."""

    async def ops(scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPS_PATHS:
            response = render(404, "not_found", f"the ops port serves {', '.join(sorted(OPS_PATHS))}")
            await response(scope, receive, send)
            return
        await app(scope, receive, send)

    return ops
