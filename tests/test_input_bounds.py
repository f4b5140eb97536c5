"""The issue's failures, reproduced: each is now a clear package error, a skip, or works."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from sfrs_edge.cli import main
from sfrs_edge.errors import ConfigError, ImageError
from sfrs_edge.images import decode_image, read_image, resize_for_model, to_bgr8
from sfrs_edge.maps.poses import match_poses, read_poses_csv
from sfrs_edge.model_info import Preprocessing
from sfrs_edge.video.tracks import Track

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")


def _png_cv2_error() -> bytes:
    """A 65-byte PNG claiming 2**31-1 x 1 pixels: cv2.imdecode raises cv2.error on it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 2**31 - 1, 1, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _bad_folder(tmp_path: Path, gardens_point: Path) -> Path:
    """3 real images + a cv2-crashing PNG + a FIFO + a /dev/zero link + a non-UTF-8 name."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in (0, 10, 20):
        shutil.copy(gardens_point / "day_left" / f"Image{i:03d}.jpg", folder)
    (folder / "tiny.png").write_bytes(_png_cv2_error())
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "fifo.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    bad_name = os.fsdecode(bytes(folder) + b"/caf\xe9.jpg")
    shutil.copy(gardens_point / "day_left" / "Image030.jpg", bad_name)
    return folder


def test_cv2_errors_become_image_errors(tmp_path):
    with pytest.raises(ImageError, match="tiny.png"):
        decode_image(_png_cv2_error(), "tiny.png")
    with pytest.raises(ImageError, match="file is empty"):
        decode_image(b"", "empty")


@needs_fifo
def test_fifo_and_devices_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo.jpg")
    with pytest.raises(ImageError, match="fifo.jpg: not a regular file"):
        read_image(tmp_path / "fifo.jpg")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    with pytest.raises(ImageError, match="zero.jpg: not a regular file"):
        read_image(tmp_path / "zero.jpg")
    (tmp_path / "t.csv").symlink_to("/dev/zero")
    with pytest.raises(ConfigError, match="t.csv: not a regular file"):
        read_poses_csv(tmp_path / "t.csv")
    os.mkfifo(tmp_path / "t.gpx")
    with pytest.raises(ConfigError, match="t.gpx: not a regular file"):
        Track.read(tmp_path / "t.gpx")


def test_oversized_file_refused_before_reading(tmp_path, monkeypatch):
    from sfrs_edge import images

    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(images.MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ImageError, match="big.jpg: image file is .* over the"):
        read_image(big)


def test_zero_size_frames_are_image_errors():
    pre = Preprocessing(32, 48, (0.0,) * 3, (1.0,) * 3)
    for shape in [(0, 10), (10, 0), (0, 0, 3), (10, 0, 3), (16, 16, 0)]:
        with pytest.raises(ImageError):
            to_bgr8(np.zeros(shape, np.uint8), "frame")
        with pytest.raises(ImageError):
            resize_for_model(np.zeros(shape, np.uint8), pre)


def test_non_utf8_file_name_refused_clearly(tmp_path, gardens_point):
    name = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.jpg")
    shutil.copy(gardens_point / "day_left" / "Image000.jpg", name)
    with pytest.raises(ImageError, match=r"caf\\xe9.jpg: file name is not valid UTF-8"):
        read_image(name)


def test_csv_field_over_limit_names_file_and_line(tmp_path):
    p = tmp_path / "pos.csv"
    p.write_text("name,x,y\na.jpg,1,2\nb.jpg,1," + "2" * 200_000 + "\n")
    with pytest.raises(ConfigError, match="pos.csv: line 3: not valid CSV.*field larger"):
        read_poses_csv(p)
    t = tmp_path / "track.csv"
    t.write_text('t,x,y\n0,1,"' + "2" * 200_000 + '"\n')
    with pytest.raises(ConfigError, match="track.csv: line 2"):
        Track.read(t)
    p.write_bytes(b"name,x,y\na.jpg,1,2\n\xff.jpg,3,4\n")
    with pytest.raises(ConfigError, match="pos.csv: line 3: .*not UTF-8 text \\(byte 0xff\\)"):
        read_poses_csv(p)


def test_names_sharing_a_stem_are_never_matched_silently(tmp_path):
    p = tmp_path / "pos.csv"
    p.write_text("name,x,y\na/x.jpg,1,2\nb/x.png,3,4\n")
    table = read_poses_csv(p)
    with pytest.raises(ConfigError, match="'x.jpg' matches rows 'a/x.jpg' and 'b/x.png'"):
        match_poses(["x.jpg"], table, str(p))
    assert match_poses(["a/x.jpg"], table, str(p))[0].position == (1.0, 2.0)  # exact name


def test_gpx_values_checked(tmp_path):
    g = tmp_path / "t.gpx"
    g.write_text(
        '<gpx><trk><trkseg><trkpt lat="95" lon="1"><time>2024-01-01T00:00:00Z</time>'
        "</trkpt></trkseg></trk></gpx>"
    )
    with pytest.raises(ConfigError, match="t.gpx: track point 1: lat/lon 95.0, 1.0 out of range"):
        Track.read(g)
    g.write_text(
        '<gpx><trk><trkseg><trkpt lat="1" lon="1"><time>nan</time></trkpt></trkseg></trk></gpx>'
    )
    with pytest.raises(ConfigError, match="time 'nan' is not a finite"):
        Track.read(g)


def test_opencv_limit_set_before_cv2_loads_and_unknown_formats_refused(tmp_path):
    """OpenCV's own limit is in the environment before cv2 loads (a second line behind the
    header check); a format without a header parser (JPEG 2000 here) is refused even so: its
    decoder's memory is not bounded by a header check."""
    ras = tmp_path / "x.ras"
    cv2.imwrite(str(ras), np.zeros((64, 64, 3), np.uint8))
    jp2 = tmp_path / "x.jp2"
    jp2.write_bytes(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(200))
    code = (
        "import os, sys; {pre}"
        "from sfrs_edge.images import read_image\n"
        "from sfrs_edge.errors import ImageError\n"
        "try:\n    print(read_image(sys.argv[1]).shape)\n"
        "except ImageError as e:\n    print('ImageError', e)\n"
    )
    env = dict(os.environ, OPENCV_IO_MAX_IMAGE_PIXELS="1000")

    def run(pre: str, env: dict, path: Path = ras) -> str:
        argv = [sys.executable, "-c", code.format(pre=pre), str(path)]
        return subprocess.run(argv, capture_output=True, text=True, env=env).stdout

    assert "ImageError" in run("", env) and "x.ras" in run("", env)  # cv2 refused: 4096 > 1000
    env.pop("OPENCV_IO_MAX_IMAGE_PIXELS")
    assert run("", env).strip() == "(64, 64, 3)"
    assert "unrecognised image format" in run("", env, jp2)


