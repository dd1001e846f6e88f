"""Port reservations: how a parent hands a port to a child process without a race.

A parent that picks a free port, closes its probe and tells a child to bind it later loses the
port to anyone who binds or connects in between: an outgoing connection's source port, another
test's server (CI: the event source died with ``Address already in use``). Every server facerank
starts as a process binds the port it is told itself, including the two that cannot be handed
a listening socket: KServe's ModelServer (uvicorn binds ``0.0.0.0:PORT`` inside
``ModelServer.start``) and TensorFlow's gRPC server (it binds the port named in ``TF_CONFIG``).

So the parent *reserves* the port instead: a socket bound to it on every IPv4 address with
``SO_REUSEADDR``, never listening, held until the child is gone. Linux then refuses the port to
any socket bound without ``SO_REUSEADDR``, never picks it for ``bind(0)`` or for a ``connect()``
source port (both skip ports with a bound socket), yet lets a server that sets
``SO_REUSEADDR`` bind and listen on it, because no socket there listens yet. waitress, uvicorn
(asyncio) and gRPC all set it (``tests/test_ports.py`` checks all three and the refusals). A
reservation stays useful after the child listens: a restarted child binds the same port again
while nobody else can take it. A port someone already *listens* on cannot be reserved: that is
:class:`PortInUseError` at once, naming the port, instead of a child that dies starting.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from facerank.errors import PortInUseError

ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - a reservation listens nowhere
"""Reservations cover every IPv4 address: KServe and TensorFlow bind all interfaces whatever
they are told, and a loopback server's port must not be taken on another address either."""


def reserve_port(port: int = 0, *, purpose: str = "") -> socket.socket:
    """A non-listening socket holding ``port`` (0: one the kernel picks, see ``getsockname``).

    Raises :class:`PortInUseError` when something listens on ``port`` already; ``purpose``
    (e.g. ``FACERANK_ENROLL_PORT``) says in the message whose port that is.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ALL_INTERFACES, port))
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        whose = f" ({purpose})" if purpose else ""
        raise PortInUseError(f"port {port}{whose} is in use by another process") from exc
    return sock


def reserved_port(sock: socket.socket) -> int:
    """The port a reservation holds."""
    return int(sock.getsockname()[1])


@contextmanager
def reserved_ports(count: int) -> Iterator[list[int]]:
    """``count`` distinct ports, reserved until the block ends."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(reserve_port()) for _ in range(count)]
        yield [reserved_port(sock) for sock in sockets]
