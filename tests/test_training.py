"""SFRS generational training on tiny real configurations (Gardens Point, 96x160, 8 clusters)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sfrs_edge.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint  # noqa: E402
from sfrs_edge.train.config import InitConfig, KMeansConfig, TrainConfig  # noqa: E402
from sfrs_edge.train.datasets import load_traversals  # noqa: E402
from sfrs_edge.train.model import ModelConfig  # noqa: E402
from sfrs_edge.train.trainer import Trainer  # noqa: E402

TINY_MODEL = dict(input_height=96, input_width=160, num_clusters=8, pca_dim=8)
TINY = dict(
    pos_radius=2,
    nonneg_radius=5,
    eval_radius=2,
    neg_num=2,
    neg_pool=20,
    pos_num=2,
    pos_pool=5,
    color_jitter=None,
    kmeans=KMeansConfig(descriptors_per_image=10, max_images=40),
    batch_size=16,
)


def tiny_config(model: dict | None = None, **kw) -> TrainConfig:
    return TrainConfig(model=ModelConfig(**{**TINY_MODEL, **(model or {})}), **{**TINY, **kw})


@pytest.fixture(scope="module")
def gp_train(gardens_point):
    return load_traversals(gardens_point, "day_left", ["night_right"], range(0, 12))


@pytest.fixture(scope="module")
def init_ckpt(tmp_path_factory, gp_train):
    """The off-the-shelf start point (ImageNet Lite0 + k-means NetVLAD, no PCA)."""
    from sfrs_edge.train.offtheshelf import build_offtheshelf

    torch.set_num_threads(1)
    cfg = tiny_config()
    icfg = InitConfig(
        model=ModelConfig(num_clusters=8, input_height=96, input_width=160),
        kmeans=KMeansConfig(descriptors_per_image=10, max_images=40),
    )
    net, prov = build_offtheshelf([*gp_train.query_paths, *gp_train.db_paths], icfg)
    assert cfg.model.num_clusters == net.config.num_clusters
    path = tmp_path_factory.mktemp("init") / "init.pt"
    save_checkpoint(net, path, prov)
    return path


def make(gp_train, init_ckpt, run_dir, **kw):
    return Trainer(tiny_config(**kw), gp_train, run_dir, init=init_ckpt, progress=False)


def state(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def equal_states(a, b, atol=0.0):
    return all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def test_frozen_cache_equals_full_forward(gp_train, init_ckpt, tmp_path):
    tr = make(gp_train, init_ckpt, tmp_path)
    paths = gp_train.db_paths[:3]
    f = tr.inputs(tr.student, paths)
    assert tr.inputs.split == 12  # Lite0: stem + blocks 0..10 frozen
    from sfrs_edge.train.features import map_images

    full = map_images(tr.student, paths, lambda n, x: n.features(x))
    np.testing.assert_allclose(tr.inputs.suffix(tr.student, f).detach().numpy(), full, atol=1e-4)


def test_training_reports_progress_through_the_runtime_progress(
    gp_train, init_ckpt, tmp_path, capsys
):
    tr = Trainer(tiny_config(tuples_per_step=2), gp_train, tmp_path, init=init_ckpt, progress=True)
    tr.start_generation(0)
    tr.train_epoch(0, 0)
    err = capsys.readouterr().err.splitlines()  # not a terminal: plain lines on stderr
    n = len(gp_train.query_paths) + len(gp_train.db_paths)
    assert f"mining: embed: {n}/{n} images" in err
    assert any(line.startswith("gen 0 epoch 0: ") and line.endswith(" tuples") for line in err)


def test_teacher_frozen_and_student_restarts_from_initial_weights(gp_train, init_ckpt, tmp_path):
    tr = make(gp_train, init_ckpt, tmp_path, tuples_per_step=2)
    initial, _ = load_checkpoint(init_ckpt)
    init_weights = {k: v for k, v in initial.state_dict().items() if not k.startswith("pca")}
    tr.start_generation(0)
    assert equal_states(state(tr.student), init_weights)
    tr.train_epoch(0, 0)
    trained = state(tr.student)
    assert not equal_states(trained, init_weights)
    # generation 1: teacher = the student's last weights, student = the initial weights again
    tr.start_generation(1)
    assert equal_states(state(tr.teacher), trained)
    assert equal_states(state(tr.student), init_weights)
    assert not any(p.requires_grad for p in tr.teacher.parameters())
    before = state(tr.teacher)
    parts = tr.train_epoch(1, 0)
    assert "soft" in parts and parts["soft"] > 0
    assert equal_states(state(tr.teacher), before)  # never changes within the generation
    assert not equal_states(state(tr.student), init_weights)
    frozen = [k for k, p in tr.student.named_parameters() if not p.requires_grad]
    assert frozen and all(torch.equal(tr.student.state_dict()[k], init_weights[k]) for k in frozen)


@pytest.mark.slow
def test_resume_continues_exactly(gp_train, init_ckpt, tmp_path):
    kw = dict(generations=2, epochs=2, tuples_per_step=4)
    full = make(gp_train, init_ckpt, tmp_path / "full", **kw)
    full.run()
    part = make(gp_train, init_ckpt, tmp_path / "part", **kw)
    out = part.run(max_epochs=2)  # gen 0 (one epoch) + gen 1 epoch 0, then stop
    assert out["stopped"] == (1, 1)
    resumed = make(gp_train, init_ckpt, tmp_path / "part", **kw)
    resumed.run(resume=True)
    a = read_checkpoint(tmp_path / "full" / "last.pt")
    b = read_checkpoint(tmp_path / "part" / "last.pt")
    assert equal_states(a["state_dict"], b["state_dict"], atol=1e-6)
    assert a["train_state"]["neg_cache"] == b["train_state"]["neg_cache"]
    rows_a = [r for r in a["train_state"]["history"]]
    rows_b = [r for r in b["train_state"]["history"]]
    assert [r.get("loss") for r in rows_a] == pytest.approx([r.get("loss") for r in rows_b])


def _ddp_worker(rank, world, init_file, init_ckpt, gp_root, run_dir):
    import torch.distributed as dist
    from sfrs_edge.train.distributed import DistInfo

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    train = load_traversals(gp_root, "day_left", ["night_right"], range(0, 12))
    cfg = tiny_config(generations=2, epochs=1, tuples_per_step=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(
            cfg, train, run_dir, init=init_ckpt, dist=DistInfo(rank, world), progress=False
        ).run()
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_equal_one(gp_train, init_ckpt, gardens_point, tmp_path):
    import torch.multiprocessing as mp

    single = make(
        gp_train, init_ckpt, tmp_path / "single", generations=2, epochs=1, tuples_per_step=2
    )
    single.run()
    mp.spawn(
        _ddp_worker,
        args=(2, str(tmp_path / "pg"), str(init_ckpt), str(gardens_point), str(tmp_path / "ddp")),
        nprocs=2,
    )
    a = read_checkpoint(tmp_path / "single" / "last.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "ddp" / "last.pt")["state_dict"]
    init = read_checkpoint(init_ckpt)["state_dict"]
    assert not equal_states({k: a[k] for k in init if "pca" not in k}, init)
    assert equal_states(a, b, atol=1e-4)


@pytest.mark.slow
def test_end_to_end_cli_train_export(gardens_point, tmp_path):
    """`sfrs-edge train` for generations 0 and 1 on real images; the checkpoint loads, exports,
    and the exported model localizes like the checkpoint."""
    from click.testing import CliRunner

    from sfrs_edge.cli import main

    torch.set_num_threads(1)
    run = tmp_path / "run"
    args = [
        "train", "--dataset", "traversal", "--data", str(gardens_point), "-o", str(run),
        "--train-places", "0-11", "--val-places", "20-29", "--test-places", "100-109",
        "--query-folders", "night_right",
        "--input-size", "96x160", "--clusters", "8", "--generations", "2", "--epochs", "2",
        "--pos-radius", "2", "--nonneg-radius", "5", "--eval-radius", "2",
        "--neg-num", "2", "--neg-pool", "20", "--pos-num", "2", "--pos-pool", "5",
        "--color-jitter", "none", "--pca-dim", "8", "--tuples-per-step", "2", "--no-progress",
    ]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    log = (run / "log.csv").read_text().splitlines()
    assert log[0].startswith("generation,epoch")
    gens = [line.split(",")[0] for line in log[1:]]
    assert gens[0] == "off-the-shelf" and "0" in gens and "1" in gens and gens[-1] == "final+PCA8"
    net, prov = load_checkpoint(run / "checkpoint.pt")
    assert (
        prov["kind"] == "sfrs" and prov["generation"] in (0, 1) and "val_r5" in prov["val_recall"]
    )
    assert net.config.pca_dim == 8 and (96, 160) == (
        net.config.input_height,
        net.config.input_width,
    )
    export = pytest.importorskip("sfrs_edge.export.pipeline")
    from sfrs_edge.train.features import descriptors

    from sfrs_edge.engine import Engine
    from sfrs_edge.recall import rank_database

    onnx_path = tmp_path / "model.onnx"
    verify = sorted((gardens_point / "day_left").iterdir())[:4]
    export.export_checkpoint(run / "checkpoint.pt", onnx_path, verify_images=verify)
    engine = Engine.open(onnx_path, "cpu")
    assert engine.dim == 8
    # localize: night queries 100-109 against the day_left database with the exported model
    db = sorted((gardens_point / "day_left").iterdir())[100:110]
    queries = sorted((gardens_point / "night_right").iterdir())[100:110]
    got_db, got_q = engine.embed_files(db), engine.embed_files(queries)
    ref_db, ref_q = descriptors(net, db), descriptors(net, queries)
    np.testing.assert_allclose(got_db, ref_db, atol=2e-3)
    np.testing.assert_allclose(got_q, ref_q, atol=2e-3)
    top_onnx = rank_database(got_q, got_db, 1)[:, 0]
    top_torch = rank_database(ref_q, ref_db, 1)[:, 0]
    assert (top_onnx == top_torch).mean() >= 0.9


@pytest.mark.slow
def test_vgg16_trains_conv5_only(gardens_point, tmp_path):
    """VGG16 path (random weights, no ImageNet file needed): conv1-4 cached and frozen."""
    from sfrs_edge.train.model import ModelConfig, SFRSNet

    torch.manual_seed(0)
    net = SFRSNet(ModelConfig(backbone="vgg16", num_clusters=4, input_height=64, input_width=96))
    save_checkpoint(net, tmp_path / "vgg_init.pt", {"kind": "test"})
    train = load_traversals(gardens_point, "day_left", ["night_right"], range(0, 12))
    cfg = tiny_config(model=dict(backbone="vgg16", num_clusters=4, input_height=64, input_width=96))
    tr = Trainer(cfg, train, tmp_path / "run", init=tmp_path / "vgg_init.pt", progress=False)
    assert tr.inputs.split == 24  # conv5_1 is module 24 of VGG16 features
    tr.start_generation(0)
    tr.train_epoch(0, 0)
    tr.start_generation(1)
    parts = tr.train_epoch(1, 0)
    assert {"hard", "soft"} <= set(parts)
    after = tr.student.state_dict()
    before = net.state_dict()
    assert torch.equal(after["backbone.features.21.weight"], before["backbone.features.21.weight"])
    assert not torch.equal(
        after["backbone.features.28.weight"], before["backbone.features.28.weight"]
    )


def test_non_finite_step_is_skipped_and_counted(gp_train, init_ckpt, tmp_path, monkeypatch, caplog):
    import sfrs_edge.train.trainer as trainer_mod

    tr = make(gp_train, init_ckpt, tmp_path, tuples_per_step=4)
    tr.start_generation(0)
    real = trainer_mod.tuple_loss
    monkeypatch.setattr(trainer_mod, "tuple_loss", lambda *a, **kw: _nan(real(*a, **kw)))
    before = state(tr.student)
    with caplog.at_level("WARNING", logger="sfrs_edge.train.trainer"):
        parts = tr.train_epoch(0, 0)
    steps = -(-len(gp_train.query_paths) // 4)
    assert parts["skipped_steps"] == steps
    assert "loss" not in parts  # no applied step: no loss to average
    assert equal_states(state(tr.student), before)  # nothing was applied
    msgs = [r.getMessage() for r in caplog.records if "step skipped" in r.getMessage()]
    assert len(msgs) == steps
    assert msgs[0].startswith("generation 0 epoch 0 step 0:") and ".jpg" in msgs[0]


def _nan(out):
    total, parts = out
    return total * float("nan"), parts


def test_only_bad_steps_are_skipped(gp_train, init_ckpt, tmp_path, monkeypatch):
    import sfrs_edge.train.trainer as trainer_mod

    tr = make(gp_train, init_ckpt, tmp_path, tuples_per_step=4)
    tr.start_generation(0)
    real = trainer_mod.tuple_loss
    seen = {"n": 0}

    def flaky(*a, **kw):  # the first tuple of every other call diverges
        seen["n"] += 1
        total, parts = real(*a, **kw)
        return (total * float("inf") if seen["n"] % 8 == 1 else total), parts

    monkeypatch.setattr(trainer_mod, "tuple_loss", flaky)
    parts = tr.train_epoch(0, 0)
    assert 0 < parts["skipped_steps"] < -(-len(gp_train.query_paths) // 4)
    assert np.isfinite(parts["loss"])
    assert all(torch.isfinite(v).all() for v in state(tr.student).values())


def test_diverged_model_is_never_the_best(gp_train, init_ckpt, tmp_path, monkeypatch):
    """Weights that became NaN (however) are not written as model_best.pt; with no healthy
    epoch at all the run stops with a one-line TrainingError and writes no checkpoint.pt."""
    from sfrs_edge.errors import TrainingError

    tr = make(gp_train, init_ckpt, tmp_path, generations=1, epochs=1, tuples_per_step=4)
    real_epoch = tr.train_epoch

    def poisoned(g, epoch):
        out = real_epoch(g, epoch)
        with torch.no_grad():
            next(p for p in tr.student.parameters() if p.requires_grad).fill_(float("nan"))
        return out

    monkeypatch.setattr(tr, "train_epoch", poisoned)
    with pytest.raises(TrainingError, match="no epoch gave a usable model"):
        tr.run()
    assert not (tmp_path / "model_best.pt").exists()
    assert not (tmp_path / "checkpoint.pt").exists()
    assert "train_r5" in tr.history[0]  # health judged on training places, not on a test split


def test_collapsed_model_is_not_the_best(gp_train, init_ckpt, tmp_path):
    from sfrs_edge.train.health import unhealthy_reason

    tr = make(gp_train, init_ckpt, tmp_path)
    good = state(tr.student)
    assert unhealthy_reason(good, {"train_r5": 40.0}, 40.0, 60.0, 0.5) is None
    assert "collapsed" in unhealthy_reason(good, {"train_r5": 29.0}, 29.0, 60.0, 0.5)
    assert "not a number" in unhealthy_reason(good, {"val_r1": float("nan")}, 50.0, 60.0, 0.5)
    bad = {**good, "x": torch.tensor([1.0, float("inf")])}
    assert "not finite" in unhealthy_reason(bad, {}, None, None, 0.5)
    # the trainer uses it: a collapsed epoch leaves the earlier best in place
    tr.health_ref = 80.0
    tr.best = {"r5": -1.0, "generation": 0, "epoch": 0}
    tr._update_best(1, 0, {"train_r5": 10.0})
    assert tr.best["generation"] == 0 and not (tmp_path / "model_best.pt").exists()
    tr._update_best(1, 0, {"train_r5": 70.0})
    assert tr.best["generation"] == 1 and (tmp_path / "model_best.pt").exists()


@pytest.mark.slow
def test_fol_options_train_and_export_a_trained_local_head(gp_train, init_ckpt, tmp_path):
    """SAL/CEL and pseudo-correspondence supervision run inside the generations; the trained
    projection is written as the checkpoint's local head, which the export reads."""
    from sfrs_edge.train.correspondences import LocalSupervisionConfig
    from sfrs_edge.train.local_features import head_from_state
    from sfrs_edge.train.region_losses import RegionLossConfig

    kw = dict(
        generations=2,
        epochs=1,
        tuples_per_step=4,
        regions=RegionLossConfig(sal_weight=0.005, cel_weight=1.0),
        local=LocalSupervisionConfig(weight=1.0, min_similarity=0.5),
    )
    tr = make(gp_train, init_ckpt, tmp_path, **kw)
    start = tr.projection.weight.detach().clone()
    tr.run()
    rows = [r for r in tr.history if isinstance(r["generation"], int)]
    assert all(r["sal"] > 0 and r["cel"] >= 0 for r in rows)
    assert any(r.get("matches", 0) > 0 for r in rows)
    ckpt = read_checkpoint(tmp_path / "checkpoint.pt")
    cfg = TrainConfig.from_dict(ckpt["provenance"]["train"])
    assert cfg.regions.sal_weight == 0.005 and cfg.local.weight == 1.0
    head = head_from_state(ckpt["local"], (96, 160))
    assert not torch.allclose(head.projection, start)  # trained, not the PCA start
    assert torch.allclose(head.projection, tr.projection.weight.detach())
