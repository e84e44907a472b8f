"""Read deadlines for the demo server: a connection must send its request headers within
``HEADER_SECONDS`` and its whole body within ``BODY_SECONDS``, or it is closed.

Why: uvicorn only times out idle keep-alive connections *after* a response; a client that connects and
sends nothing, trickles its headers a byte at a time, or uploads one byte every two seconds holds a
connection (and, for uploads, a spooled temp file) for as long as it likes. Each of a few hundred such
connections costs the demo a socket and memory; a local demo should shrug them off.

The deadlines live in a subclass of uvicorn's h11 protocol (``uvicorn.run(http=TimedH11Protocol)``): they
are armed when a connection opens and when a response completes (the next request's headers), re-armed
for the body once a request's headers are in, and cleared when the client has sent everything.
"""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_SECONDS = 10.0
BODY_SECONDS = 60.0


class TimedH11Protocol(H11Protocol):
    header_seconds = HEADER_SECONDS
    body_seconds = BODY_SECONDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = None

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            self.transport.close()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_seconds)

    def data_received(self, data: bytes) -> None:
        idle = self.cycle is None or self.cycle.response_complete
        super().data_received(data)
        if self.transport.is_closing():
            self._disarm()
        elif self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
            self._disarm()  # everything is in: the answer may take as long as it takes
        elif idle and self.cycle is not None and not self.cycle.response_complete:
            self._arm(self.body_seconds)  # headers are in: now the body
        elif self._deadline is None:
            self._arm(self.header_seconds)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm(self.header_seconds)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)
