"""Local features for re-ranking: weight maps, the local head, export with two more outputs,
and the Localizer re-ranking against a map that stores them (torch needed to build models)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from conftest import built_once  # noqa: E402
from sfrs_edge.train.checkpoint import load_checkpoint  # noqa: E402
from sfrs_edge.train.local_features import (  # noqa: E402
    LocalConfig,
    LocalHead,
    backbone_maps,
    fit_local_head,
    weight_map,
)

from sfrs_edge.engine import Engine  # noqa: E402
from sfrs_edge.images import list_images  # noqa: E402
from sfrs_edge.model_info import LOCAL_FEATURES, LOCAL_XY  # noqa: E402


@pytest.fixture(scope="module")
def net(tiny_checkpoint):
    return load_checkpoint(tiny_checkpoint)[0]


@pytest.fixture(scope="module")
def maps(net, gardens_point):
    from sfrs_edge.train.features import image_batches
    from sfrs_edge.train.model import InputAdapter

    pre = net.config.preprocessing()
    batch = next(image_batches(list_images(gardens_point / "day_left")[:4], pre, 4))
    with torch.no_grad():
        return backbone_maps(net.backbone, InputAdapter(pre)(batch))


def test_contribution_is_the_share_of_the_global_descriptor(net, maps):
    fine, final = maps
    with torch.no_grad():
        w = weight_map(net, final, "contribution")
        raw = net.netvlad(final)  # before PCA
        g = net.pca(raw)
        want = (net.pca.linear(raw) - net.pca.linear.bias) @ g.T  # ⟨W g_vlad, g_w⟩
    assert w.shape == final.shape[:1] + final.shape[2:]
    assert torch.allclose(w.sum((1, 2)), want.diagonal(), atol=1e-4)
    plain = type(net)(net.config.__class__(**{**net.config.to_dict(), "pca_dim": None}))
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("pca")})
    with torch.no_grad():
        assert torch.allclose(
            weight_map(plain, final, "contribution").sum((1, 2)), torch.ones(4), atol=1e-4
        )
        conf = weight_map(net, final, "confidence")
    assert ((conf > 0) & (conf <= 1)).all()


def test_head_selects_distinct_peaks_with_pixel_coordinates(net, maps):
    fine, final = maps
    head = LocalHead(
        LocalConfig(descriptor="cells", num_features=8, dim=16, layer="fine"),
        fine.shape[1],
        net.config.preprocessing().size,
    )
    head.set_projection(
        np.zeros(fine.shape[1], np.float32), np.eye(fine.shape[1], dtype=np.float32)[:16]
    )
    with torch.no_grad():
        feats, xy = head(net, fine, final)
    assert feats.shape == (4, 8, 16) and feats.dtype == torch.float16
    assert torch.allclose(feats.float().norm(dim=-1), torch.ones(4, 8), atol=1e-2)
    h, w = net.config.preprocessing().size
    assert (xy[..., 0] > 0).all() and (xy[..., 0] < w).all() and (xy[..., 1] < h).all()
    for row in xy:
        assert len({tuple(v.tolist()) for v in row}) == 8  # distinct cells


def test_nms_skips_neighbours_of_a_peak_until_peaks_run_out():
    head = LocalHead(LocalConfig(num_features=3, dim=2, nms_radius=1), 4, (64, 64))
    w = torch.zeros(1, 4, 4)
    w[0, 1, 1], w[0, 1, 2], w[0, 3, 3] = 1.0, 0.9, 0.5  # (1,2) is a neighbour of the peak (1,1)
    idx = head.select(w, (4, 4))[0].tolist()
    assert idx[:2] == [1 * 4 + 1, 3 * 4 + 3]
    assert LocalHead(LocalConfig(num_features=2, dim=2, nms_radius=0), 4, (64, 64)).select(
        w, (4, 4)
    )[0].tolist() == [5, 6]


@pytest.fixture(scope="module")
def local_onnx(tmp_path_factory, tiny_checkpoint, gardens_point, net) -> Path:
    from sfrs_edge.export import export_model

    def export(out: Path) -> None:
        images = list_images(gardens_point / "day_right")[::10]
        head = fit_local_head(
            net,
            images,
            LocalConfig("patches", patch_sizes=(1, 2), num_features=16, dim=16, whiten=True),
        )
        export_model(net, out, verify_images=images[:3], local=head)

    return built_once(tmp_path_factory, "local.onnx", export)


def test_export_emits_static_local_outputs_and_engine_reports_them(local_onnx, gardens_point):
    path = local_onnx
    local = Engine.open(path).info.local
    # tiny model: a 3x5-cell map, so 15 single cells and 8 windows of 2x2 (P = 15 + 8)
    assert local["outputs"][LOCAL_FEATURES]["shape"] == [23, 16]
    assert [(s["size"], s["count"], s["grid"]) for s in local["segments"]] == [
        (1, 15, [3, 5]),
        (2, 8, [2, 4]),
    ]
    engine = Engine.open(path)
    extras = engine.extra_outputs
    assert extras == {
        LOCAL_FEATURES: ((23, 16), np.dtype("float16")),
        LOCAL_XY: ((23, 2), np.dtype("float16")),
    }
    import onnx

    for out in onnx.load(str(path)).graph.output[1:]:
        assert [d.dim_value for d in out.type.tensor_type.shape.dim[1:]] in ([23, 16], [23, 2])
    from sfrs_edge.images import load_for_model

    files = list_images(gardens_point / "night_right")[:3]
    batch = np.stack([load_for_model(p, engine.info.preprocessing) for p in files])
    all_out = engine.embed_all(batch)
    assert all_out[LOCAL_FEATURES].shape == (3, 23, 16)
    np.testing.assert_allclose(all_out["descriptor"], engine.embed(batch), atol=1e-6)
    empty = engine.embed_all(batch[:0])
    assert empty[LOCAL_XY].shape == (0, 23, 2)
    # one frame through the preallocated, bound outputs: the same values as the batch path,
    # and each call's arrays are its own (not views of buffers the next frame overwrites)
    from sfrs_edge.images import read_image

    frames = [read_image(p) for p in files[:2]]
    first = engine.embed_frame_all(frames[0])
    second = engine.embed_frame_all(frames[1])
    for name, value in engine.embed_all(batch[:2]).items():
        np.testing.assert_allclose(first[name], value[0], atol=1e-3)
        np.testing.assert_allclose(second[name], value[1], atol=1e-3)
        assert first[name].dtype == value.dtype
    assert not np.allclose(first[LOCAL_FEATURES], second[LOCAL_FEATURES])


@pytest.fixture(scope="module")
def local_map(tmp_path_factory, local_onnx, tiny_onnx, gardens_point):
    """Maps of 20 day_left images: one built by the re-ranking model (local features stored as
    map extras), one by the plain export of the same weights (none stored)."""
    from sfrs_edge.maps import Map, build_map

    folder = tmp_path_factory.mktemp("mapsrc")
    for p in list_images(gardens_point / "day_left")[:40:2]:
        (folder / p.name).symlink_to(p)
    engine = Engine.open(local_onnx)
    root = tmp_path_factory.mktemp("maps")
    build_map(engine, folder, root / "local")
    build_map(Engine.open(tiny_onnx), folder, root / "plain")
    return engine, Map.open(root / "plain"), Map.open(root / "local")


def test_localizer_reranks_with_map_local_features(local_map, gardens_point):
    from sfrs_edge.localize import Localizer

    engine, _, the_map = local_map
    loc = Localizer(engine, the_map, k=5, rerank=5)
    assert loc.reranker is not None
    result = loc.localize_file(list_images(gardens_point / "day_right")[10])
    assert result.reranked
    assert all(m.inliers is not None for m in result.matches)
    assert 0.0 <= result.confidence <= 1.0
    assert "rerank" in result.timings
    from sfrs_edge.images import read_image

    res, scores = loc.localize_scores(read_image(list_images(gardens_point / "day_right")[10]))
    assert scores.shape == (len(the_map),)
    assert res.best.id == result.best.id


def test_map_without_local_features_answers_globally_and_says_so(local_map, gardens_point, caplog):
    from sfrs_edge.localize import Localizer

    engine, plain, _ = local_map
    frame = list_images(gardens_point / "day_right")[10]
    with caplog.at_level(logging.WARNING):
        loc = Localizer(engine, plain, k=5, rerank=5)
    assert loc.reranker is None
    assert "stores no local features" in caplog.text
    assert f"map build {plain.manifest['history'][0]['source']} --model" in caplog.text
    result = loc.localize_file(frame)
    assert not result.reranked
    assert result.best.id == Localizer(engine, plain, k=5).localize_file(frame).best.id


def test_model_without_local_features_names_both_steps_at_once(
    local_map, tiny_onnx, gardens_point, caplog
):
    """One warning says everything re-ranking needs: the export and the map rebuild."""
    from sfrs_edge.localize import Localizer

    _, plain, _ = local_map
    with caplog.at_level(logging.WARNING):
        loc = Localizer(Engine.open(tiny_onnx), plain, k=5, rerank=5)
    assert loc.reranker is None
    (line,) = [r.getMessage() for r in caplog.records if "re-ranking off" in r.getMessage()]
    assert "sfrs-edge export --rerank" in line and "sfrs-edge map build" in line
    assert f"-o {plain.path}" in line


def test_cli_localize_rerank(local_onnx, local_map, gardens_point):
    from click.testing import CliRunner

    from sfrs_edge.cli import main

    _, plain, local = local_map
    frame = str(list_images(gardens_point / "day_right")[10])
    args = ["localize", frame, "--model", str(local_onnx), "--rerank", "5", "--timings"]
    run = CliRunner().invoke(main, [*args, "--map", str(local.path)])
    assert run.exit_code == 0, run.output
    assert "inliers" in run.output and "rerank" in run.output
    run = CliRunner().invoke(main, [*args, "--map", str(plain.path), "--json"])
    assert run.exit_code == 0, run.output
    assert '"reranked": false' in run.output


# ------------------------------------------------------------------ patch descriptors


def test_window_vlad_is_the_netvlad_of_the_window(net, maps):
    """A patch descriptor before projection is exactly NetVLAD over that window's cells."""
    _, final = maps
    head = LocalHead(
        LocalConfig("patches", patch_sizes=(1, 2, 3)), 1, net.config.preprocessing().size
    )
    with torch.no_grad():
        vlads = head.patch_vlads(net, final)
        h, w = final.shape[-2:]
        for s, v in zip((1, 2, 3), vlads, strict=True):
            gw = w - s + 1
            assert v.shape == (4, net.netvlad.num_clusters * final.shape[1], (h - s + 1) * gw)
            for i, j in ((0, 0), (h - s, w - s), (0, w - s)):
                want = net.netvlad(final[:, :, i : i + s, j : j + s])
                got = v[:, :, i * gw + j]
                assert torch.allclose(got, want, atol=1e-5), (s, i, j)


