"""Map storage at scale: segments, O(k) add, extras, float16, merge, verify, consistent opens,
safe paths (SQLite URIs, symlinks), crashes between renames, manifest field checks."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import test_maps
from click.testing import CliRunner
from test_maps import FakeEngine, _siblings

from sfrs_edge.cli import main
from sfrs_edge.errors import ConfigError, MapError
from sfrs_edge.maps import (
    Map,
    add_to_map,
    build_map,
    map_info,
    merge_maps,
    remove_from_map,
    store,
    verify_map,
    writer,
)

engine, images = test_maps.engine, test_maps.images  # the same fixtures


class ExtrasEngine(FakeEngine):
    """FakeEngine with two extra outputs per image (contract 1): local features + coordinates."""

    extra_outputs = {"local_features": ((4, 3), np.float16), "local_xy": ((4, 2), np.float32)}

    def embed_all(self, batch):
        desc = []
        for img in batch:
            v = img.mean(axis=2).astype(np.float32).ravel()
            v -= v.mean()
            desc.append(v / (np.linalg.norm(v) + 1e-12))
        desc = np.stack(desc)
        n = len(batch)
        return {
            "descriptor": desc,
            "local_features": desc[:, :12].reshape(n, 4, 3).astype(np.float16),
            "local_xy": np.tile(desc[:, :1, None], (1, 4, 2)).astype(np.float32),
        }


def _inodes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in folder.iterdir()}


# --- segments, O(k) add, folding ------------------------------------------------------------


@pytest.mark.parametrize("index", ["exact", "hnsw"])
def test_add_links_old_files_and_writes_only_the_new_segment(tmp_path, images, engine, index):
    files = sorted(images.iterdir())
    out = tmp_path / "map"
    first = build_map(engine, files[:8], out, index=index)
    before = _inodes(out)
    m = add_to_map(engine, out, files[8:])
    after = _inodes(out)
    kept = {n for n in before if n != "manifest.json"}
    assert all(after[n] == before[n] for n in kept)  # hard links: not rewritten
    assert sorted(set(after) - set(before)) == ["seg-000001.desc.npy", "seg-000001.meta.sqlite"]
    assert len(m) == 12 and m.indexed == (8 if index == "hnsw" else 0)
    np.testing.assert_array_equal(m.vectors(range(8)), first.vectors(range(8)))
    ids, sims = m.search(m.vectors(range(12)), k=1)  # graph rows + exact tail rows merged
    np.testing.assert_array_equal(ids[:, 0], np.arange(12))
    assert m.names == [f.name for f in files]
    assert verify_map(out)["ok"]


def test_fold_into_graph_and_compaction(monkeypatch, tmp_path, images, engine):
    files = sorted(images.iterdir())
    out = tmp_path / "map"
    build_map(engine, files[:6], out, index="hnsw")
    monkeypatch.setattr(writer, "fold_threshold", lambda indexed: 0)
    m = add_to_map(engine, out, files[6:9])
    assert m.indexed == 9 and all(s.descriptors is None for s in m.segments)
    ids, _ = m.search(m.vectors(range(9)), k=1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(9))
    assert not [p for p in out.iterdir() if p.name.endswith(".desc.npy")]
    # exact maps: more than MAX_SEGMENTS segments are concatenated behind the first
    ex = tmp_path / "exact"
    build_map(engine, files[:3], ex, index="exact")
    monkeypatch.setattr(writer, "MAX_SEGMENTS", 2)
    for f in files[3:7]:
        m = add_to_map(engine, ex, f)
        assert len(m.segments) <= 2
    assert m.names == [f.name for f in files[:7]]
    np.testing.assert_allclose(m.descriptors, engine.embed_files(files[:7]), atol=1e-6)


def test_float16_storage(tmp_path, images, engine):
    out = tmp_path / "map"
    m = build_map(engine, images, out, dtype="float16")
    assert m.dtype == "float16" and m.segments[0].descriptors.dtype == np.float16
    full = engine.embed_files(sorted(images.iterdir()))
    np.testing.assert_allclose(m.descriptors, full, atol=1e-3)
    ids, _ = m.search(full, k=1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(12))
    f32 = map_info(build_map(engine, images, tmp_path / "m32").path)["bytes_per_place"]
    assert map_info(out)["bytes_per_place"]["descriptors"] == pytest.approx(
        f32["descriptors"] / 2, rel=0.1
    )


# --- extras (contract 1) ----------------------------------------------------------------------


def test_extras_are_stored_row_aligned_through_every_update(tmp_path, images):
    eng = ExtrasEngine()
    files = sorted(images.iterdir())
    out = tmp_path / "map"
    m = build_map(eng, files[:8], out, index="hnsw")
    assert m.extras == ["local_features", "local_xy"]
    lf = m.extra("local_features")
    assert isinstance(lf, np.memmap) and lf.shape == (8, 4, 3) and lf.dtype == np.float16
    m = add_to_map(eng, out, files[8:])
    ref = {n: eng.embed_all(_batch(eng, files))[n] for n in m.extras}
    for n in m.extras:
        np.testing.assert_array_equal(m.extra(n), ref[n])
        np.testing.assert_array_equal(m.extra_rows(n, [11, 2]), ref[n][[11, 2]])
    info = map_info(out)
    assert info["bytes_per_place"]["extra:local_features"] > 4 * 3 * 2
    m = remove_from_map(out, [files[2].name])
    np.testing.assert_array_equal(m.extra("local_xy"), np.delete(ref["local_xy"], 2, axis=0))
    with pytest.raises(MapError, match="extra arrays"):
        add_to_map(FakeEngine(), out, files[2])  # a model without the extras
    with pytest.raises(MapError, match="no extra array 'nope'"):
        m.extra("nope")
    # a flipped byte in an extras file is refused like any other
    xfile = next(p for p in out.iterdir() if ".x.local_xy" in p.name)
    data = bytearray(xfile.read_bytes())
    data[-3] ^= 1
    xfile.write_bytes(bytes(data))
    with pytest.raises(MapError, match="fails its checksum"):
        Map.open(out)


def _batch(eng, files):
    from sfrs_edge.images import read_image, resize_for_model

    return np.stack([resize_for_model(read_image(f), eng.info.preprocessing) for f in files])


# --- merge, verify ----------------------------------------------------------------------------


def test_merge(tmp_path, images, engine):
    files = sorted(images.iterdir())
    a = build_map(engine, files[:5], tmp_path / "a", index="hnsw")
    build_map(engine, files[5:], tmp_path / "b")
    m = merge_maps([tmp_path / "a", tmp_path / "b"], tmp_path / "c")
    assert m.index_type == "hnsw" and m.names == [f.name for f in files]
    np.testing.assert_allclose(m.vectors(range(5)), a.vectors(range(5)))
    assert m.manifest["history"][-1]["op"] == "merge"
    build_map(engine, files[3:7], tmp_path / "d")
    with pytest.raises(ConfigError, match="Image015.jpg"):
        merge_maps([tmp_path / "a", tmp_path / "d"], tmp_path / "e")
    assert not (tmp_path / "e").exists()
    m = merge_maps([tmp_path / "a", tmp_path / "d"], tmp_path / "e", duplicates="first")
    assert len(m) == 7
    m = merge_maps([tmp_path / "a", tmp_path / "d"], tmp_path / "f", duplicates="rename")
    assert len(m) == 9 and "d/Image015.jpg" in m.names
    build_map(FakeEngine("ffffeeeeddddcccc"), files[:2], tmp_path / "other")
    with pytest.raises(MapError, match="same model"):
        merge_maps([tmp_path / "a", tmp_path / "other"], tmp_path / "g")


def test_verify_and_merge_cli(tmp_path, images, engine):
    files = sorted(images.iterdir())
    build_map(engine, files[:6], tmp_path / "a")
    build_map(engine, files[6:], tmp_path / "b")
    r = CliRunner().invoke(
        main, ["map", "merge", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "c")]
    )
    assert r.exit_code == 0 and "12 places" in r.output
    r = CliRunner().invoke(main, ["map", "verify", str(tmp_path / "c")])
    assert r.exit_code == 0 and r.output.startswith("ok:")
    r = CliRunner().invoke(main, ["map", "info", str(tmp_path / "c")])
    assert r.exit_code == 0 and "per place:" in r.output
    victim = tmp_path / "c" / "seg-000000.desc.npy"
    data = bytearray(victim.read_bytes())
    data[200] ^= 4
    st = victim.stat()
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back: only verify sees it
    r = CliRunner().invoke(main, ["map", "verify", str(tmp_path / "c")])
    assert r.exit_code == 1 and "seg-000000.desc.npy fails its checksum" in r.output
    r = CliRunner().invoke(
        main, ["map", "merge", str(tmp_path / "a"), str(tmp_path / "a"), "-o", str(tmp_path / "d")]
    )
    assert r.exit_code == 1 and "Image000.jpg" in r.output


def test_open_verifies_once_then_trusts_unchanged_files(monkeypatch, tmp_path, images, engine):
    from sfrs_edge import verify_cache
    from sfrs_edge.maps import checksums

    monkeypatch.setattr(verify_cache, "RACY_S", 0.0)
    out = tmp_path / "map"
    build_map(engine, images, out)
    calls = []
    real = checksums.sha256_fd
    monkeypatch.setattr(checksums, "sha256_fd", lambda fd: calls.append(fd) or real(fd))
    monkeypatch.setattr("sfrs_edge.maps.snapshot.checksums", checksums)
    Map.open(out)
    assert calls == []  # written and hashed by this process: trusted
    Map.open(out, verify="full")
    assert len(calls) == 2
    victim = out / "seg-000000.meta.sqlite"
    data = bytearray(victim.read_bytes())
    data[-10] ^= 1
    victim.write_bytes(bytes(data))  # a write changes mtime: rehashed, refused
    with pytest.raises(MapError, match="meta.sqlite fails its checksum"):
        Map.open(out)


# --- old format --------------------------------------------------------------------------------


def test_format_1_manifest_is_refused_with_a_clear_error(tmp_path, images, engine):
    """Format 1 (one descriptors.npy, before segments) was never released: no reader for it."""
    out = tmp_path / "map"
    build_map(engine, sorted(images.iterdir())[:3], out)
    man = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(dict(man, format_version=1)))
    with pytest.raises(MapError, match="format version 1 is not supported.*rebuild the map"):
        Map.open(out)


# --- paths: SQLite URIs, symlinks ---------------------------------------------------------------


def test_sqlite_paths_with_uri_characters(tmp_path, images, engine):
    files = sorted(images.iterdir())
    build_map(engine, files[:4], tmp_path / "mapB")
    a = build_map(engine, files[4:], tmp_path / "map%42")
    assert Map.open(tmp_path / "map%42").names == [f.name for f in files[4:]] == a.names
    before = sorted(p.name for p in tmp_path.iterdir())
    h = build_map(engine, files[:3], tmp_path / "map#1")
    assert Map.open(tmp_path / "map#1").names == h.names
    created = set(p.name for p in tmp_path.iterdir()) - set(before)
    assert created == {"map#1"}


def test_update_through_symlink_updates_target(tmp_path, images, engine):
    files = sorted(images.iterdir())
    real = tmp_path / "real"
    build_map(engine, files[:6], real)
    link = tmp_path / "link"
    link.symlink_to(real)
    add_to_map(engine, link, files[6:8])
    assert link.is_symlink() and len(Map.open(real)) == 8
    remove_from_map(link, [files[0].name])
    assert link.is_symlink() and len(Map.open(link)) == 7
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(MapError, match="symlink"):
        add_to_map(engine, dangling, files[0])


# --- crashes between the renames -------------------------------------------------------------

_CRASH = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_maps import FakeEngine
    from sfrs_edge.maps import add_to_map, store
    from pathlib import Path
    point = sys.argv[3]
    real_rename, real_rmtree = os.rename, store.shutil.rmtree
    def rename(src, dst):
        real_rename(src, dst)
        if point == "after-first" and Path(dst).name.endswith(".old"):
            os.kill(os.getpid(), signal.SIGKILL)
        if point == "after-second" and Path(src).name.startswith(".map.new-"):
            os.kill(os.getpid(), signal.SIGKILL)
    def before_link(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    store.os.rename = rename
    if point == "writing":
        import sfrs_edge.maps.writer as w
        w.HnswIndex.load = before_link
        w.write_metadata = before_link
    add_to_map(FakeEngine(), Path(sys.argv[1]), Path(sys.argv[2]))
    """
)


