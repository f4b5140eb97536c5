"""The TensorRT engine builder and runtime against fake ``tensorrt`` / cuda-python modules that
record every call: the flags used, the profile, no layer pinning, dtype and shape checks,
pinned host buffers, and that close() gives everything back. No TensorRT or GPU needed."""

from __future__ import annotations

import ctypes
import json
import sys
import types

import numpy as np
import pytest

from sfrs_edge.errors import ConfigError, ModelError

FAKE_TRT_VERSION = "10.99.0"
FAKE_GPU = "Fake GPU"


class _Enum:
    def __init__(self, **values):
        for k, v in values.items():
            setattr(self, k, v)


class FakeLayer:
    def __init__(self, calls):
        object.__setattr__(self, "_calls", calls)

    def __setattr__(self, name, value):  # layer.precision = ... would land here
        self._calls.append(("layer.set", name))

    def set_output_type(self, *args):
        self._calls.append(("layer.set_output_type", args))


def make_fake_trt(calls: list, engine_spec: dict | None = None) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = FAKE_TRT_VERSION
    # As in TensorRT 11: no FP16 / OBEY_PRECISION_CONSTRAINTS builder flags exist any more.
    trt.BuilderFlag = _Enum(TF32=6)
    trt.NetworkDefinitionCreationFlag = _Enum(STRONGLY_TYPED=1)
    trt.MemoryPoolType = _Enum(WORKSPACE=0)
    trt.DataType = _Enum(FLOAT="FLOAT", HALF="HALF", UINT8="UINT8")
    trt.TensorIOMode = _Enum(INPUT="INPUT", OUTPUT="OUTPUT")

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Network:
        @property
        def num_layers(self):
            calls.append(("network.num_layers",))
            return 1

        def get_layer(self, i):
            calls.append(("network.get_layer", i))
            return FakeLayer(calls)

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            calls.append(("profile.set_shape", name, mn, opt, mx))

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("config.set_memory_pool_limit", pool, size))

        def set_flag(self, flag):
            calls.append(("config.set_flag", flag))

        def clear_flag(self, flag):
            calls.append(("config.clear_flag", flag))

        def add_optimization_profile(self, p):
            calls.append(("config.add_optimization_profile",))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            calls.append(("builder.create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("builder.build_serialized_network",))
            return b"FAKE-ENGINE"

    class OnnxParser:
        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parser.parse_from_file", path))
            return True

    spec = engine_spec or {}

    class Context:
        def __init__(self):
            self.addr = {}
            self.n = 0

        def set_input_shape(self, name, shape):
            calls.append(("context.set_input_shape", name, tuple(shape)))
            self.n = shape[0]
            return spec.get("accept_shape", True)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            calls.append(("context.execute_async_v3", stream))
            h, w, dim = spec["h"], spec["w"], spec["dim"]
            n = self.n
            inp = np.ctypeslib.as_array(
                (ctypes.c_uint8 * (n * h * w * 3)).from_address(self.addr["image"])
            ).reshape(n, h * w * 3)
            out = np.ctypeslib.as_array(
                (ctypes.c_float * (n * dim)).from_address(self.addr["descriptor"])
            ).reshape(n, dim)
            out[:] = 0
            out[:, 0] = inp.mean(axis=1) / 255.0  # a per-image number the test can predict
            out[:, 1] = np.sqrt(1 - out[:, 0] ** 2)
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["image", "descriptor"][i]

        def get_tensor_mode(self, name):
            return "INPUT" if name == "image" else "OUTPUT"

        def get_tensor_dtype(self, name):
            return spec.get("dtypes", {"image": "UINT8", "descriptor": "FLOAT"})[name]

        def get_tensor_shape(self, name):
            return (-1, spec["h"], spec["w"], 3) if name == "image" else (-1, spec["dim"])

        def get_tensor_profile_shape(self, name, index):
            h, w = spec["h"], spec["w"]
            return (1, h, w, 3), (1, h, w, 3), (spec.get("max_batch", 4), h, w, 3)

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine()

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt


class FakeCudart(types.ModuleType):
    """Host and 'device' memory are real ctypes buffers, so copies and kernels really move data."""

    def __init__(self, calls: list):
        super().__init__("cuda.bindings.runtime")
        self.calls = calls
        self.buffers: dict[int, ctypes.Array] = {}
        self.pinned: set[int] = set()
        self.streams_alive = 0
        self.cudaMemcpyKind = _Enum(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def _alloc(self, n):
        buf = ctypes.create_string_buffer(n)
        self.buffers[ctypes.addressof(buf)] = buf
        return ctypes.addressof(buf)

    def cudaGetDeviceProperties(self, i):
        return 0, types.SimpleNamespace(name=FAKE_GPU.encode())

    def cudaMalloc(self, n):
        return 0, self._alloc(n)

    def cudaMallocHost(self, n):
        ptr = self._alloc(n)
        self.pinned.add(ptr)
        return 0, ptr

    def cudaFree(self, ptr):
        self.buffers.pop(ptr)
        return (0,)

    def cudaFreeHost(self, ptr):
        self.pinned.remove(ptr)
        self.buffers.pop(ptr)
        return (0,)

    def cudaStreamCreate(self):
        self.streams_alive += 1
        return 0, 7

    def cudaStreamDestroy(self, s):
        self.streams_alive -= 1
        return (0,)

    def cudaStreamSynchronize(self, s):
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        host = src if kind == 1 else dst
        self.calls.append(("memcpy", kind, host in self.pinned))
        ctypes.memmove(dst, src, n)
        return (0,)


def install(monkeypatch, calls, engine_spec=None, *, legacy_cudart=False):
    trt = make_fake_trt(calls, engine_spec)
    cudart = FakeCudart(calls)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cuda = types.ModuleType("cuda")
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    if legacy_cudart:  # cuda-python 12.x before cuda.bindings (JetPack 6)
        monkeypatch.setitem(sys.modules, "cuda.bindings", None)
        cuda.cudart = cudart
        monkeypatch.setitem(sys.modules, "cuda.cudart", cudart)
    else:
        bindings = types.ModuleType("cuda.bindings")
        bindings.runtime = cudart
        cuda.bindings = bindings
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    return trt, cudart


# ----------------------------------------------------------------------------------- builder


@pytest.fixture
def onnx_copy(tiny_onnx, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(tiny_onnx.read_bytes())
    return path


def test_builder_is_strongly_typed_without_pinning(monkeypatch, onnx_copy, tmp_path):
    from sfrs_edge.export.tensorrt_engine import BatchProfile, build_engine

    calls: list = []
    trt, _ = install(monkeypatch, calls)
    out = build_engine(onnx_copy, tmp_path / "m.engine", profile=BatchProfile(1, 2, 6))
    assert out.read_bytes() == b"FAKE-ENGINE"
    assert ("builder.create_network", 1 << 1) in calls  # STRONGLY_TYPED and nothing else
    assert [c for c in calls if c[0] == "config.set_flag"] == []  # no FP16 / OBEY flags
    assert ("config.clear_flag", trt.BuilderFlag.TF32) in calls
    assert not [c for c in calls if c[0].startswith(("layer.", "network."))]  # nothing pinned
    (shape,) = [c for c in calls if c[0] == "profile.set_shape"]
    side = json.loads((tmp_path / "m.engine.json").read_text())
    h, w = side["input_size"]
    assert shape[1:] == ("image", (1, h, w, 3), (2, h, w, 3), (6, h, w, 3))
    assert side["strongly_typed"] and not side["tf32"] and side["precision"] == "fp32"
    assert side["batch_profile"] == {"min": 1, "opt": 2, "max": 6} and side["max_batch"] == 6
    assert side["gpu_name"] == FAKE_GPU and side["tensorrt_version"] == FAKE_TRT_VERSION


def test_fp16_onnx_gives_an_fp16_engine(monkeypatch, onnx_copy, tmp_path):
    onnx = pytest.importorskip("onnx")
    from sfrs_edge.export.tensorrt_engine import build_engine

    from sfrs_edge.model_info import METADATA_KEY, ModelInfo

    model = onnx.load(str(onnx_copy))
    prop = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    data = json.loads(ModelInfo.from_json(prop.value).to_json())
    data["precision"] = "fp16"
    prop.value = json.dumps(data)
    onnx.save(model, str(onnx_copy))
    calls: list = []
    install(monkeypatch, calls)
    build_engine(onnx_copy, tmp_path / "m.engine")
    assert json.loads((tmp_path / "m.engine.json").read_text())["precision"] == "fp16"
    assert ("builder.create_network", 1 << 1) in calls
    assert [c for c in calls if c[0] == "config.set_flag"] == []


def test_builder_refuses_a_graph_tensorrt_cannot_parse(monkeypatch, onnx_copy, tmp_path):
    onnx = pytest.importorskip("onnx")
    from sfrs_edge.export.tensorrt_engine import build_engine

    model = onnx.load(str(onnx_copy))
    cast = next(n for n in model.graph.node if "image" in n.input)
    shape = onnx.helper.make_node("Shape", [cast.output[0]], ["s"], name="sneaky_shape")
    model.graph.node.append(shape)
    onnx.save(model, str(onnx_copy))
    calls: list = []
    install(monkeypatch, calls)
    with pytest.raises(ModelError, match="sneaky_shape.*shape-arithmetic"):
        build_engine(onnx_copy, tmp_path / "m.engine")
    assert not any(c[0].startswith("builder.") for c in calls)
    assert not (tmp_path / "m.engine").exists()


def test_batch_profile_is_validated():
    from sfrs_edge.export.tensorrt_engine import BatchProfile

    with pytest.raises(ConfigError, match="min <= opt <= max"):
        BatchProfile(1, 9, 8)


def test_missing_tensorrt_is_the_same_error_in_export_and_runtime(monkeypatch, tmp_path):
    from sfrs_edge.export import tensorrt_engine

    from sfrs_edge.backends import tensorrt as runtime

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    assert tensorrt_engine.require_tensorrt is runtime.require_tensorrt
    assert tensorrt_engine.sidecar_path is runtime.sidecar_path
    with pytest.raises(ConfigError, match="TensorRT is not installed.*JetPack"):
        tensorrt_engine.build_engine(tmp_path / "m.onnx", tmp_path / "m.engine")


# ----------------------------------------------------------------------------------- runtime

H, W, DIM = 6, 8, 4


def engine_files(tmp_path):
    path = tmp_path / "m.engine"
    path.write_bytes(b"FAKE-ENGINE")
    side = {"gpu_name": FAKE_GPU, "tensorrt_version": FAKE_TRT_VERSION}
    return path, side


@pytest.mark.parametrize("legacy", [False, True])
def test_runtime_runs_through_pinned_buffers_and_cleans_up(monkeypatch, tmp_path, legacy):
    from sfrs_edge.backends.tensorrt import TensorRTBackend

    calls: list = []
    spec = {"h": H, "w": W, "dim": DIM, "max_batch": 4}
    _, cudart = install(monkeypatch, calls, spec, legacy_cudart=legacy)
    path, side = engine_files(tmp_path)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    with TensorRTBackend(path, side) as backend:
        assert backend.max_batch == 4
        out = backend.run(batch)
        again = backend.run(batch[:1])
    want = batch.reshape(3, -1).mean(1) / 255.0
    np.testing.assert_allclose(out[:, 0], want, rtol=1e-6)
    np.testing.assert_allclose(again[0], out[0], rtol=1e-6)
    shapes = [c[2] for c in calls if c[0] == "context.set_input_shape"]
    assert shapes == [(3, H, W, 3), (1, H, W, 3)]
    copies = [c for c in calls if c[0] == "memcpy"]
    assert copies and all(pinned for _, _, pinned in copies)  # async copies from pinned memory
    assert cudart.streams_alive == 0 and cudart.buffers == {} and cudart.pinned == set()
    with pytest.raises(ModelError, match="closed"):
        backend.run(batch)
    backend.close()  # idempotent


def test_runtime_refuses_wrong_io_dtypes(monkeypatch, tmp_path):
    from sfrs_edge.backends.tensorrt import TensorRTBackend

    spec = {"h": H, "w": W, "dim": DIM, "dtypes": {"image": "UINT8", "descriptor": "HALF"}}
    install(monkeypatch, [], spec)
    path, side = engine_files(tmp_path)
    with pytest.raises(ModelError, match="'descriptor' is HALF, expected FLOAT"):
        TensorRTBackend(path, side)


def test_runtime_checks_set_input_shape(monkeypatch, tmp_path):
    from sfrs_edge.backends.tensorrt import TensorRTBackend

    spec = {"h": H, "w": W, "dim": DIM, "accept_shape": False}
    _, cudart = install(monkeypatch, [], spec)
    path, side = engine_files(tmp_path)
    backend = TensorRTBackend(path, side)
    with pytest.raises(ModelError, match="refused input shape"):
        backend.run(np.zeros((2, H, W, 3), np.uint8))
    with pytest.raises(ConfigError, match="profile 1..4"):
        backend.run(np.zeros((5, H, W, 3), np.uint8))
    del backend
    assert cudart.streams_alive == 0 and cudart.buffers == {}


def test_runtime_refuses_an_engine_for_another_gpu(monkeypatch, tmp_path):
    from sfrs_edge.backends.tensorrt import TensorRTBackend

    install(monkeypatch, [], {"h": H, "w": W, "dim": DIM})
    path, side = engine_files(tmp_path)
    side["gpu_name"] = "Orin"
    with pytest.raises(ModelError, match="built for GPU 'Orin'"):
        TensorRTBackend(path, side)


def test_engine_close_releases_the_tensorrt_backend(monkeypatch, tmp_path, tiny_onnx):
    from sfrs_edge.backends.tensorrt import TensorRTBackend
    from sfrs_edge.engine import Engine

    info = Engine.open(tiny_onnx).info
    _, cudart = install(monkeypatch, [], {"h": H, "w": W, "dim": DIM, "max_batch": 4})
    path, side = engine_files(tmp_path)
    with Engine(path, info, TensorRTBackend(path, side)) as engine:
        assert cudart.streams_alive == 1 and cudart.buffers and cudart.pinned
    assert cudart.streams_alive == 0 and cudart.buffers == {} and cudart.pinned == set()
    with pytest.raises(ModelError, match="closed"):
        engine.backend.run(np.zeros((1, H, W, 3), np.uint8))
    engine.close()  # idempotent
