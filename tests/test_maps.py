"""Map storage: manifest, checksums, fingerprints, atomic updates, add/remove, positions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from sfrs_edge.embedding import embed_images
from sfrs_edge.errors import ConfigError, ImageError, MapError
from sfrs_edge.images import read_image
from sfrs_edge.maps import (
    FORMAT_VERSION,
    Map,
    add_to_map,
    build_map,
    map_info,
    read_exif_gps,
    read_poses_csv,
    remove_from_map,
    store,
)
from sfrs_edge.maps import sources as sources_mod
from sfrs_edge.maps import writer as writer_mod
from sfrs_edge.model_info import ModelInfo, Preprocessing


class FakeEngine:
    """Stands in for sfrs_edge.engine.Engine: a real, deterministic function of the pixels
    (the 8x6 network input in grey, mean-removed, L2-normalised); files go through the real
    embedding pipeline."""

    def __init__(self, fingerprint: str = "fake0123456789ab") -> None:
        self.info = ModelInfo(
            backbone="fake",
            preprocessing=Preprocessing(height=6, width=8, mean=(0, 0, 0), std=(1, 1, 1)),
            descriptor_dim=48,
            num_clusters=1,
            local_dim=48,
            pca_dim=None,
            whitening=False,
            fingerprint=fingerprint,
        )
        self.calls = 0

    @property
    def dim(self) -> int:
        return 48

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    def embed(self, batch):
        self.calls += len(batch)
        out = []
        for img in batch:
            v = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32).ravel()
            v -= v.mean()
            out.append(v / (np.linalg.norm(v) + 1e-12))
        return np.stack(out).astype(np.float32)

    def embed_files(self, paths, batch_size=8, progress=None):
        return embed_images(self, paths, batch_size).descriptors


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def images(tmp_path, gardens_point) -> Path:
    """A folder of 12 real Gardens Point images (day_left 0, 5, ..., 55)."""
    folder = tmp_path / "src"
    folder.mkdir()
    for i in range(0, 60, 5):
        shutil.copy(gardens_point / "day_left" / f"Image{i:03d}.jpg", folder)
    return folder


def _snapshot(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


# --- build, open, manifest --------------------------------------------------------------


def test_build_round_trip(tmp_path, images, engine):
    out = tmp_path / "map"
    m = build_map(engine, images, out)
    files = sorted(images.iterdir())
    assert len(m) == 12 and m.dim == 48 and m.index_type == "exact"
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "seg-000000.desc.npy",
        "seg-000000.meta.sqlite",
    ]
    again = Map.open(out, expect_fingerprint=engine.fingerprint)
    np.testing.assert_array_equal(again.descriptors, engine.embed_files(files))
    man = json.loads((out / "manifest.json").read_text())
    assert man["format_version"] == FORMAT_VERSION and man["metric"] == "ip"
    assert man["count"] == 12 and man["dim"] == 48
    assert man["model"]["fingerprint"] == engine.fingerprint
    assert man["model"]["backbone"] == "fake"
    assert ModelInfo.from_json(json.dumps(man["model"]["info"])) == engine.info
    assert man["index"] == {"type": "exact"}
    assert set(man["files"]) == {"seg-000000.desc.npy", "seg-000000.meta.sqlite"}
    assert man["segments"] == [
        {
            "rows": 12,
            "descriptors": "seg-000000.desc.npy",
            "metadata": "seg-000000.meta.sqlite",
            "extras": {},
        }
    ]
    assert man["positions"]["kind"] is None
    places = again.places(range(12))
    assert [p.name for p in places] == [f.name for f in files]
    assert places[3].id == 3 and places[3].position is None
    assert Path(places[3].path) == files[3].resolve()
    # each map image finds itself first
    ids, sims = again.search(again.descriptors, k=3)
    np.testing.assert_array_equal(ids[:, 0], np.arange(12))
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
    assert ids.dtype == np.int64 and sims.dtype == np.float32 and ids.shape == (12, 3)
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # best first


def test_exact_search_matches_brute_force(tmp_path, images, engine):
    m = build_map(engine, images, tmp_path / "map")
    rng = np.random.default_rng(0)
    q = rng.standard_normal((7, 48)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ids, sims = m.search(q, k=4)
    full = q @ m.descriptors.T
    np.testing.assert_array_equal(ids, np.argsort(-full, axis=1)[:, :4])
    np.testing.assert_allclose(sims, np.sort(full, axis=1)[:, ::-1][:, :4], rtol=1e-6)
    ids1, _ = m.search(q[0], k=50)  # 1-D query, k above map size is capped
    assert ids1.shape == (1, 12)


def test_search_rejects_bad_queries(tmp_path, images, engine):
    m = build_map(engine, images, tmp_path / "map")
    q = np.zeros((2, 48), np.float32)
    q[1, 3] = np.nan
    with pytest.raises(MapError, match="NaN"):
        m.search(q)
    with pytest.raises(MapError, match="48-d"):
        m.search(np.ones((1, 16), np.float32))
    with pytest.raises(ConfigError, match="k must"):
        m.search(np.ones((1, 48), np.float32), k=0)
    with pytest.raises(MapError, match="not in this map"):
        m.places([12])


def test_hnsw_map_records_parameters_and_agrees(tmp_path, images, engine):
    m = build_map(engine, images, tmp_path / "map", index="hnsw", hnsw_m=8, ef_construction=50)
    assert m.index_type == "hnsw" and (tmp_path / "map" / "index.bin").is_file()
    assert m.manifest["index"] == {
        "type": "hnsw",
        "M": 8,
        "ef_construction": 50,
        "ef": 128,
        "seed": 100,
    }
    exact = build_map(engine, images, tmp_path / "exact", index="exact")
    ids_h, sims_h = m.search(exact.descriptors, k=5, ef=20)
    ids_e, sims_e = exact.search(exact.descriptors, k=5)
    np.testing.assert_array_equal(ids_h, ids_e)
    np.testing.assert_allclose(sims_h, sims_e, atol=1e-5)


def test_auto_index_picks_by_size(monkeypatch, tmp_path, images, engine):
    assert build_map(engine, images, tmp_path / "a").index_type == "exact"
    monkeypatch.setattr("sfrs_edge.maps.index.AUTO_HNSW_THRESHOLD", 10)
    assert build_map(engine, images, tmp_path / "b").index_type == "hnsw"


def test_rebuild_replaces_existing_map(tmp_path, images, engine):
    out = tmp_path / "map"
    build_map(engine, images, out)
    (images / "Image000.jpg").unlink()
    assert len(build_map(engine, images, out)) == 11
    assert _siblings(out) == []
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder, not 0700


# --- refusing broken or foreign maps ------------------------------------------------------


@pytest.mark.parametrize(
    "index, victim",
    [
        ("exact", "seg-000000.desc.npy"),
        ("exact", "seg-000000.meta.sqlite"),
        ("hnsw", "seg-000000.meta.sqlite"),
        ("hnsw", "index.bin"),
    ],
)
def test_flipped_byte_is_refused_naming_the_file(tmp_path, images, engine, index, victim):
    out = tmp_path / "map"
    build_map(engine, images, out, index=index)
    path = out / victim
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(MapError, match=f"{victim} fails its checksum"):
        Map.open(out)


def test_missing_index_file(tmp_path, images, engine):
    out = tmp_path / "map"
    build_map(engine, images, out, index="hnsw")
    (out / "index.bin").unlink()
    with pytest.raises(MapError, match="index file index.bin is missing"):
        Map.open(out)


def test_other_format_version_and_garbage_manifest(tmp_path, images, engine):
    out = tmp_path / "map"
    build_map(engine, images, out)
    man = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(dict(man, format_version=FORMAT_VERSION + 1)))
    with pytest.raises(MapError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        Map.open(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(MapError, match="corrupt"):
        Map.open(out)
    with pytest.raises(MapError, match="no such map"):
        Map.open(tmp_path / "nowhere")
    with pytest.raises(MapError, match="not an sfrs-edge map"):
        Map.open(images)


def test_fingerprint_mismatch_names_both(tmp_path, images, engine):
    out = tmp_path / "map"
    build_map(engine, images, out)
    with pytest.raises(MapError, match="fake0123456789ab.*ffffeeeeddddcccc"):
        Map.open(out, expect_fingerprint="ffffeeeeddddcccc")
    with pytest.raises(MapError, match="fingerprint"):
        add_to_map(FakeEngine("ffffeeeeddddcccc"), out, images / "Image000.jpg")


def test_map_add_with_another_model_names_the_differing_property(tmp_path, images, engine):
    """As localize does: the error names what differs, not only two fingerprints."""
    from dataclasses import replace

    def with_info(**changes) -> FakeEngine:
        e = FakeEngine()
        pre = replace(e.info.preprocessing, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        e.info = replace(e.info, preprocessing=pre, **changes)  # floats, as ONNX metadata
        return e

    out = tmp_path / "map"
    build_map(with_info(weights="w1", fingerprint=""), images, out)
    other = with_info(weights="w1", fingerprint="", pca_dim=16)  # same weights, another cut
    with pytest.raises(MapError, match=r"its PCA dim differs \(map: None, this model: 16\)"):
        add_to_map(other, out, images / "Image000.jpg")


def test_refuses_to_overwrite_non_map_folder(tmp_path, images, engine):
    out = tmp_path / "stuff"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(MapError, match="not an sfrs-edge map"):
        build_map(engine, images, out)
    assert (out / "precious.txt").read_text() == "keep me"
    assert engine.calls == 0  # refused before any work


# --- bad sources ---------------------------------------------------------------------------


def test_empty_folder_leaves_nothing(tmp_path, engine):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no image files"):
        build_map(engine, tmp_path / "empty", tmp_path / "map")
    assert not (tmp_path / "map").exists() and _siblings(tmp_path / "map") == []


def test_corrupt_image_fails_naming_it_or_is_skipped(tmp_path, images, engine):
    (images / "Image999.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    out = tmp_path / "map"
    with pytest.raises(ImageError, match="Image999.jpg") as err:
        build_map(engine, images, out)
    assert "--skip-bad-images" in str(err.value)  # the error names the remedy
    assert not out.exists() and _siblings(out) == []
    m = build_map(engine, images, out, skip_bad_images=True)
    assert len(m) == 12 and "Image999.jpg" not in m.names
    skipped = m.manifest["history"][-1]["skipped"]
    assert len(skipped) == 1 and "Image999.jpg" in skipped[0]


def test_duplicate_names_from_two_folders(tmp_path, images, engine):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(images / "Image000.jpg", other)
    with pytest.raises(ConfigError, match="Image000.jpg"):
        build_map(engine, [images, other], tmp_path / "map")


# --- atomic updates ------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
@pytest.mark.parametrize("stage", ["embed", "metadata", "manifest", "rename1", "rename2"])
def test_failure_midway_keeps_old_map(monkeypatch, tmp_path, images, engine, exc, stage):
    out = tmp_path / "map"
    build_map(engine, list(sorted(images.iterdir()))[:6], out, index="hnsw")
    before = _snapshot(out)

    def boom(*a, **k):
        raise exc

    real_rename = os.rename
    calls = []

    def second_rename_fails(src, dst):  # "staging -> map" fails after "map -> .map.old"
        calls.append(Path(src).name)
        if Path(src).name.startswith(".map.new-"):
            assert calls[-2] == "map" and not out.exists()
            raise exc
        real_rename(src, dst)

    target = {
        "embed": (sources_mod, "embed_rows", boom),
        "metadata": (writer_mod, "write_metadata", boom),
        "manifest": (writer_mod, "dumps", boom),
        "rename1": (store.os, "rename", boom),
        "rename2": (store.os, "rename", second_rename_fails),
    }[stage]
    monkeypatch.setattr(*target)
    with pytest.raises(type(exc)):
        build_map(engine, images, out)
    with pytest.raises(type(exc)):
        add_to_map(engine, out, images / "Image055.jpg")
    if stage != "embed":  # remove embeds nothing
        with pytest.raises(type(exc)):
            remove_from_map(out, ["Image000.jpg"])
    monkeypatch.undo()
    assert _snapshot(out) == before
    assert len(Map.open(out)) == 6
    assert _siblings(out) == []  # no staging directories left behind


def test_crash_between_renames_reads_old_map_and_recovers(tmp_path, images, engine):
    out = tmp_path / "map"
    build_map(engine, images, out)
    before = _snapshot(out)
    # the state a power cut leaves after "map -> .map.old" and before "staging -> map"
    os.rename(out, tmp_path / ".map.old")
    (tmp_path / ".map.new-abc").mkdir()
    (tmp_path / ".map.new-abc" / "descriptors.npy").write_bytes(b"half")
    assert len(Map.open(out)) == 12  # readers see the old map
    remove_from_map(out, ["Image000.jpg"])  # the next writer rolls back, then updates
    assert len(Map.open(out)) == 11
    assert _siblings(out) == []
    assert set(_snapshot(out)) == set(before)


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_maps import FakeEngine
    from sfrs_edge.maps import add_to_map, remove_from_map, writer
    from pathlib import Path
    out, extra = Path(sys.argv[1]), Path(sys.argv[2])
    print("ready", flush=True)
    fold = False
    while True:  # append a segment, or fold it into the graph; then rewrite without it
        writer.fold_threshold = (lambda n: 0) if fold else (lambda n: 10**9)
        add_to_map(FakeEngine(), out, extra)
        remove_from_map(out, [extra.name])
        fold = not fold
    """
)


