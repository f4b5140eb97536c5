"""Importers: the authors' OpenIBL SFRS model and torchvision's VGG16, checked against plain ops.

The real files cannot be downloaded here, so each test writes a state dict with exactly the
released key names and shapes, and compares the imported network with a reference descriptor
computed from those tensors with plain operations (F.conv2d, the explicit NetVLAD residual sum,
a PCA matmul). Fast tests use the real VGG16/NetVLAD shapes with a 64-row PCA; one slow test
uses the full 4096×32768×1×1 PCA layer (512 MiB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from sfrs_edge.train.backbones import VGG16, VGG16_CFG  # noqa: E402
from sfrs_edge.train.checkpoint import load_checkpoint  # noqa: E402
from sfrs_edge.train.importers import import_openibl_sfrs  # noqa: E402

from sfrs_edge.cli import main  # noqa: E402
from sfrs_edge.errors import ModelError  # noqa: E402
from sfrs_edge.images import list_images, load_for_model  # noqa: E402

MEAN = torch.tensor([123.68, 116.78, 103.94]).view(1, 3, 1, 1)  # OpenIBL vgg16, RGB 0-255
K, D = 64, 512


def vgg_layers(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision VGG16 ``features`` conv weights (indices 0..28), He-initialised."""
    g = torch.Generator().manual_seed(seed)
    out, index, cin = {}, 0, 3
    for v in VGG16_CFG:
        if v == "M":
            index += 1
            continue
        out[f"{index}.weight"] = torch.randn(v, cin, 3, 3, generator=g) * (2 / (cin * 9)) ** 0.5
        out[f"{index}.bias"] = torch.randn(v, generator=g) * 0.1
        index, cin = index + 2, v
    assert max(int(k.split(".")[0]) for k in out) == 28
    return out


def openibl_state(pca_dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Exactly the released key names and shapes (``base.*`` as in the issue)."""
    g = torch.Generator().manual_seed(seed + 1)
    state = {f"base.{k}": v for k, v in vgg_layers(seed).items()}
    centroids = torch.randn(K, D, generator=g)
    state["net_vlad.conv.weight"] = (
        30 * F.normalize(centroids, dim=1) + torch.randn(K, D, generator=g)
    )[:, :, None, None]
    state["net_vlad.centroids"] = centroids * 0.05
    state["pca_layer.weight"] = torch.randn(pca_dim, K * D, 1, 1, generator=g) * 0.01
    state["pca_layer.bias"] = torch.randn(pca_dim, generator=g) * 0.01
    return state


def reference_descriptor(state: dict[str, torch.Tensor], rgb: torch.Tensor) -> torch.Tensor:
    """OpenIBL's EmbedNetPCA forward written out with plain tensor ops (float64)."""
    x = rgb.double() - MEAN.double()
    index = 0
    convs_left = 13
    for v in VGG16_CFG:
        if v == "M":
            x = F.max_pool2d(x, 2, 2)
            index += 1
            continue
        w, b = state[f"base.{index}.weight"].double(), state[f"base.{index}.bias"].double()
        x = F.conv2d(x, w, b, padding=1)
        convs_left -= 1
        if convs_left:  # no ReLU after conv5_3
            x = F.relu(x)
        index += 2
    n, d, h, w_ = x.shape
    x = x / x.norm(dim=1, keepdim=True)  # per-location L2
    feats = x.reshape(n, d, h * w_)  # N,D,HW
    conv = state["net_vlad.conv.weight"].double()[:, :, 0, 0]  # K,D
    assign = torch.softmax(torch.matmul(conv, feats), dim=1)  # N,K,HW
    c = state["net_vlad.centroids"].double()
    # Explicit residual formula: V[k] = sum_i a_k(i) (x_i - c_k), materialised N×K×D×HW.
    residual = feats[:, None, :, :] - c[None, :, :, None]
    vlad = (residual * assign[:, :, None, :]).sum(-1)  # N,K,D
    vlad = vlad / vlad.norm(dim=2, keepdim=True)
    vlad = vlad.reshape(n, -1)
    vlad = vlad / vlad.norm(dim=1, keepdim=True)
    pw = state["pca_layer.weight"].double()[:, :, 0, 0]
    y = vlad @ pw.T + state["pca_layer.bias"].double()
    return y / y.norm(dim=1, keepdim=True)


@pytest.fixture(scope="module")
def real_rgb(gardens_point) -> torch.Tensor:
    """Two real images at a reduced 64x96 input (RGB 0-255 float, NCHW)."""
    from sfrs_edge.model_info import Preprocessing

    pre = Preprocessing(64, 96, mean=(0, 0, 0), std=(1, 1, 1))
    imgs = [load_for_model(p, pre) for p in list_images(gardens_point / "day_left")[:2]]
    bgr = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()
    return bgr.flip(1)


def imported_descriptor(net, rgb: torch.Tensor) -> torch.Tensor:
    """Our network fed through its own input adapter (uint8 BGR NHWC, as exported)."""
    from sfrs_edge.train.model import InputAdapter

    bgr8 = rgb.flip(1).permute(0, 2, 3, 1).round().to(torch.uint8)
    with torch.no_grad():
        return net(InputAdapter(net.config.preprocessing())(bgr8)).double()


@pytest.mark.parametrize("wrap", ["bare", "state_dict+module", "base_model"])
def test_openibl_import_reproduces_reference(tmp_path, real_rgb, wrap):
    state = openibl_state(pca_dim=64)
    saved = dict(state)
    if wrap == "state_dict+module":
        saved = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 5}
    elif wrap == "base_model":  # the prefix of OpenIBL's EmbedNetPCA.base_model.base
        saved = {k.replace("base.", "base_model.base.", 1): v for k, v in state.items()}
    path = tmp_path / "vgg16_netvlad.pth"
    torch.save(saved, path)

    net = import_openibl_sfrs(path)
    cfg = net.config
    assert (cfg.backbone, cfg.num_clusters, cfg.pca_dim, cfg.descriptor_dim) == (
        "vgg16",
        K,
        64,
        64,
    )
    assert (cfg.input_height, cfg.input_width) == (480, 640)
    got = imported_descriptor(net, real_rgb)
    want = reference_descriptor(state, real_rgb)
    cos = (got * want).sum(1)
    assert cos.min() > 0.99999, cos
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)


