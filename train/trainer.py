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

import contextlib
import copy
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sfrs_edge.errors import ConfigError, TrainingError
from sfrs_edge.progress import progress as progress_bar

from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .config import TrainConfig
from .correspondences import LocalProjection, initial_projection, projection_head_state
from .datasets import PlaceSet
from .devices import (
    DeviceConfig,
    autocast,
    autocast_dtype,
    grad_scaler,
    resolve_device,
    to_cpu,
    use_channels_last,
)
from .distributed import (
    DistInfo,
    average_gradients,
    barrier,
    check_step_size,
    rank_share,
    wrap,
)
from .evaluation import embed, evaluate
from .final_model import fit_final_pca, pca_image_sample
from .fol import fol_terms
from .frozen import trainable_suffix
from .groundtruth import eval_positives, training_ground_truth
from .health import step_is_finite, unhealthy_reason
from .inputs import FrozenInputs
from .losses import tuple_loss
from .mining import NegativeCache, Tuple, mine_chunk
from .model import SFRSNet
from .offtheshelf import build_offtheshelf
from .region_losses import aggregation_map, extraction_map
from .resume import BEST, FINAL, INIT, LAST, next_epoch, read_last
from .rng_state import capture_rng, restore_rng
from .run_log import LOG_CSV, RunLog, summary_table

log = logging.getLogger(__name__)


