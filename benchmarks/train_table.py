"""The training table of docs/TRAINING.md: off the shelf, SFRS, SFRS + SAL/CEL, SFRS + SAL/CEL +
trained local features, and the SARE-ind-only control with the same number of steps; night and
day R@1/5, global and re-ranked (k = 10, the default scoring), per seed and mean ± s.d.

Gardens Point protocol of docs/TRAINING.md (train places 0–99, test 100–199) at the scale of
run A (3 generations × 1 epoch, 180 × 320, blocks 0–13 frozen, no colour jitter, 5 negatives
and ≤ 5 difficult positives, 20480-d without PCA). One k-means start point is made once and
shared by every run (``--init``). Nothing is selected on the test places: each run's
``checkpoint.pt`` is its last epoch (there is no val split) and the re-ranking uses the
package's default settings. Runs are resumable: a run whose ``result.json`` exists is skipped.

    python -m benchmarks.train_table --out /tmp/NAME/table --variants sfrs,control --seeds 43
    python -m benchmarks.train_table --out /tmp/NAME/table --report   # the markdown table only
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .common import data_root

log = logging.getLogger("train_table")

TRAIN_PLACES = range(0, 100)
TEST_PLACES = range(100, 200)
FOLDERS = ("day_left", "day_right", "night_right")
QUERIES = ("day_right", "night_right")
TOLERANCE = 2
RUN_A = [
    "--dataset", "traversal", "--db-folder", "day_left", "--query-folders", "day_right,night_right",
    "--train-places", "0-99", "--input-size", "180x320", "--first-trainable", "14",
    "--pos-radius", "2", "--nonneg-radius", "10", "--eval-radius", "2", "--color-jitter", "none",
    "--neg-num", "5", "--pos-num", "5", "--pca-dim", "none", "--no-progress",
]  # fmt: skip
SFRS = ["--generations", "3", "--epochs", "1"]
# FoL's coded weights (docs/TRAINING.md, "FoL's training half"), not tuned here
FOL_REGIONS = ["--sal-weight", "0.005", "--cel-weight", "1.0"]
FOL_LOCAL = ["--local-weight", "1.0"]
VARIANTS = {  # in priority order
    "sfrs": SFRS,
    "control": ["--generations", "1", "--epochs", "3", "--gen0-all-epochs"],
    "sfrs_salcel": [*SFRS, *FOL_REGIONS],
    "sfrs_salcel_local": [*SFRS, *FOL_REGIONS, *FOL_LOCAL],
}
LABELS = {
    "offtheshelf": "off the shelf (k-means init)",
    "sfrs": "SFRS (3 gen × 1 epoch)",
    "control": "control: SARE-ind only, 1 gen × 3 epochs (same steps)",
    "sfrs_salcel": "SFRS + SAL/CEL",
    "sfrs_salcel_local": "SFRS + SAL/CEL + trained local features",
}


def _images(root: Path, places: range, folders=FOLDERS) -> list[Path]:
    return [root / f / f"Image{i:03d}.jpg" for f in folders for i in places]


def make_init(path: Path, root: Path) -> None:
    """The shared k-means start point: what a run without ``--init`` writes as ``init.pt``."""
    from sfrs_edge.train.checkpoint import save_checkpoint
    from sfrs_edge.train.config import TrainConfig
    from sfrs_edge.train.model import ModelConfig
    from sfrs_edge.train.offtheshelf import build_offtheshelf

    cfg = TrainConfig(model=ModelConfig(input_height=180, input_width=320, pca_dim=None))
    net, prov = build_offtheshelf(_images(root, TRAIN_PLACES), cfg.init_config())
    save_checkpoint(net, path, prov)


def _outputs(net, head, paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import torch
    from sfrs_edge.train.features import image_batches
    from sfrs_edge.train.model import InputAdapter

    adapter = InputAdapter(net.config.preprocessing())
    desc, feats, xy = [], [], []
    with torch.no_grad():
        for batch in image_batches(paths, net.config.preprocessing(), 8):
            d, f, p = head.outputs(net, adapter(batch))
            desc.append(d.numpy())
            feats.append(f.float().numpy())
            xy.append(p.float().numpy())
    return np.concatenate(desc), np.concatenate(feats), np.concatenate(xy)


def evaluate_checkpoint(ckpt: Path, root: Path) -> dict:
    """Global and re-ranked (k = 10) R@1/5/10 of ``day_left ← q`` on the test places. The local
    head is the checkpoint's (trained) one, else a PCA fitted on the training images."""
    import torch
    from sfrs_edge.train.checkpoint import load_checkpoint, read_checkpoint
    from sfrs_edge.train.local_features import LocalConfig, fit_local_head, head_from_state

    from sfrs_edge.recall import index_window_positives
    from sfrs_edge.rerank import RerankConfig

    from .rerank import candidate_inliers, global_ranking, recall, reranked_lists

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    net, _ = load_checkpoint(ckpt)
    raw = read_checkpoint(ckpt)
    size = net.config.preprocessing().size
    if "local" in raw:
        head, local = head_from_state(raw["local"], size), "trained (checkpoint)"
    else:
        head = fit_local_head(net, _images(root, TRAIN_PLACES), LocalConfig())
        local = "PCA on the 300 training images"
    out = {"checkpoint": str(ckpt), "local_head": local}
    sets = {f: _outputs(net, head, _images(root, TEST_PLACES, (f,))) for f in FOLDERS}
    rr = RerankConfig()
    pos = index_window_positives(len(TEST_PLACES), len(TEST_PLACES), TOLERANCE)
    for q in QUERIES:
        (qd, qf, qxy), (dd, df, dxy) = sets[q], sets["day_left"]
        ranked, sims = global_ranking(qd, dd, rr.k)
        inl, _ = candidate_inliers(qf, qxy, df, dxy, ranked, rr)
        out[q] = {
            "global": recall(ranked, pos),
            "reranked_k10": recall(reranked_lists(ranked, sims, inl, rr.k, rr), pos),
        }
    return out


