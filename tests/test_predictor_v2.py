"""The predictor's Open Inference Protocol (V2) through KServe's own clients, REST and gRPC.

One ``python -m inference`` per module (the lbp-v0 model, the astronaut enrolled) with the API
token set and gRPC on its own port: the model metadata must describe exactly what inference
returns, both transports must rank, and gRPC must refuse the callers REST refuses.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import grpc
import numpy as np
import pytest
import requests
from kserve import InferInput, InferRequest, InferResponse
from kserve.inference_client import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from facerank.auth import authorization_header
from facerank.errors import ConfigError
from facerank.ports import reserved_ports
from facerank.settings import Settings
from facerank.supervisor import Component, Supervisor
from inference.v2 import OUTPUTS, VARIABLE
from tests.plugins.enroller import Enroller
from tests.plugins.faces import encode, variant

pytestmark = pytest.mark.slow

TOKEN = "v2-grpc-test-token-" + "x" * 8
SERVICE = "/inference.GRPCInferenceService/"
T = TypeVar("T")


@dataclass
class Server:
    rest_url: str
    grpc_target: str

    @property
    def headers(self) -> dict[str, str]:
        return authorization_header(TOKEN)

    @property
    def grpc_headers(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("predictor-v2")
    Enroller(Settings(data_dir=data_dir)).add("astronaut/eileen.jpg", astronaut)
    with reserved_ports(2) as [port, grpc_port]:
        yield from _server(data_dir, port, grpc_port)


def _server(data_dir: Path, port: int, grpc_port: int) -> Iterator[Server]:
    env = {
        "FACERANK_DATA_DIR": str(data_dir),
        "FACERANK_API_TOKEN": TOKEN,
        "FACERANK_PREDICTOR_GRPC_PORT": str(grpc_port),
        "FACERANK_OPEN_SET_FAR": "0",
    }
    predictor = Component("predictor", "inference", port, health_path="/v1/models/facerank")
    with Supervisor([predictor], env=env) as supervisor:
        supervisor.start()
        yield Server(predictor.url, f"127.0.0.1:{grpc_port}")


@pytest.fixture(scope="module")
def query(astronaut: np.ndarray) -> bytes:
    """Another shot of the enrolled face."""
    crop = astronaut[10:400, 60:460]
    return encode(variant(cv2.resize(crop, (640, 480)), np.random.default_rng(7)), "JPEG")


def infer_request(image: bytes, *, top_k: int | None = None, **kwargs: Any) -> InferRequest:
    """``image`` as KServe's client sends it (base64 text, see inference/v2.py); ``top_k`` as
    the optional INT32 input the metadata describes."""
    tensor = InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([base64.b64encode(image)], dtype=np.object_))
    inputs = [tensor]
    if top_k is not None:
        k = InferInput("top_k", [1], "INT32")
        k.set_data_from_numpy(np.array([top_k], dtype=np.int32))
        inputs.append(k)
    return InferRequest("facerank", inputs, **kwargs)


def run(call: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(call())  # type: ignore[arg-type]


def rest_infer(server: Server, request: InferRequest) -> InferResponse:
    async def call() -> InferResponse:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        try:
            return await client.infer(
                server.rest_url, request, model_name="facerank", headers=server.headers
            )
        finally:
            await client.close()

    return run(call)


def grpc_infer(
    server: Server, request: InferRequest, headers: tuple[tuple[str, str], ...] | None
) -> InferResponse:
    async def call() -> InferResponse:
        async with InferenceGRPCClient(server.grpc_target, retries=0) as client:
            return await client.infer(request, headers=headers)

    return run(call)


def grpc_metadata(
    server: Server, headers: tuple[tuple[str, str], ...] | None
) -> pb.ModelMetadataResponse:
    """KServe's clients have no metadata call: KServe's generated stub has."""

    async def call() -> pb.ModelMetadataResponse:
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            stub = GRPCInferenceServiceStub(channel)
            request = pb.ModelMetadataRequest(name="facerank")
            return await stub.ModelMetadata(request, metadata=headers, timeout=30)

    return run(call)


def rest_metadata(server: Server) -> dict[str, Any]:
    response = requests.get(
        f"{server.rest_url}/v2/models/facerank", headers=server.headers, timeout=30
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def tensors(items: Any) -> list[tuple[str, str, list[int]]]:
    return [(t["name"], t["datatype"], list(t["shape"])) for t in items]


# --- metadata -------------------------------------------------------------------------------


def test_rest_metadata_describes_inputs_outputs_platform_and_version(server: Server) -> None:
    metadata = rest_metadata(server)
    assert metadata["name"] == "facerank"
    assert metadata["platform"] == "facerank"
    assert metadata["versions"] == ["lbp-v0"]
    assert tensors(metadata["inputs"]) == [("image", "BYTES", [-1]), ("top_k", "INT32", [1])]
    assert tensors(metadata["outputs"]) == [
        ("box", "INT32", [-1, 4]),
        ("confidence", "FP32", [-1]),
        ("detector", "BYTES", [-1]),
        ("image_index", "INT32", [-1]),
        ("face_index", "INT32", [-1]),
        ("identity", "BYTES", [-1]),
        ("face_id", "BYTES", [-1]),
        ("distance", "FP32", [-1]),
        ("similarity", "FP32", [-1]),
        ("match", "BOOL", [-1]),
    ]


def test_grpc_metadata_is_the_rest_metadata(server: Server) -> None:
    reply = grpc_metadata(server, server.grpc_headers)
    expected = rest_metadata(server)
    assert (reply.name, reply.platform, list(reply.versions)) == (
        expected["name"],
        expected["platform"],
        expected["versions"],
    )
    assert tensors(_tensor_dicts(reply.inputs)) == tensors(expected["inputs"])
    assert tensors(_tensor_dicts(reply.outputs)) == tensors(expected["outputs"])


def _tensor_dicts(items: Any) -> list[dict[str, Any]]:
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]


def test_metadata_describes_every_output_inference_returns(server: Server, query: bytes) -> None:
    """Names, order, datatypes and fixed dimensions as described; -1 where sizes vary."""
    described = tensors(rest_metadata(server)["outputs"])
    response = rest_infer(server, infer_request(query, top_k=2))
    returned = [(o.name, o.datatype, list(o.shape)) for o in response.outputs]
    assert [name for name, _, _ in returned] == [name for name, _, _ in described]
    for (name, datatype, shape), (_, want_type, want_shape) in zip(
        returned, described, strict=True
    ):
        assert datatype == want_type, name
        assert len(shape) == len(want_shape), name
        assert all(w in (VARIABLE, s) for s, w in zip(shape, want_shape, strict=True)), name
    assert len(OUTPUTS) == len(returned)


# --- ranking --------------------------------------------------------------------------------


@pytest.mark.parametrize("top_k", ["input", "parameter"])
def test_grpc_client_ranks_the_astronaut(server: Server, query: bytes, top_k: str) -> None:
    request = (
        infer_request(query, top_k=1)
        if top_k == "input"
        else infer_request(query, parameters={"top_k": 1})
    )
    response = grpc_infer(server, request, server.grpc_headers)
    assert response.model_version == "lbp-v0"
    assert response.parameters["model_version"].string_param == "lbp-v0"
    assert response.get_output_by_name("identity").as_numpy().tolist() == [b"astronaut"]
    assert response.get_output_by_name("box").shape == [1, 4]
    assert response.get_output_by_name("face_index").as_numpy().tolist() == [0]


def test_rest_client_ranks_with_top_k_as_input_or_parameter(server: Server, query: bytes) -> None:
    as_input = rest_infer(server, infer_request(query, top_k=1))
    as_parameter = rest_infer(server, infer_request(query, parameters={"top_k": 1}))
    for response in (as_input, as_parameter):
        assert response.get_output_by_name("identity").as_numpy().tolist() == ["astronaut"]
    distance = [
        r.get_output_by_name("distance").as_numpy().tolist() for r in (as_input, as_parameter)
    ]
    assert distance[0] == distance[1]


def test_top_k_given_twice_is_refused(server: Server, query: bytes) -> None:
    request = infer_request(query, top_k=1, parameters={"top_k": 2})
    with pytest.raises(grpc.RpcError) as refused:
        grpc_infer(server, request, server.grpc_headers)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "top_k given twice" in str(refused.value.details())


# --- the token ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [None, (("authorization", "Bearer not-the-token-at-all"),), (("authorization", TOKEN),)],
    ids=["no token", "wrong token", "no Bearer scheme"],
)
def test_grpc_refuses_without_the_token(
    server: Server, query: bytes, headers: tuple[tuple[str, str], ...] | None
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        grpc_infer(server, infer_request(query), headers)
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as metadata_refused:
        grpc_metadata(server, headers)
    assert metadata_refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_rest_metadata_needs_the_token_too(server: Server) -> None:
    response = requests.get(f"{server.rest_url}/v2/models/facerank", timeout=30)
    assert response.status_code == 401


def test_grpc_readiness_needs_no_token(server: Server) -> None:
    """Probes hold no secret: the gRPC twins of the open REST health paths stay open."""

    async def call() -> tuple[bool, bool, bool]:
        async with InferenceGRPCClient(server.grpc_target, retries=0) as client:
            return (
                await client.is_server_live(),
                await client.is_server_ready(),
                await client.is_model_ready("facerank"),
            )

    assert run(call) == (True, True, True)


def relayed_until(capfd: pytest.CaptureFixture[str], *markers: str) -> str:
    """The predictor's output relayed by the supervisor until every marker has appeared."""
    output = ""
    deadline = time.monotonic() + 30
    while not all(marker in output for marker in markers):
        assert time.monotonic() < deadline, output
        time.sleep(0.05)
        output += capfd.readouterr().err
    return output


