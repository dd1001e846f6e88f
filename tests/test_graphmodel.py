"""The TF.js graph-model reader, on small generated graphs, against TF.js itself.

Each generated graph uses the ops the human-models descriptors use, fused ones included, and
runs through ``tests/js/graphmodel.js`` (TF.js 4.22, wasm backend) and through
:class:`GraphFunction`; the two must agree to 1e-5. Malformed graphs must be refused before
anything runs.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facerank.descriptor.graphmodel import (
    SUPPORTED_OPS,
    GraphFunction,
    GraphModelError,
    TfjsGraph,
)
from tests.plugins.tfjs import run_graph_model

tf = pytest.importorskip("tensorflow")

TOLERANCE = 1e-5


def _s(text: str) -> dict[str, str]:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(*values: int) -> dict[str, Any]:
    return {"list": {"i": [str(v) for v in values]}}


def _strings(*values: str) -> dict[str, Any]:
    return {"list": {"s": [_s(v)["s"] for v in values]}}


def _conv_attrs(padding: str, stride: int, **extra: Any) -> dict[str, Any]:
    attrs = {
        "strides": _ints(1, stride, stride, 1),
        "padding": _s(padding),
        "data_format": _s("NHWC"),
        "dilations": _ints(1, 1, 1, 1),
        "explicit_paddings": {"list": {}},
    }
    return {**attrs, **extra}


def write_graph(folder: Path, nodes: list[dict[str, Any]], weights: dict[str, np.ndarray]) -> Path:
    """A graph model (``model.json`` + one shard) of ``nodes`` with ``weights`` as constants."""
    folder.mkdir(parents=True, exist_ok=True)
    specs, data = [], b""
    for name, value in weights.items():
        dtype = "int32" if value.dtype == np.int32 else "float32"
        specs.append({"name": name, "shape": list(value.shape), "dtype": dtype})
        data += value.astype("<i4" if dtype == "int32" else "<f4").tobytes()
        nodes = [{"name": name, "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}}, *nodes]
    (folder / "tiny.bin").write_bytes(data)
    model = {
        "format": "graph-model",
        "generatedBy": "facerank tests",
        "convertedBy": None,
        "modelTopology": {"node": nodes, "library": {}, "versions": {}},
        "weightsManifest": [{"paths": ["tiny.bin"], "weights": specs}],
    }
    path = folder / "model.json"
    path.write_text(json.dumps(model), encoding="utf-8")
    return path


def placeholder(size: int) -> dict[str, Any]:
    dims = [{"size": "-1"}, {"size": str(size)}, {"size": str(size)}, {"size": "3"}]
    return {
        "name": "input",
        "op": "Placeholder",
        "attr": {"dtype": {"type": "DT_FLOAT"}, "shape": {"shape": {"dim": dims}}},
    }


@pytest.fixture(scope="module")
def fused_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every fused op TF.js's converter writes in the descriptors, with PReLU, ReLU6, explicit
    and SAME padding, a stride, a channel mean, and an elementwise tail."""
    rng = np.random.default_rng(3)
    weights = {
        "conv/w": rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32),
        "conv/b": rng.normal(0, 0.1, (8,)).astype(np.float32),
        "conv/alpha": rng.uniform(0.05, 0.5, (8,)).astype(np.float32),
        "dw/w": rng.normal(0, 0.3, (3, 3, 8, 1)).astype(np.float32),
        "dw/b": rng.normal(0, 0.1, (8,)).astype(np.float32),
        "pad/p": np.array([[0, 0], [1, 0], [0, 1], [0, 0]], np.int32),
        "mean/axes": np.array([1, 2], np.int32),
        "fc/w": rng.normal(0, 0.3, (8, 5)).astype(np.float32),
        "fc/b": rng.normal(0, 0.1, (5,)).astype(np.float32),
        "tail/c": np.array([0.5], np.float32),
    }
    nodes = [
        placeholder(12),
        {
            "name": "conv",
            "op": "_FusedConv2D",
            "input": ["input", "conv/w", "conv/b", "conv/alpha"],
            "attr": _conv_attrs(
                "EXPLICIT",
                2,
                explicit_paddings=_ints(0, 0, 1, 2, 2, 1, 0, 0),
                fused_ops=_strings("BiasAdd", "Prelu"),
                num_args={"i": "2"},
            ),
        },
        {"name": "pad", "op": "Pad", "input": ["conv", "pad/p"]},
        {
            "name": "dw",
            "op": "FusedDepthwiseConv2dNative",
            "input": ["pad", "dw/w", "dw/b"],
            "attr": _conv_attrs(
                "SAME", 1, fused_ops=_strings("BiasAdd", "Relu6"), num_args={"i": "1"}
            ),
        },
        {
            "name": "mean",
            "op": "Mean",
            "input": ["dw", "mean/axes"],
            "attr": {"keep_dims": {"b": False}},
        },
        {
            "name": "fc",
            "op": "_FusedMatMul",
            "input": ["mean", "fc/w", "fc/b"],
            "attr": {
                "fused_ops": _strings("BiasAdd", "Relu"),
                "transpose_a": {"b": False},
                "transpose_b": {"b": False},
                "num_args": {"i": "1"},
            },
        },
        {"name": "abs", "op": "Abs", "input": ["fc"]},
        {"name": "sub", "op": "Sub", "input": ["fc", "abs"]},
        {"name": "out", "op": "AddV2", "input": ["sub", "tail/c", "^fc"]},
    ]
    return write_graph(tmp_path_factory.mktemp("graph"), nodes, weights)


