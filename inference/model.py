"""The KServe model ``facerank``: photo in, the closest enrolled identities of each face out.

Served by KServe's own ModelServer, V1 and V2 (Open Inference Protocol):

* V1 ``POST /v1/models/facerank:predict`` with
  ``{"instances": [{"image": {"b64": "<base64 JPEG/PNG/...>"}, "top_k": 3}]}``; also accepted
  wrapped as the ``data`` of a structured CloudEvent (KServe unwraps only events with ``time``).
* V2 ``POST /v2/models/facerank/infer`` (and gRPC ``ModelInfer``) with a BYTES input
  ``image`` of shape ``[n]`` whose elements are base64 text of the image files, and an
  optional ``top_k``, as an INT32 input of shape ``[1]`` or a request parameter. The tensors
  and the model metadata describing them are :mod:`inference.v2`'s.

Why the work runs in KServe's executor: ``Model.__call__`` runs ``predict`` on the event loop,
so decoding, detection and embedding (CPU, tens of ms) would stall health checks and every
other request; an ``async`` predict hands it to the loop's default thread pool, which KServe
sizes (``--max_asyncio_workers``).

Why a :class:`~inference.follower.ServingPair`: embeddings are only comparable within one model
version, so the pipeline and the gallery it ranks against travel as one object, replaced by one
assignment when the gallery or the active model changes. A request reads it once and uses that
pair throughout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from kserve import InferRequest, InferResponse, Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import to_http_parameters
from prometheus_client import Counter, Gauge, Histogram

from facerank.errors import ImageTooLargeError, InvalidImageError
from facerank.faces.detect import Box
from facerank.gallery import Gallery
from facerank.openset import MAX_TARGET_FACES, open_set_threshold
from facerank.pipeline import FacePipeline
from facerank.predictor import MODEL
from facerank.registry import ModelRegistry, ServingModels
from facerank.settings import Settings
from facerank.storage import ObjectStore
from inference.access_log import note_rejection
from inference.follower import ServingFollower, ServingPair
from inference.search import Match
from inference.v2 import IMAGE_INPUT, TOP_K, model_metadata, v2_response

MODEL_NAME = MODEL
DEFAULT_TOP_K = 3
MAX_TOP_K = 100
"""Larger ``top_k`` values are capped: nobody reads a hundred look-alikes per face."""
MAX_INSTANCES = 16
"""Images per request; more is refused, so one request cannot monopolise the workers."""

# Registered on prometheus_client's default registry: the one KServe serves at /metrics.
REQUESTS = Counter(
    "facerank_predict_requests", "Predict requests by protocol and outcome", ["protocol", "outcome"]
)
LATENCY = Histogram(
    "facerank_predict_seconds",
    "Predict latency, parsing to response, by protocol",
    ["protocol"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
FACES = Histogram(
    "facerank_predict_faces", "Faces found per request", buckets=(0, 1, 2, 4, 8, 16, 32, 64)
)
GALLERY_FACES = Gauge("facerank_gallery_faces", "Faces in the served gallery snapshot")
GALLERY_IDENTITIES = Gauge("facerank_gallery_identities", "Identities in the served snapshot")
MODEL_INFO = Gauge("facerank_model_info", "1 for the model version being served", ["model_version"])


@dataclass(frozen=True)
class Query:
    """One image to rank, as a client sent it."""

    image: bytes
    top_k: int


@dataclass(frozen=True)
class FaceRanking:
    box: Box
    confidence: float
    detector: str
    """``ssd`` or ``haar``: which detector found the face."""
    matches: list[Match]


class FacerankModel(Model):
    """``facerank`` for KServe: ready once the pipeline and the first gallery snapshot are."""

    def __init__(self, settings: Settings, store: ObjectStore) -> None:
        super().__init__(MODEL_NAME)
        self.settings = settings
        self.serving: ServingPair | None = None
        self._threshold_of: tuple[ServingPair | None, float] = (None, 0.0)
        """The open-set threshold of a served pair, swapped with it (see :meth:`_serve`)."""
        self._follower = ServingFollower(
            Gallery(store, settings.gallery_bucket),
            ServingModels(ModelRegistry(store, settings.models_bucket), settings),
            lambda embedder: FacePipeline.from_settings(settings, embedder),
            self._serve,
            interval=settings.gallery_refresh_s,
            approximate_above=settings.search_approximate_above,
        )

    # --- lifecycle (KServe calls load, then start on registration, stop on shutdown) --------

    def load(self) -> bool:
        """Load the active model and its whole gallery; only then ready."""
        self._follower.poll()
        self.ready = self.serving is not None
        return self.ready

    def start(self) -> None:
        """Follow the gallery and the model pointer. (KServe's default would mark us ready.)"""
        self._follower.start()

    def stop(self) -> None:
        self._follower.stop()
        self.ready = False

    def _serve(self, pair: ServingPair) -> None:
        self._threshold_of = (pair, self._match_threshold(pair))
        previous, self.serving = self.serving, pair
        if previous is not None and previous.model_version != pair.model_version:
            MODEL_INFO.remove(previous.model_version)
        MODEL_INFO.labels(pair.model_version).set(1)
        GALLERY_FACES.set(pair.snapshot.faces)
        GALLERY_IDENTITIES.set(len(pair.snapshot.identities))

    # --- metadata (GET /v2/models/facerank, gRPC ModelMetadata) ----------------------------

    def get_input_types(self) -> list[dict[str, Any]]:
        return list(model_metadata(None)["inputs"])

    def get_output_types(self) -> list[dict[str, Any]]:
        return list(model_metadata(None)["outputs"])

    def describe(self) -> dict[str, Any]:
        """Platform, the served model version, inputs and outputs (KServe's own metadata
        path leaves the first two out: :class:`inference.server.MetadataDataPlane`)."""
        pair = self.serving
        return model_metadata(pair.model_version if pair else None)

    # --- inference --------------------------------------------------------------------------

    async def predict(
        self,
        payload: dict[str, Any] | InferRequest | bytes,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        v2 = isinstance(payload, InferRequest)
        protocol = "v2" if v2 else "v1"
        started = time.perf_counter()
        try:
            queries = self._v2_queries(payload) if v2 else self._v1_queries(payload)
            pair = self.serving
            if pair is None:
                raise RuntimeError("predict called before load")
            served, open_set = self._threshold_of
            threshold = open_set if served is pair else self._match_threshold(pair)
            loop = asyncio.get_running_loop()
            rankings = await loop.run_in_executor(None, self._rank, pair, queries, threshold)
        except InvalidInput as exc:
            REQUESTS.labels(protocol, "invalid").inc()
            note_rejection(exc)
            raise
        except Exception:
            REQUESTS.labels(protocol, "error").inc()
            raise
        REQUESTS.labels(protocol, "ok").inc()
        LATENCY.labels(protocol).observe(time.perf_counter() - started)
        FACES.observe(sum(len(r) for r in rankings))
        if v2:
            return v2_response(payload, pair.model_version, rankings)
        return v1_response(pair.model_version, rankings, threshold)

    def _rank(
        self, pair: ServingPair, queries: list[Query], threshold: float
    ) -> list[list[FaceRanking]]:
        """Every face of every image ranked; one embedding batch and one search for all."""
        per_image = []
        for i, query in enumerate(queries):
            try:
                decoded = pair.pipeline.decode(query.image)
            except InvalidImageError as exc:
                raise InvalidInput(f"image {i}: {exc.code}: {exc}") from exc
            per_image.append(pair.pipeline.analyze(decoded.pixels).faces)
        faces = [face for image_faces in per_image for face in image_faces]
        k = max(query.top_k for query in queries)
        matches = iter(pair.snapshot.search(pair.pipeline.embed(faces), k, threshold))
        return [
            [
                FaceRanking(
                    f.detection.box,
                    f.detection.confidence,
                    f.detection.detector,
                    next(matches)[: q.top_k],
                )
                for f in image_faces
            ]
            for q, image_faces in zip(queries, per_image, strict=True)
        ]

    def _match_threshold(self, pair: ServingPair) -> float:
        """An explicit threshold, else the model's pair threshold made open-set for this
        gallery's size (:mod:`facerank.openset`): computed once per served pair."""
        if self.settings.match_threshold:
            return self.settings.match_threshold
        vectors, identities = pair.snapshot.sample(MAX_TARGET_FACES)
        return open_set_threshold(
            vectors,
            identities,
            pair_threshold=pair.pipeline.embedder.match_threshold,
            target=self.settings.open_set_far,
        )

    # --- request parsing --------------------------------------------------------------------

    def _v1_queries(self, body: object) -> list[Query]:
        body = unwrap_cloudevent(body)
        if not isinstance(body, dict) or "instances" not in body:
            raise InvalidInput('expected a JSON object {"instances": [...]}')
        instances = body["instances"]
        _check_count(instances, "instances")
        return [self._v1_instance(i, instance) for i, instance in enumerate(instances)]

    def _v1_instance(self, i: int, instance: object) -> Query:
        where = f"instances[{i}]"
        image = instance.get("image") if isinstance(instance, dict) else None
        b64 = image.get("b64") if isinstance(image, dict) else None
        if not isinstance(b64, str) or not isinstance(instance, dict):
            raise InvalidInput(f'{where}: expected {{"image": {{"b64": "<base64 image>"}}}}')
        return Query(
            self._from_base64(b64, where), parse_top_k(instance.get("top_k"), f"{where}.top_k")
        )

    def _v2_queries(self, request: InferRequest) -> list[Query]:
        top_k = self._v2_top_k(request)
        tensor = request.get_input_by_name(IMAGE_INPUT)
        if tensor is None or tensor.datatype != "BYTES":
            raise InvalidInput('expected a BYTES input named "image" of shape [n]')
        items = _tensor_values(tensor, IMAGE_INPUT)
        _check_count(items, 'input "image"')
        return [Query(self._v2_image(i, item), top_k) for i, item in enumerate(items)]

    @staticmethod
    def _v2_top_k(request: InferRequest) -> int:
        """``top_k`` from its input tensor or the request parameter (given once, if at all).
        Parameters are plain values over REST, ``InferParameter`` messages over gRPC."""
        given = request.parameters if isinstance(request.parameters, Mapping) else {}
        parameters = to_http_parameters(given)
        tensor = request.get_input_by_name(TOP_K)
        if tensor is None:
            return parse_top_k(parameters.get(TOP_K), "parameters.top_k")
        if TOP_K in parameters:
            raise InvalidInput("top_k given twice: as an input and as a request parameter")
        values = _tensor_values(tensor, TOP_K)
        if not tensor.datatype.startswith(("INT", "UINT")) or len(values) != 1:
            raise InvalidInput('input "top_k" must be one integer (INT32, shape [1])')
        return parse_top_k(values[0], 'input "top_k"')

    def _v2_image(self, i: int, item: object) -> bytes:
        """Base64 text: a string over REST, the same text's bytes over gRPC (its BYTES
        elements arrive as bytes)."""
        where = f'input "image"[{i}]'
        if isinstance(item, bytes) and item.isascii():
            item = item.decode("ascii")
        if not isinstance(item, str):
            raise InvalidInput(f"{where}: expected the image as base64 text")
        return self._from_base64(item, where)

    def _from_base64(self, text: str, where: str) -> bytes:
        # Refuse by length before decoding, so an oversized body costs no decode.
        self._check_size(len(text) * 3 // 4 - 2, where)
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"{where}: not valid base64: {exc}") from exc
        self._check_size(len(data), where)
        return data

    def _check_size(self, size: int, where: str) -> None:
        limit = self.settings.max_image_bytes
        if size > limit:
            error = ImageTooLargeError(f"image of about {size} bytes exceeds the {limit} limit")
            raise InvalidInput(f"{where}: {error.code}: {error}") from error


def unwrap_cloudevent(body: object) -> object:
    """The ``data`` of a structured CloudEvent KServe passed through, else ``body`` itself.

    KServe 0.21 unwraps only structured events that carry ``time`` (optional in CloudEvents
    1.0); without it the whole envelope arrives here.
    """
    if isinstance(body, dict) and "specversion" in body and "data" in body:
        data = body["data"]
        if isinstance(data, str | bytes):
            try:
                return json.loads(data)
            except ValueError as exc:
                raise InvalidInput(f"CloudEvent data is not JSON: {exc}") from exc
        return data
    return body


def parse_top_k(value: object, where: str) -> int:
    """``value`` as a positive int capped at :data:`MAX_TOP_K`; None means the default."""
    if value is None:
        return DEFAULT_TOP_K
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{where} must be a positive integer, not {value!r}")
    return min(value, MAX_TOP_K)


def _tensor_values(tensor: Any, name: str) -> list[Any]:
    try:
        return list(tensor.as_numpy().reshape(-1).tolist())
    except Exception as exc:  # KServe's tensor decoding raises assorted types on bad data
        raise InvalidInput(
            f'input "{name}" is not a valid {tensor.datatype} tensor: {exc}'
        ) from exc


def _check_count(items: object, where: str) -> None:
    if not isinstance(items, list) or not items:
        raise InvalidInput(f"{where} must be a non-empty list")
    if len(items) > MAX_INSTANCES:
        raise InvalidInput(f"{where}: {len(items)} images, at most {MAX_INSTANCES} per request")


# --- responses --------------------------------------------------------------------------


def v1_response(
    model_version: str, rankings: list[list[FaceRanking]], threshold: float
) -> dict[str, Any]:
    """V1 predictions; ``threshold`` is the distance ``match`` was decided at (open-set for
    this gallery), so clients such as the identify function can group faces at it too."""
    return {
        "predictions": [
            {
                "model_version": model_version,
                "threshold": threshold,
                "faces": [
                    {
                        "box": list(face.box),
                        "confidence": face.confidence,
                        "detector": face.detector,
                        "matches": [asdict(m) for m in face.matches],
                    }
                    for face in faces
                ],
            }
            for faces in rankings
        ]
    }
