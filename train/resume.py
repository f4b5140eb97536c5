"""Where a stopped run continues: the run folder's files and the next epoch to train.

Every epoch writes ``last.pt`` with the weights and the whole training state (teacher,
optimiser, scheduler, generators, negative cache, best so far, log rows); ``--resume`` reads it
back only if the run's configuration is unchanged, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sfrs_edge.errors import ConfigError

from .checkpoint import read_checkpoint
from .config import TrainConfig

LAST = "last.pt"  # after every epoch, with the training state
BEST = "model_best.pt"  # best by val R@5 (or the latest without a val set)
FINAL = "checkpoint.pt"  # the best model with PCA whitening: what `sfrs-edge export` reads
INIT = "init.pt"  # the off-the-shelf start of every generation


def read_last(run_dir: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """The checkpoint dict of ``run_dir/last.pt`` (None if there is none).

    Raises :class:`ConfigError` if it was trained with a different configuration, or saved in
    a layout this version does not read.
    """
    last = run_dir / LAST
    if not last.exists():
        return None
    ckpt = read_checkpoint(last)
    try:
        saved = TrainConfig.from_dict(ckpt["train_state"]["config"])
    except ConfigError as exc:
        raise ConfigError(f"{last}: {exc}; cannot resume") from None
    if saved != cfg:
        raise ConfigError(f"{last}: was trained with a different configuration; cannot resume")
    return ckpt


def next_epoch(cfg: TrainConfig, generation: int, epoch: int) -> tuple[int, int | None]:
    """After ``epoch`` of ``generation`` is done: (generation to run, last epoch done in it, or
    None when that generation starts afresh)."""
    if epoch + 1 in cfg.epochs_of(generation):
        return generation, epoch
    return generation + 1, None
