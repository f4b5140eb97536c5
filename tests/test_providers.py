"""onnxruntime provider list and TensorRT EP options (no GPU: the options are what is tested)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

ort = pytest.importorskip("onnxruntime")

from sfrs_edge.backends import onnx as onnx_backend  # noqa: E402
from sfrs_edge.backends.providers import (  # noqa: E402
    CPU,
    CUDA,
    TENSORRT,
    cache_prefix,
    model_info_of,
    read_metadata_props,
    tensorrt_options,
)
from sfrs_edge.errors import ConfigError  # noqa: E402
from sfrs_edge.model_info import METADATA_KEY  # noqa: E402

ALL = [TENSORRT, CUDA, CPU]


@pytest.mark.parametrize(
    "backend,available,want",
    [
        ("auto", ALL, ALL),
        ("auto", [CUDA, CPU], [CUDA, CPU]),
        ("auto", [CPU], [CPU]),
        ("tensorrt", ALL, ALL),  # CUDA between TensorRT and CPU
        ("tensorrt", [TENSORRT, CPU], [TENSORRT, CPU]),
        ("cuda", ALL, [CUDA, CPU]),
        ("cpu", ALL, [CPU]),
    ],
)
def test_provider_order(monkeypatch, backend, available, want):
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(available))
    assert onnx_backend.choose_providers(backend) == want


def test_missing_provider_is_a_config_error(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    with pytest.raises(ConfigError, match="onnxruntime-gpu"):
        onnx_backend.choose_providers("tensorrt")


def test_metadata_read_without_onnx_matches_onnx(tiny_onnx):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tiny_onnx), load_external_data=False)
    want = {p.key: p.value for p in model.metadata_props}
    assert read_metadata_props(tiny_onnx) == want and METADATA_KEY in want


def test_metadata_of_a_non_onnx_file_is_empty(tmp_path):
    p = tmp_path / "x.onnx"
    p.write_bytes(b"\xff\xff\xff garbage")
    assert read_metadata_props(p) == {} and model_info_of(p) is None


def test_tensorrt_options_profiles_and_model_keyed_cache(tiny_onnx, tmp_path):
    info = model_info_of(tiny_onnx)
    h, w = info.preprocessing.height, info.preprocessing.width
    opts = tensorrt_options(info, tmp_path, "1.31.1")
    assert opts["trt_profile_min_shapes"] == f"image:1x{h}x{w}x3"
    assert opts["trt_profile_opt_shapes"] == f"image:1x{h}x{w}x3"
    assert opts["trt_profile_max_shapes"] == f"image:8x{h}x{w}x3"
    assert opts["trt_engine_cache_enable"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path)
    prefix = opts["trt_engine_cache_prefix"]
    assert info.fingerprint in prefix and "1_31_1" in prefix
    # Anything that changes the engine changes the key: precision (fp16 export shares the
    # fingerprint), input size, another model, another onnxruntime.
    fp16 = dataclasses.replace(info, precision="fp16")
    other = dataclasses.replace(info, weights="0" * 16)  # the fingerprint follows the weights
    bigger = dataclasses.replace(
        info, preprocessing=dataclasses.replace(info.preprocessing, height=h + 32)
    )
    keys = {cache_prefix(i, "1.31.1") for i in (info, fp16, other, bigger)}
    keys.add(cache_prefix(info, "1.32.0"))
    assert len(keys) == 5


def test_no_cache_without_a_model_key_or_folder(tiny_onnx):
    assert tensorrt_options(None, None, "1.31.1") == {}
    opts = tensorrt_options(model_info_of(tiny_onnx), None, "1.31.1")
    assert "trt_engine_cache_enable" not in opts and "trt_profile_max_shapes" in opts


def test_session_gets_the_tensorrt_options(monkeypatch, tiny_onnx, tmp_path):
    """OnnxBackend hands onnxruntime TensorRT → CUDA → CPU with the TensorRT options."""
    model = tmp_path / "model.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    seen = {}
    real = ort.InferenceSession

    def fake_session(path, sess_options=None, providers=None):
        seen["providers"] = providers
        return real(path, sess_options=sess_options, providers=[CPU])

    monkeypatch.setattr(ort, "get_available_providers", lambda: list(ALL))
    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    onnx_backend.OnnxBackend(model, "auto")
    (trt, trt_opts), cuda, cpu = seen["providers"]
    assert (trt, cuda, cpu) == (TENSORRT, CUDA, CPU)
    assert trt_opts["trt_engine_cache_path"] == str(tmp_path / ".trt_cache")
    assert trt_opts["trt_engine_cache_prefix"].startswith("sfrs_")


def test_missing_onnxruntime_names_both_extras(tmp_path):
    code = "import sys; sys.modules['onnxruntime'] = None\nfrom sfrs_edge.cli import main; main()"
    model = tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x07")  # opened far enough to need onnxruntime
    args = ["localize", "f.jpg", "--model", str(model), "--map", str(tmp_path)]
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: onnxruntime is not installed: pip install 'sfrs-edge[onnxruntime]' (CPU) or "
        "pip install 'sfrs-edge[onnxruntime-gpu]' (NVIDIA GPU: CUDA and TensorRT providers); "
        "install one of the two, never both"
    ]


def test_gpu_wheel_without_its_cuda_provider_is_named(monkeypatch):
    from sfrs_edge.backends import runtime

    have = {"onnxruntime-gpu"}
    monkeypatch.setattr(runtime, "installed", lambda name: name in have)
    assert runtime.flavour_problem(["CUDAExecutionProvider", "CPUExecutionProvider"]) is None
    problem = runtime.flavour_problem(["CPUExecutionProvider"])
    assert "onnxruntime-gpu is installed but onnxruntime offers no CUDA provider" in problem
    assert "shadows" not in problem and runtime.REINSTALL_GPU in problem
    have.add("onnxruntime")
    assert "the CPU wheel 'onnxruntime' is installed too" in runtime.flavour_problem(
        ["CPUExecutionProvider"]
    )
    have.discard("onnxruntime-gpu")
    assert runtime.flavour_problem(["CPUExecutionProvider"]) is None  # the CPU flavour: fine


def test_gpu_flavour_problem_is_warned_once(monkeypatch, caplog):
    from sfrs_edge.backends import runtime

    monkeypatch.setattr(runtime, "installed", lambda name: True)
    monkeypatch.setattr(runtime, "_warned", False)
    runtime.require_onnxruntime()
    runtime.require_onnxruntime()
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "shadows it" in caplog.records[0].message