def test_whitening_decorrelates_and_plain_pca_is_orthonormal():
    from sfrs_edge.train.patch_vlad import fit_whitening

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 40)) * np.r_[10.0, np.linspace(3, 0.1, 39)]  # anisotropic
    mean, proj = fit_whitening(x, 8)
    y = (x - mean) @ proj.T
    np.testing.assert_allclose(np.cov(y.T), np.eye(8), atol=0.1)
    _, plain = fit_whitening(x, 8, whiten=False)
    np.testing.assert_allclose(plain @ plain.T, np.eye(8), atol=1e-4)
    assert abs(plain[0, 0]) > 0.99  # the largest-variance axis first
    from sfrs_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="samples"):
        fit_whitening(x[:5], 8)


def test_patch_head_emits_one_segment_per_size_in_order(net, maps):
    _, final = maps
    cfg = LocalConfig("patches", patch_sizes=(1, 2), num_features=6, dim=8)
    size = net.config.preprocessing().size
    head = LocalHead(cfg, net.netvlad.num_clusters * final.shape[1], size)
    k_c = head.mean.shape[0]
    rng = np.random.default_rng(0)
    head.set_projection(np.zeros(k_c, np.float32), rng.normal(size=(8, k_c)).astype(np.float32))
    with torch.no_grad():
        feats, xy = head(net, final, final)
        weights = weight_map(net, final, "contribution")
    assert feats.shape == (4, 12, 8) and feats.dtype == torch.float16
    assert torch.allclose(feats.float().norm(dim=-1), torch.ones(4, 12), atol=1e-2)
    cell = size[1] / final.shape[-1]
    frac = (xy / cell) % 1.0  # single cells are centred on half cells, 2x2 windows on cells
    assert torch.allclose(frac[:, :6], torch.full_like(frac[:, :6], 0.5))
    assert torch.allclose(frac[:, 6:], torch.zeros_like(frac[:, 6:]), atol=1e-4)
    # the first single cell is the image's top-contributing cell
    top = weights.reshape(4, -1).argmax(1)
    w = final.shape[-1]
    assert torch.equal(
        ((xy[:, 0, 0] / cell) - 0.5).round().long()
        + w * ((xy[:, 0, 1] / cell) - 0.5).round().long(),
        top,
    )
    segs = head.segments(final.shape[-2:])
    assert [s["count"] for s in segs] == [6, 6] and segs[1]["grid"] == [2, 4]


