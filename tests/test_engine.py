"""Engine: exported model → descriptors, equal to the torch model's; clear errors on bad models."""

from __future__ import annotations

import dataclasses
import json
import threading

import numpy as np
import pytest

from sfrs_edge.engine import Engine
from sfrs_edge.errors import ConfigError, ImageError, ModelError
from sfrs_edge.images import list_images, read_image
from sfrs_edge.model_info import METADATA_KEY, ModelInfo, Preprocessing

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


@pytest.fixture(scope="module")
def engine(tiny_onnx) -> Engine:
    return Engine.open(tiny_onnx, backend="cpu", threads=1)


@pytest.fixture(scope="module")
def some_images(gardens_point):
    return (
        list_images(gardens_point / "day_left")[::40]
        + list_images(gardens_point / "night_right")[::50]
    )


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def test_runtime_descriptors_equal_torch(engine, tiny_checkpoint, some_images):
    pytest.importorskip("torch")
    from sfrs_edge.train.checkpoint import load_checkpoint
    from sfrs_edge.train.features import descriptors

    net, _ = load_checkpoint(tiny_checkpoint)
    ref = descriptors(net, some_images, batch_size=4)
    got = engine.embed_files(some_images, batch_size=3)
    assert got.shape == ref.shape == (len(some_images), engine.dim)
    assert got.dtype == np.float32
    assert _cos(got, ref).min() >= 0.9999
    frames = np.stack([engine.embed_frame(read_image(p)) for p in some_images])
    assert _cos(frames, ref).min() >= 0.9999
    # descriptors discriminate: not all the same vector
    assert _cos(got[:1].repeat(len(got), 0), got)[1:].min() < 0.99


def test_info_from_metadata(engine, tiny_onnx):
    assert engine.info.preprocessing.size == (96, 160)
    assert engine.dim == engine.info.descriptor_dim == 16
    assert len(engine.fingerprint) == 16
    assert engine.backend.name == "onnxruntime:CPUExecutionProvider"
    assert tiny_onnx.name in repr(engine)


def test_batch_sizes_and_progress_agree(engine, some_images):
    calls = []
    a = engine.embed_files(some_images, batch_size=1, progress=lambda d, t: calls.append((d, t)))
    b = engine.embed_files(some_images, batch_size=8)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert calls[-1] == (len(some_images), len(some_images)) and len(calls) == len(some_images)
    assert engine.embed_files([]).shape == (0, engine.dim)
    with pytest.raises(ConfigError):
        engine.embed_files(some_images, batch_size=0)


def test_embed_frame_reuses_buffers_and_times_stages(engine, some_images):
    frame = read_image(some_images[0])
    before = (engine._frame_in.ctypes.data, engine._frame_out.ctypes.data, engine.backend.session)
    d1 = engine.embed_frame(frame)
    d2 = engine.embed_frame(frame)
    after = (engine._frame_in.ctypes.data, engine._frame_out.ctypes.data, engine.backend.session)
    assert before == after
    np.testing.assert_array_equal(d1, d2)
    assert d1 is not d2 and not np.shares_memory(d1, engine._frame_out)
    assert set(engine.last_timings) == {"preprocess", "inference"}
    assert all(v > 0 for v in engine.last_timings.values())


def test_embed_frame_converts_grayscale_rgba_16bit(engine, some_images):
    bgr = read_image(some_images[1])
    gray = bgr[:, :, 1].copy()
    as_bgr = engine.embed_frame(np.dstack([gray] * 3))
    np.testing.assert_allclose(engine.embed_frame(gray), as_bgr, atol=1e-6)
    rgba = np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)])
    np.testing.assert_allclose(engine.embed_frame(rgba), engine.embed_frame(bgr), atol=1e-6)
    wide = bgr.astype(np.uint16) << 8
    np.testing.assert_allclose(engine.embed_frame(wide), engine.embed_frame(bgr), atol=1e-6)