@pytest.mark.slow
def test_killed_writer_never_leaves_a_broken_map(tmp_path, images, engine):
    """SIGKILL a process that adds (new segment, or folded into the HNSW graph) and removes
    an image in a loop, at random moments."""
    extra = tmp_path / "Image999.jpg"
    shutil.move(images / "Image055.jpg", extra)
    out = tmp_path / "map"
    build_map(engine, images, out, index="hnsw")
    old = Map.open(out)
    script = tmp_path / "writer.py"
    script.write_text(_KILL_SCRIPT.format(tests=str(Path(__file__).parent)))
    rng = np.random.default_rng(0)
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(out), str(extra)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.0, 0.4)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        m = Map.open(out)  # must always open and verify
        assert len(m) in (11, 12)
        np.testing.assert_array_equal(m.descriptors[:11], old.descriptors)
        assert m.names[:11] == old.names
        if len(m) == 12:
            assert m.names[11] == "Image999.jpg"
    # the next writer cleans up whatever the killed one left
    remove_from_map(out, ["Image000.jpg"])
    assert _siblings(out) == []


# --- incremental add / remove ---------------------------------------------------------------


@pytest.mark.parametrize("index", ["exact", "hnsw"])
def test_add_and_remove(tmp_path, images, engine, index):
    files = sorted(images.iterdir())
    out = tmp_path / "map"
    first = build_map(engine, files[:8], out, index=index)
    engine.calls = 0
    m = add_to_map(engine, out, files[8:])
    assert engine.calls == 4  # only the new images were embedded
    assert len(m) == 12 and m.names == [f.name for f in files]
    np.testing.assert_array_equal(m.descriptors[:8], first.descriptors)
    ids, _ = m.search(m.descriptors, k=1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(12))
    with pytest.raises(ConfigError, match="already holds images named Image000.jpg"):
        add_to_map(engine, out, files[0])

    m = remove_from_map(out, [files[2].name, files[9].name])
    assert len(m) == 10 and files[2].name not in m.names
    assert [p.id for p in m.all_places()] == list(range(10))
    kept = [i for i in range(12) if i not in (2, 9)]
    np.testing.assert_array_equal(m.descriptors, engine.embed_files([files[i] for i in kept]))
    ids, _ = m.search(m.descriptors, k=1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(10))
    assert [e["op"] for e in m.manifest["history"]] == ["build", "add", "remove"]
    with pytest.raises(ConfigError, match="no images named nope.jpg"):
        remove_from_map(out, ["nope.jpg"])
    with pytest.raises(ConfigError, match="empty map"):
        remove_from_map(out, m.names)
    assert len(Map.open(out)) == 10


