"""One command for a GPU machine: ``python benchmarks/gpu.py``.

Runs whatever of the GPU path is installed and skips the rest with the reason:

- torch CUDA FP32 and FP16 against the torch CPU FP32 reference on real Gardens Point images
  (cosine), and their latency p50/p90 at batch 1 and 8;
- the exported (lean) ONNX graph on onnxruntime's CUDA and TensorRT execution providers
  (cosine against onnxruntime CPU, latency);
- a native TensorRT engine built by ``export/tensorrt_engine.py`` and run by
  ``sfrs_edge/backends/tensorrt.py`` when ``tensorrt`` and cuda-python import;
- one training step on CUDA: through ``sfrs-edge train --device cuda`` when the CLI has that
  option, else a torch-level step (forward, SFRS-style loss, backward, SGD) of the same network.

Models: Lite0 360x640 (ImageNet backbone, k-means NetVLAD fitted on Gardens Point, no PCA) and
VGG16 480x640 with **random weights** (speed only; its cosines still compare devices, as the
same weights run everywhere). Writes ``gpu.json`` + ``gpu.md`` to ``benchmarks/results/``.
Without CUDA it says so, lists what it skipped and why, and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, Stats, Table, data_root, log, time_fn, write_results

MODELS = {"lite0": ("efficientnet_lite0", (360, 640)), "vgg16": ("vgg16", (480, 640))}
BATCHES = (1, 8)
STEPS = (
    "torch_cuda_parity",
    "torch_cuda_latency",
    "ort_cuda",
    "ort_tensorrt",
    "tensorrt_engine",
    "train_step",
)


@dataclass
class Env:
    """What this machine offers the GPU path (detected once; plain data so tests can fake it)."""

    torch: bool = False
    cuda: bool = False
    gpu: str | None = None
    ort_providers: list[str] = field(default_factory=list)
    tensorrt: str | None = None  # version
    cuda_python: bool = False
    images: bool = False
    train_device_option: bool = False


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def detect() -> Env:
    env = Env(images=(data_root() / "gardens_point" / "day_left").is_dir())
    if _has("torch"):
        import torch

        env.torch = True
        env.cuda = bool(torch.cuda.is_available())
        env.gpu = torch.cuda.get_device_name(0) if env.cuda else None
    try:
        import onnxruntime as ort

        env.ort_providers = list(ort.get_available_providers())
    except ImportError:
        pass
    if _has("tensorrt"):
        try:
            import tensorrt

            env.tensorrt = tensorrt.__version__
        except Exception:  # noqa: BLE001 - a broken install counts as absent
            env.tensorrt = None
    if env.gpu is None:  # no torch CUDA: the driver may still see a GPU (onnxruntime-gpu, TensorRT)
        env.gpu = _nvidia_smi_gpu()
    env.cuda_python = _has("cuda.bindings") or _has("cuda.cudart") or _has("cuda")
    env.train_device_option = _train_has_device()
    return env


def _nvidia_smi_gpu() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "--id=0"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _train_has_device() -> bool:
    try:
        out = subprocess.run(
            [sys.executable, "-c", "from sfrs_edge.cli import main; main()", "train", "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return "--device" in out.stdout


def plan(env: Env) -> dict[str, str | None]:
    """Step → None (run it) or the reason it is skipped. Pure: tested without a GPU."""
    skip: dict[str, str | None] = {}
    no_cuda = (
        "no CUDA device visible to torch"
        if env.torch
        else "torch is not installed (pip install 'sfrs-edge[train]')"
    )
    no_images = "Gardens Point images not found (set SFRS_EDGE_DATA)"
    no_gpu = "no NVIDIA GPU visible (torch CUDA and nvidia-smi see none)"
    skip["torch_cuda_parity"] = no_cuda if not env.cuda else (None if env.images else no_images)
    skip["torch_cuda_latency"] = None if env.cuda else no_cuda
    for step, provider in (
        ("ort_cuda", "CUDAExecutionProvider"),
        ("ort_tensorrt", "TensorrtExecutionProvider"),
    ):
        if provider not in env.ort_providers:
            skip[step] = f"onnxruntime has no {provider} (pip install onnxruntime-gpu)"
        elif env.gpu is None:
            skip[step] = no_gpu
        else:
            skip[step] = None if env.images else no_images
    if env.tensorrt is None:
        skip["tensorrt_engine"] = "tensorrt does not import (pip install 'sfrs-edge[tensorrt]')"
    elif env.gpu is None:
        skip["tensorrt_engine"] = no_gpu
    elif not env.cuda_python:
        skip["tensorrt_engine"] = "cuda-python is not installed (pip install cuda-python)"
    else:
        skip["tensorrt_engine"] = None if env.images else no_images
    skip["train_step"] = None if env.cuda else no_cuda
    return skip


# ------------------------------------------------------------------------------ models


def _nets(env: Env) -> dict[str, Any]:
    """Lite0 with a real k-means NetVLAD when Gardens Point is here (else ImageNet backbone and
    random NetVLAD) and VGG16 with random weights, both fp32 on the CPU."""
    from benchmarks.models import quick_offtheshelf, resized, vgg16_random

    if env.images:
        lite = resized(quick_offtheshelf(input_size=MODELS["lite0"][1]), MODELS["lite0"][1])
    else:
        from sfrs_edge.train.model import ModelConfig, SFRSNet

        lite = SFRSNet(ModelConfig(backbone="efficientnet_lite0")).eval()
        lite.backbone.load_pretrained()
    return {"lite0": lite, "vgg16": vgg16_random(pca_dim=None)}


def _images(pre, n: int = 16) -> np.ndarray:
    from benchmarks.models import gp_images
    from sfrs_edge.images import load_for_model

    paths = gp_images(split="night_right")[:: max(1, 200 // n)][:n]
    return np.stack([load_for_model(p, pre) for p in paths])


def _cos(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a, b = a.astype(np.float64), b.astype(np.float64)
    c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min_cos": float(c.min()), "mean_cos": float(c.mean())}


def _latency(fn, reps: int = 30) -> dict[str, float]:
    st: Stats = time_fn(fn, reps, warmup=3)
    return {"p50_ms": round(st.p50, 3), "p90_ms": round(st.p90, 3)}


# ------------------------------------------------------------------------------- steps


def _on_cuda(net, precision: str):
    """A CUDA copy of ``net`` (the CPU original keeps its fp32 weights)."""
    import copy

    gpu = copy.deepcopy(net).cuda().eval()
    return gpu.half() if precision == "fp16" else gpu


def torch_cuda_parity(ctx: dict) -> dict:
    import torch
    from sfrs_edge.train.model import ExportWrapper

    out = {}
    for name, net in ctx["nets"].items():
        batch = torch.from_numpy(_images(net.config.preprocessing()))
        with torch.no_grad():
            ref = ExportWrapper(net.float().cpu().eval())(batch).numpy()
            for prec in ("fp32", "fp16"):
                got = ExportWrapper(_on_cuda(net, prec))(batch.cuda()).float().cpu().numpy()
                out[f"{name}_{prec}"] = _cos(ref, got)
                torch.cuda.empty_cache()
    return out


def torch_cuda_latency(ctx: dict) -> dict:
    import torch
    from sfrs_edge.train.model import ExportWrapper

    out = {}
    for name, net in ctx["nets"].items():
        h, w = MODELS[name][1]
        for prec in ("fp32", "fp16"):
            model = ExportWrapper(_on_cuda(net, prec)).eval()
            for b in BATCHES:
                x = torch.zeros((b, h, w, 3), dtype=torch.uint8, device="cuda")

                def run(model=model, x=x):
                    with torch.no_grad():
                        model(x)
                    torch.cuda.synchronize()

                out[f"{name}_{prec}_b{b}"] = _latency(run)
            del model
            torch.cuda.empty_cache()
    return out


def _exports(ctx: dict) -> dict[tuple[str, str], Path]:
    """Lean ONNX exports (write_onnx, no parity gate: the steps measure parity themselves)."""
    if "exports" not in ctx:
        import copy

        from sfrs_edge.export.onnx_export import write_onnx
        from sfrs_edge.export.trt_compat import check_tensorrt_compatible
        from sfrs_edge.train.model import model_info

        ctx["exports"] = {}
        for name, net in ctx["nets"].items():
            for prec in ("fp32", "fp16"):
                info = model_info(net, precision=prec)
                exp = copy.deepcopy(net)
                if prec == "fp16":
                    exp.half()
                path = ctx["tmp"] / f"{name}_{prec}.onnx"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = write_onnx(exp, path, info)
                check_tensorrt_compatible(model, path)
                ctx["exports"][name, prec] = path
    return ctx["exports"]


def _ort_step(ctx: dict, provider: str) -> dict:
    import onnxruntime as ort

    out = {}
    for (name, prec), path in _exports(ctx).items():
        from sfrs_edge.backends.providers import provider_options

        net = ctx["nets"][name]
        batch = _images(net.config.preprocessing(), 8)
        cpu = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        ref = cpu.run(None, {"image": batch})[0]
        providers = provider_options([provider], path, ctx["tmp"] / "trt_cache", ort.__version__)
        sess = ort.InferenceSession(str(path), providers=providers)
        active = sess.get_providers()[0]
        row: dict[str, Any] = {
            "active_provider": active,
            **_cos(ref, sess.run(None, {"image": batch})[0]),
        }
        for b in BATCHES:
            x = batch[:b]
            row[f"b{b}"] = _latency(lambda x=x, s=sess: s.run(None, {"image": x}))
        out[f"{name}_{prec}"] = row
    return out


def ort_cuda(ctx: dict) -> dict:
    return _ort_step(ctx, "CUDAExecutionProvider")


def ort_tensorrt(ctx: dict) -> dict:
    return _ort_step(ctx, "TensorrtExecutionProvider")


def tensorrt_engine(ctx: dict) -> dict:
    import onnxruntime as ort
    from sfrs_edge.export.tensorrt_engine import BatchProfile, build_engine

    from sfrs_edge.backends.tensorrt import TensorRTBackend, read_sidecar

    out = {}
    for (name, prec), path in _exports(ctx).items():
        engine = build_engine(path, path.with_suffix(".engine"), profile=BatchProfile(1, 1, 8))
        batch = _images(ctx["nets"][name].config.preprocessing(), 8)
        ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
            None, {"image": batch}
        )[0]
        with TensorRTBackend(engine, read_sidecar(engine)) as backend:
            row: dict[str, Any] = {
                "build_s": read_sidecar(engine)["seconds"],
                **_cos(ref, backend.run(batch)),
            }
            for b in BATCHES:
                x = np.ascontiguousarray(batch[:b])
                row[f"b{b}"] = _latency(lambda x=x: backend.run(x))
        out[f"{name}_{prec}"] = row
    return out


def train_step(ctx: dict) -> dict:
    """One training step on CUDA. The CLI (`sfrs-edge train --device cuda`) when it has the
    option; otherwise the same network's forward/backward/SGD step in torch, said so."""
    import time

    import torch

    if ctx["env"].train_device_option:
        return {"note": "sfrs-edge train --device exists: run it with a 1-epoch config by hand"}
    out: dict[str, Any] = {"note": "sfrs-edge train has no --device option: torch-level step"}
    for name, net in ctx["nets"].items():
        net = _on_cuda(net, "fp32").train()
        h, w = MODELS[name][1]
        x = torch.rand((3, 3, h, w), device="cuda") * 2 - 1  # query, positive, negative
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
        times = []
        for _ in range(4):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            d = net.netvlad(net.features(x))  # (3, K·D) normalised
            loss = torch.relu(0.1 + (d[0] * d[2]).sum() - (d[0] * d[1]).sum())
            opt.zero_grad()
            loss.backward()
            opt.step()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        finite = all(bool(torch.isfinite(p).all()) for p in params)
        out[name] = {"step_ms": round(1000 * float(np.median(times[1:])), 2), "finite": finite}
        del net, opt, params
        torch.cuda.empty_cache()
    return out