def train_run(variant: str, seed: int, out: Path, root: Path, init: Path) -> dict:
    """Train one (variant, seed) into ``out/variant_seed`` and evaluate its checkpoint."""
    run = out / f"{variant}_s{seed}"
    result = run / "result.json"
    if result.exists():
        return json.loads(result.read_text())
    exe = shutil.which("sfrs-edge") or sys.exit("sfrs-edge is not on PATH")
    cmd = [exe, "train", "--data", str(root), "-o", str(run), "--init", str(init)]
    cmd += [*RUN_A, *VARIANTS[variant], "--seed", str(seed)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log.info("%s seed %d: %s", variant, seed, " ".join(cmd))
    t0 = time.time()
    run.mkdir(parents=True, exist_ok=True)
    if not (run / "checkpoint.pt").exists():  # trained before, not yet evaluated: keep it
        with open(run / "train.log", "w") as f:
            subprocess.run(["nice", "-n", "10", *cmd], check=True, stdout=f, stderr=f, env=env)
    seconds = sum(float(r["seconds"]) for r in _log_rows(run / "log.csv") if r.get("seconds"))
    res = {"variant": variant, "seed": seed, "command": " ".join(cmd)}
    res["train_seconds"] = seconds  # the epochs' own times (log.csv), not mining set-up
    res["wall_seconds"] = time.time() - t0
    res.update(evaluate_checkpoint(run / "checkpoint.pt", root))
    res["log"] = _log_rows(run / "log.csv")
    result.write_text(json.dumps(res, indent=1))
    return res


def _log_rows(path: Path) -> list[dict]:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def _cell(vals: list[float]) -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{np.mean(vals):.1f} ± {np.std(vals, ddof=1):.1f}"


def report(out: Path) -> str:
    """Markdown: one row per variant (mean ± s.d. over the seeds that finished)."""
    results: dict[str, list[dict]] = {}
    for p in sorted(out.glob("*/result.json")):
        r = json.loads(p.read_text())
        results.setdefault(r["variant"], []).append(r)
    cols = [(q, kind, n) for q in ("night_right", "day_right") for kind in ("global", "reranked_k10") for n in ("1", "5")]  # fmt: skip
    head = "| model | seeds | " + " | ".join(
        f"{q.split('_')[0]} {'re-ranked' if k != 'global' else 'global'} R@{n}" for q, k, n in cols
    )
    lines = [head + " | s/run |", "|" + "---|" * (len(cols) + 3)]
    for variant in ["offtheshelf", *VARIANTS]:
        rs = results.get(variant, [])
        if not rs:
            lines.append(f"| {LABELS[variant]} | not run |" + " |" * (len(cols) + 1))
            continue
        cells = [_cell([float(r[q][k][n]) for r in rs]) for q, k, n in cols]
        secs = [r["train_seconds"] for r in rs if "train_seconds" in r]
        seeds = ",".join(str(r.get("seed", "–")) for r in rs)
        lines.append(
            f"| {LABELS[variant]} | {seeds} | " + " | ".join(cells) + f" | {_cell(secs)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="Runs and results (not the repo).")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="Comma list, in run order.")
    ap.add_argument("--seeds", default="43,44,45")
    ap.add_argument("--report", action="store_true", help="Only print the table.")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    root = data_root() / "gardens_point"
    a.out.mkdir(parents=True, exist_ok=True)
    if not a.report:
        init = a.out / "init_gp_180x320.pt"
        if not init.exists():
            make_init(init, root)
        ots = a.out / "offtheshelf" / "result.json"
        if not ots.exists():
            ots.parent.mkdir(exist_ok=True)
            res = {"variant": "offtheshelf", **evaluate_checkpoint(init, root)}
            ots.write_text(json.dumps(res, indent=1))
        variants = [v for v in a.variants.split(",") if v]
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown:
            sys.exit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
        for seed in (int(s) for s in a.seeds.split(",")):
            for v in variants:
                train_run(v, seed, a.out, root, init)
                log.info("\n%s", report(a.out))
    print(report(a.out))


if __name__ == "__main__":
    main()