# --- positions ---------------------------------------------------------------------------


def _csv(tmp_path, text: str) -> Path:
    p = tmp_path / "poses.csv"
    p.write_text(textwrap.dedent(text).lstrip())
    return p


def test_csv_positions_round_trip(tmp_path, images, engine):
    rows = "\n".join(f"Image{i:03d},{i / 5},{-i},1.5,{i * 10 % 360},t{i}" for i in range(0, 60, 5))
    poses = _csv(tmp_path, "name,x,y,z,heading,timestamp\n" + rows)
    m = build_map(engine, images, tmp_path / "map", poses=poses)  # stems match file names
    p = m.places([3])[0]
    assert p.name == "Image015.jpg" and p.position == (3.0, -15.0, 1.5)
    assert p.position_kind == "xyz" and p.heading == 150.0 and p.timestamp == "t15"
    assert m.manifest["positions"] == {"kind": "xyz", "source": "csv:poses.csv", "count": 12}
    assert m.positions().shape == (12, 3) and m.positions()[3, 1] == -15.0


def test_csv_latlon_and_missing_rows(tmp_path, images, engine):
    poses = _csv(
        tmp_path, "Name,Latitude,Longitude\nImage000.jpg,-27.47,153.03\nImage005.jpg,-27.5,153\n"
    )
    table = read_poses_csv(poses)
    assert table["Image000.jpg"].position == (-27.47, 153.03)
    assert table["Image000.jpg"].kind == "latlon"
    with pytest.raises(ConfigError, match="no position for 10 of 12 images"):
        build_map(engine, images, tmp_path / "map", poses=poses)
    assert not (tmp_path / "map").exists()
    m = build_map(engine, images, tmp_path / "map", poses=poses, allow_missing_poses=True)
    assert m.places([0])[0].position == (-27.47, 153.03)
    assert m.places([2])[0].position is None
    assert m.manifest["positions"]["count"] == 2


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,x,y\nImage000.jpg,1,2\nImage005.jpg,1\n", "line 3: 2 fields"),
        ("name,x,y\nImage000.jpg,1,two\n", "line 2: y 'two' is not a number"),
        ("name,x,y\nImage000.jpg,1,\n", "line 2: missing y"),
        (
            "name,x,y\nImage000.jpg,1,2\n\nImage000.jpg,3,4\n",
            "line 4: image 'Image000.jpg' listed twice",
        ),
        ("name,lat,lon\nImage000.jpg,95,10\n", "line 2: lat/lon 95.0, 10.0 out of range"),
        ("name,x,y\nImage000.jpg,nan,1\n", "line 2: x is 'nan'"),
        ("name,x,y\n,1,2\n", "line 2: empty image name"),
        ("file,heading\nImage000.jpg,3\n", "line 1: no position columns"),
        ("x,y\n1,2\n", "line 1: header needs a 'name' column"),
        ("name,lat,y\na,1,2\n", "either lat,lon or x,y"),
        ("name,x\na,1\n", "needs both 'x' and 'y'"),
        ("", "empty"),
        ("name,x,y\n", "no rows"),
    ],
)
def test_csv_malformed(tmp_path, images, engine, text, message):
    poses = _csv(tmp_path, text) if text else (tmp_path / "poses.csv")
    if not text:
        poses.write_text("")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build_map(engine, images, tmp_path / "map", poses=poses)
    assert not (tmp_path / "map").exists()
    assert engine.calls == 0  # positions are checked before any image is embedded