# ------------------------------------------------------------------------------- report


def tables(results: dict) -> list[Table]:
    skipped = results["skipped"]
    rows = [
        [s, "skipped: " + skipped[s] if skipped.get(s) else results["status"].get(s, "–")]
        for s in STEPS
    ]
    out = [Table("GPU path: what ran", ["step", "status"], rows)]
    par = results.get("torch_cuda_parity")
    if par:
        out.append(
            Table(
                "torch CUDA vs torch CPU FP32 (cosine, 16 Gardens Point night images)",
                ["model", "min cos", "mean cos"],
                [[k, f"{v['min_cos']:.6f}", f"{v['mean_cos']:.6f}"] for k, v in par.items()],
            )
        )
    lat = results.get("torch_cuda_latency")
    if lat:
        out.append(
            Table(
                "torch CUDA latency (ms)",
                ["model / precision / batch", "p50", "p90"],
                [[k, v["p50_ms"], v["p90_ms"]] for k, v in lat.items()],
                note="VGG16 has random weights (speed only).",
            )
        )
    for step, title in (
        ("ort_cuda", "onnxruntime CUDA EP (lean ONNX)"),
        ("ort_tensorrt", "onnxruntime TensorRT EP (lean ONNX)"),
        ("tensorrt_engine", "native TensorRT engine (strongly typed)"),
    ):
        res = results.get(step)
        if res:
            out.append(
                Table(
                    f"{title}: cosine vs onnxruntime CPU, latency ms",
                    ["model", "min cos", "b1 p50", "b1 p90", "b8 p50", "b8 p90"],
                    [
                        [
                            k,
                            f"{v['min_cos']:.6f}",
                            v["b1"]["p50_ms"],
                            v["b1"]["p90_ms"],
                            v["b8"]["p50_ms"],
                            v["b8"]["p90_ms"],
                        ]
                        for k, v in res.items()
                    ],
                )
            )
    return out


