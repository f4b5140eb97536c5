"""Damaged JPEG data: libjpeg decodes it with a warning; maps refuse it, localize marks it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from sfrs_edge.cli import main
from sfrs_edge.errors import ImageError
from sfrs_edge.images import decode_image, decode_image_tolerant
from sfrs_edge.jpeg_damage import decode_watching_libjpeg


def _damaged(gardens_point: Path) -> dict[str, bytes]:
    """Two ways of damaging a real frame that libjpeg still decodes (with a warning)."""
    data = (gardens_point / "day_left" / "Image000.jpg").read_bytes()
    flipped = bytearray(data)
    flipped[20000] ^= 0x08  # one bit inside the Huffman-coded data
    return {
        "flipped.jpg": bytes(flipped),
        "extra.jpg": data[:-2] + b"\x12" * 16 + data[-2:],  # bytes before EOI
    }


def test_damaged_jpeg_data_is_found_and_refused(gardens_point):
    for name, data in _damaged(gardens_point).items():
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
        with pytest.raises(ImageError, match=f"{name}: damaged JPEG data \\(libjpeg: Corrupt"):
            decode_image(data, name)
        decoded = decode_image_tolerant(data, name)
        assert decoded.damage.startswith("Corrupt JPEG data") and decoded.image.shape[2] == 3


def test_intact_jpegs_are_not_flagged(gardens_point):
    for path in sorted((gardens_point / "night_right").iterdir())[:20]:
        assert decode_image_tolerant(path.read_bytes(), str(path)).damage is None


def test_other_text_on_stderr_is_passed_through(capfd):
    def decode():
        os.write(2, b"another thread's line\nCorrupt JPEG data: bad Huffman code\n")
        return 7

    assert decode_watching_libjpeg(decode) == (7, ["Corrupt JPEG data: bad Huffman code"])
    assert capfd.readouterr().err == "another thread's line\n"


def _folder(tmp_path: Path, gardens_point: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in (0, 10, 20):
        shutil.copy(gardens_point / "day_left" / f"Image{i:03d}.jpg", folder)
    for name, data in _damaged(gardens_point).items():
        (folder / name).write_bytes(data)
    return folder


def test_map_build_refuses_or_skips_damaged_jpegs(tmp_path, gardens_point, tiny_onnx):
    folder, out = _folder(tmp_path, gardens_point), tmp_path / "map"
    args = ["map", "build", str(folder), "--model", str(tiny_onnx), "-o", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "damaged JPEG data" in r.stderr and not out.exists()
    r = CliRunner().invoke(main, [*args, "--skip-bad-images"])
    assert r.exit_code == 0, r.output
    from sfrs_edge.maps import Map

    m = Map.open(out)
    assert sorted(m.names) == ["Image000.jpg", "Image010.jpg", "Image020.jpg"]
    assert "skipped 2 unreadable images" in r.stderr
    skipped = m.manifest["history"][-1]["skipped"]
    assert len(skipped) == 2 and all("damaged JPEG data" in s for s in skipped)


def test_localize_answers_a_damaged_frame_marked_damaged(
    tmp_path, gardens_point, tiny_onnx, caplog
):
    from sfrs_edge.engine import Engine
    from sfrs_edge.maps import build_map

    folder = _folder(tmp_path, gardens_point)
    build_map(Engine.open(tiny_onnx), sorted(folder.glob("Image*.jpg")), tmp_path / "m")
    frames = [folder / "Image010.jpg", folder / "flipped.jpg"]
    args = ["localize", *map(str, frames), "--model", str(tiny_onnx), "--map", str(tmp_path / "m")]
    r = CliRunner().invoke(main, [*args, "--json"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.strip().splitlines()]
    assert [x["damaged"] for x in lines] == [False, True]
    assert [r.message.split(": ")[1] for r in caplog.records] == ["damaged JPEG data (libjpeg"]
    r = CliRunner().invoke(main, args)
    heads = [x for x in r.stdout.splitlines() if x.startswith(str(folder))]
    assert [x.endswith("[damaged JPEG data: the answer may be wrong]") for x in heads] == [
        False,
        True,
    ]