def test_patch_sizes_that_do_not_fit_the_map_are_refused(net, maps):
    from sfrs_edge.errors import ConfigError

    _, final = maps
    head = LocalHead(LocalConfig("patches", patch_sizes=(2, 5)), 1, net.config.preprocessing().size)
    with pytest.raises(ConfigError, match="patch size 5 does not fit the 3x5-cell"):
        head.patch_vlads(net, final)
    with pytest.raises(ConfigError, match="distinct positive"):
        LocalConfig("patches", patch_sizes=(2, 2))
    with pytest.raises(ConfigError, match="descriptor"):
        LocalConfig(descriptor="pixels")


def test_fitting_a_head_drops_patch_sizes_the_input_cannot_hold(net, gardens_point, caplog):
    """Patch sizes (1, 2, 5) on the tiny model's 3x5-cell map: 5 is dropped with a warning
    naming it, the head's settings and segments say (1, 2); none fitting is a ConfigError."""
    from sfrs_edge.train.local_features import fit_local_head

    from sfrs_edge.errors import ConfigError

    images = list_images(gardens_point / "day_right")[:12]
    cfg = LocalConfig(descriptor="patches", patch_sizes=(1, 2, 5), num_features=4, dim=8)
    with caplog.at_level(logging.WARNING):
        head = fit_local_head(net, images, cfg, per_image=4)
    assert head.config.patch_sizes == (1, 2)
    assert "patch sizes [5] do not fit the 3x5-cell" in caplog.text
    assert [s["size"] for s in head.segments((3, 5))] == [1, 2]
    assert LocalConfig(descriptor="cells").fitted_to((1, 1)).descriptor == "cells"
    with pytest.raises(ConfigError, match="no patch size of \\[4, 5\\] fits the 3x5-cell"):
        LocalConfig(descriptor="patches", patch_sizes=(4, 5)).fitted_to((3, 5))


