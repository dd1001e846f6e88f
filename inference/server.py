"""The predictor's KServe ModelServer: V1 and V2 over REST, V2 over gRPC on a port of its own.

Why a subclass of KServe's ModelServer rather than the stock one:

* KServe 0.21 answers model metadata with an empty ``platform`` and no ``versions``
  (``DataPlane.model_metadata``), and its gRPC servicer drops ``versions`` even when given.
  Open Inference Protocol clients read the metadata to build requests, and the served model
  version changes on a switch: :class:`MetadataDataPlane` and :class:`MetadataServicer` add
  what :meth:`inference.model.FacerankModel.describe` says.
* KServe builds its gRPC server inside ``start`` with fixed interceptors: one log line per
  call naming only the method, and no way to add a check. The predictor's REST routes require
  the API token (:class:`facerank.auth.BearerTokenMiddleware`); gRPC must refuse the same
  callers, so :class:`PredictorGRPCServer` is KServe's own server, servicer and error mapping
  with facerank's interceptors in front: the token (metadata ``authorization``) and one access
  line per call, the same line REST writes.

Both servers share one event loop and one model, as in KServe's own ``start``.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc import aio
from grpc_interceptor import AsyncServerInterceptor
from kserve import ModelServer
from kserve.model import BaseKServeModel
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import add_GRPCInferenceServiceServicer_to_server
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer

from facerank.auth import MESSAGE, is_authorized
from facerank.requestlog import request_id
from inference.access_log import log_access, rejection_noted
from inference.model import FacerankModel

log = logging.getLogger("inference")

SERVICE = "/inference.GRPCInferenceService/"
OPEN_METHODS = frozenset(SERVICE + m for m in ("ServerLive", "ServerReady", "ModelReady"))
"""What gRPC callers reach without the token: the liveness and readiness checks, as the
REST paths ``/v2/health/*`` and ``/v2/models/facerank/ready`` are open (see
``inference.__main__.OPEN_PATHS``). Metadata, inference and the repository need it."""

Handler = Callable[[Any, aio.ServicerContext], Awaitable[Any]]


class MetadataDataPlane(DataPlane):
    """KServe's data plane, with the model's own platform and served version in its metadata."""

    async def model_metadata(self, model_name: str) -> dict[str, Any]:
        metadata: dict[str, Any] = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        if isinstance(model, FacerankModel):
            metadata.update(model.describe())
        return metadata


class MetadataServicer(InferenceServicer):
    """KServe's gRPC servicer, answering ``ModelMetadata`` with ``versions`` too."""

    async def ModelMetadata(  # noqa: N802 - the protocol's method name
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        metadata = await self._data_plane.model_metadata(model_name=request.name)
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata.get("versions", []),
            platform=metadata["platform"],
            inputs=metadata["inputs"],
            outputs=metadata["outputs"],
        )


def _metadata_value(context: aio.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else None
    return None


class TokenInterceptor(AsyncServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` (UNAUTHENTICATED, one line),
    but :data:`OPEN_METHODS`; the same comparison as REST (:func:`facerank.auth.is_authorized`)."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("TokenInterceptor needs a token; leave it out when unset")
        self.token = token

    async def intercept(
        self,
        method: Handler,
        request_or_iterator: Any,
        context: aio.ServicerContext,
        method_name: str,
    ) -> Any:
        if method_name not in OPEN_METHODS and not is_authorized(
            self.token, _metadata_value(context, "authorization")
        ):
            log.info("refused gRPC %s from %s: no valid API token", method_name, context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, MESSAGE)
        return await method(request_or_iterator, context)


class AccessLogInterceptor(AsyncServerInterceptor):
    """One line per gRPC call, as :class:`inference.access_log.AccessLogMiddleware` writes
    for HTTP: ``GRPC /inference.GRPCInferenceService/ModelInfer INVALID_ARGUMENT
    not_an_image 3 ms request_id=...: reason``. The request id is the ``x-request-id``
    metadata, else a new one; successful open methods are logged at DEBUG."""

    async def intercept(
        self,
        method: Handler,
        request_or_iterator: Any,
        context: aio.ServicerContext,
        method_name: str,
    ) -> Any:
        started = time.perf_counter()
        status = grpc.StatusCode.OK
        with rejection_noted() as rejection:
            try:
                return await method(request_or_iterator, context)
            except BaseException:
                # KServe's error mapping inside has aborted with the status; anything else
                # ends the call as UNKNOWN.
                status = _status(context.code())
                raise
            finally:
                ok = status is grpc.StatusCode.OK
                log_access(
                    "GRPC",
                    method_name,
                    status.name,
                    "-" if ok else f"grpc_{status.name.lower()}",
                    rejection,
                    seconds=time.perf_counter() - started,
                    rid=request_id(_metadata_value(context, "x-request-id")),
                    quiet=ok and method_name in OPEN_METHODS,
                )


def _status(code: object) -> grpc.StatusCode:
    """The status a failed call ended with: what an abort set, else UNKNOWN."""
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


class PredictorGRPCServer(GRPCServer):
    """KServe's gRPC server with facerank's interceptors, bound to ``host:port``."""

    def __init__(
        self,
        host: str,
        port: int,
        data_plane: DataPlane,
        server: ModelServer,
        *,
        token: str,
        max_message_bytes: int,
    ) -> None:
        super().__init__(
            port,
            data_plane,
            server.model_repository_extension,
            kwargs={},
            grace_period=server.grace_period,
        )
        self.address = f"{host}:{port}"
        self.token = token
        self.max_message_bytes = max_message_bytes

    def interceptors(self) -> Sequence[aio.ServerInterceptor]:
        """Outermost first: a refused token is logged once, by its check, and goes no
        further; KServe's mapping of its errors to statuses is innermost, as in KServe."""
        chain: list[aio.ServerInterceptor] = [
            AccessLogInterceptor(),
            ExceptionToStatusInterceptor(),
        ]
        return [TokenInterceptor(self.token), *chain] if self.token else chain

    async def start(self, max_workers: int) -> None:
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=self.interceptors(),
            options=[
                # gRPC shares ports by default (SO_REUSEPORT): a second predictor on the
                # same port would silently take half the calls. Refuse to start instead.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
            ],
        )
        servicer = MetadataServicer(self._data_plane, self._model_repository_extension)
        add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        try:
            self._server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise GRPCPortError(_taken(self.address)) from exc  # taken since _check_free
        await self._server.start()
        log.info("gRPC (Open Inference Protocol V2) listening on %s", self.address)
        await self._server.wait_for_termination()


class GRPCPortError(OSError):
    """The gRPC address cannot be bound (an OSError, as :func:`facerank.serving.serve`
    raises for a port it cannot bind): the operator's to fix, said in one line."""


def _check_free(host: str, port: int) -> None:
    """Raise :class:`GRPCPortError` now if ``host:port`` is taken. Found only once both
    servers run, the failure would cancel REST mid-start, with tracebacks of its own."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        # SO_REUSEADDR (create_server's default), as gRPC binds: connections of a previous
        # run in TIME_WAIT do not count, a listener does, with or without SO_REUSEPORT.
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        raise GRPCPortError(_taken(f"{host}:{port}")) from exc


def _taken(address: str) -> str:
    return (
        f"gRPC cannot listen on {address} (in use? FACERANK_PREDICTOR_GRPC_PORT picks another "
        "port, 0 turns gRPC off)"
    )


class PredictorServer(ModelServer):
    """KServe's ModelServer with :class:`MetadataDataPlane`, and gRPC on ``grpc_address``
    (``None``: REST only)."""

    def __init__(
        self,
        *,
        http_port: int,
        grpc_address: tuple[str, int] | None,
        token: str,
        max_message_bytes: int,
    ) -> None:
        # One worker: the model and its refresher live in this process. KServe's own gRPC
        # server stays off; start() adds ours.
        super().__init__(http_port=http_port, workers=1, enable_grpc=False)
        self.dataplane = MetadataDataPlane(model_registry=self.registered_models)
        self.grpc_address = grpc_address
        self.token = token
        self.max_message_bytes = max_message_bytes

    def start(self, models: list[BaseKServeModel]) -> None:
        if self.grpc_address is not None:
            host, port = self.grpc_address
            _check_free(host, port)
            self._grpc_server = PredictorGRPCServer(
                host,
                port,
                self.dataplane,
                self,
                token=self.token,
                max_message_bytes=self.max_message_bytes,
            )
            # Served beside REST by KServe's start, on its event loop; stopped by its stop().
            self.servers.append(self._grpc_server.start(self.max_threads))
        super().start(models)
