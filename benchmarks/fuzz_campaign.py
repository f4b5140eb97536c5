"""Fuzzing campaign over every input parser: how each case ends, counted per category.

Each case ends as one of: ``valid`` (a result the checks accept), ``clear`` (the package's own
``SfrsEdgeError``), ``traceback`` (any other exception), ``crash`` (the process died),
``hang`` (no answer within the per-case timeout) or ``silent_wrong`` (a result that is known to be
wrong, e.g. a duplicate stem matched silently). Cases are generated from fixed seeds, so the same
cases run against any version of the code::

    python -m benchmarks.fuzz_campaign --out after.json              # this checkout
    FUZZ_SRC=/tmp/i11-before python -m benchmarks.fuzz_campaign      # an older checkout

Workers run in subprocesses (address space limited to ``--mem-gib``) so crashes and hangs are
counted instead of ending the campaign.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

if os.environ.get("FUZZ_SRC"):  # test another checkout: bypass this tree's editable install
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, os.environ["FUZZ_SRC"])

CATEGORIES = (
    "image",
    "special",
    "frame",
    "exif",
    "positions",
    "tracks_csv",
    "gpx",
    "float_file",
    "jpeg_flip",
    "camera",
    "map",
)
DATA = Path(
    os.environ.get("SFRS_EDGE_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets")
)


# --- case generation (deterministic) ----------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _huge_png(w: int, h: int, good_crc: bool = True) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = _png_chunk(b"IHDR", ihdr)
    if not good_crc:
        chunk = chunk[:-4] + b"\0\0\0\0"
    idat = _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk + idat + _png_chunk(b"IEND", b"")


def _huge_jpeg(base: bytes, w: int, h: int) -> bytes:
    i = base.find(b"\xff\xc0")
    if i < 0:
        i = base.find(b"\xff\xc2")
    return base[: i + 5] + struct.pack(">HH", h, w) + base[i + 9 :]


def _seed_images() -> dict[str, bytes]:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (48, 64, 3), np.uint8)
    out = {ext: cv2.imencode(ext, arr)[1].tobytes() for ext in (".png", ".bmp", ".webp", ".tif")}
    jpg = DATA / "gardens_point" / "day_left" / "Image000.jpg"
    out[".jpg"] = jpg.read_bytes() if jpg.is_file() else cv2.imencode(".jpg", arr)[1].tobytes()
    return out


def image_cases(n: int) -> list[tuple[str, bytes]]:
    rnd = random.Random(1)
    seeds = _seed_images()
    cases: list[tuple[str, bytes]] = []
    dims = [(65535, 65535), (100_000, 100_000), (30000, 30000), (0, 10), (10, 0), (2**31 - 1, 1)]
    for w, h in dims:
        cases.append((".png", _huge_png(w, h)))
        cases.append((".png", _huge_png(w, h, good_crc=False)))
        if w < 65536 and h < 65536:
            cases.append((".jpg", _huge_jpeg(seeds[".jpg"], w, h)))
    cases.append((".ppm", b"P6 100000 100000 255\n" + b"\0" * 64))
    cases.append((".bmp", b"BM" + b"\0" * 16 + struct.pack("<ii", 100000, 100000) + b"\0" * 64))
    cases.append(
        (
            ".png",
            bytes.fromhex(
                "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8ffff3f0005fe02fe0def46b80000000049454e44ae426082"
            )[:69],
        )
    )
    while len(cases) < n:
        ext = rnd.choice(list(seeds))
        data = bytearray(seeds[ext])
        op = rnd.choice(["truncate", "flip", "splice", "random"])
        if op == "truncate":
            data = data[: rnd.randrange(len(data))]
        elif op == "flip":
            for _ in range(rnd.randint(1, 20)):
                j = rnd.randrange(min(len(data), 2048) if rnd.random() < 0.7 else len(data))
                data[j] = rnd.randrange(256)
        elif op == "splice":
            j = rnd.randrange(len(data))
            data = (
                data[:j] + bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 64))) + data[j:]
            )
        else:
            data = bytearray(rnd.randbytes(rnd.randint(0, 4096)))
        cases.append((ext, bytes(data)))
    return cases[:n]


def _exif_blob(rnd: random.Random) -> bytes:
    """A JPEG whose APP1 Exif TIFF has random-ish IFD entries (types, counts, offsets)."""
    endian = rnd.choice("<>")
    entries = []
    for _ in range(rnd.randint(0, 6)):
        tag = rnd.choice([0x8825, 0x8769, 1, 2, 3, 4, 17, 0x9003, rnd.randrange(65536)])
        typ = rnd.choice([1, 2, 3, 4, 5, 7, 9, 10, rnd.randrange(20)])
        count = rnd.choice([0, 1, 2, 3, 4, rnd.randrange(2**32)])
        value = rnd.choice([8, 26, 100, rnd.randrange(2**32)])
        entries.append(struct.pack(endian + "HHII", tag, typ, count, value))
    ifd = struct.pack(endian + "H", len(entries)) + b"".join(entries) + b"\0\0\0\0"
    tiff = (b"II" if endian == "<" else b"MM") + struct.pack(endian + "HI", 42, 8) + ifd
    tiff += rnd.randbytes(rnd.randint(0, 200))
    app1 = b"Exif\0\0" + tiff
    return b"\xff\xd8\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + b"\xff\xd9"


def exif_cases(n: int) -> list[tuple[str, bytes]]:
    rnd = random.Random(2)
    cases = []
    # a GPS pointer typed as ASCII text (the TypeError)
    tiff = b"II" + struct.pack("<HI", 42, 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHI4s", 0x8825, 2, 4, b"abc\0") + b"\0\0\0\0"
    app1 = b"Exif\0\0" + tiff
    cases.append(
        (".jpg", b"\xff\xd8\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + b"\xff\xd9")
    )
    while len(cases) < n:
        blob = bytearray(_exif_blob(rnd))
        if rnd.random() < 0.3:
            for _ in range(rnd.randint(1, 8)):
                blob[rnd.randrange(len(blob))] = rnd.randrange(256)
        cases.append((".jpg", bytes(blob)))
    return cases


_CELLS = [
    "1.5",
    "-3",
    "nan",
    "inf",
    "",
    " ",
    "abc",
    "1e400",
    "91",
    "-181",
    "2024-01-01T00:00:00Z",
    "0x10",
    "\u00e9",
    "\x00",
    '"',
    "a,b",
    "1" * 200_000,
]


def _csv_text(rnd: random.Random, header: list[str], rows: int) -> str:
    lines = [",".join(header)]
    for i in range(rows):
        cells = []
        for col in header:
            if col in ("name", "image"):
                cells.append(rnd.choice([f"img{i}.jpg", f"a/x{i % 3}.jpg", f"b/x{i % 3}.png", ""]))
            else:
                cells.append(
                    rnd.choice(_CELLS)
                    if rnd.random() < 0.2
                    else str(round(rnd.uniform(-50, 50), 3))
                )
        if rnd.random() < 0.05:
            cells.append("extra")
        lines.append(",".join(f'"{c}"' if "," in c or '"' in c else c for c in cells))
    return "\n".join(lines) + "\n"


def csv_cases(n: int, seed: int, headers: list[list[str]]) -> list[tuple[str, bytes]]:
    rnd = random.Random(seed)
    big = "2" * 200_000  # over the csv module's 128 KiB field limit
    if headers is POS_HEADERS:  # names sharing a stem; an oversized field
        cases = [
            (".csv", b"name,x,y\na/x.jpg,1,2\nb/x.png,3,4\n"),
            (".csv", f"name,x,y\ni.jpg,1,{big}\n".encode()),
        ]
    else:
        cases = [(".csv", f"t,x,y\n0,1,{big}\n".encode())]
    while len(cases) < n:
        text = _csv_text(rnd, rnd.choice(headers), rnd.randint(0, 8))
        data = text.encode("utf-8")
        if rnd.random() < 0.1:
            data = data.replace(b"1", b"\xff", 1)  # not UTF-8
        if rnd.random() < 0.1:
            data = bytes(rnd.randbytes(rnd.randint(0, 300)))
        cases.append((".csv", data))
    return cases


POS_HEADERS = [
    ["name", "lat", "lon"],
    ["name", "x", "y"],
    ["name", "x", "y", "z", "heading"],
    ["image", "lat", "lon", "timestamp"],
    ["name", "lat"],
    ["lat", "lon"],
]
TRACK_HEADERS = [
    ["t", "lat", "lon"],
    ["time", "x", "y"],
    ["timestamp", "x", "y", "z", "heading"],
    ["t", "lat", "lon", "heading"],
    ["x", "y"],
]


def gpx_cases(n: int) -> list[tuple[str, bytes]]:
    rnd = random.Random(5)
    cases = []
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        '<gpx><trk><trkseg><trkpt lat="1" lon="2"><time>&c;</time></trkpt></trkseg></trk></gpx>'
    )
    cases.append((".gpx", bomb.encode()))
    for _ in range(n - 1):
        pts = []
        for i in range(rnd.randint(0, 6)):
            lat = rnd.choice(["1.5", "91", "nan", "x", "", str(rnd.uniform(-90, 90))])
            lon = rnd.choice(["2.5", "-181", "inf", str(rnd.uniform(-180, 180))])
            t = rnd.choice([f"2024-01-01T00:00:{i:02d}Z", "", "zzz", "12", "2024-13-01T00:00:00"])
            attrs = f'lat="{lat}" lon="{lon}"' if rnd.random() < 0.9 else f'lat="{lat}"'
            pts.append(f"<trkpt {attrs}><time>{t}</time></trkpt>")
        text = '<?xml version="1.0"?><gpx xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
        text += "".join(pts) + "</trkseg></trk></gpx>"
        data = bytearray(text.encode())
        if rnd.random() < 0.3 and data:
            for _ in range(rnd.randint(1, 5)):
                data[rnd.randrange(len(data))] = rnd.randrange(256)
        cases.append((".gpx", bytes(data)))
    return cases


def float_cases(n: int) -> list[tuple[str, bytes, bool]]:
    """(ext, bytes, has NaN/inf) float PFM/TIFF files: a bad value must be refused."""
    import cv2
    import numpy as np

    rnd = random.Random(5)
    cases = []
    while len(cases) < n:
        ext = rnd.choice([".pfm", ".tiff"])
        arr = np.random.default_rng(len(cases)).random((32, 32, rnd.choice([1, 3])), np.float32)
        bad = rnd.random() < 0.7
        if bad:
            for _ in range(rnd.randint(1, 5)):
                arr.flat[rnd.randrange(arr.size)] = rnd.choice([np.nan, np.inf, -np.inf])
        cases.append((ext, cv2.imencode(ext, arr.squeeze())[1].tobytes(), bad))
    return cases


def jpeg_flip_cases(n: int) -> list[tuple[str, bytes]]:
    """Gardens Point JPEGs with 1-4 bits flipped, mostly in the entropy-coded data."""
    rnd = random.Random(23)
    files = sorted((DATA / "gardens_point" / "day_left").glob("*.jpg"))
    cases = []
    for _ in range(n):
        data = bytearray(rnd.choice(files).read_bytes())
        sos = data.find(b"\xff\xda")
        for _ in range(rnd.randint(1, 4)):
            lo = sos + 14 if rnd.random() < 0.9 else 2
            data[rnd.randrange(lo, len(data) - 2)] ^= 1 << rnd.randrange(8)
        cases.append((".jpg", bytes(data)))
    return cases


# (what is edited, how, whether a correct check must refuse it); checksums are recomputed
MAP_EDITS = [
    ("desc", "scale", 10.0, True),
    ("desc", "scale", 0.0, True),
    ("desc", "scale", -1.0, False),  # still unit length: a valid (if useless) map
    ("desc", "nan_row", None, True),
    ("desc", "inf_value", None, True),
    ("index", "link_id", 10**6, True),
    ("index", "link_count", 200, True),
    ("index", "upper_size", 12345, True),
    ("index", "label", 10**9, True),
    ("index", "vector_nan", None, True),
    ("index", "link_id_in_range", 1, False),  # another valid graph
]


def map_cases(n: int) -> list:
    cases = []
    for k in range(n):
        where, how, value, refuse = MAP_EDITS[k % len(MAP_EDITS)]
        cases.append((where, how, value, refuse, k // len(MAP_EDITS)))
    return cases


def build_cases(category: str, n: int) -> list:
    if category == "image":
        return image_cases(n)
    if category == "float_file":
        return float_cases(n)
    if category == "jpeg_flip":
        return jpeg_flip_cases(n)
    if category == "camera":
        return [-(2**40), -(2**31), -2, -1, 2**31, 2**40, True, 99, 1000, 2**31 - 1]
    if category == "map":
        return map_cases(n)
    if category == "exif":
        return exif_cases(n)
    if category == "positions":
        return csv_cases(n, 3, POS_HEADERS)
    if category == "tracks_csv":
        return csv_cases(n, 4, TRACK_HEADERS)
    if category == "gpx":
        return gpx_cases(n)
    if category == "special":
        return ["fifo", "devzero", "directory", "dangling", "nonutf8_name", "empty", "devnull"]
    if category == "frame":
        return [
            (0, 10),
            (10, 0),
            (0, 0),
            (0, 0, 3),
            (10, 0, 3),
            (16, 16, 0),
            (16, 16, 5),
            "empty_bytes",
            "none",
            (16, 16, 3, 1),
            "float_nan",
            "int64",
        ]
    raise ValueError(category)


# --- running one case -------------------------------------------------------------------------


def run_case(category: str, case, tmp: Path) -> str:
    """Outcome of one case in this process: 'valid', 'clear' or 'silent_wrong' (raises otherwise)."""
    import numpy as np

    from sfrs_edge.errors import SfrsEdgeError

    try:
        if category == "image":
            from sfrs_edge.images import read_image

            ext, data = case
            p = tmp / f"case{ext}"
            p.write_bytes(data)
            img = read_image(p)
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            return "valid"
        if category == "exif":
            from sfrs_edge.maps.poses import read_exif_gps

            p = tmp / "case.jpg"
            p.write_bytes(case[1])
            pose = read_exif_gps(p)
            if pose is not None:
                lat, lon = pose.position
                if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                    return "silent_wrong"
            return "valid"
        if category == "positions":
            from sfrs_edge.maps.poses import match_poses, read_poses_csv

            p = tmp / "case.csv"
            p.write_bytes(case[1])
            table = read_poses_csv(p)
            stems = [Path(k).stem for k in table]
            names = [Path(k).name for k in table]
            if len(set(stems)) < len(stems):
                # names sharing a stem: matching by stem must not silently pick one
                dup = next(s for s in stems if stems.count(s) > 1)
                got = match_poses([dup + ".tif"], table, str(p), allow_missing=True)
                return "silent_wrong" if got[0] is not None else "valid"
            del names
            return "valid"
        if category in ("tracks_csv", "gpx"):
            from sfrs_edge.video.tracks import Track

            p = tmp / f"case{case[0]}"
            p.write_bytes(case[1])
            track = Track.read(p)
            track.at(float(track.times[0]))
            if track.kind == "latlon":
                lat, lon = track.positions[:, 0], track.positions[:, 1]
                if (abs(lat) > 90).any() or (abs(lon) > 180).any():
                    return "silent_wrong"  # an impossible position accepted
            return "valid"
        if category == "special":
            return _special(case, tmp)
        if category == "frame":
            return _frame(case)
        if category == "float_file":
            from sfrs_edge.images import read_image

            ext, data, bad = case
            p = tmp / f"case{ext}"
            p.write_bytes(data)
            read_image(p)
            return "silent_wrong" if bad else "valid"
        if category == "jpeg_flip":
            from sfrs_edge.images import read_image

            p = tmp / "case.jpg"
            p.write_bytes(case[1])
            read_image(p)  # the map-image path: damaged data must be refused
            return "valid"
        if category == "camera":
            from sfrs_edge.video import VideoSource

            VideoSource(case).close()
            return "valid"
        if category == "map":
            return _map_case(case, tmp)
    except SfrsEdgeError:
        return "clear"
    raise AssertionError(category)


_HNSW = struct.Struct("<6QiI3QdQ")  # hnswlib 0.8 index.bin header


class _PixelEngine:
    """A stand-in model: the 8x6 grey thumbnail, mean-removed and L2-normalised (48-d)."""

    def __init__(self) -> None:
        from sfrs_edge.model_info import ModelInfo, Preprocessing

        self.info = ModelInfo(
            backbone="fake",
            preprocessing=Preprocessing(height=6, width=8, mean=(0, 0, 0), std=(1, 1, 1)),
            descriptor_dim=48,
            num_clusters=1,
            local_dim=48,
            pca_dim=None,
            whitening=False,
            fingerprint="fuzz0123456789ab",
        )
        self.dim, self.fingerprint = 48, self.info.fingerprint

    def embed(self, batch):
        import cv2
        import numpy as np

        out = []
        for img in batch:
            v = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32).ravel()
            v -= v.mean()
            out.append(v / (np.linalg.norm(v) + 1e-12))
        return np.stack(out).astype(np.float32)

    def embed_files(self, paths, batch_size=8, progress=None):
        from sfrs_edge.embedding import embed_images

        return embed_images(self, paths, batch_size).descriptors


def _restamp(out: Path, name: str, data: bytes) -> None:
    import hashlib

    (out / name).write_bytes(data)
    man = json.loads((out / "manifest.json").read_text())
    man["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (out / "manifest.json").write_text(json.dumps(man))


def _map_case(case, tmp: Path) -> str:
    """A tampered map (checksums recomputed): open it, search it, verify it."""
    import numpy as np

    from sfrs_edge.maps import Map, build_map, verify_map

    where, how, value, refuse, rep = case
    rnd = random.Random(hash((how, rep)) & 0xFFFF)
    src = tmp / "src"
    src.mkdir()
    for f in sorted((DATA / "gardens_point" / "day_left").glob("*.jpg"))[rep : rep + 40 : 2]:
        (src / f.name).symlink_to(f)
    out = tmp / "map"
    build_map(_PixelEngine(), src, out, index="hnsw" if where == "index" else "exact")
    if where == "desc":
        name = next(p.name for p in out.iterdir() if p.name.endswith(".desc.npy"))
        arr = np.load(out / name)
        row = rnd.randrange(len(arr))
        if how == "scale":
            arr *= value
        elif how == "nan_row":
            arr[row] = np.nan
        else:
            arr[row, rnd.randrange(arr.shape[1])] = np.inf
        np.save(tmp / "edited.npy", arr)
        _restamp(out, name, (tmp / "edited.npy").read_bytes())
    else:
        data = bytearray((out / "index.bin").read_bytes())
        head = _HNSW.unpack_from(data, 0)
        count, per_el, maxm0 = head[2], head[3], head[9]
        at = _HNSW.size + rnd.randrange(count) * per_el
        if how in ("link_id", "link_id_in_range"):
            struct.pack_into("<H", data, at, max(1, struct.unpack_from("<H", data, at)[0]))
            struct.pack_into("<I", data, at + 4, value if how == "link_id" else count - 1)
        elif how == "link_count":
            struct.pack_into("<H", data, at, value)
        elif how == "upper_size":
            struct.pack_into("<I", data, _HNSW.size + count * per_el, value)
        elif how == "label":
            struct.pack_into("<Q", data, at + per_el - 8, value)
        else:
            struct.pack_into("<f", data, at + 4 + 4 * maxm0, float("nan"))
        _restamp(out, "index.bin", bytes(data))
    m = Map.open(out)
    m.search(m.vectors(np.arange(len(m))), k=3)
    verify_map(out)
    return "silent_wrong" if refuse else "valid"


def _special(case: str, tmp: Path) -> str:
    from sfrs_edge.images import read_image

    if case == "fifo":
        p = tmp / "fifo.jpg"
        os.mkfifo(p)
    elif case == "devzero":
        p = tmp / "zero.jpg"
        p.symlink_to("/dev/zero")
    elif case == "devnull":
        p = tmp / "null.jpg"
        p.symlink_to("/dev/null")
    elif case == "directory":
        p = tmp / "dir.jpg"
        p.mkdir()
    elif case == "dangling":
        p = tmp / "dangling.jpg"
        p.symlink_to(tmp / "nowhere")
    elif case == "empty":
        p = tmp / "empty.jpg"
        p.write_bytes(b"")
    else:  # a valid image under a non-UTF-8 name, through a map build's metadata path
        import cv2
        import numpy as np

        p = Path(os.fsdecode(bytes(tmp) + b"/bad\xff name.png"))
        cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))[1].tofile(str(p))
        import sqlite3

        read_image(p)  # then its name goes where a map build puts it: SQLite and JSON
        sqlite3.connect(":memory:").execute("select ?", (p.name,)).fetchall()
        json.dumps({"name": p.name}, ensure_ascii=False).encode("utf-8")
        return "valid"
    read_image(p)
    return "valid"


def _frame(case) -> str:
    import numpy as np

    from sfrs_edge.images import decode_image, resize_for_model, to_bgr8
    from sfrs_edge.model_info import Preprocessing

    pre = Preprocessing(32, 48, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    if case == "empty_bytes":
        decode_image(b"", "frame")
        return "valid"
    if case == "none":
        arr = None
    elif case == "float_nan":
        arr = np.full((32, 32, 3), np.nan, np.float32)
    elif case == "int64":
        arr = np.zeros((32, 32, 3), np.int64)
    else:
        arr = np.zeros(case, np.uint8)
    resize_for_model(to_bgr8(arr, "frame"), pre)
    return "valid"


# --- worker / parent --------------------------------------------------------------------------


def worker(category: str, n: int, start: int, mem_gib: float) -> None:
    limit = int(mem_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import sfrs_edge  # noqa: F401  first, as in the CLI: it sets OpenCV's limit before cv2 loads

    cases = build_cases(category, n)
    for i in range(start, len(cases)):
        with tempfile.TemporaryDirectory() as d:
            try:
                outcome = run_case(category, cases[i], Path(d))
            except BaseException as exc:  # noqa: BLE001 - counting is the point
                outcome = "traceback:" + type(exc).__name__
        print(json.dumps([i, outcome]), flush=True)


def campaign(category: str, n: int, timeout: float, mem_gib: float) -> dict:
    counts: Counter = Counter()
    examples: dict[str, str] = {}
    total = len(build_cases(category, n))
    start = 0
    while start < total:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.fuzz_campaign",
            "--worker",
            category,
            "-n",
            str(n),
            "--start",
            str(start),
            "--mem-gib",
            str(mem_gib),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        last = start - 1
        deadline = time.monotonic() + timeout
        os.set_blocking(proc.stdout.fileno(), False)
        buf = ""
        while True:
            chunk = proc.stdout.read()
            if chunk:
                buf += chunk.decode()
                *lines, buf = buf.split("\n")
                for line in lines:
                    i, outcome = json.loads(line)
                    kind = outcome.split(":")[0]
                    counts[kind] += 1
                    if kind == "traceback":
                        examples.setdefault(outcome, f"case {i}")
                    last = i
                deadline = time.monotonic() + timeout
            if proc.poll() is not None and not chunk:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                counts["hang"] += 1
                examples.setdefault("hang", f"case {last + 1}")
                last += 1
                break
            time.sleep(0.01)
        if proc.returncode not in (0, None) and proc.returncode != -9 and last + 1 < total:
            counts["crash"] += 1
            examples.setdefault(f"crash (signal {-proc.returncode})", f"case {last + 1}")
            last += 1
        start = last + 1
    return {"category": category, "cases": total, **counts, "examples": examples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker")
    ap.add_argument("-n", type=int, default=400)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--mem-gib", type=float, default=4.0)
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.n, args.start, args.mem_gib)
        return
    import sfrs_edge

    print(f"# sfrs_edge from {Path(sfrs_edge.__file__).parent}", file=sys.stderr)
    results = []
    for cat in args.categories.split(","):
        res = campaign(cat, args.n, args.timeout, args.mem_gib)
        print(json.dumps(res), flush=True)
        results.append(res)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
