"""INT8 export: what is quantized, what stays float, the gate, and INT8/float map mixing."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from sfrs_edge.engine import Engine  # noqa: E402
from sfrs_edge.errors import MapError, ModelError  # noqa: E402
from sfrs_edge.images import list_images  # noqa: E402


@pytest.fixture(scope="module")
def int8_model(tiny_onnx, gardens_point, tmp_path_factory):
    from sfrs_edge.export.quantize import Int8Config, quantize_model

    out = tmp_path_factory.mktemp("int8") / "tiny_int8.onnx"
    cal = list_images(gardens_point / "day_left")[::25]
    info, quantized, kept = quantize_model(tiny_onnx, out, cal, Int8Config())
    return out, info, quantized, kept


def _weight_producers(model):
    producers = {o: n for n in model.graph.node for o in n.output}
    return {
        n.name: getattr(producers.get(n.input[1]), "op_type", "initializer")
        for n in model.graph.node
        if n.op_type == "Conv"
    }


def test_only_dense_backbone_convs_are_int8(int8_model):
    path, info, quantized, kept = int8_model
    model = onnx.load(str(path))
    weights = _weight_producers(model)
    int8 = {name for name, op in weights.items() if op == "DequantizeLinear"}
    assert int8 == set(quantized) and int8
    assert all(name.startswith("/net/backbone/") for name in int8)
    assert "/net/netvlad/Conv" in kept and "/net/netvlad/Conv" not in int8
    groups = {
        n.name: next((a.i for a in n.attribute if a.name == "group"), 1)
        for n in model.graph.node
        if n.op_type == "Conv"
    }
    assert all(groups[name] == 1 for name in int8), "depthwise convs must stay float"
    # nothing after the backbone reads a dequantized tensor: norms, softmax, NetVLAD, PCA in float
    producers = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type in ("Softmax", "MatMul", "ReduceSum", "Gemm"):
            assert all(
                getattr(producers.get(i), "op_type", "") != "DequantizeLinear" for i in n.input
            )
    assert info.precision == "int8" and info.provenance["int8"]["format"] == "QDQ"


def test_int8_model_runs_and_is_close(int8_model, tiny_onnx, gardens_point):
    from sfrs_edge.export.quantize import gate

    path = int8_model[0]
    engine = Engine.open(path, backend="cpu", threads=1)
    assert engine.info.precision == "int8"
    ref = Engine.open(tiny_onnx, backend="cpu", threads=1)
    assert engine.info.weights == ref.info.weights  # same weights ...
    assert engine.fingerprint != ref.fingerprint  # ... but a different precision class
    images = list_images(gardens_point / "day_right")[::25]
    g = gate(tiny_onnx, path, images)
    assert g.num_images == len(images)
    assert 0.5 < g.mean_cos <= 1.0 + 1e-6 and g.min_cos <= g.mean_cos
    d = engine.embed_files(images[:2])
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-4)


def test_gate_refuses_and_nothing_is_written(tiny_checkpoint, gardens_point, tmp_path):
    from sfrs_edge.export.quantize import Int8Config, export_int8
    from sfrs_edge.train.checkpoint import load_checkpoint

    net, _ = load_checkpoint(tiny_checkpoint)
    out = tmp_path / "model.onnx"
    impossible = Int8Config(calibration_method="minmax", min_mean_cos=1.01)
    with pytest.raises(ModelError, match="INT8 model refused.*nothing was written"):
        export_int8(
            net,
            out,
            calibration=list_images(gardens_point / "day_left")[::40],
            verify_images=list_images(gardens_point / "day_right")[::40],
            config=impossible,
        )
    assert list(tmp_path.iterdir()) == []


def test_int8_model_refuses_a_float_map(int8_model, tiny_onnx, gardens_point, tmp_path):
    from sfrs_edge.localize import Localizer
    from sfrs_edge.maps import add_to_map, build_map

    src = list_images(gardens_point / "day_left")[:4]
    build_map(Engine.open(tiny_onnx, backend="cpu", threads=1), src, tmp_path / "map")
    int8 = Engine.open(int8_model[0], backend="cpu", threads=1)
    with pytest.raises(MapError, match="precision"):
        Localizer(int8, tmp_path / "map")
    with pytest.raises(MapError):
        add_to_map(int8, tmp_path / "map", list_images(gardens_point / "day_left")[4:6])


def test_cli_int8_needs_calibration(tiny_checkpoint, tmp_path):
    from click.testing import CliRunner

    from sfrs_edge.cli import main

    r = CliRunner().invoke(
        main, ["export", str(tiny_checkpoint), "-o", str(tmp_path / "m.onnx"), "--int8"]
    )
    assert r.exit_code == 2 and "--calibration" in r.output
    r = CliRunner().invoke(
        main, ["export", str(tiny_checkpoint), "--int8", "--fp16", "--calibration", str(tmp_path)]
    )
    assert r.exit_code == 2 and "cannot be combined" in r.output