@pytest.mark.slow
def test_openibl_import_full_size_pca(tmp_path, real_rgb):
    """The released shapes exactly, including the 4096×32768×1×1 PCA layer."""
    state = openibl_state(pca_dim=4096)
    assert tuple(state["pca_layer.weight"].shape) == (4096, 32768, 1, 1)
    path = tmp_path / "vgg16_netvlad.pth"
    torch.save(state, path)
    net = import_openibl_sfrs(path)
    assert net.config.descriptor_dim == 4096
    got = imported_descriptor(net, real_rgb)
    want = reference_descriptor(state, real_rgb)
    assert (got * want).sum(1).min() > 0.99999


def test_cli_import_openibl_writes_a_loadable_checkpoint(tmp_path, real_rgb):
    state = openibl_state(pca_dim=16)
    src = tmp_path / "vgg16_netvlad.pth"
    torch.save(state, src)
    out = tmp_path / "ckpt.pt"
    result = CliRunner().invoke(main, ["import", "--from", "openibl", str(src), "-o", str(out)])
    assert result.exit_code == 0, result.output
    net, prov = load_checkpoint(out)
    assert prov["source"] == "openibl" and net.config.descriptor_dim == 16
    got = imported_descriptor(net, real_rgb)
    assert (got * reference_descriptor(state, real_rgb)).sum(1).min() > 0.99999


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s.pop("net_vlad.centroids"), "missing key 'net_vlad.centroids'"),
        (lambda s: s.pop("base.28.weight"), r"missing keys \['base.28.weight'\]"),
        (lambda s: s.pop("pca_layer.bias"), "only one of pca_layer"),
        (
            lambda s: s.__setitem__("net_vlad.conv.weight", torch.zeros(K, 256, 1, 1)),
            r"shape mismatch in net_vlad.conv.weight \(64, 256, 1, 1\)",
        ),
        (lambda s: [s.pop(k) for k in list(s) if k.startswith("base.")], "no VGG16 layers"),
    ],
)
def test_openibl_bad_files_name_file_and_keys(tmp_path, mutate, message):
    state = openibl_state(pca_dim=8)
    mutate(state)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ModelError, match=message) as err:
        import_openibl_sfrs(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all" * 10, "truncated"])
def test_openibl_unreadable_files(tmp_path, content):
    path = tmp_path / "vgg16_netvlad.pth"
    if content == "truncated":
        torch.save(openibl_state(pca_dim=8), path)
        content = path.read_bytes()[:100_000]
    path.write_bytes(content)
    with pytest.raises(ModelError, match=str(path)):
        import_openibl_sfrs(path)
    result = CliRunner().invoke(main, ["import", "--from", "openibl", str(path)])
    assert result.exit_code == 1 and result.output.startswith("error: ")


def torchvision_state() -> dict[str, torch.Tensor]:
    state = {f"features.{k}": v for k, v in vgg_layers(seed=3).items()}
    state["classifier.0.weight"] = torch.zeros(16, 8)  # real: 4096×25088; ignored
    state["classifier.6.bias"] = torch.zeros(1000)
    return state


def test_torchvision_vgg16_loads_features_and_ignores_classifier(tmp_path, real_rgb):
    state = torchvision_state()
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(state, path)
    vgg = VGG16()
    vgg.load_pretrained(path)
    got = vgg(real_rgb - MEAN)
    x = real_rgb - MEAN
    index = 0
    for i, v in enumerate(VGG16_CFG):
        if v == "M":
            x, index = F.max_pool2d(x, 2), index + 1
            continue
        x = F.conv2d(
            x, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1
        )
        x = F.relu(x) if i < len(VGG16_CFG) - 1 else x
        index += 2
    torch.testing.assert_close(got, x, rtol=1e-4, atol=1e-3)
    # Frozen conv1-conv4 survive loading (OpenIBL train_layers='conv5').
    assert not vgg.features[0].weight.requires_grad and vgg.features[28].weight.requires_grad


def test_torchvision_vgg16_errors_and_cli(tmp_path):
    state = torchvision_state()
    del state["features.28.weight"]
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(ModelError, match=r"bad.pth: not torchvision VGG16 weights.*features.28"):
        VGG16().load_pretrained(bad)
    result = CliRunner().invoke(main, ["import", "--from", "torchvision-vgg16", str(bad)])
    assert result.exit_code == 1 and "features.28.weight" in result.output

    good = tmp_path / "vgg16.pth"
    torch.save({"state_dict": torchvision_state()}, good)
    result = CliRunner().invoke(main, ["import", "--from", "torchvision-vgg16", str(good)])
    assert result.exit_code == 0 and "sfrs-edge init --backbone vgg16 --weights" in result.output
    out = tmp_path / "ckpt.pt"
    args = ["import", "--from", "torchvision-vgg16", str(good), "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "NetVLAD clusters come from images" in result.output
    assert not out.exists()


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(ModelError, match="no such"):
        VGG16().load_pretrained(tmp_path / "nope.pth")