def test_fused_ops_compute_what_tfjs_computes(fused_graph: Path, tmp_path: Path) -> None:
    images = np.random.default_rng(5).uniform(-2, 2, (3, 12, 12, 3)).astype(np.float32)
    graph = TfjsGraph.read(fused_graph)
    for output in ("conv", "dw", "out"):
        ours = np.asarray(GraphFunction(graph, output)(images))
        theirs = run_graph_model(fused_graph, output, images, tmp_path).reshape(ours.shape)
        assert np.abs(theirs).max() > 0.1, output  # a real signal, not zeros
        assert np.abs(ours - theirs).max() <= TOLERANCE, output


def test_the_check_notices_a_misplaced_explicit_padding(fused_graph: Path, tmp_path: Path) -> None:
    """The explicit padding (1 top, 2 bottom, 2 left, 1 right) read the wrong way round."""
    images = np.random.default_rng(5).uniform(-2, 2, (2, 12, 12, 3)).astype(np.float32)
    model = json.loads(fused_graph.read_text(encoding="utf-8"))
    conv = next(n for n in model["modelTopology"]["node"] if n["name"] == "conv")
    conv["attr"]["explicit_paddings"] = _ints(0, 0, 2, 1, 1, 2, 0, 0)
    swapped = tmp_path / "graph" / "model.json"
    swapped.parent.mkdir()
    (swapped.parent / "tiny.bin").write_bytes((fused_graph.parent / "tiny.bin").read_bytes())
    swapped.write_text(json.dumps(model), encoding="utf-8")
    ours = np.asarray(GraphFunction(TfjsGraph.read(swapped), "conv")(images))
    theirs = run_graph_model(fused_graph, "conv", images, tmp_path).reshape(ours.shape)
    assert np.abs(ours - theirs).max() > TOLERANCE


def test_only_the_nodes_the_output_needs_are_run(fused_graph: Path) -> None:
    function = GraphFunction(TfjsGraph.read(fused_graph), "conv")
    assert {node.name for node in function.plan} == {
        "input",
        "conv",
        "conv/w",
        "conv/b",
        "conv/alpha",
    }
    assert set(function.weights) == {"conv/w", "conv/b", "conv/alpha"}
    assert len(function.variables) == 3


def _rewrite(fused_graph: Path, tmp_path: Path, change: Any) -> Path:
    model = json.loads(fused_graph.read_text(encoding="utf-8"))
    change(model["modelTopology"]["node"])
    (tmp_path / "tiny.bin").write_bytes((fused_graph.parent / "tiny.bin").read_bytes())
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model), encoding="utf-8")
    return path


def _node(nodes: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(n for n in nodes if n["name"] == name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda nodes: _node(nodes, "abs").update(op="Erf"), "unsupported ops Erf"),
        (lambda nodes: _node(nodes, "abs").update(input=["nowhere"]), "reads unknown"),
        (lambda nodes: _node(nodes, "fc").update(input=["out", "fc/w", "fc/b"]), "cycle"),
        (lambda nodes: nodes.append(placeholder(4) | {"name": "second"}), "expected one input"),
        (
            lambda nodes: _node(nodes, "dw")["attr"].update(fused_ops=_strings("BiasAdd", "Gelu")),
            "fuses",
        ),
        (
            lambda nodes: nodes.append({"name": "ghost", "op": "Const", "attr": {}}),
            "has no weights",
        ),
    ],
    ids=["unknown-op", "dangling-input", "cycle", "two-inputs", "unknown-fusion", "no-weights"],
)
def test_malformed_graphs_are_refused(
    fused_graph: Path, tmp_path: Path, change: Any, message: str
) -> None:
    with pytest.raises(GraphModelError, match=message):
        TfjsGraph.read(_rewrite(fused_graph, tmp_path, change))


def test_a_layers_model_or_junk_is_not_a_graph_model(tmp_path: Path) -> None:
    (tmp_path / "layers.json").write_text(json.dumps({"format": "layers-model"}), encoding="utf-8")
    (tmp_path / "junk.json").write_text("{", encoding="utf-8")
    with pytest.raises(GraphModelError, match=r"not a TF\.js graph model"):
        TfjsGraph.read(tmp_path / "layers.json")
    with pytest.raises(GraphModelError, match="not JSON"):
        TfjsGraph.read(tmp_path / "junk.json")
    with pytest.raises(GraphModelError, match="cannot read"):
        TfjsGraph.read(tmp_path / "missing.json")


def test_the_ops_the_descriptors_use_are_all_supported() -> None:
    used = {"Conv2D", "DepthwiseConv2dNative", "FusedDepthwiseConv2dNative", "_FusedConv2D"}
    used |= {"_FusedMatMul", "MatMul", "Pad", "Reshape", "Squeeze", "Mean", "Sum", "Rsqrt"}
    assert used <= SUPPORTED_OPS
