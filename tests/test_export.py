"""Export: ONNX fp32/fp16 parity on real images, metadata, PCA cut, atomicity, bad inputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402
from sfrs_edge.export import export_checkpoint, export_model  # noqa: E402
from sfrs_edge.export import verify as verify_mod  # noqa: E402
from sfrs_edge.export.onnx_export import graph_summary  # noqa: E402
from sfrs_edge.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from sfrs_edge.train.model import fingerprint  # noqa: E402

from sfrs_edge.cli import main  # noqa: E402
from sfrs_edge.errors import ConfigError, ModelError  # noqa: E402
from sfrs_edge.images import list_images, load_for_model  # noqa: E402
from sfrs_edge.model_info import METADATA_KEY, ModelInfo  # noqa: E402

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@pytest.fixture(scope="module")
def verify_images(gardens_point) -> list[Path]:
    """3 real night images (the tiny model was fitted on day_right)."""
    return list_images(gardens_point / "night_right")[::70]


def run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"image": batch})[0]


def metadata(path: Path) -> ModelInfo:
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return ModelInfo.from_json(props[METADATA_KEY])


def norm_input_types(model) -> dict[str, set[int]]:
    """Element types flowing into the L2 norms and the softmax.

    An L2 norm is ReduceSum(x·x) → Clip (at eps², so the gradient at a zero vector is finite) →
    Sqrt → Div; we collect the input types of every Sqrt,
    of every ReduceSum feeding a Sqrt (the sum of squares that overflows in fp16), of every Div
    by such a norm, and of every Softmax.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def downstream(name: str, depth: int = 3) -> list:
        found, frontier = [], [name]
        for _ in range(depth):
            frontier = [c for t in frontier for c in consumers.get(t, [])]
            found += frontier
            frontier = [o for c in frontier for o in c.output]
        return found

    out: dict[str, set[int]] = {}
    for node in model.graph.node:
        if node.op_type == "Sqrt":
            out.setdefault("Sqrt", set()).add(types[node.input[0]])
            reduce = producer[node.input[0]]
            if reduce.op_type == "Clip":
                out.setdefault("Clip", set()).add(types[reduce.input[0]])
                reduce = producer[reduce.input[0]]
            assert reduce.op_type == "ReduceSum", "unexpected norm pattern"
            out.setdefault("ReduceSum", set()).add(types[reduce.input[0]])
            for div in (n for n in downstream(node.output[0]) if n.op_type == "Div"):
                out.setdefault("Div", set()).update(types.get(i) for i in div.input)
        elif node.op_type in ("Softmax", "MatMul"):  # soft-assignment, VLAD aggregation
            out.setdefault(node.op_type, set()).add(types[node.input[0]])
    return out


@pytest.fixture(scope="module")
def lite_exports(tmp_path_factory, tiny_checkpoint, verify_images):
    """The tiny Lite0 checkpoint exported in fp32 and fp16."""
    out = tmp_path_factory.mktemp("export")
    fp32 = export_checkpoint(tiny_checkpoint, out / "m32.onnx", verify_images=verify_images)
    fp16 = export_checkpoint(
        tiny_checkpoint, out / "m16.onnx", fp16=True, verify_images=verify_images
    )
    return fp32, fp16


def test_lite0_fp32_export_matches_torch_and_describes_itself(
    lite_exports, tiny_checkpoint, verify_images
):
    report, _ = lite_exports
    net, _ = load_checkpoint(tiny_checkpoint)
    assert report.precision == "fp32" and report.num_images == len(verify_images) == 3
    assert report.min_cos >= 0.9999 and report.mean_cos >= report.min_cos

    model = onnx.load(str(report.path))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "image" and out.name == "descriptor"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert out.type.tensor_type.elem_type == FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [96, 160, 3]

    info = metadata(report.path)
    assert info == report.info
    assert info.weights == fingerprint(net.state_dict())  # the fingerprint covers more (model_info)
    assert (info.descriptor_dim, info.pca_dim, info.num_clusters) == (16, 16, 8)
    assert info.preprocessing == net.config.preprocessing()
    assert info.provenance["checkpoint"] == str(tiny_checkpoint.resolve())

    # Dynamic batch: 1 and 3 images give the same per-image descriptors, unit-norm.
    pre = info.preprocessing
    batch = np.stack([load_for_model(p, pre) for p in verify_images])
    d3 = run_onnx(report.path, batch)
    d1 = run_onnx(report.path, batch[1:2])
    assert d3.shape == (3, 16) and d3.dtype == np.float32
    np.testing.assert_allclose(d1[0], d3[1], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(d3, axis=1), 1.0, atol=1e-5)