def run(env: Env, out_dir: Path) -> tuple[dict, int]:
    """Run the plan; returns (results, exit code). A step that fails is recorded and makes the
    exit code 1 (on a GPU machine a failure must be seen); skipped steps do not."""
    skipped = plan(env)
    results: dict[str, Any] = {"env": asdict(env), "skipped": skipped, "status": {}}
    failed = False
    if any(skipped[s] is None for s in STEPS):
        with tempfile.TemporaryDirectory() as tmp:
            ctx: dict[str, Any] = {"env": env, "tmp": Path(tmp), "nets": _nets(env)}
            for step in STEPS:
                if skipped[step] is not None:
                    continue
                log(f"gpu benchmark: {step}")
                try:
                    results[step] = globals()[step](ctx)
                    results["status"][step] = "ok"
                except Exception as exc:  # noqa: BLE001 - record and go on with the next step
                    failed = True
                    results["status"][step] = f"failed: {type(exc).__name__}: {exc}"
                    results.setdefault("tracebacks", {})[step] = traceback.format_exc()
    intro = (
        f"GPU: {env.gpu}."
        if env.cuda
        else "No CUDA device on this machine: every GPU step was skipped (reasons below)."
    )
    write_results("gpu", out_dir, results, tables(results), intro=intro)
    return results, int(failed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=RESULTS, help="Output folder.")
    args = p.parse_args(argv)
    env = detect()
    if env.gpu is None:
        print("no CUDA device on this machine: GPU benchmarks skipped", file=sys.stderr)
    results, code = run(env, args.out)
    for step in STEPS:
        reason = results["skipped"][step]
        status = f"skipped: {reason}" if reason else results["status"].get(step, "?")
        print(f"{step}: {status}")
    print(f"wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
