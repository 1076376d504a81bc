"""Socket timeouts kept by the kernel, for the stores that own their sockets.

A Python socket with a timeout runs ``poll`` before every ``send`` and
``recv``: two more system calls per round trip, which on the benchmark
machine cost 5 to 9 µs a request. A blocking socket with ``SO_RCVTIMEO`` and
``SO_SNDTIMEO`` waits the same bounded time inside the call itself. When it
expires the call fails with ``EAGAIN``, raised as ``BlockingIOError``: callers
treat that as the timeout it is.
"""

from __future__ import annotations

import socket
import struct
import sys
import types
import typing as t


def set_timeout(sock: socket.socket, timeout: float | None) -> None:
    """Bound every later send and receive on ``sock`` by ``timeout`` seconds (None: wait for ever)."""
    # socket.socket's own settimeout: ``sock`` may be a _KernelTimeoutSocket.
    if timeout is None or sys.platform == "win32":  # Windows takes milliseconds, not a timeval
        socket.socket.settimeout(sock, timeout)
        return
    micros = max(1, round(timeout * 1e6))  # an all-zero timeval means no timeout at all
    timeval = struct.pack("ll", *divmod(micros, 1_000_000))
    socket.socket.settimeout(sock, None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


class _KernelTimeoutSocket(socket.socket):
    """A socket whose timeout, once connected, is kept by the kernel (see the module docstring)."""

    _connected = False

    def connect(self, address: t.Any) -> None:
        super().connect(address)
        self._connected = True

    def settimeout(self, value: float | None) -> None:
        if self._connected:
            set_timeout(self, value)
        else:  # connecting: the Python timeout bounds connect() itself
            super().settimeout(value)


def kernel_timeout_module() -> types.ModuleType:
    """``socket``, but making sockets whose timeout after ``connect`` is the kernel's.

    For clients that take a socket module (pymemcache's ``socket_module``) and
    call ``settimeout`` once to connect and once after.
    """
    module = types.ModuleType("flask_satchel_socket")
    module.__dict__.update(socket.__dict__)
    module.socket = _KernelTimeoutSocket  # type: ignore[attr-defined]
    return module