def test_graph_has_no_einsum_and_no_residual_tensor(lite_exports):
    report, _ = lite_exports
    model = onnx.load(str(report.path))
    summary = graph_summary(model)
    assert "Einsum" not in summary["ops"] and summary["ops"]["MatMul"] == 1
    # The broadcast residual N×K×D×HW would be 8 × 320 × (3×5) = 38400 per image; the matmul
    # form never holds more than max(K, D)·HW or K·D (2560) in the NetVLAD subgraph.
    k, d, hw = 8, 320, 3 * 5
    sizes = _netvlad_tensor_sizes(model)
    assert sizes and max(sizes) <= max(k * hw, d * hw, k * d) < k * d * hw


def _netvlad_tensor_sizes(model) -> list[int]:
    """Elements per image of every tensor produced by a node of the NetVLAD subgraph."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.type.tensor_type.shape.dim[0].ClearField("dim_param")
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(m)
    shapes = {
        vi.name: [x.dim_value for x in vi.type.tensor_type.shape.dim]
        for vi in inferred.graph.value_info
    }
    return [
        int(np.prod(shapes[o]))
        for node in model.graph.node
        if "netvlad" in node.name
        for o in node.output
        if o in shapes and shapes[o] and all(shapes[o])
    ]


def test_lite0_fp16_keeps_norms_in_fp32(lite_exports):
    fp32, fp16 = lite_exports
    assert fp16.precision == "fp16" and fp16.min_cos >= 0.999
    # Same fp32 weights → same fingerprint: maps built with one can be queried with the other.
    assert fp16.info.fingerprint == fp32.info.fingerprint
    assert metadata(fp16.path).precision == "fp16"
    assert fp16.path.stat().st_size < 0.6 * fp32.path.stat().st_size

    model = onnx.load(str(fp16.path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == FLOAT
    conv_w = [i for i in model.graph.initializer if len(i.dims) == 4]
    fp32_w = [list(i.dims) for i in conv_w if i.data_type == FLOAT]
    # Backbone convs are fp16; only the soft-assignment 1x1 conv (8x320) runs in fp32.
    assert fp32_w == [[8, 320, 1, 1]] and len(conv_w) > 40
    types = norm_input_types(model)
    assert len([n for n in model.graph.node if n.op_type == "Sqrt"]) == 4  # the four L2 norms
    for op in ("ReduceSum", "Clip", "Sqrt", "Div", "Softmax", "MatMul"):
        assert types[op] == {FLOAT}, f"{op} of a norm must run in fp32 under --fp16: {types[op]}"


def test_pca_dim_truncates_and_renormalises(tmp_path, tiny_checkpoint, verify_images):
    net, _ = load_checkpoint(tiny_checkpoint)
    report = export_model(net, tmp_path / "p8.onnx", pca_dim=8, verify_images=verify_images[:2])
    assert report.info.descriptor_dim == report.info.pca_dim == 8
    assert net.config.pca_dim == 16, "export must not modify the caller's network"

    pre = report.info.preprocessing
    batch = np.stack([load_for_model(p, pre) for p in verify_images])
    got = run_onnx(report.path, batch)
    # Reference: the full model's VLAD, first 8 rows of W and b, then L2 (plain torch).
    from sfrs_edge.train.model import InputAdapter

    with torch.no_grad():
        v = net.vlad(InputAdapter(pre)(torch.from_numpy(batch)))
        w, b = net.pca.linear.weight[:8], net.pca.linear.bias[:8]
        y = v @ w.T + b
        want = (y / y.norm(dim=1, keepdim=True)).numpy()
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert report.info.fingerprint != fingerprint(net.state_dict())


def test_pca_dim_errors(tmp_path, tiny_checkpoint, verify_images):
    net, _ = load_checkpoint(tiny_checkpoint)
    with pytest.raises(ConfigError, match="larger than available.*16"):
        export_model(net, tmp_path / "x.onnx", pca_dim=17, verify_images=verify_images)
    net.pca = None
    net.config.pca_dim = None
    with pytest.raises(ConfigError, match="no PCA"):
        export_model(net, tmp_path / "x.onnx", pca_dim=4, verify_images=verify_images)
    assert list(tmp_path.iterdir()) == []


def test_input_size_override(tmp_path, tiny_checkpoint, verify_images):
    report = export_checkpoint(
        tiny_checkpoint, tmp_path / "s.onnx", input_size=(64, 128), verify_images=verify_images[:1]
    )
    assert report.info.preprocessing.size == (64, 128)
    dims = onnx.load(str(report.path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [64, 128, 3]
    assert report.min_cos >= 0.9999


def test_failed_verification_leaves_nothing_behind(
    tmp_path, tiny_checkpoint, verify_images, monkeypatch
):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous model")
    monkeypatch.setitem(verify_mod.THRESHOLDS, "fp32", 1.5)  # unreachable
    with pytest.raises(ModelError, match="verification failed.*min cosine"):
        export_checkpoint(tiny_checkpoint, out, verify_images=verify_images[:1])
    assert out.read_bytes() == b"previous model", "the old file must survive a failed export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_corrupted_graph_fails_verification(tmp_path, tiny_checkpoint, verify_images, monkeypatch):
    """A graph that runs but computes the wrong thing is caught by the parity check."""
    import sfrs_edge.export.pipeline as pipeline

    real = pipeline.write_onnx

    def corrupt(net, path, info, opset=17):
        with torch.no_grad():
            net.netvlad.centroids.mul_(-1.0)  # a plausible-looking but wrong graph
        return real(net, path, info, opset)

    monkeypatch.setattr(pipeline, "write_onnx", corrupt)
    out = tmp_path / "m.onnx"
    with pytest.raises(ModelError, match="verification failed"):
        export_checkpoint(tiny_checkpoint, out, verify_images=verify_images[:2])
    assert list(tmp_path.iterdir()) == []


def test_export_needs_images(tmp_path, tiny_checkpoint):
    with pytest.raises(ConfigError, match="--verify-images"):
        export_checkpoint(tiny_checkpoint, tmp_path / "m.onnx", verify_images=[])


# ------------------------------------------------------------------------------------- VGG16
@pytest.fixture(scope="module")
def vgg_checkpoint(tmp_path_factory, gardens_point) -> Path:
    """VGG16 with random (He-initialised, so 0-255-scale activations like ImageNet VGG16) conv
    weights, NetVLAD from k-means on real images, 16-d whitening; 96x160 input, 8 clusters."""
    from sfrs_edge.train.backbones import VGG16
    from sfrs_edge.train.config import InitConfig, KMeansConfig
    from sfrs_edge.train.model import ModelConfig
    from sfrs_edge.train.offtheshelf import build_offtheshelf

    torch.manual_seed(0)
    vgg = VGG16()
    for m in vgg.features:
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
    folder = tmp_path_factory.mktemp("vgg")
    weights = folder / "vgg16-random.pth"
    state = {k: v.clone() for k, v in vgg.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 8)  # ignored by the importer
    torch.save(state, weights)
    images = list_images(gardens_point / "day_right")[::8]  # 25 images: 250 local descriptors
    cfg = InitConfig(
        model=ModelConfig("vgg16", num_clusters=8, input_height=96, input_width=160, pca_dim=16),
        kmeans=KMeansConfig(descriptors_per_image=10),
        weights=str(weights),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, prov = build_offtheshelf(images, cfg)
    path = folder / "vgg.pt"
    save_checkpoint(net, path, prov)
    return path


@pytest.mark.slow
def test_vgg16_exports_fp32_and_fp16_with_parity(tmp_path, vgg_checkpoint, verify_images):
    net, _ = load_checkpoint(vgg_checkpoint)
    pre = net.config.preprocessing()
    from sfrs_edge.train.model import InputAdapter

    with torch.no_grad():
        x = InputAdapter(pre)(torch.from_numpy(load_for_model(verify_images[0], pre)[None]))
        sumsq = net.features(x).pow(2).sum(1).max().item()
    assert sumsq > 65504, "test premise: fp16 sums of squares would overflow"

    r32 = export_checkpoint(vgg_checkpoint, tmp_path / "v32.onnx", verify_images=verify_images)
    r16 = export_checkpoint(
        vgg_checkpoint, tmp_path / "v16.onnx", fp16=True, verify_images=verify_images
    )
    assert r32.min_cos >= 0.9999 and r16.min_cos >= 0.999
    assert r16.info.fingerprint == r32.info.fingerprint
    assert r16.info.backbone == "vgg16" and r16.info.descriptor_dim == 16
    types = norm_input_types(onnx.load(str(r16.path)))
    assert all(t == {FLOAT} for t in types.values()) and len(types) == 6


# --------------------------------------------------------------------------------------- CLI
def test_cli_export_defaults_after_init(tiny_checkpoint, monkeypatch):
    """`sfrs-edge export --fp16` as typed: default checkpoint, default output, verify images
    from the checkpoint's provenance."""
    from sfrs_edge import paths

    home = paths.home()
    home.mkdir(parents=True)
    (home / "checkpoint.pt").write_bytes(tiny_checkpoint.read_bytes())
    (home / "model.onnx").write_bytes(b"the FP32 model a map was built with")
    result = CliRunner().invoke(main, ["export", "--fp16", "--verify-count", "2"])
    assert result.exit_code == 0, result.output
    assert "min cosine" in result.output and "on 2 images" in result.output
    assert metadata(home / "model-fp16.onnx").precision == "fp16"
    assert (home / "model.onnx").read_bytes() == b"the FP32 model a map was built with"
    assert "model.onnx is kept" in result.output and "--model" in result.output


