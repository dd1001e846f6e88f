"""Read TensorFlow.js weight manifests (``*-weights_manifest.json`` + ``.bin`` shards) into NumPy.

Why our own reader: the pretrained networks facerank ports (dlib's face descriptor, the 68-point
landmark net) ship only as TF.js weights in the ``@vladmandic/face-api`` npm package, and the
``tensorflowjs`` Python package drags in a pinned TensorFlow of its own. The format is small: a
JSON list of groups, each naming its binary shards (concatenated into one buffer) and the
tensors laid out back to back in it. Each tensor occupies ``size x bytes-per-value`` of its own
storage dtype (a uint8-quantised tensor 1 byte per value, a plain float32 one 4), so offsets
must follow every tensor's own dtype. Decoding follows TF.js's ``io.decodeWeights``: a
quantised value is ``q * scale + min`` computed in float64 and rounded once to float32 (what a
JavaScript ``Float32Array`` assignment does), so our weights equal TF.js's bit for bit.

Everything in a manifest is data from a downloaded package: unknown dtypes, shard paths that
leave the model folder and sizes that do not add up are refused with :class:`TfjsWeightsError`
before any tensor is returned, never guessed around.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from facerank.errors import ModelLoadError

_PLAIN_DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4")}
"""Storage of unquantised tensors: TF.js writes little-endian values of the tensor's dtype."""

_QUANTISED_STORAGE = {
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "float16": np.dtype("<f2"),
}
"""Storage of quantised tensors, by ``quantization.dtype``."""


class TfjsWeightsError(ModelLoadError):
    """A TF.js weights manifest or its shards cannot be read as the format defines them."""

    code = "invalid_tfjs_weights"


@dataclass(frozen=True)
class _TensorSpec:
    """One manifest entry, validated: where its bytes are and how to decode them."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    storage: np.dtype
    quantisation: str | None
    scale: float
    minimum: float

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.storage.itemsize


def read_tfjs_weights(manifest_path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the TF.js weights manifest at ``manifest_path``, by its manifest name.

    Accepts a weights manifest (a JSON list of groups) or a ``model.json`` holding one under
    ``weightsManifest``. Float32 tensors come back as float32 (dequantised from uint8/uint16 as
    ``q * scale + min``, or widened from float16), int32 tensors as int32 (quantised ones
    rounded half up, as JavaScript's ``Math.round``). Arrays own their memory and are writable.
    Raises :class:`TfjsWeightsError` for an unreadable or malformed manifest, an unsupported
    dtype or quantisation, a shard path outside the manifest's folder, a missing shard, or
    shards whose total size differs from what their tensors need.
    """
    manifest_path = Path(manifest_path)
    folder = manifest_path.resolve().parent
    weights: dict[str, np.ndarray] = {}
    for group_index, group in enumerate(_groups(manifest_path)):
        where = f"{manifest_path.name}, group {group_index}"
        if not isinstance(group, dict):
            raise TfjsWeightsError(f"{where}: a group must be an object")
        specs = [_parse_spec(entry, where) for entry in _list_field(group, "weights", where)]
        shards = [_shard_path(folder, path, where) for path in _list_field(group, "paths", where)]
        buffer = _read_shards(shards, sum(spec.nbytes for spec in specs), where)
        offset = 0
        for spec in specs:
            if spec.name in weights:
                raise TfjsWeightsError(f"{where}: tensor {spec.name!r} appears twice")
            raw = np.frombuffer(buffer, dtype=spec.storage, count=spec.size, offset=offset)
            weights[spec.name] = _decode(raw, spec).reshape(spec.shape)
            offset += spec.nbytes
    return weights


def check_weight_shapes(
    weights: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[int, ...]],
    *,
    network: str,
    unused: frozenset[str] = frozenset(),
) -> None:
    """Refuse ``weights`` unless they hold exactly ``expected`` (names and shapes), besides the
    ``unused`` graph constants a manifest may also carry; the error names what is wrong."""
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected) - unused)
    if missing or unexpected:
        raise ModelLoadError(
            f"not {network} weights: "
            f"missing {missing[:4] or 'none'}, unexpected {unexpected[:4] or 'none'}"
        )
    for name, shape in expected.items():
        if tuple(np.shape(weights[name])) != shape:
            raise ModelLoadError(
                f"weight {name} has shape {tuple(np.shape(weights[name]))}, expected {shape}"
            )


