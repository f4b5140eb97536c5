"""Device plumbing of training: device choice, mixed precision, DDP backend, checkpoints that
load wherever they were written. The CPU path runs for real; the GPU choices are checked by
their decisions (this machine has no GPU)."""

from __future__ import annotations

import io
import warnings
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sfrs_edge.train import devices  # noqa: E402
from sfrs_edge.train.devices import (  # noqa: E402
    DeviceConfig,
    autocast_dtype,
    grad_scaler,
    resolve_device,
    to_cpu,
    use_channels_last,
)

from sfrs_edge.errors import ConfigError  # noqa: E402


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_cuda_without_a_gpu_is_a_one_line_error(no_cuda):
    with pytest.raises(ConfigError) as exc:
        resolve_device("cuda")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("--device cuda:") and "--device cpu" in msg


def test_auto_picks_the_gpu_when_there_is_one(no_cuda, monkeypatch):
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)  # torchrun rank 1
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="only 2 GPU"):
        resolve_device("cuda:2")


def test_unknown_device_and_precision_are_refused():
    with pytest.raises(ConfigError, match="--device"):
        DeviceConfig(device="tpu")
    with pytest.raises(ConfigError, match="--precision"):
        DeviceConfig(precision="int8")
    with pytest.raises(ConfigError, match="--workers"):
        DeviceConfig(workers=-1)