def test_embed_frame_from_many_threads(engine, some_images):
    frames = [read_image(p) for p in some_images]
    expected = [engine.embed_frame(f) for f in frames]
    results: dict[int, list[np.ndarray]] = {i: [] for i in range(len(frames))}
    errors = []

    def worker(i: int) -> None:
        try:
            for _ in range(5):
                results[i].append(engine.embed_frame(frames[i]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, outs in results.items():
        for d in outs:
            np.testing.assert_array_equal(d, expected[i])


def test_embed_rejects_wrong_batches(engine):
    with pytest.raises(ImageError, match=r"uint8 \(N, 96, 160, 3\)"):
        engine.embed(np.zeros((2, 96, 160, 3), np.float32))
    with pytest.raises(ImageError):
        engine.embed(np.zeros((2, 90, 160, 3), np.uint8))
    with pytest.raises(ImageError):
        engine.embed(np.zeros((96, 160, 3), np.uint8))


def test_bad_image_file_in_batch_names_it(engine, some_images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageError, match="broken.jpg"):
        engine.embed_files([some_images[0], bad])


# --- model file errors -------------------------------------------------------------------


def _with_metadata(src, dst, value: str | None):
    model = onnx.load(str(src))
    del model.metadata_props[:]
    if value is not None:
        model.metadata_props.add(key=METADATA_KEY, value=value)
    onnx.save(model, str(dst))
    return dst


def test_missing_empty_directory_and_garbage_models(tmp_path):
    with pytest.raises(ModelError, match="nope.onnx: no such model file"):
        Engine.open(tmp_path / "nope.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="empty.onnx: model file is empty"):
        Engine.open(tmp_path / "empty.onnx")
    with pytest.raises(ModelError, match="is a directory"):
        Engine.open(tmp_path)
    (tmp_path / "junk.onnx").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ModelError, match="junk.onnx: not a loadable ONNX model"):
        Engine.open(tmp_path / "junk.onnx")


def test_checkpoint_instead_of_onnx(tiny_checkpoint):
    with pytest.raises(ModelError, match="not an ONNX model.*sfrs-edge export"):
        Engine.open(tiny_checkpoint)


def test_onnx_without_or_with_bad_metadata(tiny_onnx, tmp_path):
    no_meta = _with_metadata(tiny_onnx, tmp_path / "plain.onnx", None)
    with pytest.raises(ModelError, match="plain.onnx: no 'sfrs_edge' metadata"):
        Engine.open(no_meta)
    raw = json.loads(Engine.open(tiny_onnx).info.to_json())
    raw["format_version"] = 99
    future = _with_metadata(tiny_onnx, tmp_path / "future.onnx", json.dumps(raw))
    with pytest.raises(ModelError, match="future.onnx: model format version 99"):
        Engine.open(future)
    broken = _with_metadata(tiny_onnx, tmp_path / "broken.onnx", "{not json")
    with pytest.raises(ModelError, match="broken.onnx: sfrs_edge metadata is malformed"):
        Engine.open(broken)
    raw["format_version"] = 2
    raw["preprocessing"]["height"] = 128
    lying = _with_metadata(tiny_onnx, tmp_path / "lying.onnx", json.dumps(raw))
    with pytest.raises(ModelError, match="fingerprint .* does not match the properties"):
        Engine.open(lying)
    info = Engine.open(tiny_onnx).info
    taller = dataclasses.replace(
        info, preprocessing=dataclasses.replace(info.preprocessing, height=128)
    )
    lying = _with_metadata(tiny_onnx, tmp_path / "lying2.onnx", taller.to_json())
    with pytest.raises(ModelError, match="does not match the metadata"):
        Engine.open(lying)


def test_backend_choice_errors(tiny_onnx):
    with pytest.raises(ConfigError, match="unknown backend"):
        Engine.open(tiny_onnx, backend="gpu9000")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ConfigError, match="onnxruntime-gpu"):
            Engine.open(tiny_onnx, backend="cuda")
    assert Engine.open(tiny_onnx, backend="auto").backend.name.startswith("onnxruntime:")


# --- a hand-built graph: no torch needed -------------------------------------------------


def _handmade_model(
    path,
    scale: float,
    h: int = 32,
    w: int = 48,
    normalise: bool = True,
    dim: int = 3,
    length: float | None = None,
):
    """uint8 image → per-channel means × ``scale`` (→ L2-normalised) (× ``length``: the
    descriptors' norm) → descriptor (N, 3); the metadata says ``dim``."""
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f", "axes"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "s"], ["d" if normalise else "descriptor"]),
    ]
    if normalise:
        out = "descriptor" if length is None else "n"
        nodes.append(helper.make_node("LpNormalization", ["d"], [out], axis=1, p=2))
    if normalise and length is not None:
        nodes.append(helper.make_node("Mul", ["n", "len"], ["descriptor"]))
    inits = [
        helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
        helper.make_tensor("s", TensorProto.FLOAT, [], [scale]),
        helper.make_tensor("len", TensorProto.FLOAT, [], [1.0 if length is None else length]),
    ]
    graph = helper.make_graph(
        nodes,
        "handmade",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", h, w, 3])],
        [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", "D"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    info = ModelInfo(
        backbone="handmade",
        preprocessing=Preprocessing(h, w, (0.0,) * 3, (1.0,) * 3),
        descriptor_dim=dim,
        num_clusters=1,
        local_dim=3,
        pca_dim=None,
        whitening=False,
        fingerprint="0123456789abcdef",
    )
    model.metadata_props.add(key=METADATA_KEY, value=info.to_json())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_handmade_model_runs(tmp_path, gardens_point):
    eng = Engine.open(_handmade_model(tmp_path / "ok.onnx", 1.0))
    frame = read_image(list_images(gardens_point / "day_left")[0])
    d = eng.embed_frame(frame)
    assert d.shape == (3,)
    mean = frame.reshape(-1, 3).mean(0)
    np.testing.assert_allclose(d, mean / np.linalg.norm(mean), rtol=0.05)


def test_nan_descriptor_is_a_clear_error(tmp_path):
    eng = Engine.open(_handmade_model(tmp_path / "nan.onnx", float("nan")))
    with pytest.raises(ModelError, match="NaN/inf"):
        eng.embed_frame(np.zeros((40, 60, 3), np.uint8))
    with pytest.raises(ModelError, match="NaN/inf"):
        eng.embed(np.zeros((3, 32, 48, 3), np.uint8))


@pytest.mark.parametrize("side", [1.0, -1.0])
def test_norms_just_outside_the_tolerance_are_refused(tmp_path, side):
    """Unit length is checked to NORM_TOLERANCE, not loosely: norms 1 ± 1.5 tolerances are a
    broken export, 1 ± 0.5 tolerances (fp16 rounding) pass."""
    from sfrs_edge.engine import NORM_TOLERANCE

    frame = np.full((40, 60, 3), (10, 80, 200), np.uint8)
    batch = np.full((2, 32, 48, 3), (10, 80, 200), np.uint8)
    near = Engine.open(
        _handmade_model(tmp_path / "near.onnx", 1.0, length=1 + side * 0.5 * NORM_TOLERANCE)
    )
    assert abs(np.linalg.norm(near.embed_frame(frame)) - 1) == pytest.approx(
        0.5 * NORM_TOLERANCE, rel=1e-3
    )
    assert near.embed(batch).shape == (2, 3)
    off = Engine.open(
        _handmade_model(tmp_path / "off.onnx", 1.0, length=1 + side * 1.5 * NORM_TOLERANCE)
    )
    with pytest.raises(ModelError, match="not unit length"):
        off.embed_frame(frame)
    with pytest.raises(ModelError, match="not unit length"):
        off.embed(batch)


# --- TensorRT engines --------------------------------------------------------------------


def test_engine_file_needs_sidecar(tmp_path):
    e = tmp_path / "model.engine"
    e.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match="model.engine.json.*sfrs-edge export --engine"):
        Engine.open(e)
    with pytest.raises(ConfigError, match="--backend tensorrt"):
        Engine.open(e, backend="cpu")


