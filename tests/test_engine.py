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
from sfrs_edge.model_info import METADATA_KEY

onnx = pytest.importorskip("onnx")
from _onnx_util import means_model  # noqa: E402


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


def _stamped(model, path):
    """Save with a content digest (as every export does), so the checks after it are reached."""
    from sfrs_edge.export.onnx_export import stamp_digest

    onnx.save(model, str(path))
    stamp_digest(path)
    return path


def _with_metadata(src, dst, value: str | None):
    model = onnx.load(str(src))
    del model.metadata_props[:]
    if value is not None:
        model.metadata_props.add(key=METADATA_KEY, value=value)
    return _stamped(model, dst)


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


def test_handmade_model_runs(tmp_path, gardens_point):
    eng = Engine.open(means_model(tmp_path / "ok.onnx"))
    frame = read_image(list_images(gardens_point / "day_left")[0])
    d = eng.embed_frame(frame)
    assert d.shape == (3,)
    mean = frame.reshape(-1, 3).mean(0)
    np.testing.assert_allclose(d, mean / np.linalg.norm(mean), rtol=0.05)


def test_nan_descriptor_is_a_clear_error(tmp_path):
    eng = Engine.open(means_model(tmp_path / "nan.onnx", scale=float("nan")))
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
    near = Engine.open(means_model(tmp_path / "near.onnx", length=1 + side * 0.5 * NORM_TOLERANCE))
    assert abs(np.linalg.norm(near.embed_frame(frame)) - 1) == pytest.approx(
        0.5 * NORM_TOLERANCE, rel=1e-3
    )
    assert near.embed(batch).shape == (2, 3)
    off = Engine.open(means_model(tmp_path / "off.onnx", length=1 + side * 1.5 * NORM_TOLERANCE))
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


def test_concurrent_frames_run_on_their_own_buffers(tiny_onnx, gardens_point):
    """Callers at the same time get the descriptor of their own frame (one bound slot each)."""
    engine = Engine.open(tiny_onnx, backend="cpu", threads=1)
    frames = [read_image(p) for p in list_images(gardens_point / "day_left")[:6]]
    want = [engine.embed_frame(f) for f in frames]
    got: dict[int, list] = {i: [] for i in range(len(frames))}

    def worker(i: int) -> None:
        for _ in range(3):
            got[i].append(engine.embed_frame(frames[i]))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, w in enumerate(want):
        for d in got[i]:
            np.testing.assert_allclose(d, w, atol=1e-6)
    assert len(engine._free) >= 2  # more than one slot was needed, and all came back


# --- models with extra outputs (re-ranking), through backend doubles --------------------------


def _unit_means(batch: np.ndarray) -> np.ndarray:
    """Unit per-channel means (+1, never zero) of each image: a descriptor that differs per image."""
    m = batch.reshape(len(batch), -1, 3).mean(axis=1) + 1.0
    return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)


class _PlainBackend:
    """A descriptor-only backend (3-d unit means); no ``close``, like onnxruntime's."""

    name, max_batch = "fake", None

    def run(self, batch):
        return _unit_means(batch)

    def bind(self, inp, out):
        def runner():
            out[:] = _unit_means(inp)

        return runner


class _ExtrasBackend(_PlainBackend):
    """Also a per-image (4, 2) float16 ``local_xy``; its descriptor output is float16 (a graph
    may declare it so); it cannot bind every output (no ``bind_all``)."""

    def __init__(self) -> None:
        self.run_all_calls = 0

    def extra_outputs(self):
        return {"local_xy": ((4, 2), np.dtype(np.float16))}

    def outputs(self, batch):
        d = _unit_means(batch)
        return {
            "descriptor": d.astype(np.float16),
            "local_xy": np.repeat(d[:, None, :2] * 100, 4, axis=1).astype(np.float16),
        }

    def run_all(self, batch):
        self.run_all_calls += 1
        return self.outputs(batch)


class _BindingBackend(_ExtrasBackend):
    """Binds buffers for every output, as onnxruntime does; counts the bindings."""

    def __init__(self) -> None:
        super().__init__()
        self.binds = 0

    def bind_all(self, inp, outs):
        self.binds += 1

        def runner():
            for name, value in self.outputs(inp).items():
                outs[name][:] = value

        return runner


