"""The suite never writes the user's home, ``$SFRS_EDGE_HOME`` or caches (conftest isolates
them): every place sfrs-edge writes by default resolves into pytest's temporary folder, in this
process and in the CLI subprocesses tests start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import USER_PLACES

from sfrs_edge import model_digest, paths, verify_cache


def _user_places() -> list[Path]:
    home = Path(USER_PLACES["HOME"] or "/nonexistent-home")
    cache = Path(USER_PLACES["XDG_CACHE_HOME"] or home / ".cache")
    found = [home, cache / "sfrs-edge", home / ".sfrs-edge"]
    if USER_PLACES["SFRS_EDGE_HOME"]:
        found.append(Path(USER_PLACES["SFRS_EDGE_HOME"]))
    return [p.resolve() for p in found]


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def test_default_places_resolve_into_the_temporary_folder(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    for place in (paths.home(), verify_cache.cache_file(), Path.home(), Path("~").expanduser()):
        assert _inside(place, base), place


def test_cache_records_go_to_the_temporary_folder(tmp_path, tmp_path_factory):
    user_cache = _user_places()[1] / verify_cache.CACHE_NAME
    before = user_cache.stat().st_mtime_ns if user_cache.exists() else None
    f = tmp_path / "file"
    f.write_bytes(b"x")
    verify_cache.record([(f.stat(), "sha256:0")])
    written = verify_cache.cache_file()
    assert _inside(written, tmp_path_factory.getbasetemp())
    assert verify_cache.stat_key(f.stat()) in json.loads(written.read_text())
    after = user_cache.stat().st_mtime_ns if user_cache.exists() else None
    assert after == before


def test_model_verification_writes_go_to_the_temporary_folder(
    tiny_onnx, tmp_path, tmp_path_factory
):
    user_cache = _user_places()[1] / verify_cache.CACHE_NAME
    before = user_cache.stat().st_mtime_ns if user_cache.exists() else None
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    old = model.stat().st_mtime_ns - 60 * 10**9
    os.utime(model, ns=(old, old))
    assert model_digest.verify_model_file(model)
    written = verify_cache.cache_file()
    assert _inside(written, tmp_path_factory.getbasetemp())
    assert verify_cache.stat_key(model.stat()) in json.loads(written.read_text())
    after = user_cache.stat().st_mtime_ns if user_cache.exists() else None
    assert after == before  # the user's cache was not touched


def test_cli_subprocesses_inherit_the_isolation(tmp_path_factory):
    code = (
        "from pathlib import Path; from sfrs_edge import paths, verify_cache; "
        "print(paths.home()); print(verify_cache.cache_file()); print(Path.home())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    base = tmp_path_factory.getbasetemp()
    places = [Path(line) for line in out.stdout.split()]
    assert len(places) == 3 and all(_inside(p, base) for p in places), places
    users = [u for u in _user_places() if not _inside(base, u)]  # base may sit under HOME
    assert not any(_inside(p, u) for p in places for u in users), places