def test_engine_sidecar_mismatch_messages(tmp_path):
    from sfrs_edge.backends.tensorrt import check_compatible

    side = {"gpu_name": "NVIDIA H100 80GB HBM3", "tensorrt_version": "10.3.0"}
    check_compatible(tmp_path / "m.engine", side, "NVIDIA H100 80GB HBM3", "10.3.0")
    with pytest.raises(ModelError, match="built for GPU.*Orin.*export --engine"):
        check_compatible(tmp_path / "m.engine", side, "Orin", "10.3.0")
    with pytest.raises(ModelError, match="TensorRT 10.3.0.*10.8.0.*export --engine"):
        check_compatible(tmp_path / "m.engine", side, "NVIDIA H100 80GB HBM3", "10.8.0")


def test_engine_without_tensorrt_installed(tmp_path, tiny_onnx):
    import importlib.util

    e = tmp_path / "model.engine"
    e.write_bytes(b"\x00" * 100)
    info = Engine.open(tiny_onnx).info
    (tmp_path / "model.engine.json").write_text(
        json.dumps({"gpu_name": "x", "tensorrt_version": "10", "model_info": info.to_json()})
    )
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(ConfigError, match="tensorrt"):
            Engine.open(e)
    else:  # pragma: no cover - machines with TensorRT
        with pytest.raises(ModelError):
            Engine.open(e)


def test_tensorrt_engine_parity(tiny_onnx, tmp_path, some_images):
    pytest.importorskip("tensorrt", reason="TensorRT not installed")
    from sfrs_edge.export import build_engine

    engine_path = build_engine(tiny_onnx, tmp_path / "tiny.engine")
    (tmp_path / "tiny.onnx").write_bytes(tiny_onnx.read_bytes())
    trt_engine = Engine.open(engine_path)
    assert trt_engine.backend.name == "tensorrt"
    ref = Engine.open(tiny_onnx, backend="cpu").embed_files(some_images)
    assert _cos(trt_engine.embed_files(some_images), ref).min() >= 0.9999


def test_engine_info_from_the_onnx_beside_it(tmp_path, tiny_onnx):
    import importlib.util

    e = tmp_path / "model.engine"
    e.write_bytes(b"\x00" * 100)
    fp = Engine.open(tiny_onnx).fingerprint
    side = {"gpu_name": "x", "tensorrt_version": "10", "fingerprint": fp}
    (tmp_path / "model.engine.json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="model.onnx.*keep both files together"):
        Engine.open(e)
    (tmp_path / "model.onnx").write_bytes(tiny_onnx.read_bytes())
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(ConfigError, match="tensorrt"):  # metadata read, then TensorRT needed
            Engine.open(e)
    side["fingerprint"] = "feedfeedfeedfeed"
    (tmp_path / "model.engine.json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="feedfeedfeedfeed.*rebuild"):
        Engine.open(e)