class _ClosingBackend(_PlainBackend):
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def _fake_engine(tmp_path, backend) -> Engine:
    from sfrs_edge.model_info import ModelInfo, Preprocessing

    info = ModelInfo(
        backbone="means",
        preprocessing=Preprocessing(8, 12, (0.0,) * 3, (1.0,) * 3),
        descriptor_dim=3,
        num_clusters=1,
        local_dim=3,
        pca_dim=None,
        whitening=False,
        fingerprint="0123456789abcdef",
    )
    return Engine(tmp_path / "multi.onnx", info, backend)


def _small_batch(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 8, 12, 3), dtype=np.uint8)


def test_embed_all_of_a_descriptor_only_model_is_embed(tmp_path):
    eng = _fake_engine(tmp_path, _PlainBackend())
    batch = _small_batch(3)
    out = eng.embed_all(batch)
    assert list(out) == ["descriptor"]
    np.testing.assert_array_equal(out["descriptor"], eng.embed(batch))


@pytest.mark.parametrize("n", [1, 3])
def test_embed_all_gives_every_output_per_image(tmp_path, n):
    """One row per image of each output, in the dtypes the model declares; the descriptor is
    float32 whatever the graph's own output type."""
    eng = _fake_engine(tmp_path, _ExtrasBackend())
    batch = _small_batch(n)
    out = eng.embed_all(batch)
    assert sorted(out) == ["descriptor", "local_xy"]
    assert out["descriptor"].shape == (n, 3) and out["descriptor"].dtype == np.float32
    np.testing.assert_allclose(out["descriptor"], _unit_means(batch), atol=1e-3)
    assert out["local_xy"].shape == (n, 4, 2) and out["local_xy"].dtype == np.float16
    np.testing.assert_array_equal(out["local_xy"], eng.backend.outputs(batch)["local_xy"])


def test_embed_all_of_no_images_keeps_shapes_and_dtypes(tmp_path):
    eng = _fake_engine(tmp_path, _ExtrasBackend())
    out = eng.embed_all(_small_batch(0))
    assert out["descriptor"].shape == (0, 3) and out["descriptor"].dtype == np.float32
    assert out["local_xy"].shape == (0, 4, 2) and out["local_xy"].dtype == np.float16


def test_embed_all_rejects_wrong_batches(tmp_path):
    eng = _fake_engine(tmp_path, _ExtrasBackend())
    with pytest.raises(ImageError, match=r"the model takes uint8 \(N, 8, 12, 3\)"):
        eng.embed_all(_small_batch(2).astype(np.float32))
    with pytest.raises(ImageError, match=r"the model takes uint8 \(N, 8, 12, 3\)"):
        eng.embed_all(np.zeros((2, 9, 12, 3), np.uint8))
    assert eng.backend.run_all_calls == 0


def test_embed_all_checks_one_descriptor_per_image_and_names_the_model(tmp_path):
    eng = _fake_engine(tmp_path, _ExtrasBackend())
    full = eng.backend.outputs
    eng.backend.outputs = lambda b: {k: v[:1] for k, v in full(b).items()}  # drops images
    with pytest.raises(
        ModelError, match=r"multi.onnx: the model returned \(1, 3\) for a batch of 2"
    ):
        eng.embed_all(_small_batch(2))

    def fails(batch):
        raise RuntimeError("CUDA out of memory\nstack trace follows")

    eng.backend.run_all = fails
    with pytest.raises(ModelError, match=r"multi.onnx: inference failed \(CUDA out of memory\)"):
        eng.embed_all(_small_batch(2))