def test_cli_export_in_a_fresh_home_says_how_to_make_a_checkpoint():
    result = CliRunner().invoke(main, ["export"])
    assert result.exit_code == 1
    assert "no such checkpoint file" in result.output and "sfrs-edge init" in result.output


@pytest.mark.slow
def test_cli_export_rerank_keeps_the_fitted_local_pca(tmp_path, tiny_checkpoint, monkeypatch):
    """`export --rerank` of a checkpoint without a local-feature PCA fits one and keeps it in
    the checkpoint; the next export reuses it (fitting again would fail here)."""
    import sfrs_edge.train.local_features as lf
    from sfrs_edge.train.checkpoint import read_checkpoint

    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(tiny_checkpoint.read_bytes())
    assert not read_checkpoint(ckpt).get("local")
    args = ["export", str(ckpt), "--rerank", "--verify-count", "2", "-o"]
    result = CliRunner().invoke(main, [*args, str(tmp_path / "a.onnx")])
    assert result.exit_code == 0, result.output
    assert f"kept in {ckpt}" in result.output
    assert read_checkpoint(ckpt)["local"]["projection"].ndim == 2

    def refit(*a, **k):
        raise AssertionError("refitted a local-feature PCA the checkpoint holds")

    monkeypatch.setattr(lf, "fit_local_head", refit)
    result = CliRunner().invoke(main, [*args, str(tmp_path / "b.onnx")])
    assert result.exit_code == 0, result.output
    assert "fitted the local-feature PCA" not in result.output
    assert metadata(tmp_path / "b.onnx").local == metadata(tmp_path / "a.onnx").local


