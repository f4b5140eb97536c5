"""Model identity is checked, not claimed: fingerprint, content digest, descriptor contract."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import numpy as np
import onnx
import pytest
from _onnx_util import means_model
from onnx import numpy_helper

from sfrs_edge import model_digest
from sfrs_edge.engine import Engine
from sfrs_edge.errors import MapError, ModelError
from sfrs_edge.images import list_images
from sfrs_edge.localize import Localizer
from sfrs_edge.maps import build_map
from sfrs_edge.model_info import (
    METADATA_KEY,
    ModelInfo,
    Preprocessing,
    check_map_model,
    identity,
    precision_class,
)


def _info(**changes) -> ModelInfo:
    base = ModelInfo(
        backbone="vgg16",
        preprocessing=Preprocessing(480, 640, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        descriptor_dim=4096,
        num_clusters=64,
        local_dim=512,
        pca_dim=4096,
        whitening=True,
        weights="0123456789abcdef",
    )
    pre = changes.pop("pre", None)
    if pre:
        changes["preprocessing"] = dataclasses.replace(base.preprocessing, **pre)
    return dataclasses.replace(base, **changes)


# --- the fingerprint: derived from every property --------------------------------------------


@pytest.mark.parametrize(
    "change, named",
    [
        ({"pre": {"height": 240}}, "input size"),
        ({"pre": {"resize": "keep"}}, "resize rule"),
        ({"pre": {"color_order": "RGB"}}, "colour order"),
        ({"pre": {"std": (1.0, 1.0, 1.0)}}, "normalisation"),
        ({"pca_dim": 512, "descriptor_dim": 512}, "PCA dim"),
        ({"whitening": False}, "whitening"),
        ({"weights": "fedcba9876543210"}, "weights"),
        ({"precision": "int8"}, "precision class"),
        ({"num_clusters": 32}, "NetVLAD size"),
        ({"backbone": "efficientnet_lite0"}, "backbone"),
    ],
)
def test_every_descriptor_property_changes_fingerprint_and_is_named(change, named):
    base, other = _info(), _info(**change)
    assert other.fingerprint != base.fingerprint
    section = {"fingerprint": other.fingerprint, "info": json.loads(other.to_json())}
    with pytest.raises(MapError, match=f"{named} differ"):
        check_map_model(section, base, "map")


def test_fp16_and_fp32_share_a_class_int8_does_not():
    assert precision_class("fp16") == precision_class("fp32") == "float"
    assert precision_class("int8") == "int8"
    fp32, fp16 = _info(), _info(precision="fp16")
    assert fp16.fingerprint == fp32.fingerprint
    check_map_model(
        {"fingerprint": fp32.fingerprint, "info": json.loads(fp32.to_json())}, fp16, "m"
    )


def test_provenance_and_version_do_not_change_identity():
    a, b = _info(), _info(provenance={"epoch": 3}, package_version="9.9")
    assert a.fingerprint == b.fingerprint and identity(a) == identity(b)


@pytest.mark.parametrize("version", [1, 3])
def test_other_model_format_versions_are_refused(version):
    raw = json.loads(_info().to_json())
    raw["format_version"] = version
    with pytest.raises(ModelError, match=f"m.onnx: model format version {version} is not supp"):
        ModelInfo.from_json(json.dumps(raw), "m.onnx")


def test_infos_without_weights_hash_compare_by_properties():
    """Infos that give their fingerprint directly (no weights hash) compare property by
    property too."""
    legacy = dataclasses.replace(_info(), weights="", fingerprint="aaaaaaaaaaaaaaaa")
    assert legacy.fingerprint == "aaaaaaaaaaaaaaaa"
    section = {"fingerprint": legacy.fingerprint, "info": json.loads(legacy.to_json())}
    check_map_model(section, legacy, "m")
    taller = dataclasses.replace(
        legacy, preprocessing=dataclasses.replace(legacy.preprocessing, height=240)
    )
    with pytest.raises(MapError, match="input size differs"):
        check_map_model(section, taller, "m")
    with pytest.raises(MapError, match="records no model description"):  # refused, no fallback
        check_map_model({"fingerprint": "bbbbbbbbbbbbbbbb"}, legacy, "m")


@pytest.mark.parametrize(
    "field, value",
    [("descriptor_dim", "4096"), ("descriptor_dim", None), ("whitening", "yes"), ("pca_dim", 1.5)],
)
def test_metadata_field_types_are_checked(field, value):
    raw = json.loads(_info().to_json())
    raw[field] = value
    with pytest.raises(ModelError, match=f"malformed.*{field}"):
        ModelInfo.from_json(json.dumps(raw), "m.onnx")
    with pytest.raises(ModelError, match="malformed"):
        ModelInfo.from_json("[1, 2]", "m.onnx")


# --- the exported file: digest, cache, descriptor checks ----------------------------------------


def _flip_exponent_bit(src, dst) -> None:
    model = onnx.load(str(src))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(init).copy()
    flat = arr.reshape(-1).view(np.uint32)
    flat[0] ^= np.uint32(1 << 30)  # the top exponent bit of one weight
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(dst))


def test_export_records_a_digest_the_engine_verifies(tiny_onnx):
    digest, meta = model_digest.file_digest(tiny_onnx)
    assert meta[model_digest.DIGEST_KEY] == digest and METADATA_KEY in meta
    assert Engine.open(tiny_onnx).verified


def test_one_flipped_weight_bit_is_refused(tiny_onnx, tmp_path):
    bad = tmp_path / "flipped.onnx"
    _flip_exponent_bit(tiny_onnx, bad)
    with pytest.raises(ModelError, match="flipped.onnx: model content does not match the digest"):
        Engine.open(bad)


def _copy(tiny_onnx, tmp_path, aged: bool = True):
    """A copy of the model; ``aged``: its mtime a minute back (outside the racy window)."""
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    if aged:
        old = model.stat().st_mtime_ns - 60 * 10**9
        os.utime(model, ns=(old, old))
    return model


@pytest.fixture
def hashes(monkeypatch) -> list:
    """The files :func:`model_digest.file_digest` hashes, one entry per full hash."""
    calls = []
    real = model_digest.file_digest
    monkeypatch.setattr(model_digest, "file_digest", lambda p: calls.append(p) or real(p))
    return calls


def test_digest_cache_skips_rehash_and_notices_changes(tiny_onnx, tmp_path, hashes):
    model = _copy(tiny_onnx, tmp_path)
    assert model_digest.verify_model_file(model) and len(hashes) == 1
    assert model_digest.verify_model_file(model) and len(hashes) == 1  # cached
    _flip_exponent_bit(tiny_onnx, model)  # new content, new size/mtime: rehashed, refused
    with pytest.raises(ModelError, match="does not match the digest"):
        model_digest.verify_model_file(model)
    assert len(hashes) == 2


def test_digest_cache_never_trusts_a_file_hashed_just_after_a_write(tiny_onnx, tmp_path, hashes):
    model = _copy(tiny_onnx, tmp_path, aged=False)  # mtime: now, within the racy window
    assert model_digest.verify_model_file(model) and model_digest.verify_model_file(model)
    assert len(hashes) == 2  # a same-tick write could keep the mtime: rehashed


def test_verify_full_rehashes_every_open(tiny_onnx, tmp_path, hashes, monkeypatch):
    model = _copy(tiny_onnx, tmp_path)
    monkeypatch.setenv("SFRS_EDGE_VERIFY", "full")
    assert model_digest.verify_model_file(model) and model_digest.verify_model_file(model)
    assert len(hashes) == 2


def test_engine_open_walks_the_model_file_once(tiny_onnx, tmp_path, monkeypatch):
    from sfrs_edge import onnx_proto

    model = _copy(tiny_onnx, tmp_path)
    walks = []
    real = onnx_proto.fields

    def counting(buf, start, end):
        if start == 0:  # a walk over the top-level message
            walks.append(end)
        return real(buf, start, end)

    monkeypatch.setattr(onnx_proto, "fields", counting)
    Engine.open(model, backend="cpu")  # not yet verified: one full walk
    Engine.open(model, backend="cpu")  # verified before: one header walk
    assert len(walks) == 2


def test_unwritable_cache_only_means_rehash(tiny_onnx, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("SFRS_EDGE_CACHE", str(blocker / "cache"))
    assert model_digest.verify_model_file(tiny_onnx)
    assert model_digest.verify_model_file(tiny_onnx)


def _without_digest(tiny_onnx, tmp_path):
    model = onnx.load(str(tiny_onnx))
    keep = [p for p in model.metadata_props if p.key != model_digest.DIGEST_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    old = tmp_path / "old.onnx"
    onnx.save(model, str(old))
    return old


def test_model_without_digest_is_refused_unless_allowed(tiny_onnx, tmp_path, caplog, monkeypatch):
    """Without a digest any weights can wear a map's model metadata: refused by default,
    accepted (with one warning, ``verified`` False) only when the user says so."""
    old = _without_digest(tiny_onnx, tmp_path)
    with pytest.raises(ModelError, match="no content digest.*--allow-unverified-model"):
        Engine.open(old)
    with caplog.at_level(logging.WARNING, logger="sfrs_edge.model_digest"):
        eng = Engine.open(old, allow_unverified=True)
    assert not eng.verified
    warnings = [r for r in caplog.records if "unverified" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    monkeypatch.setenv(model_digest.ALLOW_UNVERIFIED_ENV, "1")
    assert not Engine.open(old).verified
    monkeypatch.setenv(model_digest.ALLOW_UNVERIFIED_ENV, "0")
    with pytest.raises(ModelError, match="no content digest"):
        Engine.open(old)


def test_cli_refuses_a_model_without_digest_and_names_the_option(
    tiny_onnx, tmp_path, gardens_point
):
    from click.testing import CliRunner

    from sfrs_edge.cli import main

    old = _without_digest(tiny_onnx, tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    frames = []
    for src in sorted((gardens_point / "day_left").iterdir())[:3]:
        frames.append(folder / src.name)
        frames[-1].write_bytes(src.read_bytes())
    args = ["map", "build", str(folder), "--model", str(old), "-o", str(tmp_path / "m")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "--allow-unverified-model" in r.stderr
    assert not (tmp_path / "m").exists()
    r = CliRunner().invoke(main, [*args, "--allow-unverified-model"])
    assert r.exit_code == 0, r.output
    assert model_digest.ALLOW_UNVERIFIED_ENV not in os.environ  # only for that command
    loc = ["localize", str(frames[0]), "--model", str(old), "--map", str(tmp_path / "m")]
    assert CliRunner().invoke(main, loc).exit_code == 1
    assert CliRunner().invoke(main, [*loc, "--allow-unverified-model"]).exit_code == 0


def _plain_model(path, **kwargs):
    """A verified (digest-stamped) 6-d model of per-channel means with a static output."""
    return means_model(
        path, out_dim=6, static=True, weights="feedfeedfeedfeed", stamp=True, **kwargs
    )


def test_output_not_unit_length_is_refused(tmp_path):
    eng = Engine.open(_plain_model(tmp_path / "raw.onnx", normalise=False))
    assert eng.verified
    with pytest.raises(ModelError, match="raw.onnx: frame descriptor.*not unit length"):
        eng.embed_frame(np.full((40, 60, 3), 200, np.uint8))
    with pytest.raises(ModelError, match="not unit length"):
        eng.embed(np.full((2, 32, 48, 3), 200, np.uint8))
    # the multi-output path (models with re-ranking outputs) holds the same contract
    run = eng.backend.run
    eng.backend.extra_outputs = lambda: {"local_xy": ((4, 2), np.dtype(np.float16))}
    eng.backend.run_all = lambda b: {"descriptor": run(b), "local_xy": np.zeros((len(b), 4, 2))}
    with pytest.raises(ModelError, match="raw.onnx.*not unit length"):
        eng.embed_all(np.full((2, 32, 48, 3), 200, np.uint8))
    ok = Engine.open(_plain_model(tmp_path / "ok.onnx"))
    d = ok.embed_frame(np.full((40, 60, 3), 200, np.uint8))
    assert abs(np.linalg.norm(d) - 1) < 1e-5


def test_output_dimension_other_than_metadata_is_refused(tmp_path):
    with pytest.raises(ModelError, match="static.onnx: graph output 'descriptor' has shape"):
        Engine.open(_plain_model(tmp_path / "static.onnx", meta_dim=9))


class _WrongBackend:
    """A backend whose graph does not keep the metadata's promise (dim 6 instead of 9)."""

    name, max_batch = "fake", None

    def run(self, batch):
        out = np.ones((len(batch), 6), np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def bind(self, inp, out):
        def runner():
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : output shape {1,6} != {1,9}")

        return runner


def test_first_descriptor_checked_against_metadata(tmp_path):
    """Where the graph does not declare its output size, the first descriptor is checked, and
    backend exceptions become one-line ModelErrors naming the model."""
    info = dataclasses.replace(_info(), descriptor_dim=9, pca_dim=None)
    info = dataclasses.replace(info, preprocessing=Preprocessing(32, 48, (0.0,) * 3, (1.0,) * 3))
    eng = Engine(tmp_path / "dyn.onnx", info, _WrongBackend())
    with pytest.raises(
        ModelError, match="dyn.onnx: the model produced descriptors of shape \\(6,\\).*9"
    ):
        eng.embed(np.zeros((2, 32, 48, 3), np.uint8))
    with pytest.raises(ModelError, match="dyn.onnx: inference failed \\(\\[ONNXRuntimeError\\]"):
        eng.embed_frame(np.zeros((40, 60, 3), np.uint8))


# --- the real reproduction: same checkpoint, another input size ------------------------------


@pytest.mark.slow
def test_map_refuses_same_checkpoint_at_another_input_size(
    tiny_checkpoint, tiny_onnx, gardens_point, tmp_path
):
    from sfrs_edge.export import export_checkpoint

    images = list_images(gardens_point / "day_left")
    engine = Engine.open(tiny_onnx, backend="cpu")
    build_map(engine, images[:6], tmp_path / "map")
    other = tmp_path / "taller.onnx"
    export_checkpoint(tiny_checkpoint, other, input_size=(128, 160), verify_images=images[:2])
    taller = Engine.open(other, backend="cpu")
    assert taller.info.weights == engine.info.weights  # same weights ...
    with pytest.raises(MapError, match="input size differs \\(map: 96x160, this model: 128x160\\)"):
        Localizer(taller, tmp_path / "map")  # ... but another descriptor
    assert Localizer(engine, tmp_path / "map")


@pytest.mark.slow
def test_fp16_export_shares_the_map(tiny_checkpoint, tiny_onnx, gardens_point, tmp_path):
    """fp16 and fp32 exports of one checkpoint: one fingerprint, interchangeable maps."""
    pytest.importorskip("torch")
    from sfrs_edge.export import export_checkpoint

    images = list_images(gardens_point / "day_left")[:2]
    half = tmp_path / "half.onnx"
    export_checkpoint(tiny_checkpoint, half, fp16=True, verify_images=images)
    assert Engine.open(half).fingerprint == Engine.open(tiny_onnx).fingerprint


# --- the map's model record: each way it can be wrong has its own message ---------------------


@pytest.mark.parametrize("name", ["fp32", "FP16", "bf16", "float32", "float16"])
def test_every_float_precision_name_is_one_class(name):
    assert precision_class(name) == "float"


def test_integer_precisions_are_their_own_class_whatever_the_case():
    assert precision_class("INT8") == precision_class("int8") == "int8"


def _section(info: ModelInfo) -> dict:
    return {"fingerprint": info.fingerprint, "info": json.loads(info.to_json())}


def test_map_built_by_other_weights_names_both_hashes():
    built, ours = _info(weights="fedcba9876543210"), _info()
    with pytest.raises(
        MapError,
        match=r"^mymap: this map was built by a different model: its weights differ \(map built "
        r"by weights fedcba9876543210, this model has 0123456789abcdef\); rebuild the map with "
        r"this model \(`sfrs-edge map build`\)",
    ):
        check_map_model(_section(built), ours, "mymap")


def test_damaged_model_records_say_what_is_wrong_and_what_to_do():
    info = _info()
    rebuild = r"the manifest is damaged or was edited; rebuild the map \(`sfrs-edge map build`\)"
    for record in (None, "vgg16", {"fingerprint": info.fingerprint}):
        with pytest.raises(
            MapError, match=f"^mymap: the manifest records no model description; {rebuild}"
        ):
            check_map_model(record, info, "mymap")
    section = _section(info)
    section["info"]["whitening"] = "yes"
    with pytest.raises(
        MapError,
        match=r"^mymap: the manifest's model description does not parse \(map: sfrs_edge "
        rf"metadata is malformed \(whitening must be bool.*\)\); {rebuild}",
    ):
        check_map_model(section, info, "mymap")
    section = dict(_section(info), fingerprint="0000000000000000")
    with pytest.raises(
        MapError,
        match=r"^mymap: the manifest is inconsistent: fingerprint 0000000000000000 does not match "
        rf"the model description it records \({info.fingerprint}\); {rebuild}",
    ):
        check_map_model(section, info, "mymap")