def test_frame_outputs_run_on_buffers_bound_once(tmp_path):
    """The camera loop of a re-ranking model binds its outputs once and then only runs them; a
    backend that cannot bind every output gives the same values through the batch path."""
    from sfrs_edge.images import resize_for_model

    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8) for i in range(3)]
    bound = _fake_engine(tmp_path, _BindingBackend())
    plain = _fake_engine(tmp_path, _ExtrasBackend())
    for frame in frames:
        want = bound.embed_all(resize_for_model(frame, bound.info.preprocessing)[None])
        for eng in (bound, plain):
            got = eng.embed_frame_all(frame)
            assert sorted(got) == ["descriptor", "local_xy"]
            np.testing.assert_allclose(got["descriptor"], want["descriptor"][0], atol=1e-3)
            np.testing.assert_array_equal(got["local_xy"], want["local_xy"][0])
            assert got["local_xy"].dtype == np.float16
    assert bound.backend.binds == 1
    assert bound.backend.run_all_calls == len(frames)  # only the reference batches above
    assert plain.backend.run_all_calls == len(frames)


def test_close_releases_the_backend(tmp_path):
    backend = _ClosingBackend()
    with _fake_engine(tmp_path, backend) as eng:
        assert eng.embed(_small_batch(1)).shape == (1, 3)
        assert backend.closed == 0
    assert backend.closed == 1
    _fake_engine(tmp_path, _PlainBackend()).close()  # a backend with nothing to release