def _jpeg_with_gps(path: Path, source: Path, lat: float, lon: float, heading: float) -> None:
    """Write a real JPEG with an EXIF GPS block using Pillow (independent of our reader)."""
    PIL = pytest.importorskip("PIL.Image")
    from PIL import ExifTags

    def dms(v):
        v = abs(v)
        d = int(v)
        m = int((v - d) * 60)
        s = round(((v - d) * 60 - m) * 60, 4)
        return (float(d), float(m), s)

    img = PIL.open(source)
    exif = img.getexif()
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "S" if lat < 0 else "N"
    gps[ExifTags.GPS.GPSLatitude] = dms(lat)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W" if lon < 0 else "E"
    gps[ExifTags.GPS.GPSLongitude] = dms(lon)
    gps[ExifTags.GPS.GPSImgDirectionRef] = "T"
    gps[ExifTags.GPS.GPSImgDirection] = heading
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2024:05:01 12:34:56"
    img.save(path, exif=exif)


@pytest.mark.parametrize("lat, lon", [(-27.4775, 153.0281), (48.8584, -2.2945), (0.5, 0.25)])
def test_exif_gps_positions(tmp_path, images, engine, lat, lon):
    src = images / "Image000.jpg"
    for i, name in enumerate(["Image000.jpg", "Image005.jpg"]):
        _jpeg_with_gps(images / name, src, lat + i * 1e-4, lon, 90.5)
    pose = read_exif_gps(images / "Image000.jpg")
    assert pose is not None and pose.kind == "latlon"
    np.testing.assert_allclose(pose.position, (lat, lon), atol=1e-6)
    assert pose.heading == pytest.approx(90.5) and pose.timestamp == "2024:05:01 12:34:56"
    assert read_exif_gps(images / "Image010.jpg") is None  # no EXIF block at all
    m = build_map(engine, images, tmp_path / "map")
    assert m.manifest["positions"] == {"kind": "latlon", "source": "exif", "count": 2}
    np.testing.assert_allclose(m.places([1])[0].position, (lat + 1e-4, lon), atol=1e-6)
    assert m.places([2])[0].position is None