def fence_call(server: Server) -> str:
    """A request whose access line marks where the lines of earlier calls end."""
    fence = f"fence-{uuid.uuid4().hex[:8]}"
    requests.post(
        f"{server.rest_url}/v1/models/facerank:predict",
        json=[1],
        headers={**server.headers, "X-Request-ID": fence},
        timeout=30,
    )
    return f"request_id={fence}"


def test_a_refused_grpc_call_is_one_log_line(
    server: Server, query: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    with pytest.raises(grpc.RpcError):
        grpc_infer(server, infer_request(query), None)
    # Logged before the refusal is sent: it precedes the fence call's line.
    lines = relayed_until(capfd, fence_call(server)).splitlines()
    mine = [line for line in lines if f"{SERVICE}ModelInfer" in line]
    assert len(mine) == 1, lines
    assert "refused gRPC /inference.GRPCInferenceService/ModelInfer from" in mine[0]
    assert "no valid API token" in mine[0]
    assert TOKEN not in "\n".join(lines)


def test_a_grpc_rejection_is_one_access_line_with_its_code(
    server: Server, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    request = infer_request(b"not an image")
    with pytest.raises(grpc.RpcError) as refused:
        grpc_infer(server, request, (*server.grpc_headers, ("x-request-id", "grpc-bad-1")))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not_an_image" in str(refused.value.details())
    # The access line is written as the call unwinds, maybe after the client has its status:
    # wait for it and for the next call's line, after which nothing more of it can come.
    output = relayed_until(capfd, "request_id=grpc-bad-1", fence_call(server))
    mine = [line for line in output.splitlines() if "grpc-bad-1" in line]
    assert len(mine) == 1, output
    assert f"GRPC {SERVICE}ModelInfer INVALID_ARGUMENT not_an_image " in mine[0]
    assert "Traceback" not in output


# --- start-up -------------------------------------------------------------------------------


def test_a_taken_grpc_port_stops_the_start_in_one_line(
    tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """Held with SO_REUSEPORT, as another gRPC server holds it: gRPC's default would share the
    port and its calls; the predictor must refuse to start instead, saying why."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = {
            **os.environ,
            "FACERANK_DATA_DIR": str(tmp_path),
            "FACERANK_PREDICTOR_GRPC_PORT": str(port),
            "PORT": str(free_port()),
        }
        done = subprocess.run(
            [sys.executable, "-m", "inference"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1, done.stderr[-3000:]
    [line] = [line for line in done.stderr.splitlines() if "gRPC cannot listen" in line]
    assert f"127.0.0.1:{port}" in line
    assert "Traceback" not in done.stderr


# --- settings -------------------------------------------------------------------------------


def test_grpc_port_zero_is_off_and_out_of_range_refused() -> None:
    assert Settings.from_env({"FACERANK_PREDICTOR_GRPC_PORT": "0"}).predictor_grpc_port == 0
    with pytest.raises(ConfigError, match="FACERANK_PREDICTOR_GRPC_PORT"):
        Settings.from_env({"FACERANK_PREDICTOR_GRPC_PORT": "70000"})
