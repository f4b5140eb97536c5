"""SFRS generational training: the loop (docs/DESIGN.md §5.2).

Generation g: teacher ← frozen copy of the student's last weights (g ≥ 1); student ← the
initial weights (ImageNet backbone + k-means NetVLAD); new optimiser. Each epoch: chunks of
queries, each preceded by re-embedding the training set with the current student and mining;
then validation recall, a checkpoint, and the best model by val R@5 across generations.
At the end PCA whitening is fitted on the best model and ``checkpoint.pt`` is written
(``final_model.py``). Resuming: ``resume.py`` and ``rng_state.py``; the log: ``run_log.py``.
Progress goes to the ``logging`` logger of this module (rank 0 only).
"""

from __future__ import annotations

import copy
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sfrs_edge.errors import ConfigError
from sfrs_edge.progress import progress as progress_bar

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .datasets import PlaceSet
from .distributed import DistInfo, barrier, check_step_size, rank_share, wrap
from .evaluation import embed, evaluate
from .final_model import fit_final_pca, pca_image_sample
from .frozen import trainable_suffix
from .groundtruth import eval_positives, training_ground_truth
from .inputs import FrozenInputs
from .losses import tuple_loss
from .mining import NegativeCache, Tuple, mine_chunk
from .model import SFRSNet
from .offtheshelf import build_offtheshelf
from .resume import BEST, FINAL, INIT, LAST, next_epoch, read_last
from .rng_state import capture_rng, restore_rng
from .run_log import LOG_CSV, RunLog, summary_table

log = logging.getLogger(__name__)


class RegionHead(nn.Module):
    """Trainable part of a network: frozen-prefix features → 9 region descriptors."""

    def __init__(self, net: SFRSNet, split: int) -> None:
        super().__init__()
        self.net = net
        self.split = split

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net.netvlad.regions(trainable_suffix(self.net.backbone, f, self.split))


def _strip_pca(net: SFRSNet) -> SFRSNet:
    net.pca = None
    net.config.pca_dim = None
    return net