def _big_endian_gps_jpeg(path: Path, source: Path) -> None:
    """A hand-built Motorola-order (MM) EXIF block: 51 deg 30' 0" N, 0 deg 7' 30" W."""
    import struct

    def entry(tag, typ, count, value_or_offset):
        return struct.pack(">HHI", tag, typ, count) + value_or_offset

    gps_ifd_off = 8 + 2 + 12 + 4
    gps_entries = 4
    data_off = gps_ifd_off + 2 + 12 * gps_entries + 4
    lat = struct.pack(">6I", 51, 1, 30, 1, 0, 1)
    lon = struct.pack(">6I", 0, 1, 7, 1, 30, 1)
    ifd0 = struct.pack(">H", 1) + entry(0x8825, 4, 1, struct.pack(">I", gps_ifd_off)) + bytes(4)
    gps = (
        struct.pack(">H", gps_entries)
        + entry(1, 2, 2, b"N\x00\x00\x00")
        + entry(2, 5, 3, struct.pack(">I", data_off))
        + entry(3, 2, 2, b"W\x00\x00\x00")
        + entry(4, 5, 3, struct.pack(">I", data_off + 24))
        + bytes(4)
    )
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + ifd0 + gps + lat + lon
    seg = b"Exif\x00\x00" + tiff
    jpeg = source.read_bytes()
    path.write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(seg) + 2) + seg + jpeg[2:])


