"""Gardens Point fetcher: located on disk, or downloaded (here: from local zips) and verified."""

from __future__ import annotations

import urllib.error
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from sfrs_edge import datasets
from sfrs_edge.datasets import DatasetError, fetch_gardens_point, gardens_point
from sfrs_edge.errors import SfrsEdgeError


def _jpeg(value: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def make_zip(
    path: Path,
    folders=("Day_Left", "DAY_RIGHT", "night_right"),
    root: str = "GardensPoint_Walking/",
    count: int = 200,
    extra: dict[str, bytes] | None = None,
    compression: int = zipfile.ZIP_STORED,
) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for k, folder in enumerate(folders):
            for i in range(count):
                zf.writestr(f"{root}{folder}/Image{i:03d}.jpg", _jpeg(k * 50 + i % 50))
        zf.writestr(f"{root}ground_truth.csv", "day_left,day_right,night_right\n")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def no_local_data(tmp_path, monkeypatch):
    """Point the data root at an empty folder so only the cache can satisfy a lookup."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("SFRS_EDGE_DATA", str(empty))
    return empty


def test_fetch_from_local_zip_maps_folder_case(tmp_path):
    z = make_zip(tmp_path / "gp.zip")
    dest = tmp_path / "cache" / "gardens_point"
    seen = []
    out = fetch_gardens_point(z.as_uri(), dest, progress=lambda d, t: seen.append((d, t)))
    assert out == dest
    for t in datasets.TRAVERSALS:
        files = sorted((dest / t).iterdir())
        assert len(files) == 200
        assert files[0].name == "Image000.jpg"
        img = cv2.imread(str(files[7]))
        assert img is not None and img.shape == (16, 16, 3)
    assert seen and seen[-1][0] == z.stat().st_size
    assert _leftovers(dest.parent) == ["gardens_point"]  # no temp zip or staging folder


def test_gardens_point_downloads_into_cache_then_finds_it(tmp_path, no_local_data, monkeypatch):
    z = make_zip(tmp_path / "gp.zip", root="")
    with pytest.raises(DatasetError, match="not found"):
        gardens_point(download=False)
    out = gardens_point(url=z.as_uri())
    assert out == datasets.cache_dir() / "gardens_point"

    def no_network(*a, **k):
        raise AssertionError("must not download again")

    monkeypatch.setattr(datasets, "fetch_gardens_point", no_network)
    assert gardens_point() == out


def test_corrupt_zip_is_refused_and_leaves_nothing(tmp_path):
    z = make_zip(tmp_path / "gp.zip")
    data = bytearray(z.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip a byte inside a stored JPEG: CRC mismatch
    z.write_bytes(bytes(data))
    dest = tmp_path / "cache" / "gardens_point"
    with pytest.raises(DatasetError, match="corrupt"):
        fetch_gardens_point(z.as_uri(), dest)
    assert _leftovers(dest.parent) == []


def test_truncated_and_non_zip_downloads(tmp_path):
    z = make_zip(tmp_path / "gp.zip")
    (tmp_path / "trunc.zip").write_bytes(z.read_bytes()[: z.stat().st_size // 3])
    (tmp_path / "page.zip").write_bytes(b"<html>Service unavailable</html>")
    for name in ("trunc.zip", "page.zip"):
        dest = tmp_path / name / "gp"
        with pytest.raises(DatasetError, match="not a valid zip"):
            fetch_gardens_point((tmp_path / name).as_uri(), tmp_path / "c" / name)
        assert not dest.exists()
    assert _leftovers(tmp_path / "c") == []


def test_zip_missing_a_folder(tmp_path):
    z = make_zip(tmp_path / "gp.zip", folders=("day_left", "day_right"))
    with pytest.raises(DatasetError, match="missing folder.*night_right"):
        fetch_gardens_point(z.as_uri(), tmp_path / "c" / "gp")
    assert _leftovers(tmp_path / "c") == []


def test_zip_with_wrong_image_count(tmp_path):
    z = make_zip(tmp_path / "gp.zip", count=199)
    with pytest.raises(DatasetError, match="199 JPEG files, expected 200"):
        fetch_gardens_point(z.as_uri(), tmp_path / "c" / "gp")


@pytest.mark.parametrize("evil", ["../evil.jpg", "/etc/evil.jpg", "a/../../evil.jpg", "C:/x.jpg"])
def test_path_traversal_member_is_refused(tmp_path, evil):
    z = make_zip(tmp_path / "gp.zip", extra={evil: _jpeg(1)})
    with pytest.raises(DatasetError, match="unsafe member name"):
        fetch_gardens_point(z.as_uri(), tmp_path / "c" / "gp")
    assert not (tmp_path / "evil.jpg").exists()
    assert _leftovers(tmp_path / "c") == []


def test_symlink_member_is_refused(tmp_path):
    z = make_zip(tmp_path / "gp.zip")
    with zipfile.ZipFile(z, "a") as zf:
        info = zipfile.ZipInfo("GardensPoint_Walking/link")
        info.external_attr = 0o120777 << 16  # S_IFLNK
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link"):
        fetch_gardens_point(z.as_uri(), tmp_path / "c" / "gp")


def test_non_jpeg_content_is_refused(tmp_path):
    z = tmp_path / "gp.zip"
    make_zip(z, folders=("day_left", "day_right"))
    with zipfile.ZipFile(z, "a") as zf:
        for i in range(200):
            zf.writestr(f"GardensPoint_Walking/night_right/Image{i:03d}.jpg", b"not a jpeg")
    with pytest.raises(DatasetError, match="not a JPEG"):
        fetch_gardens_point(z.as_uri(), tmp_path / "c" / "gp")
    assert _leftovers(tmp_path / "c") == []


def test_unreachable_network_gives_actionable_error(tmp_path):
    def opener(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    with pytest.raises(DatasetError, match="SFRS_EDGE_DATA") as exc:
        fetch_gardens_point("https://example.invalid/gp.zip", tmp_path / "c" / "gp", opener=opener)
    assert isinstance(exc.value, SfrsEdgeError)
    assert _leftovers(tmp_path / "c") == []


def test_incomplete_earlier_copy_is_replaced(tmp_path):
    dest = tmp_path / "c" / "gardens_point"
    (dest / "day_left").mkdir(parents=True)
    (dest / "day_left" / "Image000.jpg").write_bytes(_jpeg(3))
    z = make_zip(tmp_path / "gp.zip")
    fetch_gardens_point(z.as_uri(), dest)
    assert len(list((dest / "night_right").iterdir())) == 200


def test_finds_the_real_dataset(gardens_point, monkeypatch):
    monkeypatch.setenv("SFRS_EDGE_DATA", str(gardens_point.parent))
    assert datasets.find_gardens_point() == gardens_point
    assert datasets.gardens_point(download=False) == gardens_point


def test_overlong_member_name_is_one_line_error(tmp_path):
    z = make_zip(tmp_path / "gp.zip", folders=("day_right", "night_right"))
    with zipfile.ZipFile(z, "a") as zf:
        for i in range(199):
            zf.writestr(f"GardensPoint_Walking/day_left/Image{i:03d}.jpg", _jpeg(1))
        zf.writestr("GardensPoint_Walking/day_left/" + "x" * 296 + ".jpg", _jpeg(2))
    with pytest.raises(DatasetError, match="300 characters, longer than a file name may be"):
        fetch_gardens_point(z.as_uri(), tmp_path / "c" / "gp")
    assert _leftovers(tmp_path / "c") == []


def test_symlinked_cache_entry_is_filled_at_its_target(tmp_path):
    target = tmp_path / "big-disk" / "gardens_point"
    (target / "day_left").mkdir(parents=True)  # an incomplete earlier copy
    (target / "day_left" / "Image000.jpg").write_bytes(_jpeg(3))
    link = tmp_path / "c" / "gardens_point"
    link.parent.mkdir()
    link.symlink_to(target)
    out = fetch_gardens_point(make_zip(tmp_path / "gp.zip").as_uri(), link)
    assert link.is_symlink() and out == target.resolve()
    assert len(list((link / "night_right").iterdir())) == 200


def test_unwritable_cache_is_one_line_error(tmp_path, monkeypatch):
    z = make_zip(tmp_path / "gp.zip")
    real_write = Path.write_bytes

    def full_disk(self, data):
        if self.suffix == ".jpg" and ".partial." in str(self):
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(DatasetError, match="No space left on device"):
        fetch_gardens_point(z.as_uri(), tmp_path / "c" / "gp")
    assert _leftovers(tmp_path / "c") == []
