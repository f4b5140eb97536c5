"""The near-black-frame recipe of docs/TRAINING.md ("Divergence on near-black frames"): Gardens
Point shrunk to 64 × 32 with every sixth ``day_left`` and ``night_right`` frame replaced by
near-black noise (mean 6, s.d. 3 grey levels), written outside the repository.

    python -m benchmarks.dark_frames /tmp/NAME/gp_dark          # then the `sfrs-edge train` of the doc
    python -m benchmarks.dark_frames /tmp/NAME/gp_small --clean # the same route without dark frames
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .common import REPO, data_root

FOLDERS = ("day_left", "day_right", "night_right")
DARK_FOLDERS = ("day_left", "night_right")
SIZE = (64, 32)  # width, height


def make(out: Path, dark: bool = True, every: int = 6, seed: int = 0) -> int:
    """Write the shrunk route to ``out``; returns the number of near-black frames."""
    from PIL import Image

    out = out.resolve()
    if out == REPO or REPO in out.parents:
        raise SystemExit(f"{out}: write the data outside the repository")
    src = data_root() / "gardens_point"
    rng = np.random.default_rng(seed)
    n_dark = 0
    for sub in FOLDERS:
        (out / sub).mkdir(parents=True, exist_ok=True)
        for i in range(200):
            name = f"Image{i:03d}.jpg"
            if dark and sub in DARK_FOLDERS and i % every == 0:
                noise = rng.normal(6, 3, (SIZE[1], SIZE[0], 3)).clip(0, 255).astype(np.uint8)
                Image.fromarray(noise).save(out / sub / name, quality=95)
                n_dark += 1
            else:
                img = Image.open(src / sub / name).convert("RGB")
                img.resize(SIZE, Image.BILINEAR).save(out / sub / name, quality=95)
    return n_dark


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--clean", action="store_true", help="No near-black frames.")
    a = ap.parse_args(argv)
    n = make(a.out, dark=not a.clean)
    print(f"wrote {a.out} ({n} near-black frames)")


if __name__ == "__main__":
    main()