def _groups(manifest_path: Path) -> list[Any]:
    """The manifest's list of weight groups, from either accepted file layout."""
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TfjsWeightsError(f"cannot read {manifest_path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise TfjsWeightsError(f"{manifest_path} is not JSON: {exc}") from None
    if isinstance(data, dict) and "weightsManifest" in data:
        data = data["weightsManifest"]
    if not isinstance(data, list):
        raise TfjsWeightsError(f"{manifest_path}: expected a list of weight groups")
    return data


def _list_field(group: dict[str, Any], field: str, where: str) -> list[Any]:
    value = group.get(field)
    if not isinstance(value, list):
        raise TfjsWeightsError(f"{where}: {field!r} must be a list")
    return value


def _parse_spec(entry: Any, where: str) -> _TensorSpec:
    """Validate one ``{name, shape, dtype, quantization?}`` entry; refuse what TF.js would."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise TfjsWeightsError(f"{where}: every weight needs a non-empty string 'name'")
    name = entry["name"]
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise TfjsWeightsError(f"{where}: {name!r} has an invalid shape {shape!r}")
    dtype = entry.get("dtype")
    if dtype not in _PLAIN_DTYPES:
        raise TfjsWeightsError(
            f"{where}: {name!r} has dtype {dtype!r}; supported: {', '.join(_PLAIN_DTYPES)}"
        )
    quantisation = entry.get("quantization")
    if quantisation is None:
        return _TensorSpec(name, tuple(shape), dtype, _PLAIN_DTYPES[dtype], None, 1.0, 0.0)
    return _quantised_spec(name, tuple(shape), dtype, quantisation, where)


def _quantised_spec(
    name: str, shape: tuple[int, ...], dtype: str, quantisation: Any, where: str
) -> _TensorSpec:
    stored = quantisation.get("dtype") if isinstance(quantisation, dict) else None
    if stored not in _QUANTISED_STORAGE:
        raise TfjsWeightsError(
            f"{where}: {name!r} has quantization {stored!r}; "
            f"supported: {', '.join(_QUANTISED_STORAGE)}"
        )
    if stored == "float16":
        if dtype != "float32":
            raise TfjsWeightsError(f"{where}: {name!r}: float16 quantization needs dtype float32")
        return _TensorSpec(name, shape, dtype, _QUANTISED_STORAGE[stored], stored, 1.0, 0.0)
    scale, minimum = quantisation.get("scale"), quantisation.get("min")
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in (scale, minimum)
    ):
        raise TfjsWeightsError(
            f"{where}: {name!r}: {stored} quantization needs finite 'scale' and 'min'"
        )
    return _TensorSpec(
        name, shape, dtype, _QUANTISED_STORAGE[stored], stored, float(scale), float(minimum)
    )


def _shard_path(folder: Path, path: Any, where: str) -> Path:
    """``folder/path`` if it is a plain relative path that stays inside ``folder``."""
    if not isinstance(path, str) or not path or "\\" in path or "\x00" in path:
        raise TfjsWeightsError(f"{where}: invalid shard path {path!r}")
    parts = PurePosixPath(path).parts
    if path.startswith("/") or ".." in parts:
        raise TfjsWeightsError(f"{where}: shard path {path!r} leaves the model folder")
    target = folder.joinpath(*parts).resolve()
    if not target.is_relative_to(folder) or target == folder:
        raise TfjsWeightsError(f"{where}: shard path {path!r} resolves outside {folder}")
    return target


def _read_shards(shards: list[Path], expected: int, where: str) -> bytes:
    """The group's shards concatenated, after checking their sizes sum to ``expected`` bytes.

    Sizes are checked before reading, so a hostile manifest pointing at a huge file costs a
    ``stat``, not the memory to hold it.
    """
    try:
        total = sum(shard.stat().st_size for shard in shards)
    except OSError as exc:
        raise TfjsWeightsError(f"{where}: missing shard: {exc.strerror}: {exc.filename}") from None
    if total != expected:
        raise TfjsWeightsError(
            f"{where}: shards hold {total} bytes but the tensors need {expected} "
            "(truncated, corrupt, or a different version of the weights)"
        )
    try:
        data = b"".join(shard.read_bytes() for shard in shards)
    except OSError as exc:
        raise TfjsWeightsError(f"{where}: cannot read shard: {exc.strerror}") from None
    if len(data) != expected:
        raise TfjsWeightsError(f"{where}: shards changed size while being read")
    return data


def _decode(raw: np.ndarray, spec: _TensorSpec) -> np.ndarray:
    """Stored values -> the tensor's dtype, exactly as TF.js's ``decodeWeight`` computes them."""
    if spec.quantisation is None:
        return raw.astype(spec.storage.newbyteorder("="), copy=True)
    if spec.quantisation == "float16":
        return raw.astype(np.float32)
    values = raw.astype(np.float64) * spec.scale + spec.minimum
    if spec.dtype == "int32":
        return np.floor(values + 0.5).astype(np.int32)
    return values.astype(np.float32)