class Trainer:
    """Runs (or resumes) SFRS training into ``run_dir``."""

    def __init__(
        self,
        cfg: TrainConfig,
        train: PlaceSet,
        run_dir: str | os.PathLike,
        val: PlaceSet | None = None,
        tests: dict[str, PlaceSet] | None = None,
        init: str | os.PathLike | None = None,
        dist: DistInfo | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.dist = dist or DistInfo()
        check_step_size(cfg.tuples_per_step, self.dist)
        self.run_dir = Path(run_dir)
        self.progress = progress and self.dist.is_main
        self.gt = training_ground_truth(train, cfg.pos_radius, cfg.nonneg_radius)
        self.train_set = self.gt.places
        self.val = val
        self.val_pos = eval_positives(val, cfg.eval_radius) if val is not None else None
        self.tests = {k: (v, eval_positives(v, cfg.eval_radius)) for k, v in (tests or {}).items()}
        self.init_path = Path(init) if init else None
        self.student = self._initial_model()
        self.init_state = copy.deepcopy(self.student.state_dict())
        self.teacher: SFRSNet | None = None
        self.inputs = FrozenInputs(self.student, cfg.color_jitter, cfg.cache_frozen)
        self.head = wrap(RegionHead(self.student, self.inputs.split), self.dist)
        self.cache = NegativeCache()
        self.rng = np.random.default_rng(cfg.seed)
        self.best: dict[str, Any] = {"r5": -1.0}
        self.run_log = RunLog(self.run_dir / LOG_CSV if self.dist.is_main else None)
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    # ------------------------------------------------------------------------------ set-up
    @property
    def history(self) -> list[dict[str, Any]]:
        """The log's rows so far."""
        return self.run_log.rows

    def _log(self, msg: str, *args: Any) -> None:
        if self.dist.is_main:
            log.info(msg, *args)

    def _initial_model(self) -> SFRSNet:
        """ImageNet backbone + k-means NetVLAD (no PCA): every generation's starting point."""
        cfg = self.cfg
        path = self.init_path or self.run_dir / INIT
        if not path.exists():
            if self.init_path is not None:
                raise ConfigError(f"{path}: --init checkpoint not found")
            if self.dist.is_main:
                images = [*self.train_set.query_paths, *self.train_set.db_paths]
                icfg = cfg.init_config()
                used = min(len(images), icfg.kmeans.max_images)
                self._log("k-means initialisation on %d images", used)
                net, prov = build_offtheshelf(images, icfg)
                save_checkpoint(net, path, prov)
            barrier(self.dist)
        net, _ = load_checkpoint(path)
        net = _strip_pca(net)
        net.backbone.set_trainable(cfg.first_trainable)
        return net.train()

    def _new_optimizer(self) -> None:
        cfg = self.cfg
        params = [p for p in self.student.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, cfg.step_size, cfg.gamma)

    def start_generation(self, g: int) -> None:
        """Teacher ← frozen copy of the student (g ≥ 1); student ← initial weights; new optimiser."""
        if g >= 1:
            self.teacher = copy.deepcopy(self.student).eval()
            for p in self.teacher.parameters():
                p.requires_grad = False
        else:
            self.teacher = None
        self.student.load_state_dict(self.init_state)
        self._new_optimizer()

    # ------------------------------------------------------------------------------ training
    def _tuple_paths(self, t: Tuple) -> list[Path]:
        db = self.train_set.db_paths
        ids = [t.positive, *t.negatives.tolist(), *t.difficult.tolist()]
        return [self.train_set.query_paths[t.query], *(db[i] for i in ids)]

    def train_step(self, tuples: list[Tuple], g: int) -> dict[str, float]:
        """One SGD step on this rank's share of ``tuples``; returns mean loss parts."""
        cfg = self.cfg
        mine = rank_share(tuples, self.dist)
        paths = [p for t in mine for p in self._tuple_paths(t)]
        feats = self.inputs(self.student, paths, augment=True)
        regions = self.head(feats)
        losses, parts = [], []
        start = 0
        for t in mine:
            n = 2 + len(t.negatives) + len(t.difficult)
            student = regions[start : start + n]
            teacher = None
            if self.teacher is not None:
                f = feats[start : start + n]
                idx = [0, *range(2 + len(t.negatives), n)]
                with torch.no_grad():
                    teacher = RegionHead(self.teacher, self.inputs.split)(f[idx])
            loss, part = tuple_loss(
                student,
                teacher,
                len(t.negatives),
                g,
                cfg.student_temperature,
                cfg.temperature(g),
                cfg.soft_weight,
            )
            losses.append(loss)
            parts.append(part)
            start += n
        loss = torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        out = {"loss": float(loss.detach())}
        for key in ("hard", "soft"):
            vals = [p[key] for p in parts if key in p]
            if vals:
                out[key] = float(np.mean(vals))
        return out

    def train_epoch(self, g: int, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        ts = self.train_set
        order = np.random.default_rng(cfg.seed + epoch).permutation(ts.num_queries)
        chunks = [order[i : i + cfg.cache_size] for i in range(0, len(order), cfg.cache_size)]
        sums: dict[str, list[float]] = {}
        done = 0
        label = f"gen {g} epoch {epoch}"
        with progress_bar(label, unit="tuples", enabled=self.progress) as report:
            self.student.train()
            for chunk in chunks:
                desc = embed(
                    self.student,
                    self.inputs,
                    [*ts.query_paths, *ts.db_paths],
                    cfg.batch_size,
                    self.progress,
                    "mining: embed",
                )
                q_desc, db_desc = desc[: ts.num_queries], desc[ts.num_queries :]
                tuples = mine_chunk(
                    chunk,
                    q_desc,
                    db_desc,
                    self.gt,
                    self.cache,
                    self.rng,
                    cfg.neg_num,
                    cfg.neg_pool,
                    cfg.pos_num,
                    cfg.pos_pool,
                )
                self.student.train()
                for s in range(0, len(tuples), cfg.tuples_per_step):
                    step = tuples[s : s + cfg.tuples_per_step]
                    done += len(step)
                    report(done, len(order))
                    if not rank_share(step, self.dist):
                        continue
                    parts = self.train_step(step, g)
                    for k, v in parts.items():
                        sums.setdefault(k, []).append(v)
        self.scheduler.step()
        return {k: float(np.mean(v)) for k, v in sums.items()}

    # ------------------------------------------------------------------------------ evaluation
    def evaluate_all(self, net: SFRSNet, full: bool = False) -> dict[str, float]:
        out: dict[str, float] = {}
        sets = dict(self.tests)
        if self.val is not None:
            sets = {"val": (self.val, self.val_pos), **sets}
        for name, (places, pos) in sets.items():
            r = evaluate(net, self.inputs, places, pos, self.cfg.batch_size, self.progress, full)
            for n, v in r.items():
                out[f"{name}_r{n}"] = round(v, 2)
        return out

    # ------------------------------------------------------------------------------ state
    def _train_state(self, g: int, epoch: int) -> dict[str, Any]:
        return {
            "generation": g,
            "epoch": epoch,
            "config": self.cfg.to_dict(),
            "teacher": None if self.teacher is None else self.teacher.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            **capture_rng(self.rng),
            "neg_cache": self.cache.state_dict(),
            "best": self.best,
            "history": self.history,
        }

    def _load_train_state(self, st: dict[str, Any]) -> None:
        if st["teacher"] is not None:
            self.teacher = copy.deepcopy(self.student).eval()
            self.teacher.load_state_dict(st["teacher"])
            for p in self.teacher.parameters():
                p.requires_grad = False
        self._new_optimizer()
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        restore_rng(st, self.rng)
        self.cache.load_state_dict(st["neg_cache"])
        self.best = dict(st["best"])
        self.run_log.rows = list(st["history"])

    def _save_epoch(self, g: int, epoch: int, row: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        prov = {"kind": "sfrs-epoch", "generation": g, "epoch": epoch, "recall": row}
        extra = {"train_state": self._train_state(g, epoch)}
        ckdir = self.run_dir / "checkpoints"
        save_checkpoint(self.student, ckdir / f"gen{g}_epoch{epoch}.pt", prov, extra)
        save_checkpoint(self.student, self.run_dir / LAST, prov, extra)

    # ------------------------------------------------------------------------------ main loop
    def _resume_point(self, resume: bool) -> tuple[int, int | None]:
        """(generation, last completed epoch or None for a fresh generation)."""
        ckpt = read_last(self.run_dir, self.cfg) if resume else None
        if ckpt is None:
            if resume:
                self._log("--resume: no %s, starting from the beginning", self.run_dir / LAST)
            return 0, None
        st = ckpt["train_state"]
        self.student.load_state_dict(ckpt["state_dict"])
        self._load_train_state(st)
        g, e = st["generation"], st["epoch"]
        self._log("resuming after generation %d epoch %d", g, e)
        return next_epoch(self.cfg, g, e)

    def run(self, resume: bool = False, max_epochs: int | None = None) -> dict[str, Any]:
        """Train all generations (continuing a stopped run with ``resume``); returns a summary.

        ``max_epochs``: stop (resumably) after training that many epochs in this call.
        """
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        g0, done = self._resume_point(resume)
        trained = 0
        if g0 == 0 and done is None:
            self.run_log.rows = []
            row = {"generation": "off-the-shelf", "epoch": "", **self.evaluate_all(self.student)}
            self.run_log.append(row)
            self._log("off-the-shelf: %s", row)
        for g in range(g0, cfg.generations):
            if done is None or g != g0:
                self.start_generation(g)
            for epoch in cfg.epochs_of(g):
                if g == g0 and done is not None and epoch <= done:
                    continue
                if max_epochs is not None and trained >= max_epochs:
                    return {"best": self.best, "history": self.history, "stopped": (g, epoch)}
                trained += 1
                t0 = time.time()
                losses = self.train_epoch(g, epoch)
                rec = self.evaluate_all(self.student)
                row = {
                    "generation": g,
                    "epoch": epoch,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    **{k: round(v, 5) for k, v in losses.items()},
                    **rec,
                    "seconds": round(time.time() - t0, 1),
                }
                self._update_best(g, epoch, rec)
                self.run_log.append(row)
                self._save_epoch(g, epoch, row)
                self._log("gen %d epoch %d: %s", g, epoch, row)
        barrier(self.dist)
        return self._finish()

    def _update_best(self, g: int, epoch: int, rec: dict[str, float]) -> None:
        r5 = rec.get("val_r5")
        better = r5 is None or r5 > self.best["r5"]  # no val set: the latest is kept
        if not better:
            return
        self.best = {"r5": -1.0 if r5 is None else r5, "generation": g, "epoch": epoch, **rec}
        if self.dist.is_main:
            prov = {"kind": "sfrs-best", "generation": g, "epoch": epoch, "recall": rec}
            save_checkpoint(self.student, self.run_dir / BEST, prov)

    def _finish(self) -> dict[str, Any]:
        """Fit PCA whitening on the best model and write the export-ready ``checkpoint.pt``."""
        if not self.dist.is_main:
            return {"best": self.best}
        net, _ = load_checkpoint(self.run_dir / BEST)
        ts = self.train_set
        images = pca_image_sample([*ts.query_paths, *ts.db_paths], self.cfg)
        pca_dim = fit_final_pca(net, self.inputs, images, self.cfg, self.progress)
        prov = {
            "kind": "sfrs",
            "generation": self.best.get("generation"),
            "epoch": self.best.get("epoch"),
            "val_recall": {k: v for k, v in self.best.items() if k.startswith("val_")},
            "selected_by": "val R@5" if self.val is not None else "last epoch (no val set)",
            "train": self.cfg.to_dict(),
            "train_set": self.train_set.summary(),
            "images": str(Path(ts.db_paths[0]).parent.resolve()),
            "pca_images": len(images) if pca_dim else 0,
        }
        save_checkpoint(net, self.run_dir / FINAL, prov)
        if pca_dim:
            row = {"generation": f"final+PCA{pca_dim}", "epoch": self.best.get("epoch", "")}
            self.run_log.append({**row, **self.evaluate_all(net, full=True)})
        summary = {
            "best": self.best,
            "history": self.history,
            "checkpoint": str(self.run_dir / FINAL),
        }
        self._log("%s", summary_table(self.history))
        return summary