def test_float_files_with_nan_or_inf_are_refused_before_8_bit(tmp_path):
    """OpenCV's 8-bit decode of a float image turns NaN (and 0..1) into 0: the file must be
    decoded as floats and checked first."""
    good = np.full((32, 32, 3), 0.5, np.float32)
    for ext in (".pfm", ".tiff"):
        for image in (good, good[:, :, 0]):  # colour and grey
            ok, buf = cv2.imencode(ext, image)
            out = decode_image(buf.tobytes(), "ok" + ext)
            assert out.shape == (32, 32, 3) and np.all(out == 127)  # 0.5 of 0..1, not 0
        for bad in (np.nan, np.inf, -np.inf):
            image = good.copy()
            image[3, 3, 1] = bad
            ok, buf = cv2.imencode(ext, image)
            (tmp_path / f"bad{ext}").write_bytes(buf.tobytes())
            with pytest.raises(ImageError, match=f"bad\\{ext}: image contains NaN or infinite"):
                read_image(tmp_path / f"bad{ext}")


def test_header_check_bounds_the_decoders_memory(monkeypatch):
    """Float images take 24 bytes per pixel while OpenCV decodes them (8-bit images 6): a
    small compressed float TIFF of 30 MP is refused from its header, 8-bit up to 100 MP."""
    from sfrs_edge import images

    ok, tiff = cv2.imencode(".tiff", np.zeros((16, 16, 3), np.float32))
    ok, png = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))
    tiff, png = tiff.tobytes(), png.tobytes()
    tiff = tiff.replace(struct.pack("<HHII", 256, 3, 1, 16), struct.pack("<HHII", 256, 4, 1, 6000))
    tiff = tiff.replace(struct.pack("<HHII", 257, 3, 1, 16), struct.pack("<HHII", 257, 4, 1, 5000))
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoder reached"))
    with pytest.raises(ImageError, match="6000x5000, over the 25 MP limit for float images"):
        decode_image(tiff, "float.tiff")
    assert images.MAX_DECODE_BYTES // images.DECODE_PEAK_BYTES["float"] == 25_000_000
    big8 = png[:16] + struct.pack(">II", 6000, 5000) + png[24:]
    with pytest.raises(pytest.fail.Exception, match="decoder reached"):
        decode_image(big8, "8bit.png")  # 30 MP of 8-bit: within the budget, decoded