@pytest.mark.parametrize("point", ["writing", "after-first", "after-second"])
def test_sigkill_at_each_point_of_an_update(tmp_path, images, engine, point):
    files = sorted(images.iterdir())
    out = tmp_path / "map"
    build_map(engine, files[:10], out, index="hnsw")
    script = tmp_path / "crash.py"
    script.write_text(_CRASH.format(tests=str(Path(__file__).parent)))
    proc = subprocess.run([sys.executable, str(script), str(out), str(files[10]), point])
    assert proc.returncode == -signal.SIGKILL
    expect = 11 if point == "after-second" else 10
    assert map_info(out)["count"] == expect  # info reads the old or new map
    m = Map.open(out)
    assert len(m) == expect
    ids, _ = m.search(m.vectors(range(len(m))), k=1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(len(m)))
    m = add_to_map(engine, out, files[11])  # the next update recovers and goes on
    assert len(m) == expect + 1 and out.is_dir()
    assert _siblings(out) == []


# --- consistent snapshots under concurrent rebuilds -----------------------------------------

_REBUILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_maps import FakeEngine
    from sfrs_edge.maps import build_map
    from pathlib import Path
    out, a, b = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    print("ready", flush=True)
    while True:
        build_map(FakeEngine(), a, out)
        build_map(FakeEngine(), b, out)
    """
)


@pytest.mark.slow
def test_opens_racing_rebuilds_see_one_version(tmp_path, images, engine):
    files = sorted(images.iterdir())
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for f in files[:6]:
        os.link(f, a / f.name)
    for f in files[6:]:
        os.link(f, b / f.name)
    truth = {f.name: d for f, d in zip(files, engine.embed_files(files), strict=True)}
    out = tmp_path / "map"
    build_map(engine, a, out)
    script = tmp_path / "rebuild.py"
    script.write_text(_REBUILD.format(tests=str(Path(__file__).parent)))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), str(a), str(b)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        seen, t_end, opened, refused = set(), time.monotonic() + 20, 0, 0
        while time.monotonic() < t_end:
            try:
                m = Map.open(out)
            except MapError as exc:  # allowed: refused clearly, never a mix
                assert "replaced 4 times while it was opened" in str(exc)
                refused += 1
                continue
            opened += 1
            names = m.names
            assert names in ([f.name for f in files[:6]], [f.name for f in files[6:]])
            np.testing.assert_array_equal(m.descriptors, np.stack([truth[n] for n in names]))
            seen.add(names[0])
        assert len(seen) == 2  # both versions were read, never a mix
        assert opened > 5 * refused
    finally:
        proc.kill()
        proc.wait()


# --- manifest fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, value, field",
    [
        (["dim"], "48", "dim"),
        (["dim"], None, "dim"),
        (["count"], -1, "count"),
        (["count"], 13, "count"),
        (["dtype"], "float8", "dtype"),
        (["files", "seg-000000.desc.npy"], "abc", "files.seg-000000.desc.npy"),
        (["files", "seg-000000.desc.npy", "bytes"], "12", "files.seg-000000.desc.npy.bytes"),
        (["files", "seg-000000.desc.npy", "sha256"], 5, "files.seg-000000.desc.npy.sha256"),
        (["segments"], {}, "segments"),
        (["segments", 0], [], "segments[0]"),
        (["segments", 0, "rows"], 1.5, "segments[0].rows"),
        (["segments", 0, "metadata"], "../../etc/passwd", "segments[0].metadata"),
        (["model"], "x", "model"),
        (["model", "fingerprint"], 7, "model.fingerprint"),
        (["index", "type"], "flat", "index.type"),
        (["extras"], [], "extras"),
        (["indexed"], 3, "indexed"),
        (["positions"], 5, "positions"),
    ],
)
def test_malformed_manifest_fields_name_field_and_value(
    tmp_path, images, engine, path, value, field
):
    out = tmp_path / "map"
    build_map(engine, images, out)
    man = json.loads((out / "manifest.json").read_text())
    node = man
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(MapError, match=re.escape(f"manifest field '{field}'")):
        Map.open(out)
    with pytest.raises(MapError):
        map_info(out)


def test_an_index_section_with_an_unknown_setting_is_refused(tmp_path, images, engine):
    out = tmp_path / "map"
    build_map(engine, images, out)
    man = json.loads((out / "manifest.json").read_text())
    man["index"]["metric"] = "l2"
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(MapError, match=r"^manifest index section is malformed \(.*'metric'"):
        Map.open(out)


def test_tampered_index_with_recomputed_checksum_is_refused(tmp_path, images, engine):
    out = tmp_path / "map"
    build_map(engine, images, out, index="hnsw")
    idx = out / "index.bin"
    data = bytearray(idx.read_bytes())
    data[8:16] = (10**9).to_bytes(8, "little")  # max_elements: hnswlib would allocate/overrun
    data[16:24] = (10**6).to_bytes(8, "little")  # cur_element_count
    idx.write_bytes(bytes(data))
    man = json.loads((out / "manifest.json").read_text())
    man["files"]["index.bin"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(MapError, match="index file header does not match"):
        Map.open(out)


def test_metadata_rows_must_match_the_manifest(tmp_path, images, engine):
    out = tmp_path / "map"
    build_map(engine, images, out)
    meta = out / "seg-000000.meta.sqlite"
    with sqlite3.connect(meta) as con:
        con.execute("DELETE FROM places WHERE id = 5")
    man = json.loads((out / "manifest.json").read_text())
    man["files"][meta.name] = {
        "sha256": hashlib.sha256(meta.read_bytes()).hexdigest(),
        "bytes": meta.stat().st_size,
    }
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(MapError, match="do not match the manifest"):
        Map.open(out)


def test_store_refuses_dangling_and_keeps_link(tmp_path):
    link = tmp_path / "l"
    link.symlink_to(tmp_path / "missing")
    with pytest.raises(MapError):
        store.real_target(link)


def test_writer_lock_excludes_a_second_writer_and_leaves_no_file(tmp_path):
    target = tmp_path / "map"
    lock = tmp_path / ".map.lock"
    lock.write_text("")  # left by an older version: unlocked, so it does not block
    with store._lock(target):
        assert lock.exists()
        with pytest.raises(MapError, match="another sfrs-edge process"), store._lock(target):
            pass
    assert not lock.exists()
    with pytest.raises(RuntimeError), store._lock(target):
        raise RuntimeError("a failed update")
    assert not lock.exists()  # also after a failure
    with store._lock(target):  # and the next writer gets it
        assert lock.exists()


def test_extra_rows_keep_the_stored_dtype_across_segments(tmp_path, images):
    """A few rows of an extra array come back as the model gave them (float16 features stay
    float16: half the memory, and the re-ranker's arithmetic is the one it was tuned with)."""
    eng = ExtrasEngine()
    files = sorted(images.iterdir())
    out = tmp_path / "map"
    build_map(eng, files[:5], out)
    m = add_to_map(eng, out, files[5:8])
    assert len(m.segments) == 2
    for name, dtype in (("local_features", np.float16), ("local_xy", np.float32)):
        rows = m.extra_rows(name, [6, 1])
        assert rows.dtype == dtype and rows.shape == (2, *eng.extra_outputs[name][0])
        np.testing.assert_array_equal(rows, m.extra(name)[[6, 1]])
        assert m.extra_rows(name, []).dtype == dtype
    with pytest.raises(MapError, match="no extra array 'depth' .*local_features"):
        m.extra_rows("depth", [0])


def test_a_map_without_extras_says_it_has_none():
    rows = np.eye(4, dtype=np.float32)
    m = Map.from_arrays(rows)
    assert m.extras == []
    with pytest.raises(MapError, match=r"no extra array 'local_features' \(has none\)"):
        m.extra("local_features")
    with pytest.raises(MapError, match=r"no extra array 'local_features' \(has none\)"):
        m.extra_rows("local_features", [0])