def _bad_checkpoints(folder: Path, tiny_checkpoint: Path) -> dict[str, Path]:
    data = tiny_checkpoint.read_bytes()
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])
    (folder / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "empty.pt").write_bytes(b"")
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["config"]["backbone"] = "resnet9000"
    torch.save(ckpt, folder / "unknown_backbone.pt")
    return {
        "missing": folder / "missing.pt",
        "truncated": folder / "truncated.pt",
        "random": folder / "random.pt",
        "empty": folder / "empty.pt",
        "unknown_backbone": folder / "unknown_backbone.pt",
    }


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such checkpoint"),
        ("truncated", "corrupt, truncated"),
        ("random", "corrupt, truncated"),
        ("empty", "empty"),
        ("unknown_backbone", "unknown backbone 'resnet9000'"),
    ],
)
def test_cli_bad_checkpoints_exit_1(tmp_path, tiny_checkpoint, case, message):
    path = _bad_checkpoints(tmp_path, tiny_checkpoint)[case]
    result = CliRunner().invoke(main, ["export", str(path), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and str(path) in result.output
    assert message in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_cli_pca_dim_too_large_exit_1(tmp_path, tiny_checkpoint):
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", str(tiny_checkpoint), "-o", str(out)] + ["--pca-dim", "999"])  # fmt: skip
    assert result.exit_code == 1
    assert "error: --pca-dim 999 is larger than available" in result.output
    assert not out.exists()


def test_cli_asks_for_verify_images_when_unknown(tmp_path, tiny_checkpoint):
    net, _ = load_checkpoint(tiny_checkpoint)
    ckpt = save_checkpoint(net, tmp_path / "noprov.pt", provenance={"kind": "imported"})
    result = CliRunner().invoke(main, ["export", str(ckpt), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and "--verify-images DIR" in result.output


# -------------------------------------------------------------------------------- TensorRT
def test_engine_without_tensorrt_is_a_clear_error(tmp_path, lite_exports):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        from sfrs_edge.export import build_engine

        with pytest.raises(ConfigError, match="TensorRT is not installed"):
            build_engine(lite_exports[1].path, tmp_path / "m.engine")
        assert not (tmp_path / "m.engine").exists()
    else:
        pytest.skip("TensorRT is installed: covered by test_build_engine")


@pytest.mark.gpu
def test_build_engine(tmp_path, lite_exports):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pytest.skip("TensorRT not installed")
    import json

    from sfrs_edge.export import build_engine

    engine = build_engine(lite_exports[1].path, tmp_path / "m.engine")
    side = json.loads((tmp_path / "m.engine.json").read_text())
    assert engine.stat().st_size > 0
    assert side["precision"] == "fp16" and side["tensorrt_version"] == tensorrt.__version__
    assert side["fingerprint"] == lite_exports[1].info.fingerprint and side["gpu_name"]


def test_cli_engine_without_tensorrt_fails_before_export(tmp_path, tiny_checkpoint):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed")
    except ImportError:
        pass
    out = tmp_path / "m.onnx"
    args = ["export", str(tiny_checkpoint), "-o", str(out), "--engine", str(tmp_path / "m.engine")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "TensorRT is not installed" in result.output
    assert not out.exists()
