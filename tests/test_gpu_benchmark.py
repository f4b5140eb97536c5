"""benchmarks/gpu.py: the plan (what runs, what is skipped and why), the no-GPU run (exit 0,
reasons written), the report tables, and the onnxruntime step's code path on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO))

from benchmarks import gpu  # noqa: E402

ORT_ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_plan_without_a_gpu_skips_everything_with_reasons():
    skip = gpu.plan(gpu.Env(torch=True, ort_providers=["CPUExecutionProvider"], images=True))
    assert set(skip) == set(gpu.STEPS) and all(skip.values())
    assert "no CUDA device" in skip["torch_cuda_latency"]
    assert "onnxruntime-gpu" in skip["ort_cuda"] and "onnxruntime-gpu" in skip["ort_tensorrt"]
    assert "tensorrt" in skip["tensorrt_engine"]


def test_plan_on_a_full_gpu_machine_runs_everything():
    env = gpu.Env(
        torch=True,
        cuda=True,
        gpu="NVIDIA H100",
        ort_providers=ORT_ALL,
        tensorrt="10.16.0",
        cuda_python=True,
        images=True,
    )
    assert all(reason is None for reason in gpu.plan(env).values())


def test_plan_gpu_without_tensorrt_or_data():
    env = gpu.Env(torch=True, cuda=True, gpu="Orin", ort_providers=ORT_ALL[1:])
    skip = gpu.plan(env)
    assert skip["torch_cuda_latency"] is None and skip["train_step"] is None
    assert "Gardens Point" in skip["torch_cuda_parity"] and "Gardens Point" in skip["ort_cuda"]
    assert "TensorrtExecutionProvider" in skip["ort_tensorrt"]
    env.tensorrt = "10.3.0"
    assert "cuda-python" in gpu.plan(env)["tensorrt_engine"]


def test_script_without_cuda_exits_0_and_says_what_it_skipped(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the benchmark would really run")
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert "no CUDA device" in out.stderr
    for step in gpu.STEPS:
        assert f"{step}: skipped:" in out.stdout
    results = json.loads((tmp_path / "gpu.json").read_text())
    assert all(results["skipped"][s] for s in gpu.STEPS)
    assert "skipped: no CUDA device" in (tmp_path / "gpu.md").read_text()


def test_tables_render_full_results():
    lat = {"p50_ms": 1.0, "p90_ms": 2.0}
    row = {"min_cos": 0.9999, "mean_cos": 1.0, "b1": lat, "b8": lat}
    results = {
        "skipped": dict.fromkeys(gpu.STEPS),
        "status": dict.fromkeys(gpu.STEPS, "ok"),
        "torch_cuda_parity": {"lite0_fp16": {"min_cos": 0.9991, "mean_cos": 0.9995}},
        "torch_cuda_latency": {"lite0_fp16_b1": lat},
        "ort_cuda": {"lite0_fp32": row},
        "ort_tensorrt": {"lite0_fp32": row},
        "tensorrt_engine": {"lite0_fp16": row},
    }
    md = "".join(t.markdown() for t in gpu.tables(results))
    assert "0.999100" in md and "native TensorRT engine" in md and "random weights" in md


@pytest.mark.slow
def test_onnxruntime_step_code_path_on_cpu(gardens_point, tiny_checkpoint, tmp_path):
    """The ORT step exports the lean graph, checks it for TensorRT, and measures cosine and
    latency; on the CPU provider the cosine must be 1."""
    from sfrs_edge.train.checkpoint import load_checkpoint

    net, _ = load_checkpoint(tiny_checkpoint)
    ctx = {"tmp": tmp_path, "nets": {"lite0": net.eval()}}
    res = gpu._ort_step(ctx, "CPUExecutionProvider")
    assert set(res) == {"lite0_fp32", "lite0_fp16"}
    assert res["lite0_fp32"]["min_cos"] > 0.99999
    assert res["lite0_fp32"]["b8"]["p50_ms"] > 0
