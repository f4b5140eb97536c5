"""Model identity is checked, not claimed: fingerprint, content digest, descriptor contract."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

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
    with pytest.raises(MapError, match="fingerprint differs"):  # no info recorded
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


def _age(path, seconds: float = 60.0) -> None:
    """Set the file's mtime ``seconds`` into the past (older than the racy window)."""
    st = path.stat()
    old = st.st_mtime_ns - int(seconds * 1e9)
    os.utime(path, ns=(old, old))


def test_digest_cache_skips_rehash_and_notices_changes(tiny_onnx, tmp_path, monkeypatch):
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    _age(model)
    calls = []
    real = model_digest.file_digest
    monkeypatch.setattr(model_digest, "file_digest", lambda p: calls.append(p) or real(p))
    assert model_digest.verify_model_file(model) and len(calls) == 1
    assert model_digest.verify_model_file(model) and len(calls) == 1  # cached
    _flip_exponent_bit(tiny_onnx, model)  # new content, new size/mtime: rehashed, refused
    with pytest.raises(ModelError, match="does not match the digest"):
        model_digest.verify_model_file(model)
    assert len(calls) == 2


def test_digest_cache_never_trusts_a_file_hashed_just_after_a_write(
    tiny_onnx, tmp_path, monkeypatch
):
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_onnx.read_bytes())  # mtime: now, within the racy window
    calls = []
    real = model_digest.file_digest
    monkeypatch.setattr(model_digest, "file_digest", lambda p: calls.append(p) or real(p))
    assert model_digest.verify_model_file(model) and model_digest.verify_model_file(model)
    assert len(calls) == 2  # a same-tick write could keep the mtime: rehashed


def test_verify_full_rehashes_every_open(tiny_onnx, tmp_path, monkeypatch):
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    _age(model)
    calls = []
    real = model_digest.file_digest
    monkeypatch.setattr(model_digest, "file_digest", lambda p: calls.append(p) or real(p))
    monkeypatch.setenv("SFRS_EDGE_VERIFY", "full")
    assert model_digest.verify_model_file(model) and model_digest.verify_model_file(model)
    assert len(calls) == 2


def test_engine_open_walks_the_model_file_once(tiny_onnx, tmp_path, monkeypatch):
    from sfrs_edge import onnx_proto

    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    _age(model)
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


def test_model_without_digest_opens_with_one_warning(tiny_onnx, tmp_path, caplog):
    model = onnx.load(str(tiny_onnx))
    keep = [p for p in model.metadata_props if p.key != model_digest.DIGEST_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    old = tmp_path / "old.onnx"
    onnx.save(model, str(old))
    with caplog.at_level(logging.WARNING, logger="sfrs_edge.model_digest"):
        eng = Engine.open(old)
    assert not eng.verified
    warnings = [r for r in caplog.records if "unverified" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()


def _plain_model(path, *, normalise: bool, out_dim: int, meta_dim: int, static: bool = True):
    """uint8 (N, 32, 48, 3) → per-channel means tiled to ``out_dim`` (optionally L2-normalised)."""
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f", "axes"], ["m"], keepdims=0),
        helper.make_node("Tile", ["m", "reps"], ["t"]),
        helper.make_node("LpNormalization", ["t"], ["descriptor"], axis=1, p=2)
        if normalise
        else helper.make_node("Identity", ["t"], ["descriptor"]),
    ]
    inits = [
        helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
        helper.make_tensor("reps", TensorProto.INT64, [2], [1, out_dim // 3]),
    ]
    graph = helper.make_graph(
        nodes,
        "plain",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 32, 48, 3])],
        [
            helper.make_tensor_value_info(
                "descriptor", TensorProto.FLOAT, ["N", out_dim if static else "D"]
            )
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    info = ModelInfo(
        backbone="plain",
        preprocessing=Preprocessing(32, 48, (0.0,) * 3, (1.0,) * 3),
        descriptor_dim=meta_dim,
        num_clusters=1,
        local_dim=3,
        pca_dim=None,
        whitening=False,
        weights="feedfeedfeedfeed",
    )
    model.metadata_props.add(key=METADATA_KEY, value=info.to_json())
    onnx.save(model, str(path))
    from sfrs_edge.export.onnx_export import stamp_digest

    stamp_digest(path)
    return path


def test_output_not_unit_length_is_refused(tmp_path):
    eng = Engine.open(_plain_model(tmp_path / "raw.onnx", normalise=False, out_dim=6, meta_dim=6))
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
    ok = Engine.open(_plain_model(tmp_path / "ok.onnx", normalise=True, out_dim=6, meta_dim=6))
    d = ok.embed_frame(np.full((40, 60, 3), 200, np.uint8))
    assert abs(np.linalg.norm(d) - 1) < 1e-5


def test_output_dimension_other_than_metadata_is_refused(tmp_path):
    with pytest.raises(ModelError, match="static.onnx: graph output 'descriptor' has shape"):
        Engine.open(_plain_model(tmp_path / "static.onnx", normalise=True, out_dim=6, meta_dim=9))


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