def test_exif_big_endian(tmp_path, images):
    out = tmp_path / "mm.jpg"
    _big_endian_gps_jpeg(out, images / "Image000.jpg")
    pose = read_exif_gps(out)
    assert pose is not None
    np.testing.assert_allclose(pose.position, (51.5, -0.125))
    assert pose.heading is None and pose.timestamp is None
    assert read_image(out).shape == (540, 960, 3)  # still a valid JPEG


def test_exif_reader_survives_garbage(tmp_path):
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    path = tmp_path / "x.jpg"

    @hypothesis.settings(max_examples=200, deadline=None)
    @hypothesis.given(st.binary(max_size=300))
    def check(payload):
        # a JPEG header with an APP1 Exif segment of random content
        seg = b"Exif\x00\x00" + payload
        data = b"\xff\xd8\xff\xe1" + (len(seg) + 2).to_bytes(2, "big") + seg + b"\xff\xd9"
        path.write_bytes(data)
        assert read_exif_gps(path) is None or read_exif_gps(path).kind == "latlon"
        path.write_bytes(payload)
        read_exif_gps(path)

    check()


# --- info -----------------------------------------------------------------------------------


def test_map_info(tmp_path, images, engine):
    out = tmp_path / "map"
    build_map(engine, images, out, index="hnsw", hnsw_m=12)
    info = map_info(out)
    assert info["count"] == 12 and info["dim"] == 48
    assert info["model"]["fingerprint"] == engine.fingerprint
    assert info["index"]["type"] == "hnsw" and info["index"]["M"] == 12
    on_disk = sum(f.stat().st_size for f in out.iterdir())
    assert info["size_bytes"] == on_disk
    assert info["bytes_per_image"] == pytest.approx(on_disk / 12)
    assert info["checksums"] == "ok"


def test_name_table_holds_every_name_compactly():
    from sfrs_edge.maps.metadata import NameTable

    names = ["a", "ünï/çødé.jpg", "", "x" * 300]
    t = NameTable(names)
    assert len(t) == 4 and [t[i] for i in range(4)] == names
    assert t.nbytes == len("".join(names).encode()) + 8 * 5
    for bad in (-1, 4):
        with pytest.raises(IndexError):
            t[bad]


def _rewrite(out: Path, name: str, data: bytes) -> None:
    """Replace a map file and record its new checksum, as a map written that way would."""
    import hashlib

    (out / name).write_bytes(data)
    man = json.loads((out / "manifest.json").read_text())
    man["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (out / "manifest.json").write_text(json.dumps(man))


def test_open_names_the_model_and_the_file_that_do_not_fit(tmp_path, images, engine):
    import io

    out = tmp_path / "map"
    build_map(engine, images, out)
    with pytest.raises(
        MapError,
        match=r"map: map was built with model fingerprint fake0123456789ab \(fake, 48-d\) but "
        r"the model in use has fingerprint ffffeeeeddddcccc; rebuild the map with this model "
        r"\(`sfrs-edge map build`\) or use the model that built it",
    ):
        Map.open(out, expect_fingerprint="ffffeeeeddddcccc")
    buf = io.BytesIO()
    np.save(buf, np.load(out / "seg-000000.desc.npy").astype(np.float64))
    _rewrite(out, "seg-000000.desc.npy", buf.getvalue())
    with pytest.raises(
        MapError,
        match=r"map: seg-000000\.desc\.npy is float64 \(12, 48\), the manifest says float32 "
        r"\(12, 48\); rebuild the map",
    ):
        Map.open(out)