def test_autocast_dtype_selection(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert autocast_dtype(cpu, "auto") == torch.float32  # CPU: AMP off unless asked
    assert autocast_dtype(cpu, "bf16") == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        autocast_dtype(cpu, "fp16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert autocast_dtype(gpu, "auto") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)  # e.g. a T4 or V100
    assert autocast_dtype(gpu, "auto") == torch.float16
    assert autocast_dtype(gpu, "fp32") == torch.float32


def test_loss_scaler_only_for_fp16():
    assert grad_scaler(torch.device("cpu"), torch.bfloat16) is None
    assert grad_scaler(torch.device("cuda", 0), torch.float32) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no CUDA here: the scaler warns and disables itself
        assert isinstance(grad_scaler(torch.device("cuda", 0), torch.float16), torch.amp.GradScaler)


def test_channels_last_default_on_gpu_only():
    assert use_channels_last(torch.device("cuda", 0), None)
    assert not use_channels_last(torch.device("cpu"), None)
    assert use_channels_last(torch.device("cpu"), True)


def test_to_cpu_moves_nested_state():
    state = {"a": [torch.ones(2, device="meta"), (torch.zeros(1, device="meta"), 3)], "b": "x"}
    with pytest.raises(NotImplementedError):  # meta tensors have no data to copy: the probe
        to_cpu(state)
    plain = {"a": [torch.ones(2), (torch.zeros(1), 3)], "b": "x"}
    out = to_cpu(plain)
    assert out["a"][0].device.type == "cpu" and out["a"][1][1] == 3 and out["b"] == "x"
    assert isinstance(out["a"][1], tuple)


def _as_saved_on_cuda(src, dst):
    """Rewrite a torch checkpoint so that its tensors say they were saved on ``cuda:0`` (what
    a GPU run writes when its state is not moved to the CPU): the storages' location string in
    the pickle (protocol 2, no framing) is the only difference."""
    z = zipfile.ZipFile(src)
    pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
    data = z.read(pkl)
    assert b"X\x03\x00\x00\x00cpu" in data
    data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
        for n in z.namelist():
            w.writestr(n, data if n == pkl else z.read(n))
    dst.write_bytes(out.getvalue())


def test_gpu_written_checkpoint_loads_and_exports_on_cpu(
    tiny_checkpoint, tmp_path, no_cuda, gardens_point
):
    from sfrs_edge.train.checkpoint import load_checkpoint

    cuda_ckpt = tmp_path / "cuda.pt"
    _as_saved_on_cuda(tiny_checkpoint, cuda_ckpt)
    with pytest.raises(RuntimeError, match="CUDA"):  # the file really names a CUDA device
        torch.load(cuda_ckpt, weights_only=True)
    net, _ = load_checkpoint(cuda_ckpt)
    ref, _ = load_checkpoint(tiny_checkpoint)
    assert all(v.device.type == "cpu" for v in net.state_dict().values())
    assert all(
        torch.equal(a, b)
        for a, b in zip(net.state_dict().values(), ref.state_dict().values(), strict=True)
    )
    export = pytest.importorskip("sfrs_edge.export.pipeline")
    verify = sorted((gardens_point / "day_left").iterdir())[:2]
    export.export_checkpoint(cuda_ckpt, tmp_path / "m.onnx", verify_images=verify)
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_ddp_backend_follows_the_device(monkeypatch):
    import sfrs_edge.train.distributed as d

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(d.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(d.dist, "init_process_group", lambda backend: seen.update(b=backend))
    monkeypatch.setattr(d.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(d.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: seen.update(gpu=i))
    info = d.init_from_env("cuda")
    assert seen == {"b": "nccl", "gpu": 1} and info.local_rank == 1 and info.world_size == 2
    seen.clear()
    d.init_from_env("cpu")
    assert seen == {"b": "gloo"}


def test_cli_train_device_cuda_without_gpu_fails_in_one_line(tmp_path, no_cuda, gardens_point):
    from click.testing import CliRunner

    from sfrs_edge.cli import main

    args = ["train", "--dataset", "traversal", "--data", str(gardens_point), "-o",
            str(tmp_path / "run"), "--train-places", "0-11", "--device", "cuda"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    err = [line for line in result.output.strip().splitlines() if "device" in line]
    assert len(err) == 1 and "--device cuda" in err[0] and "Traceback" not in result.output
    assert not (tmp_path / "run" / "init.pt").exists()  # refused before any work


def test_cpu_bf16_step_is_finite_and_keeps_netvlad_in_fp32(tmp_path, gardens_point):
    """AMP on the CPU (bf16): the backbone's convolutions run in bf16, NetVLAD, the regions and
    the loss in fp32, and one step trains finitely."""
    from sfrs_edge.train.checkpoint import save_checkpoint
    from sfrs_edge.train.config import InitConfig, KMeansConfig, TrainConfig
    from sfrs_edge.train.datasets import load_traversals
    from sfrs_edge.train.model import ModelConfig
    from sfrs_edge.train.offtheshelf import build_offtheshelf
    from sfrs_edge.train.trainer import Trainer

    torch.set_num_threads(1)
    train = load_traversals(gardens_point, "day_left", ["night_right"], range(0, 12))
    model = ModelConfig(num_clusters=8, input_height=64, input_width=96)
    km = KMeansConfig(descriptors_per_image=10, max_images=16)
    net, prov = build_offtheshelf([*train.query_paths, *train.db_paths], InitConfig(model, km))
    init = tmp_path / "init.pt"
    save_checkpoint(net, init, prov)
    cfg = TrainConfig(
        model=model, kmeans=km, pos_radius=2, nonneg_radius=4, eval_radius=2, neg_num=2,
        neg_pool=6, pos_num=2, pos_pool=3, color_jitter=None, tuples_per_step=2,
    )  # fmt: skip
    tr = Trainer(cfg, train, tmp_path / "run", init=init, progress=False,
                 devices=DeviceConfig(device="cpu", precision="bf16"))  # fmt: skip
    assert tr.amp_dtype == torch.bfloat16 and tr.scaler is None
    tr.start_generation(0)
    dtypes = []
    last_conv = [m for m in tr.student.backbone.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    hook = last_conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    before = {k: v.clone() for k, v in tr.student.state_dict().items()}
    f = tr.inputs(tr.student, train.query_paths[:2])
    regions = tr.head(f)
    assert regions.dtype == torch.float32 and torch.bfloat16 in dtypes
    from sfrs_edge.train.mining import Tuple

    tuples = [
        Tuple(0, 0, np.array([4, 6]), np.array([0, 1])),
        Tuple(1, 1, np.array([5, 7]), np.array([1, 2])),
    ]
    parts = tr.train_step(tuples, 0, 0, 0)
    hook.remove()
    assert "skipped" not in parts and np.isfinite(parts["loss"])
    after = tr.student.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert tr.devices.to_dict()["precision"] == "bf16"
    assert devices.autocast(torch.device("cpu"), torch.float32).__class__.__name__ == "nullcontext"
