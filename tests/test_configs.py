"""Nested model configs; the flat layout of pre-release checkpoints is refused in one line."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sfrs_edge.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from sfrs_edge.train.config import InitConfig, KMeansConfig, TrainConfig  # noqa: E402
from sfrs_edge.train.model import ModelConfig, SFRSNet  # noqa: E402
from sfrs_edge.train.resume import LAST, read_last  # noqa: E402

from sfrs_edge.errors import ConfigError, ModelError  # noqa: E402

# What a pre-release `sfrs-edge init` saved as provenance["init"] (asdict of the flat class).
OLD_INIT = {
    "backbone": "vgg16",
    "num_clusters": 4,
    "input_height": 32,
    "input_width": 48,
    "pca_dim": None,
    "whiten": True,
    "descriptors_per_image": 10,
    "max_images": 40,
    "kmeans_iters": 100,
    "seed": 43,
    "weights": "vgg16-397923af.pth",
    "batch_size": 8,
}
# What pre-release training saved as train_state["config"] (flat).
OLD_TRAIN = {
    "backbone": "efficientnet_lite0",
    "num_clusters": 8,
    "input_height": 96,
    "input_width": 160,
    "weights": None,
    "first_trainable": 14,
    "kmeans_images": 40,
    "descriptors_per_image": 10,
    "pos_radius": 2.0,
    "nonneg_radius": 5.0,
    "eval_radius": 2.0,
    "generations": 2,
    "epochs": 2,
    "gen0_one_epoch": True,
    "lr": 0.001,
    "momentum": 0.9,
    "weight_decay": 0.001,
    "step_size": 5,
    "gamma": 0.5,
    "tuples_per_step": 4,
    "temperatures": [0.07, 0.07, 0.06, 0.05],
    "soft_weight": 0.5,
    "neg_num": 2,
    "neg_pool": 20,
    "pos_num": 2,
    "pos_pool": 5,
    "cache_size": 1000,
    "color_jitter": None,
    "cache_frozen": True,
    "batch_size": 16,
    "pca_dim": 8,
    "pca_images": 10000,
    "whiten": True,
    "seed": 43,
}
NEW_TRAIN = TrainConfig(
    model=ModelConfig("efficientnet_lite0", 8, 96, 160, pca_dim=8),
    kmeans=KMeansConfig(descriptors_per_image=10, max_images=40),
    first_trainable=14,
    pos_radius=2,
    nonneg_radius=5,
    eval_radius=2,
    generations=2,
    epochs=2,
    neg_num=2,
    neg_pool=20,
    pos_num=2,
    pos_pool=5,
    color_jitter=None,
    batch_size=16,
)


def test_a_flat_init_config_is_refused_with_the_remedy():
    with pytest.raises(ConfigError, match="flat layout of an sfrs-edge pre-release") as exc:
        InitConfig.from_dict(OLD_INIT)
    assert "backbone" in str(exc.value) and "sfrs-edge init" in str(exc.value)
    init = InitConfig(
        model=ModelConfig("vgg16", 4, 32, 48, pca_dim=None, whiten=True),
        kmeans=KMeansConfig(descriptors_per_image=10, max_images=40, iters=100),
        weights="vgg16-397923af.pth",
    )
    assert InitConfig.from_dict(init.to_dict()) == init  # the nested layout round-trips


def test_a_checkpoint_saves_and_loads_its_model(tmp_path):
    torch.manual_seed(0)
    net = SFRSNet(ModelConfig("vgg16", 4, 32, 48)).eval()
    save_checkpoint(net, tmp_path / "m.pt", {"kind": "off-the-shelf", "alpha": 12.5})
    loaded, prov = load_checkpoint(tmp_path / "m.pt")
    x = torch.randn(2, 3, 32, 48)
    torch.testing.assert_close(loaded(x), net(x))
    assert loaded.config == net.config and prov["alpha"] == 12.5
    torch.save({"config": {}, "state_dict": {}}, tmp_path / "bare.pt")  # no format marker
    with pytest.raises(ModelError, match="not an sfrs-edge checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")


def test_training_configs_nest_one_model_config():
    with pytest.raises(ConfigError, match="training config: saved in the flat layout"):
        TrainConfig.from_dict(OLD_TRAIN)
    saved = NEW_TRAIN.to_dict()
    assert saved["model"]["pca_dim"] == 8 and "pca_dim" not in saved  # one place for model fields
    assert TrainConfig.from_dict(saved) == NEW_TRAIN
    init = NEW_TRAIN.init_config()  # the start of every generation: the same model, no PCA
    assert init.model == ModelConfig("efficientnet_lite0", 8, 96, 160, pca_dim=None)
    assert init.kmeans == NEW_TRAIN.kmeans and init.batch_size == 16
    with pytest.raises(ConfigError, match=r"unknown keys \['lr_typo'\]"):
        TrainConfig.from_dict({**saved, "lr_typo": 1})
    with pytest.raises(ConfigError, match="training config"):
        TrainConfig.from_dict({**saved, "model": {"backbone": "vgg16", "depth": 3}})


def test_resume_refuses_a_run_saved_in_the_flat_layout(tmp_path):
    net = SFRSNet(ModelConfig("efficientnet_lite0", 8, 96, 160))
    extra = {"train_state": {"config": OLD_TRAIN, "generation": 0, "epoch": 1}}
    save_checkpoint(net, tmp_path / LAST, {"kind": "sfrs-epoch"}, extra)
    with pytest.raises(ConfigError, match=r"last\.pt: training config: saved in the flat layout"):
        read_last(tmp_path, NEW_TRAIN)


def test_resume_accepts_the_same_config_only(tmp_path):
    net = SFRSNet(ModelConfig("efficientnet_lite0", 8, 96, 160))
    extra = {"train_state": {"config": NEW_TRAIN.to_dict(), "generation": 0, "epoch": 1}}
    save_checkpoint(net, tmp_path / LAST, {"kind": "sfrs-epoch"}, extra)
    assert read_last(tmp_path, NEW_TRAIN)["train_state"]["epoch"] == 1
    other = TrainConfig.from_dict({**NEW_TRAIN.to_dict(), "lr": 0.01})
    with pytest.raises(ConfigError, match="different configuration; cannot resume"):
        read_last(tmp_path, other)
    assert read_last(tmp_path / "empty", NEW_TRAIN) is None