# --- through the CLI -----------------------------------------------------------------------------


def test_map_build_skip_bad_images_really_skips(tmp_path, gardens_point, tiny_onnx):
    folder = _bad_folder(tmp_path, gardens_point)
    out = tmp_path / "map"
    r = CliRunner().invoke(
        main, ["map", "build", str(folder), "--model", str(tiny_onnx), "-o", str(out)]
    )
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1 and not out.exists()
    r = CliRunner().invoke(
        main,
        [
            "map",
            "build",
            str(folder),
            "--model",
            str(tiny_onnx),
            "-o",
            str(out),
            "--skip-bad-images",
        ],
    )
    assert r.exit_code == 0, r.output
    from sfrs_edge.maps import Map

    assert sorted(Map.open(out).names) == ["Image000.jpg", "Image010.jpg", "Image020.jpg"]


def test_multi_frame_localize_reports_bad_frames_and_goes_on(tmp_path, gardens_point, tiny_onnx):
    from sfrs_edge.engine import Engine
    from sfrs_edge.maps import build_map

    build_map(
        Engine.open(tiny_onnx), sorted((gardens_point / "day_left").iterdir())[:10], tmp_path / "m"
    )
    folder = _bad_folder(tmp_path, gardens_point)
    frames = [
        folder / "Image000.jpg",
        folder / "tiny.png",
        folder / "zero.jpg",
        folder / "Image010.jpg",
    ]
    args = [
        "localize",
        *map(str, frames),
        "--model",
        str(tiny_onnx),
        "--map",
        str(tmp_path / "m"),
        "--json",
    ]
    r = CliRunner().invoke(main, args)
    lines = [json.loads(x) for x in r.stdout.strip().splitlines()]
    assert r.exit_code == 1 and "2 frame(s) could not be localized" in r.stderr
    assert [("error" in x) for x in lines] == [False, True, True, False]
    assert "tiny.png" in lines[1]["error"] and "not a regular file" in lines[2]["error"]


def test_cli_turns_unexpected_exceptions_into_one_line(monkeypatch, tmp_path):
    import sfrs_edge.maps as maps

    def boom(*a, **k):
        raise RuntimeError("unforeseen\nsecond line")

    monkeypatch.setattr(maps, "map_info", boom)
    args = ["map", "info", str(tmp_path)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines() == [
        "error: internal error (RuntimeError: unforeseen second line); rerun as "
        "`sfrs-edge --debug map ...` (or with SFRS_EDGE_DEBUG=1) for the traceback and report it"
    ]
    r = CliRunner().invoke(main, ["--debug", *args])
    assert isinstance(r.exception, RuntimeError)
    monkeypatch.setenv("SFRS_EDGE_DEBUG", "1")
    assert isinstance(CliRunner().invoke(main, args).exception, RuntimeError)


@pytest.mark.parametrize("number", [-1, -2, 2**31, True])
def test_camera_number_out_of_range_is_refused(number):
    from sfrs_edge.video import VideoError, VideoSource

    # VideoCapture(-1) segfaults in OpenCV's V4L2 backend when no camera exists
    with pytest.raises(VideoError, match="not a camera number"):
        VideoSource(number)


def test_cli_negative_camera_is_an_option_error_not_a_signal(tmp_path, gardens_point, tiny_onnx):
    from sfrs_edge.engine import Engine
    from sfrs_edge.maps import build_map

    build_map(
        Engine.open(tiny_onnx), sorted((gardens_point / "day_left").iterdir())[:3], tmp_path / "m"
    )
    code = "from sfrs_edge.cli import main; main()"
    for number, rc, text in (("-1", 2, "--camera"), (str(2**31), 1, "not a camera number")):
        args = ["localize", "--model", str(tiny_onnx), "--map", str(tmp_path / "m")]
        r = subprocess.run(
            [sys.executable, "-c", code, *args, "--camera", number],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == rc, (r.returncode, r.stderr[-500:])
        assert text in r.stderr