def test_head_state_round_trip_and_old_cell_checkpoints(net, maps):
    from sfrs_edge.train.local_features import head_fingerprint, head_from_state, head_state

    _, final = maps
    size = net.config.preprocessing().size
    head = fit_local_head(
        net,
        list_images_for_fit(),
        LocalConfig("patches", patch_sizes=(1, 2), num_features=4, dim=8),
    )
    again = head_from_state(head_state(head), size)
    assert head_fingerprint(again) == head_fingerprint(head)
    with torch.no_grad():
        assert torch.equal(again(net, final, final)[0], head(net, final, final)[0])
    old = {  # written before patch descriptors: cells, plain PCA, "components"
        "config": {"num_features": 4, "dim": 2, "weight": "contribution", "layer": "final"},
        "in_dim": 3,
        "mean": torch.zeros(3),
        "components": torch.eye(3)[:2],
    }
    cells = head_from_state(old, size)
    assert cells.config.descriptor == "cells" and not cells.config.whiten
    assert torch.equal(cells.projection, torch.eye(3)[:2])


def list_images_for_fit():
    from sfrs_edge.paths import data_root

    return list_images(data_root() / "gardens_point" / "day_right")[:12]


def test_export_rerank_fits_the_projection_once_and_keeps_it(tmp_path, tiny_checkpoint):
    import shutil

    from sfrs_edge.export.pipeline import local_head
    from sfrs_edge.train.checkpoint import read_checkpoint
    from sfrs_edge.train.local_features import head_fingerprint

    ckpt = tmp_path / "imported.pt"
    shutil.copy(tiny_checkpoint, ckpt)
    assert "local" not in read_checkpoint(ckpt)
    small = LocalConfig("patches", patch_sizes=(1, 2), num_features=4, dim=8)
    net = load_checkpoint(ckpt)[0]
    first = local_head(ckpt, net, list_images_for_fit(), small)
    assert read_checkpoint(ckpt)["local"]["config"]["patch_sizes"] == [1, 2]
    second = local_head(ckpt, net, [])  # no images needed now: nothing is refitted
    assert head_fingerprint(second) == head_fingerprint(first)


def test_local_parity_compares_locations_within_a_segment():
    from sfrs_edge.export.verify import _local_parity

    xy = np.array([[[16.0, 16.0], [48.0, 16.0], [16.0, 16.0]]])  # rows 0 and 2 share a centre
    feats = np.eye(3, dtype=np.float32)[None]
    got = [None, feats, xy]
    assert _local_parity((feats, xy), got, np.array([0, 0, 1])) == (1.0, 1.0)
    share, cos = _local_parity((feats, xy), got)  # without segments the shared centre collides
    assert cos < 1.0


def test_a_patch_as_large_as_the_map_fits():
    """A window of the map's smaller side fits (one window per column); one cell more does not."""
    cfg = LocalConfig(descriptor="patches", patch_sizes=(3, 4))
    assert cfg.fitted_to((3, 5)).patch_sizes == (3,)
    assert cfg.fitted_to((4, 5)).patch_sizes == (3, 4)
