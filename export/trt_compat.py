"""Will TensorRT's ONNX parser take this graph? A static check that runs without TensorRT.

Every ``sfrs-edge export`` runs it before reporting success, so a graph TensorRT would refuse
on the user's Jetson is refused here, in CI, with the node and the rule named.

Sources the rules are read from (TensorRT 10, onnx-tensorrt ``main``):
- ``docs/operators.md`` (onnx-tensorrt): the supported-operator matrix, its per-op types and
  restrictions ("`axes` must be an initializer", "`x_zero_point` must be zero", "TopK: `sorted`
  must be 1, `K` < 3840", "MaxPool: `Indices` output unsupported, `dilations` all ones"), and
  "UINT8 is only supported as network input or output tensor types".
- ``ModelImporter.cpp`` (onnx-tensorrt): a node producing a UINT8 tensor that is not a graph
  output fails with "TensorRT does not support UINT8 types for intermediate tensors!".
- NVIDIA/TensorRT issue 3985 (maintainer, 2025-02): "All UINT8 inputs must directly feed into a
  cast layer", not even a Transpose or Reshape first.

Two rules are ours, not TensorRT's limits: spatial sizes are static (only the batch axis is
dynamic, so one optimisation profile covers every batch) and no shape arithmetic (Shape/Size
nodes and what hangs off them) is left in the graph (docs/DESIGN.md §3.6).

The rule set is data: :data:`OPS` maps each accepted op to its :class:`OpRule`. Adding an op
(e.g. for INT8 QDQ graphs or re-ranking outputs) means adding a row with its documented limits.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import onnx
from onnx import TensorProto

from sfrs_edge.errors import ModelError

T = TensorProto
FLOATS = frozenset({T.FLOAT, T.FLOAT16, T.BFLOAT16})
INTS = frozenset({T.INT32, T.INT64})
NUMERIC = FLOATS | INTS
DATA = NUMERIC | {T.BOOL}
QUANTIZED = frozenset({T.INT8, T.FLOAT8E4M3FN, T.INT4})
CAST_TARGETS = DATA | {T.UINT8}  # UINT8 only as a graph output (rule uint8-intermediate)
MAX_TOPK = 3840

# Rule names, as they appear in refusal messages and tests.
UINT8_INPUT = "uint8-input-feeds-cast"
UINT8_INTERMEDIATE = "uint8-intermediate"
SUPPORTED_OP = "supported-op"
OP_DTYPE = "op-dtype"
CONSTANT_INPUT = "constant-input"
ATTRIBUTE = "attribute"
STATIC_SHAPE = "static-shape"
SHAPE_ARITHMETIC = "shape-arithmetic"
RULES = (
    UINT8_INPUT,
    UINT8_INTERMEDIATE,
    SUPPORTED_OP,
    OP_DTYPE,
    CONSTANT_INPUT,
    ATTRIBUTE,
    STATIC_SHAPE,
    SHAPE_ARITHMETIC,
)


@dataclass(frozen=True)
class Violation:
    """One broken rule at one node (or graph input/output)."""

    rule: str
    node: str  # node name (or op type and index when unnamed), or the graph tensor's name
    detail: str

    def line(self) -> str:
        return f"node {self.node!r} breaks rule '{self.rule}': {self.detail}"


@dataclass(frozen=True)
class OpRule:
    """What TensorRT accepts for one op type.

    ``types``: element types allowed for input 0 (the data input), from operators.md.
    ``constant_inputs``: input indices that must be initializers or Constant outputs.
    ``check``: further documented limits on attributes/inputs; returns a reason or None.
    """

    types: frozenset[int] = DATA
    constant_inputs: tuple[int, ...] = ()
    check: Callable[[onnx.NodeProto, _Graph], str | None] | None = None


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _spatial_2d(node: onnx.NodeProto, graph: _Graph) -> str | None:
    kernel = _attr(node, "kernel_shape")
    if kernel is not None and len(kernel) not in (2, 3):
        return f"{len(kernel)}-D kernel; TensorRT takes 2-D or 3-D only"
    dil = _attr(node, "dilations")
    if node.op_type.endswith("Pool") and dil is not None and any(d != 1 for d in dil):
        return "dilations must be empty or all ones"
    return None


def _maxpool(node: onnx.NodeProto, graph: _Graph) -> str | None:
    if len(node.output) > 1 and node.output[1]:
        return "the Indices output is unsupported"
    return _spatial_2d(node, graph)


def _topk(node: onnx.NodeProto, graph: _Graph) -> str | None:
    if _attr(node, "sorted", 1) != 1:
        return "sorted must be 1"
    k = graph.constant_value(node.input[1]) if len(node.input) > 1 else None
    if k is not None and int(k.reshape(-1)[0]) >= MAX_TOPK:
        return f"K = {int(k.reshape(-1)[0])} must be less than {MAX_TOPK}"
    return None


def _zero_point(index: int) -> Callable[[onnx.NodeProto, _Graph], str | None]:
    def check(node: onnx.NodeProto, graph: _Graph) -> str | None:
        if len(node.input) <= index or not node.input[index]:
            return None
        zp = graph.constant_value(node.input[index])
        if zp is None:
            return "zero point must be a constant"
        if zp.any():
            return "zero point must be 0 (TensorRT quantization is symmetric)"
        return None

    return check


def _cast(node: onnx.NodeProto, graph: _Graph) -> str | None:
    to = _attr(node, "to")
    if to not in CAST_TARGETS:
        return f"cast to {T.DataType.Name(to)} is unsupported"
    return None


OPS: dict[str, OpRule] = {
    # The exported SFRS graph (both backbones, FP32 and FP16).
    "Add": OpRule(NUMERIC),
    "Cast": OpRule(CAST_TARGETS, check=_cast),
    "Clip": OpRule(FLOATS, constant_inputs=(1, 2)),
    "Constant": OpRule(DATA),
    # TensorRT 10 takes Conv weights as tensors too (DequantizeLinear outputs in QDQ graphs).
    "Conv": OpRule(FLOATS, check=_spatial_2d),
    "Div": OpRule(NUMERIC),
    "MatMul": OpRule(FLOATS),
    "MaxPool": OpRule(FLOATS, check=_maxpool),
    "Mul": OpRule(NUMERIC),
    "ReduceSum": OpRule(NUMERIC, constant_inputs=(1,)),
    "Relu": OpRule(NUMERIC),
    "Reshape": OpRule(DATA, constant_inputs=(1,)),
    "Slice": OpRule(DATA, constant_inputs=(1, 2, 3, 4)),
    "Softmax": OpRule(FLOATS),
    "Sqrt": OpRule(FLOATS),
    "Sub": OpRule(NUMERIC),
    "Transpose": OpRule(DATA),
    "Unsqueeze": OpRule(DATA, constant_inputs=(1,)),
    # Common neighbours: other backbones, re-ranking outputs (local features, keypoints).
    "AveragePool": OpRule(FLOATS, check=_spatial_2d),
    "BatchNormalization": OpRule(FLOATS),
    "Concat": OpRule(DATA),
    "Flatten": OpRule(DATA),
    "Gather": OpRule(DATA),
    "GatherElements": OpRule(DATA),
    "Gemm": OpRule(FLOATS),
    "GlobalAveragePool": OpRule(FLOATS),
    "Identity": OpRule(DATA),
    "Max": OpRule(NUMERIC),
    "Min": OpRule(NUMERIC),
    "ReduceMax": OpRule(NUMERIC, constant_inputs=(1,)),
    "ReduceMean": OpRule(NUMERIC, constant_inputs=(1,)),
    "ReduceSumSquare": OpRule(NUMERIC, constant_inputs=(1,)),
    "Sigmoid": OpRule(FLOATS),
    "Split": OpRule(DATA, constant_inputs=(1,)),
    "Squeeze": OpRule(DATA, constant_inputs=(1,)),
    "TopK": OpRule(NUMERIC, constant_inputs=(1,), check=_topk),
    "Where": OpRule(DATA),
    # INT8 explicit quantization (QDQ): TensorRT consumes it as is, zero points must be 0.
    "QuantizeLinear": OpRule(FLOATS, constant_inputs=(1, 2), check=_zero_point(2)),
    "DequantizeLinear": OpRule(QUANTIZED, constant_inputs=(1, 2), check=_zero_point(2)),
}
# Supported by TensorRT but they are how shape arithmetic starts: the exported graph must not
# contain them (its sizes are static; compute them in Python at export).
SHAPE_OPS = ("Shape", "Size")


class _Graph:
    """Name → producer/consumers/constant/type lookups over a model's main graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        self.inits = {i.name: i for i in g.initializer}
        self.consts = {
            n.output[0]: n for n in g.node if n.op_type == "Constant" and len(n.output) == 1
        }
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for name in n.input:
                self.consumers.setdefault(name, []).append(n)
        self.outputs = {o.name for o in g.output}
        self.types = _element_types(model)
        # The exporter shares equal initializers through Identity nodes (e.g. the folded BN
        # biases of a freshly initialised net); the parser passes weights through Identity.
        self.identity = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity"}

    def _source(self, name: str) -> str:
        seen = 0
        while name in self.identity and seen < 64:
            name, seen = self.identity[name], seen + 1
        return name

    def is_constant(self, name: str) -> bool:
        name = self._source(name)
        return not name or name in self.inits or name in self.consts

    def constant_value(self, name: str):
        name = self._source(name)
        if name in self.inits:
            return onnx.numpy_helper.to_array(self.inits[name])
        node = self.consts.get(name)
        if node is not None and node.attribute and node.attribute[0].name == "value":
            return onnx.numpy_helper.to_array(node.attribute[0].t)
        return None