class RegionHead(nn.Module):
    """Trainable part of a network: frozen-prefix features → 9 region descriptors.

    With ``maps`` (FoL's losses on) it also returns the final feature map and its extraction
    and aggregation maps, computed inside ``forward`` so that DDP sees every use of the weights.
    """

    def __init__(
        self,
        net: SFRSNet,
        split: int,
        maps: bool = False,
        amp: Callable[[], contextlib.AbstractContextManager] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.split = split
        self.maps = maps
        self.amp = amp or contextlib.nullcontext

    def forward(self, f: torch.Tensor) -> Any:
        with self.amp():  # mixed precision for the backbone only; NetVLAD and losses in fp32
            final = trainable_suffix(self.net.backbone, f, self.split).float()
        regions = self.net.netvlad.regions(final)
        if not self.maps:
            return regions
        return regions, final, extraction_map(final), aggregation_map(self.net, final)


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
        devices: DeviceConfig | None = None,
    ) -> None:
        self.cfg = cfg
        self.dist = dist or DistInfo()
        self.devices = devices or DeviceConfig()
        self.device = resolve_device(self.devices.device, self.dist.local_rank)
        self.amp_dtype = autocast_dtype(self.device, self.devices.precision)
        self.scaler = grad_scaler(self.device, self.amp_dtype)
        self.channels_last = use_channels_last(self.device, self.devices.channels_last)
        check_step_size(cfg.tuples_per_step, self.dist)
        self.run_dir = Path(run_dir)
        self.progress = progress and self.dist.is_main
        self.gt = training_ground_truth(train, cfg.pos_radius, cfg.nonneg_radius)
        self.train_set = self.gt.places
        self.val = val
        self.val_pos = eval_positives(val, cfg.eval_radius) if val is not None else None
        self.tests = {k: (v, eval_positives(v, cfg.eval_radius)) for k, v in (tests or {}).items()}
        # without a val split, collapse is judged on the training places (never on a test set)
        self.train_pos = eval_positives(self.train_set, cfg.eval_radius) if val is None else None
        self.health_ref: float | None = None  # the off-the-shelf health figure
        self.init_path = Path(init) if init else None
        self.student = self._initial_model()
        # the local head's projection, trained by pseudo-correspondences (PCA start)
        self.projection: LocalProjection | None = None
        if cfg.local.enabled:
            images = [*self.train_set.query_paths, *self.train_set.db_paths]
            self.projection = initial_projection(self.student.cpu(), images, cfg.batch_size)
            self._to_device(self.student)
            self.projection.to(self.device)
            self.projection_init = copy.deepcopy(self.projection.state_dict())
        self.init_state = copy.deepcopy(self.student.state_dict())
        self.teacher: SFRSNet | None = None
        self.inputs = FrozenInputs(
            self.student,
            cfg.color_jitter,
            cfg.cache_frozen,
            self.device,
            self.devices.workers,
            self.channels_last,
            self._amp,
        )
        self.fol_maps = cfg.regions.enabled or cfg.local.enabled
        head = RegionHead(self.student, self.inputs.split, self.fol_maps, self._amp)
        self.head = wrap(head, self.dist, self.device)
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

    def _amp(self) -> contextlib.AbstractContextManager:
        """A fresh mixed-precision context for the backbone (no-op in fp32)."""
        return autocast(self.device, self.amp_dtype)

    def _to_device(self, net: SFRSNet) -> SFRSNet:
        net = net.to(self.device)
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

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
        return self._to_device(net).train()

    def _trainable(self) -> list[nn.Parameter]:
        params = [p for p in self.student.parameters() if p.requires_grad]
        if self.projection is not None:
            params += list(self.projection.parameters())
        return params

    def _new_optimizer(self) -> None:
        cfg = self.cfg
        params = self._trainable()
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
        if self.projection is not None:
            self.projection.load_state_dict(self.projection_init)
        self._new_optimizer()

    # ------------------------------------------------------------------------------ training
    def _tuple_paths(self, t: Tuple) -> list[Path]:
        db = self.train_set.db_paths
        ids = [t.positive, *t.negatives.tolist(), *t.difficult.tolist()]
        return [self.train_set.query_paths[t.query], *(db[i] for i in ids)]

    def train_step(
        self, tuples: list[Tuple], g: int, epoch: int | None = None, step: int | None = None
    ) -> dict[str, float]:
        """One SGD step on this rank's share of ``tuples``; returns mean loss parts.

        A step whose loss or any gradient is not finite is not applied: the gradients are
        dropped, a warning names the step and its images, and ``{"skipped": 1}`` is returned.
        """
        cfg = self.cfg
        mine = rank_share(tuples, self.dist)
        paths = [p for t in mine for p in self._tuple_paths(t)]
        feats = self.inputs(self.student, paths, augment=True)
        maps = None
        if self.fol_maps:
            regions, *maps = self.head(feats)
        else:
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
                    teacher = RegionHead(self.teacher, self.inputs.split, amp=self._amp)(f[idx])
            loss, part = tuple_loss(
                student,
                teacher,
                len(t.negatives),
                g,
                cfg.student_temperature,
                cfg.temperature(g),
                cfg.soft_weight,
            )
            if maps is not None:
                final, m_ext, m_agg = (m[start : start + n] for m in maps)
                extra, fol = fol_terms(
                    self.student.netvlad, final, m_ext, m_agg, cfg.regions, cfg.local,
                    self.projection,
                )  # fmt: skip
                loss = loss + extra
                part.update(fol)
            losses.append(loss)
            parts.append(part)
            start += n
        loss = torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:  # fp16: scaled backward, then true gradients for the check
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.projection is not None:  # outside the DDP module: average its gradient here
            average_gradients(self.projection.parameters(), self.dist)
        params = self._trainable()
        if not step_is_finite(loss, params, self.dist, self.device):
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()  # lowers the scale after an fp16 overflow
            names = sorted({Path(p).name for p in paths})
            log.warning(
                "generation %d epoch %s step %s: non-finite loss or gradient, step skipped "
                "(images: %s)",
                g,
                epoch,
                step,
                ", ".join(names),
            )
            return {"skipped": 1.0}
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        out = {"loss": float(loss.detach())}
        for key in ("hard", "soft", "sal", "cel", "local", "matches"):
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
        skipped = steps = 0
        step_time = 0.0
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
                    t0 = time.perf_counter()
                    parts = self.train_step(step, g, epoch, steps)
                    step_time += time.perf_counter() - t0
                    steps += 1
                    if parts.pop("skipped", 0.0):
                        skipped += 1
                    for k, v in parts.items():
                        sums.setdefault(k, []).append(v)
        self.scheduler.step()
        out = {k: float(np.mean(v)) for k, v in sums.items()}
        out["skipped_steps"] = skipped
        out["s_per_step"] = round(step_time / max(steps, 1), 3)  # SGD steps only, no mining
        if skipped:
            self._log("generation %d epoch %d: %d of %d steps skipped", g, epoch, skipped, steps)
        return out

    # ------------------------------------------------------------------------------ evaluation
    def evaluate_all(self, net: SFRSNet, full: bool = False) -> dict[str, float]:
        out: dict[str, float] = {}
        sets = dict(self.tests)
        if self.val is not None:
            sets = {"val": (self.val, self.val_pos), **sets}
        if self.train_pos is not None and not full:
            sets = {"train": (self.train_set, self.train_pos), **sets}
        for name, (places, pos) in sets.items():
            r = evaluate(net, self.inputs, places, pos, self.cfg.batch_size, self.progress, full)
            for n, v in r.items():
                out[f"{name}_r{n}"] = round(v, 2)
        return out

    def health_figure(self, rec: dict[str, float]) -> float | None:
        """The R@5 that judges collapse: val, or the training places without a val split."""
        return rec.get("val_r5", rec.get("train_r5"))

    # ------------------------------------------------------------------------------ state
    def _train_state(self, g: int, epoch: int) -> dict[str, Any]:
        return {
            "generation": g,
            "epoch": epoch,
            "config": self.cfg.to_dict(),
            "teacher": None if self.teacher is None else to_cpu(self.teacher.state_dict()),
            "optimizer": to_cpu(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            **capture_rng(self.rng),
            "neg_cache": self.cache.state_dict(),
            "best": self.best,
            "health_ref": self.health_ref,
            "projection": None if self.projection is None else to_cpu(self.projection.state_dict()),
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
        if self.scaler is not None and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        restore_rng(st, self.rng)
        self.cache.load_state_dict(st["neg_cache"])
        self.best = dict(st["best"])
        self.health_ref = st.get("health_ref")
        if self.projection is not None:
            self.projection.load_state_dict(st["projection"])
        self.run_log.rows = list(st["history"])

    def _save_epoch(self, g: int, epoch: int, row: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        prov = {"kind": "sfrs-epoch", "generation": g, "epoch": epoch, "recall": row}
        extra = {"train_state": self._train_state(g, epoch), **self._local_extra()}
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
            self.health_ref = self.health_figure(row)
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

    def _local_extra(self) -> dict[str, Any]:
        """The trained local head (key ``local``, as ``init --rerank`` writes it), if any."""
        if self.projection is None:
            return {}
        return {"local": projection_head_state(self.projection, self.student)}

    def _update_best(self, g: int, epoch: int, rec: dict[str, float]) -> None:
        why = unhealthy_reason(
            self.student.state_dict(),
            rec,
            self.health_figure(rec),
            self.health_ref,
            self.cfg.collapse_ratio,
        )
        if why is not None:
            self._log("generation %d epoch %d not kept as the best: %s", g, epoch, why)
            return
        r5 = rec.get("val_r5")
        better = r5 is None or r5 > self.best["r5"]  # no val set: the latest (healthy) is kept
        if not better:
            return
        self.best = {"r5": -1.0 if r5 is None else r5, "generation": g, "epoch": epoch, **rec}
        if self.dist.is_main:
            prov = {"kind": "sfrs-best", "generation": g, "epoch": epoch, "recall": rec}
            save_checkpoint(self.student, self.run_dir / BEST, prov, self._local_extra())

    def _finish(self) -> dict[str, Any]:
        """Fit PCA whitening on the best model and write the export-ready ``checkpoint.pt``."""
        if not self.dist.is_main:
            return {"best": self.best}
        if "generation" not in self.best:
            raise TrainingError(
                f"{self.run_dir}: no epoch gave a usable model (every one diverged or collapsed, "
                f"see {self.run_dir / LOG_CSV}); try a lower --lr"
            )
        net, _ = load_checkpoint(self.run_dir / BEST)
        net = self._to_device(net)
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
            "ran_on": {
                **self.devices.to_dict(),
                "resolved": str(self.device),
                "autocast": str(self.amp_dtype).replace("torch.", ""),
                "processes": self.dist.world_size,
            },
        }
        local = read_checkpoint(self.run_dir / BEST).get("local")
        save_checkpoint(net, self.run_dir / FINAL, prov, {"local": local} if local else None)
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
