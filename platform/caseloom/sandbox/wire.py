"""Messages between the parent and a worker: length-prefixed JSON over the worker's pipes.

JSON, not pickle, in both directions: unpickling is code execution, and the parent must be
able to read whatever a worker sends without trusting it. Reads take a deadline and a size
limit, so a worker that stalls or floods is stopped rather than waited for.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import select
import struct
import time
from decimal import Decimal
from typing import Any

HEADER = struct.Struct(">I")
CHUNK = 1 << 20


class WireClosed(Exception):
    """The other side closed its pipe (a worker that exited or was killed)."""


class WireTimeout(Exception):
    """No complete message before the deadline."""


class MessageTooLarge(Exception):
    def __init__(self, size: int):
        self.size = size
        super().__init__(f"message of {size} bytes")


def plain(value: Any) -> Any:
    """JSON's `default`: the plain form of dates, decimals and sets; anything else is refused."""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not plain data (use str, int, float, bool, None, lists and dicts)")


def encode(message: Any) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=plain).encode("utf-8")


def send(fd: int, payload: bytes, deadline: float | None = None) -> None:
    """Write one message (already encoded) to `fd`; on a non-blocking `fd`, give up at `deadline`."""
    _write_all(fd, HEADER.pack(len(payload)), deadline)
    _write_all(fd, payload, deadline)


def _write_all(fd: int, data: bytes, deadline: float | None) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:  # the reader is not keeping up: wait, but not past the deadline
            _wait(fd, select.POLLOUT, deadline)


def _wait(fd: int, event: int, deadline: float | None) -> None:
    poller = select.poll()  # poll, not select: a server's descriptors may number over 1024
    poller.register(fd, event | select.POLLHUP | select.POLLERR)
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise WireTimeout()
        if poller.poll(None if remaining is None else math.ceil(remaining * 1000)):
            return


class Reader:
    """Reads whole messages from one file descriptor."""

    def __init__(self, fd: int):
        self.fd = fd

    def read(self, deadline: float | None = None, max_bytes: int | None = None) -> Any:
        """The next message, or None when the writer has closed its end between messages."""
        header = self._exactly(HEADER.size, deadline, eof_ok=True)
        if header is None:
            return None
        (size,) = HEADER.unpack(header)
        if max_bytes is not None and size > max_bytes:
            raise MessageTooLarge(size)
        return json.loads(self._exactly(size, deadline))

    def _exactly(self, n: int, deadline: float | None, eof_ok: bool = False) -> bytes | None:
        data = bytearray()
        while len(data) < n:
            if deadline is not None:
                _wait(self.fd, select.POLLIN, deadline)
            chunk = os.read(self.fd, min(n - len(data), CHUNK))
            if not chunk:
                if eof_ok and not data:
                    return None
                raise WireClosed()
            data += chunk
        return bytes(data)
