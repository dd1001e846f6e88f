"""Port reservations (``facerank.ports``): the servers facerank starts can bind a reserved
port, nobody else can take it, and a port someone listens on fails at once, named.

The servers that bind reserved ports for real are covered where they run: waitress here and in
every ``facerank up`` test, KServe's uvicorn in every predictor test, TensorFlow's gRPC server
in the training tests (the launcher reserves its workers' ports).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from waitress.server import create_server

from facerank.errors import PortInUseError
from facerank.ports import reserve_port, reserved_port, reserved_ports
from facerank.supervisor import Component, Supervisor
from tests.plugins.cli import run_facerank


def test_a_reserved_port_is_refused_to_a_plain_bind_on_any_address() -> None:
    with reserve_port() as reservation:
        port = reserved_port(reservation)
        for host in ("127.0.0.1", "0.0.0.0"):  # noqa: S104 - a bind attempt, closed at once
            with socket.socket() as other, pytest.raises(OSError, match="in use") as refused:
                other.bind((host, port))
            assert refused.value.errno == errno.EADDRINUSE


def test_the_kernel_never_hands_out_a_reserved_port() -> None:
    """Neither to ``bind(0)`` nor as a connection's source port: what took the ports of the
    old probe-and-release ``free_port`` on a busy machine."""
    listener = socket.create_server(("127.0.0.1", 0))
    with reserved_ports(200) as ports, listener:
        reserved = set(ports)
        assert len(reserved) == 200
        taken = []
        for _ in range(200):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                taken.append(probe.getsockname()[1])
            with socket.create_connection(listener.getsockname()) as client:
                taken.append(client.getsockname()[1])
                listener.accept()[0].close()
        assert not reserved & set(taken)


def test_a_server_that_sets_so_reuseaddr_binds_the_reserved_port_and_serves() -> None:
    """waitress as every facerank function and the broker run it (``facerank.serving``)."""
    with reserved_ports(1) as [port]:
        server = create_server(_ok, host="127.0.0.1", port=port)
        try:
            assert int(server.effective_port) == port
            # waitress's loop runs here, a turn at a time, until the client has its reply:
            # closing a server whose loop runs in another thread breaks that loop's select.
            with ThreadPoolExecutor(1) as pool:
                reply = pool.submit(requests.get, f"http://127.0.0.1:{port}/", timeout=10)
                while not reply.done():
                    server.asyncore.loop(timeout=0.05, map=server._map, count=1)
                assert reply.result().text == "ok"
        finally:
            server.close()


def _ok(_environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def test_a_port_someone_listens_on_cannot_be_reserved_and_says_whose_it_is() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with pytest.raises(PortInUseError) as caught:
            reserve_port(port, purpose="FACERANK_ENROLL_PORT")
    assert caught.value.code == "port_in_use"
    assert f"port {port} (FACERANK_ENROLL_PORT)" in str(caught.value)


def test_the_supervisor_starts_nothing_when_a_port_is_taken(free_port: Callable[[], int]) -> None:
    """Every port is checked before the first component starts: no half-started pipeline.
    (Started, ``first`` would exit at once, a ``component_failed``: no such module.)"""
    first = Component("first", "no_such_module_here", free_port())
    with socket.create_server(("127.0.0.1", 0)) as listener:
        second = Component("second", "no_such_module_either", listener.getsockname()[1])
        with (
            Supervisor([first, second], env={}) as supervisor,
            pytest.raises(PortInUseError) as caught,
        ):
            supervisor.start()
    assert "(the second port)" in str(caught.value)


def test_facerank_up_names_the_port_that_is_taken(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        result = run_facerank(
            "up", data_dir=tmp_path, env={"FACERANK_ENROLL_PORT": str(port)}, check=False
        )
    assert result.returncode == 2
    assert f"port_in_use: port {port} (the enroll port) is in use" in result.stderr
    assert "enroll |" not in result.stderr  # no component started
