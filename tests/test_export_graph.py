"""The exported graph itself: lean (no Pad, no shape arithmetic), uint8 input straight into a
Cast, and accepted by the TensorRT-compatibility check, for both backbones and precisions."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from sfrs_edge.export.onnx_export import write_onnx  # noqa: E402
from sfrs_edge.export.trt_compat import check_tensorrt_compatible, violations  # noqa: E402
from sfrs_edge.train.backbones import Conv2dSame, same_padding  # noqa: E402
from sfrs_edge.train.model import ModelConfig, SFRSNet, model_info  # noqa: E402

# Ops that only exist to compute sizes at run time, or pad outside a Conv.
SHAPE_ARITHMETIC = {"Shape", "Size", "ConstantOfShape", "Gather", "Concat", "Range", "Expand"}
SMALL = (240, 320)  # `--input-size 240x320`
DEFAULT = {"efficientnet_lite0": (360, 640), "vgg16": (480, 640)}


def export(backbone: str, size: tuple[int, int], precision: str, folder: Path) -> onnx.ModelProto:
    """Random-weight export (no verification: the graph is what is tested here)."""
    torch.manual_seed(0)
    net = SFRSNet(ModelConfig(backbone=backbone, input_height=size[0], input_width=size[1]))
    net.eval()
    info = model_info(net, precision=precision)
    if precision == "fp16":
        net.half()
    path = folder / f"{backbone}_{size[0]}x{size[1]}_{precision}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_onnx(net, path, info)
    return onnx.load(str(path))


CASES = [(b, p) for b in ("efficientnet_lite0", "vgg16") for p in ("fp32", "fp16")]


@pytest.fixture(scope="module")
def small_graphs(tmp_path_factory) -> dict[tuple[str, str], onnx.ModelProto]:
    folder = tmp_path_factory.mktemp("graphs")
    return {(b, p): export(b, SMALL, p, folder) for b, p in CASES}


def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


@pytest.mark.parametrize("backbone,precision", CASES)
def test_graph_is_lean(small_graphs, backbone, precision):
    ops = op_counts(small_graphs[backbone, precision])
    assert ops["Pad"] == 0, ops
    assert not SHAPE_ARITHMETIC & set(ops), ops
    if backbone == "efficientnet_lite0":
        assert ops["Conv"] == 49 and "BatchNormalization" not in ops  # BN folded into the convs
        assert sum(ops.values()) < 250, ops  # was 1214 with traced SAME padding


@pytest.mark.parametrize("backbone,precision", CASES)
def test_uint8_image_feeds_a_cast(small_graphs, backbone, precision):
    model = small_graphs[backbone, precision]
    consumers = [n for n in model.graph.node if "image" in n.input]
    assert [n.op_type for n in consumers] == ["Cast"]
    to = {a.name: a.i for a in consumers[0].attribute}["to"]
    assert to == onnx.TensorProto.FLOAT  # the input adapter computes in fp32 either way


@pytest.mark.parametrize("backbone,precision", CASES)
def test_small_graphs_pass_the_tensorrt_check(small_graphs, backbone, precision):
    model = small_graphs[backbone, precision]
    assert violations(model) == []
    out = model.graph.output[0].type.tensor_type.shape.dim
    assert out[0].dim_param and out[1].dim_value > 0  # dynamic batch, static descriptor size


@pytest.mark.slow
@pytest.mark.parametrize("backbone,precision", CASES)
def test_default_size_graphs_are_lean_and_pass(tmp_path, backbone, precision):
    model = export(backbone, DEFAULT[backbone], precision, tmp_path)
    check_tensorrt_compatible(model, "default")
    assert not ({"Pad"} | SHAPE_ARITHMETIC) & set(op_counts(model))


@pytest.mark.parametrize("size", [(8, 8), (9, 9), (8, 9), (7, 10)])
@pytest.mark.parametrize("kernel,stride", [(3, 2), (5, 2), (3, 1), (5, 1), (1, 1)])
def test_same_conv_exports_as_one_conv_with_tf_padding(tmp_path, size, kernel, stride):
    """Asymmetric TF-"SAME" padding lives in the Conv's pads; numbers equal eager torch."""
    conv = Conv2dSame(3, 4, kernel, stride=stride, bias=False).eval()
    x = torch.randn(2, 3, *size)
    path = tmp_path / "conv.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            conv, (x,), str(path), input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False
        )
    model = onnx.load(str(path))
    assert [n.op_type for n in model.graph.node] == ["Conv"]
    pads = {a.name: list(a.ints) for a in model.graph.node[0].attribute}["pads"]
    (top, bottom), (left, right) = (same_padding(s, kernel, stride) for s in size)
    assert pads == [top, left, bottom, right]
    got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, conv(x).detach().numpy(), atol=1e-5)


def test_same_padding_matches_tensorflow_rule():
    # TF: out = ceil(in / s); pad = max((out - 1) * s + k - in, 0), extra pixel at the end.
    assert same_padding(8, 3, 2) == (0, 1)
    assert same_padding(9, 3, 2) == (1, 1)
    assert same_padding(360, 5, 2) == (1, 2)
    assert same_padding(7, 1, 1) == (0, 0)
