"""TensorRT-compatibility check: one small graph per rule that must be refused, naming the node
and the rule; plus graphs that must pass (INT8 QDQ, re-ranking style TopK/Gather/MaxPool)."""

from __future__ import annotations

import re

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto as T  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402
from sfrs_edge.export import trt_compat  # noqa: E402
from sfrs_edge.export.trt_compat import check_tensorrt_compatible, violations  # noqa: E402

from sfrs_edge.errors import ModelError  # noqa: E402

H, W = 4, 6


def const(name: str, values, dtype=np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def graph(
    nodes, inputs=None, outputs=None, inits=(), opset: int = 17, out_dims=None
) -> onnx.ModelProto:
    """uint8 NHWC ``image`` → Cast → the given nodes → float ``y``."""
    inputs = inputs or [helper.make_tensor_value_info("image", T.UINT8, ["batch", H, W, 3])]
    outputs = outputs or [
        helper.make_tensor_value_info("y", T.FLOAT, out_dims or ["batch", 3, H, W])
    ]
    g = helper.make_graph(list(nodes), "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


CAST = helper.make_node("Cast", ["image"], ["f"], to=T.FLOAT, name="cast_in")
TRANSPOSE = helper.make_node("Transpose", ["f"], ["y"], perm=[0, 3, 1, 2], name="to_nchw")


def refused(model: onnx.ModelProto, rule: str, node: str) -> str:
    with pytest.raises(ModelError) as exc:
        check_tensorrt_compatible(model, "m.onnx")
    msg = str(exc.value)
    assert f"rule '{rule}'" in msg and repr(node) in msg, msg
    return msg


def test_good_graph_passes():
    assert violations(graph([CAST, TRANSPOSE])) == []


def test_uint8_input_must_feed_a_cast():
    model = graph(
        [
            helper.make_node("Transpose", ["image"], ["t"], perm=[0, 3, 1, 2], name="early_t"),
            helper.make_node("Cast", ["t"], ["y"], to=T.FLOAT, name="late_cast"),
        ]
    )
    refused(model, trt_compat.UINT8_INPUT, "early_t")


def test_uint8_intermediate_tensor_is_refused():
    model = graph(
        [
            CAST,
            helper.make_node("Cast", ["f"], ["u"], to=T.UINT8, name="to_u8"),
            helper.make_node("Cast", ["u"], ["g"], to=T.FLOAT, name="back"),
            helper.make_node("Transpose", ["g"], ["y"], perm=[0, 3, 1, 2], name="t"),
        ]
    )
    refused(model, trt_compat.UINT8_INTERMEDIATE, "to_u8")


def test_unsupported_op_is_refused():
    model = graph([CAST, helper.make_node("NonZero", ["f"], ["y"], name="nz")])
    refused(model, trt_compat.SUPPORTED_OP, "nz")


def test_custom_domain_op_is_refused():
    node = helper.make_node("MyPlugin", ["f"], ["y"], name="plugin", domain="com.example")
    refused(graph([CAST, node]), trt_compat.SUPPORTED_OP, "plugin")


def test_op_on_unsupported_dtype_is_refused():
    # MatMul is FP32/FP16/BF16 only in onnx-tensorrt's matrix; here it gets INT32.
    model = graph(
        [
            helper.make_node("Cast", ["image"], ["i"], to=T.INT32, name="cast_int"),
            helper.make_node("Transpose", ["i"], ["t"], perm=[0, 3, 1, 2], name="t"),
            helper.make_node("MatMul", ["t", "eye"], ["m"], name="int_matmul"),
            helper.make_node("Cast", ["m"], ["y"], to=T.FLOAT, name="out"),
        ],
        inits=[const("eye", np.eye(W), np.int32)],
    )
    refused(model, trt_compat.OP_DTYPE, "int_matmul")


def test_runtime_computed_reshape_target_is_refused():
    model = graph(
        [
            CAST,
            helper.make_node("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2], name="t"),
            helper.make_node("ReduceSum", ["t", "axes"], ["s"], keepdims=0, name="sum"),
            helper.make_node("Cast", ["s"], ["shape"], to=T.INT64, name="shape_from_data"),
            helper.make_node("Reshape", ["t", "shape"], ["y"], name="data_reshape"),
        ],
        inits=[const("axes", [2, 3])],
    )
    refused(model, trt_compat.CONSTANT_INPUT, "data_reshape")


def test_documented_attribute_limits_are_refused():
    model = graph(
        [
            CAST,
            helper.make_node("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2], name="t"),
            helper.make_node("ReduceSum", ["t", "axes"], ["s"], keepdims=0, name="sum"),
            helper.make_node("TopK", ["s", "k"], ["y", "idx"], sorted=0, name="unsorted_topk"),
        ],
        inits=[const("axes", [2, 3]), const("k", [2])],
        outputs=[helper.make_tensor_value_info("y", T.FLOAT, ["batch", 2])],
    )
    refused(model, trt_compat.ATTRIBUTE, "unsorted_topk")


def test_asymmetric_quantization_is_refused():
    model = graph(
        [
            CAST,
            helper.make_node("QuantizeLinear", ["f", "scale", "zp"], ["q"], name="q_asym"),
            helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["d"], name="dq_asym"),
            helper.make_node("Transpose", ["d"], ["y"], perm=[0, 3, 1, 2], name="t"),
        ],
        inits=[const("scale", 0.5, np.float32), const("zp", 3, np.int8)],
    )
    msg = refused(model, trt_compat.ATTRIBUTE, "q_asym")
    assert "+1 more" in msg  # the DequantizeLinear breaks it too


def test_dynamic_spatial_size_is_refused():
    inputs = [helper.make_tensor_value_info("image", T.UINT8, ["batch", "h", W, 3])]
    refused(graph([CAST, TRANSPOSE], inputs=inputs), trt_compat.STATIC_SHAPE, "image")


def test_shape_arithmetic_is_refused():
    model = graph(
        [
            CAST,
            helper.make_node("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2], name="t"),
            helper.make_node("Shape", ["t"], ["shp"], name="traced_shape"),
            helper.make_node("Reshape", ["t", "shp"], ["y"], name="reshape"),
        ]
    )
    msg = refused(model, trt_compat.SHAPE_ARITHMETIC, "traced_shape")
    assert "+1 more" in msg  # and the Reshape's target is not a constant


def test_int8_qdq_graph_passes():
    """The INT8 export: symmetric QDQ around a Conv, per-channel weights, zero points 0."""
    w = np.ones((3, 3, 1, 1), np.int8)
    model = graph(
        [
            CAST,
            helper.make_node("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2], name="t"),
            helper.make_node("QuantizeLinear", ["t", "s", "z"], ["q"], name="q"),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"], name="dq"),
            helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0, name="dqw"),
            helper.make_node("Conv", ["d", "w"], ["y"], kernel_shape=[1, 1], name="conv"),
        ],
        inits=[
            const("s", 0.5, np.float32),
            const("z", 0, np.int8),
            numpy_helper.from_array(w, "wq"),
            const("ws", [0.1, 0.1, 0.1], np.float32),
            const("wz", [0, 0, 0], np.int8),
        ],
    )
    assert violations(model) == []


def test_rerank_style_outputs_pass():
    """Re-ranking's extra outputs (local features): MaxPool (no indices), TopK (sorted, constant K), Gather."""
    model = graph(
        [
            CAST,
            helper.make_node("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2], name="t"),
            helper.make_node("MaxPool", ["t"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
            helper.make_node("ReduceSum", ["p", "ax1"], ["score"], keepdims=0, name="score"),
            helper.make_node("Reshape", ["score", "flat"], ["sflat"], name="flatten"),
            helper.make_node("TopK", ["sflat", "k"], ["top", "idx"], axis=1, name="topk"),
            helper.make_node("Gather", ["rows", "idx"], ["xy"], axis=0, name="gather_xy"),
        ],
        inits=[
            const("ax1", [1]),
            const("flat", [-1, (H // 2) * (W // 2)]),
            const("k", [4]),
            const("rows", np.zeros(((H // 2) * (W // 2), 2)), np.float32),
        ],
        outputs=[
            helper.make_tensor_value_info("top", T.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("xy", T.FLOAT, ["batch", 4, 2]),
        ],
    )
    assert violations(model) == []


def test_every_rule_has_a_refusal_test():
    """Each rule name appears in a refusal test above (keeps RULES and the tests in step)."""
    source = open(__file__).read()
    names = {v: k for k, v in vars(trt_compat).items() if k.isupper() and v in trt_compat.RULES}
    assert set(names) == set(trt_compat.RULES)
    for name in names.values():
        assert re.search(rf"refused\([^\n]*trt_compat\.{name},", source), name