def test_engine_info_errors_name_the_file_they_come_from(tmp_path):
    e = tmp_path / "model.engine"
    e.write_bytes(b"\x00" * 100)
    side = {"gpu_name": "x", "tensorrt_version": "10", "model_info": "{not json"}
    (tmp_path / "model.engine.json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match="model.engine: sfrs_edge metadata is malformed"):
        Engine.open(e)
    del side["model_info"]  # then the ONNX beside it is read, and named when it has none
    (tmp_path / "model.engine.json").write_text(json.dumps(side))
    (tmp_path / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ModelError, match="model.onnx: no 'sfrs_edge' metadata"):
        Engine.open(e)


@pytest.mark.parametrize("backend", [_PlainBackend, _ExtrasBackend, _BindingBackend])
def test_frame_outputs_time_their_stages(tmp_path, backend):
    """Every frame path reports its preprocess and inference times, in seconds, both into
    ``last_timings`` and into the caller's dict; together they fit in the call's wall time."""
    import time

    eng = _fake_engine(tmp_path, backend())
    frame = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    out = eng.embed_frame_all(frame, timings)
    wall = time.perf_counter() - start
    assert set(timings) == {"preprocess", "inference"} and timings == eng.last_timings
    assert all(v >= 0 for v in timings.values()) and sum(timings.values()) <= wall
    np.testing.assert_allclose(out["descriptor"], eng.embed_frame(frame), atol=1e-3)


def test_frame_output_errors_name_the_frame_and_the_model(tmp_path):
    for backend in (_PlainBackend(), _ExtrasBackend(), _BindingBackend()):
        with pytest.raises(ImageError, match="frame: image is empty"):
            _fake_engine(tmp_path, backend).embed_frame_all(np.zeros((0, 0, 3), np.uint8))
    frame = np.full((30, 40, 3), 90, np.uint8)
    eng = _fake_engine(tmp_path, _BindingBackend())
    full = eng.backend.outputs
    eng.backend.outputs = lambda b: {**full(b), "descriptor": 2 * _unit_means(b)}
    with pytest.raises(ModelError, match="multi.onnx: frame descriptor.*not unit length"):
        eng.embed_frame_all(frame)

    def broken(inp, outs):
        def runner():
            raise RuntimeError("device lost")

        return runner

    eng = _fake_engine(tmp_path, _BindingBackend())
    eng.backend.bind_all = broken
    with pytest.raises(ModelError, match=r"multi.onnx: inference failed \(device lost\)"):
        eng.embed_frame_all(frame)


# --- the output contract, checked on every descriptor the model gives -------------------------


def _rows(n: int, dim: int = 4) -> np.ndarray:
    x = np.random.default_rng(n).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_check_descriptors_passes_a_good_batch_unchanged():
    from sfrs_edge.engine import check_descriptors

    good = _rows(3)
    assert check_descriptors(good, 4, "batch", 3) is good
    assert check_descriptors(good, 4, "batch") is good


def test_check_descriptors_names_what_is_wrong():
    from sfrs_edge.engine import check_descriptors

    with pytest.raises(ModelError, match=r"^batch: the model returned \(3, 4\) for a batch of 2"):
        check_descriptors(_rows(3), 4, "batch", 2)
    with pytest.raises(
        ModelError,
        match=r"^batch: the model produced descriptors of shape \(5,\), its metadata says 4",
    ):
        check_descriptors(_rows(2, 5), 4, "batch", 2)
    bad = _rows(5)
    bad[1, 2], bad[3, 2] = np.nan, np.inf  # two descriptors, one column
    with pytest.raises(
        ModelError,
        match=r"^batch: the model produced NaN/inf values \(2 of 5 descriptors\); the model file "
        r"is corrupt or overflows at this precision \(re-export in fp32\)",
    ):
        check_descriptors(bad, 4, "batch", 5)
    with pytest.raises(ModelError, match=r"^frame: the model produced NaN/inf values \(1 of 1 "):
        check_descriptors(bad[1:2], 4, "frame")
    long = _rows(4)
    long[1] *= 1.5
    long[2] *= 2.0
    with pytest.raises(
        ModelError,
        match=r"^batch: the model produced descriptors of length 1\.5, not unit length; it is not "
        r"an L2-normalised sfrs-edge export \(re-export it\)",
    ):
        check_descriptors(long, 4, "batch", 4)


class _ChunkedBackend(_PlainBackend):
    """Takes at most two images a call (a TensorRT engine's max batch) and answers float16."""

    max_batch = 2

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def run(self, batch):
        assert len(batch) <= self.max_batch
        self.sizes.append(len(batch))
        return _unit_means(batch).astype(np.float16)


@pytest.mark.parametrize("n, sizes", [(1, [1]), (3, [2, 1]), (5, [2, 2, 1])])
def test_embed_splits_batches_to_the_backend_limit_in_order(tmp_path, n, sizes):
    eng = _fake_engine(tmp_path, _ChunkedBackend())
    batch = _small_batch(n)
    got = eng.embed(batch)
    assert eng.backend.sizes == sizes
    assert got.shape == (n, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, _unit_means(batch), atol=1e-3)


def test_embed_of_no_images_and_its_errors(tmp_path):
    eng = _fake_engine(tmp_path, _PlainBackend())
    empty = eng.embed(_small_batch(0))
    assert empty.shape == (0, 3) and empty.dtype == np.float32
    with pytest.raises(
        ImageError,
        match=r"the model takes uint8 \(N, 8, 12, 3\) \(use embed_frame/embed_files for arbitrary "
        r"images\)",
    ):
        eng.embed(np.zeros((2, 8, 12, 4), np.uint8))
    eng.backend.run = lambda b: _unit_means(b)[:1]  # one descriptor, whatever the batch
    with pytest.raises(
        ModelError, match=r"^\S*multi.onnx: the model returned \(1, 3\) for a batch of 3"
    ):
        eng.embed(_small_batch(3))

    def fails(batch):
        raise RuntimeError("out of device memory")

    eng.backend.run = fails
    with pytest.raises(
        ModelError, match=r"^\S*multi.onnx: inference failed \(out of device memory\)"
    ):
        eng.embed(_small_batch(2))


def test_model_metadata_the_runtime_cannot_feed_is_refused(tmp_path):
    model = means_model(tmp_path / "m.onnx")
    raw = json.loads(Engine.open(model).info.to_json())
    raw["preprocessing"]["layout"] = "NCHW"
    nchw = _with_metadata(model, tmp_path / "nchw.onnx", json.dumps(raw))
    with pytest.raises(
        ModelError, match="nchw.onnx: model expects uint8 NCHW input; this runtime feeds uint8 NHWC"
    ):
        Engine.open(nchw)
    raw["preprocessing"].update(layout="NHWC", dtype="float32")
    floats = _with_metadata(model, tmp_path / "float.onnx", json.dumps(raw))
    with pytest.raises(ModelError, match="model expects float32 NHWC input"):
        Engine.open(floats)


def test_input_sizes_down_to_one_pixel_open_and_zero_is_refused(tmp_path):
    assert Engine.open(means_model(tmp_path / "one.onnx", h=1, w=1)).input_size == (1, 1)
    with pytest.raises(ModelError, match="flat.onnx: model metadata has impossible sizes"):
        Engine.open(means_model(tmp_path / "flat.onnx", h=0, w=48))