def infer_weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference on a copy without weight data (initializers become typed graph inputs):
    cheap even for the 512 MiB PCA layer. Unknown shapes stay unknown instead of raising."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = list(m.graph.initializer)
    del m.graph.initializer[:]
    known = {vi.name for vi in m.graph.input}
    for init in inits:
        if init.name not in known:
            m.graph.input.append(
                onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
            )
    try:
        return onnx.shape_inference.infer_shapes(m)
    except Exception:  # noqa: BLE001 - partial types are still useful; onnxruntime checks the rest
        return m


def static_output_dims(model: onnx.ModelProto) -> None:
    """Replace symbolic non-batch output dims (the exporter names them, e.g.
    ``Castdescriptor_dim_1``) by the static sizes shape inference finds, in place."""
    inferred = {o.name: o for o in infer_weightless(model).graph.output}
    for out in model.graph.output:
        got = inferred.get(out.name)
        if got is None:
            continue
        dims = out.type.tensor_type.shape.dim
        new = got.type.tensor_type.shape.dim
        for i in range(1, min(len(dims), len(new))):
            if not dims[i].HasField("dim_value") and new[i].HasField("dim_value"):
                dims[i].dim_value = new[i].dim_value


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor the shape inference can type."""
    g = infer_weightless(model).graph
    return {
        vi.name: vi.type.tensor_type.elem_type
        for vi in [*g.input, *g.value_info, *g.output]
        if vi.type.HasField("tensor_type")
    }


def _node_name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


def violations(model: onnx.ModelProto) -> list[Violation]:
    """Every rule the graph breaks, in graph order (empty: TensorRT should take it)."""
    graph = _Graph(model)
    found: list[Violation] = []
    found += _io_rules(model, graph)
    for index, node in enumerate(model.graph.node):
        found += _node_rules(node, _node_name(node, index), graph)
    return found


def _io_rules(model: onnx.ModelProto, graph: _Graph) -> list[Violation]:
    found = []
    for vi in [*model.graph.input, *model.graph.output]:
        if vi.name in graph.inits:
            continue
        tt = vi.type.tensor_type
        dims = list(tt.shape.dim)
        dynamic = [i for i, d in enumerate(dims[1:], 1) if not d.HasField("dim_value")]
        if dynamic:
            found.append(
                Violation(
                    STATIC_SHAPE,
                    vi.name,
                    f"axes {dynamic} are dynamic; only the batch axis (0) may be",
                )
            )
    for vi in model.graph.input:
        if vi.type.tensor_type.elem_type != T.UINT8:
            continue
        for consumer in graph.consumers.get(vi.name, []):
            if consumer.op_type != "Cast":
                name = consumer.name or consumer.op_type
                found.append(
                    Violation(
                        UINT8_INPUT,
                        name,
                        f"uint8 input {vi.name!r} feeds a {consumer.op_type}; it must feed a Cast "
                        "directly (TensorRT has no uint8 layers; NVIDIA/TensorRT#3985)",
                    )
                )
    return found


def _node_rules(node: onnx.NodeProto, name: str, graph: _Graph) -> list[Violation]:
    op = node.op_type
    if node.domain not in ("", "ai.onnx"):
        return [Violation(SUPPORTED_OP, name, f"custom-domain op {node.domain}.{op}")]
    if op in SHAPE_OPS:
        return [
            Violation(
                SHAPE_ARITHMETIC,
                name,
                f"{op} node: sizes are static, compute them at export instead of in the graph",
            )
        ]
    rule = OPS.get(op)
    if rule is None:
        return [
            Violation(
                SUPPORTED_OP,
                name,
                f"{op} is not in the ops accepted for TensorRT (export/trt_compat.py OPS, after "
                "onnx-tensorrt docs/operators.md)",
            )
        ]
    found = []
    if node.input and node.input[0]:
        dtype = graph.types.get(node.input[0])
        if dtype and dtype not in rule.types:
            found.append(
                Violation(OP_DTYPE, name, f"{op} on {T.DataType.Name(dtype)} input is unsupported")
            )
    for i in rule.constant_inputs:
        if i < len(node.input) and not graph.is_constant(node.input[i]):
            found.append(
                Violation(
                    CONSTANT_INPUT,
                    name,
                    f"{op} input {i} ({node.input[i]!r}) must be an initializer or Constant",
                )
            )
    if rule.check is not None:
        reason = rule.check(node, graph)
        if reason:
            found.append(Violation(ATTRIBUTE, name, f"{op}: {reason}"))
    for out in node.output:
        if graph.types.get(out) == T.UINT8 and out not in graph.outputs:
            found.append(
                Violation(
                    UINT8_INTERMEDIATE,
                    name,
                    f"{op} produces uint8 tensor {out!r}; uint8 may only be a graph input/output",
                )
            )
    return found


def check_tensorrt_compatible(model: onnx.ModelProto, source: str | os.PathLike) -> None:
    """Raise :class:`ModelError` naming the first broken rule (and how many more there are)."""
    found = violations(model)
    if found:
        more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
        raise ModelError(
            f"{source}: TensorRT's ONNX parser would refuse this graph: {found[0].line()}{more}"
        )
