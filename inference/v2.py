"""The predictor's Open Inference Protocol (V2) tensors: what a request carries, what a reply
holds, and the model metadata that describes both.

Why one table: ``GET /v2/models/facerank`` (and gRPC ``ModelMetadata``) is what an Open
Inference Protocol client reads to build its requests and decode the replies, so it must say
exactly what :func:`v2_response` produces. Both are made from :data:`OUTPUTS` here; a change
to an output changes its description with it.

The protocol's metadata has no field for a tensor's meaning or for request parameters, only
name, datatype and shape. So ``top_k`` is described, and accepted, as an optional INT32 input
of shape ``[1]`` (Triton's convention for a per-request knob), beside the request parameter
``top_k`` it always was; the meaning of each tensor is in the README's API section.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse

from facerank.predictor import MODEL

if TYPE_CHECKING:  # the model builds rankings and calls this module: no import cycle
    from inference.model import FaceRanking

PLATFORM = "facerank"
"""The model's platform in its metadata: facerank's own pipeline (decode, detect, align,
embed, rank) on KServe's Python ModelServer; ``versions`` names the embedder version."""
IMAGE_INPUT = "image"
TOP_K = "top_k"
VARIABLE = -1
"""A dimension whose size depends on the request (images, faces found, matches)."""


@dataclass(frozen=True)
class Tensor:
    """One tensor as the model metadata describes it."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


INPUTS = (
    Tensor(IMAGE_INPUT, "BYTES", (VARIABLE,)),
    Tensor(TOP_K, "INT32", (1,)),
)
"""``image``: one element per image, the base64 text of its file (JPEG, PNG, ...); ``top_k``
(optional): identities per face. Base64 even with the binary tensor extension: KServe 0.21
turns binary BYTES inputs into UTF-8 strings before the model sees them."""

_DTYPES = {"INT32": np.int32, "FP32": np.float32, "BOOL": np.bool_, "BYTES": np.object_}

FACE_OUTPUTS = (
    Tensor("box", "INT32", (VARIABLE, 4)),
    Tensor("confidence", "FP32", (VARIABLE,)),
    Tensor("detector", "BYTES", (VARIABLE,)),
    Tensor("image_index", "INT32", (VARIABLE,)),
)
"""One row per face found: its box ``x, y, width, height``, the detector's score, which
detector found it, and the index of its image in the request."""
MATCH_OUTPUTS = (
    Tensor("face_index", "INT32", (VARIABLE,)),
    Tensor("identity", "BYTES", (VARIABLE,)),
    Tensor("face_id", "BYTES", (VARIABLE,)),
    Tensor("distance", "FP32", (VARIABLE,)),
    Tensor("similarity", "FP32", (VARIABLE,)),
    Tensor("match", "BOOL", (VARIABLE,)),
)
"""One row per ranked identity, closest first within each face: the row of its face in the
face outputs, the identity, its closest enrolled face, distance, cosine and verdict."""
OUTPUTS = FACE_OUTPUTS + MATCH_OUTPUTS


def model_metadata(model_version: str | None) -> dict[str, Any]:
    """The metadata fields beyond the name: platform, served version, inputs and outputs."""
    return {
        "platform": PLATFORM,
        "versions": [model_version] if model_version else [],
        "inputs": [tensor.metadata() for tensor in INPUTS],
        "outputs": [tensor.metadata() for tensor in OUTPUTS],
    }


def v2_response(
    request: InferRequest, model_version: str, rankings: list[list[FaceRanking]]
) -> InferResponse:
    """Faces as rows of the :data:`FACE_OUTPUTS`; matches as rows of the
    :data:`MATCH_OUTPUTS` pointing at their face through ``face_index``."""
    faces = [(i, face) for i, image_faces in enumerate(rankings) for face in image_faces]
    rows = [(f, m) for f, (_, face) in enumerate(faces) for m in face.matches]
    columns: dict[str, list[Any]] = {
        "box": [face.box for _, face in faces],
        "confidence": [face.confidence for _, face in faces],
        "detector": [face.detector.encode() for _, face in faces],
        "image_index": [i for i, _ in faces],
        "face_index": [f for f, _ in rows],
        "identity": [m.identity.encode() for _, m in rows],
        "face_id": [m.face_id.encode() for _, m in rows],
        "distance": [m.distance for _, m in rows],
        "similarity": [m.similarity for _, m in rows],
        "match": [m.match for _, m in rows],
    }
    return InferResponse(
        response_id=request.id or str(uuid.uuid4()),
        model_name=MODEL,
        model_version=model_version,
        infer_outputs=[_output(tensor, columns[tensor.name]) for tensor in OUTPUTS],
        parameters={"model_version": model_version},
        # gRPC replies carry numpy outputs as raw contents anyway; KServe 0.21's to_grpc()
        # fails on them when also told to use binary outputs (a numpy truth test).
        use_binary_outputs=request.use_binary_outputs and not request.from_grpc,
        requested_outputs=request.request_outputs,
    )


def _output(tensor: Tensor, values: list[Any]) -> InferOutput:
    shape = tuple(len(values) if d == VARIABLE else d for d in tensor.shape)
    data = np.array(values, dtype=_DTYPES[tensor.datatype]).reshape(shape)
    return InferOutput(tensor.name, list(data.shape), tensor.datatype, data=data)
