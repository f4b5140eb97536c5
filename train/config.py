"""TrainConfig: every constant of SFRS training, defaults = the authors' recipe (SFRS_METHOD.md §3.1).

Saved in every training checkpoint, so a run can be resumed and audited.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sfrs_edge.errors import ConfigError


@dataclass
class TrainConfig:
    """SFRS generational training settings (units of radii = the dataset's position units)."""

    # model
    backbone: str = "efficientnet_lite0"
    num_clusters: int = 64
    input_height: int = 0  # 0: the backbone's default
    input_width: int = 0
    weights: str | None = None  # backbone ImageNet weights file (vgg16 needs one)
    first_trainable: int | None = None  # vgg16: module index (24 = conv5); lite0: block (11)
    kmeans_images: int = 500
    descriptors_per_image: int = 100
    # ground truth (§2.3)
    pos_radius: float = 10.0
    nonneg_radius: float = 25.0
    eval_radius: float = 25.0
    # generations and epochs (§3.1, §3.2)
    generations: int = 4
    epochs: int = 5
    gen0_one_epoch: bool = True  # the authors' quirk: generation 0 trains only its last epoch
    # optimiser
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.001
    step_size: int = 5
    gamma: float = 0.5
    tuples_per_step: int = 4  # global batch: 1 tuple per GPU × 4 GPUs
    # losses (§3.4)
    temperatures: list[float] = field(default_factory=lambda: [0.07, 0.07, 0.06, 0.05])
    soft_weight: float = 0.5
    # mining (§2.4)
    neg_num: int = 10
    neg_pool: int = 1000
    pos_num: int = 10
    pos_pool: int = 20
    cache_size: int = 1000  # queries per mining chunk (re-embedding before each)
    # data / speed
    color_jitter: tuple[float, float, float, float] | None = (0.7, 0.7, 0.7, 0.5)
    cache_frozen: bool = True  # cache frozen-layer outputs (only used when color_jitter is None)
    batch_size: int = 8  # embedding batch size
    # PCA whitening fitted at the end (§1.4)
    pca_dim: int | None = 4096
    pca_images: int = 10000
    whiten: bool = True
    seed: int = 43

    def __post_init__(self) -> None:
        if self.color_jitter is not None:
            self.color_jitter = tuple(float(v) for v in self.color_jitter)
        self.temperatures = [float(t) for t in self.temperatures]
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` on values training cannot use."""
        checks = [
            (self.generations >= 1, "generations must be at least 1"),
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.neg_num >= 1, "neg-num must be at least 1"),
            (self.pos_num >= 1, "pos-num must be at least 1"),
            (self.pos_pool >= self.pos_num, "pos-pool must be at least pos-num"),
            (self.neg_pool >= self.neg_num, "neg-pool must be at least neg-num"),
            (self.tuples_per_step >= 1, "tuples-per-step must be at least 1"),
            (self.cache_size >= 1, "cache-size must be at least 1"),
            (0 < self.pos_radius <= self.nonneg_radius, "need 0 < pos-radius <= nonneg-radius"),
            (self.eval_radius > 0, "eval-radius must be positive"),
            (self.lr > 0, "lr must be positive"),
            (all(t > 0 for t in self.temperatures), "temperatures must be positive"),
            (self.soft_weight >= 0, "soft-weight must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"training config: {msg}")

    def temperature(self, generation: int) -> float:
        """Teacher temperature of a generation (the last one repeats beyond the list)."""
        return self.temperatures[min(generation, len(self.temperatures) - 1)]

    @property
    def student_temperature(self) -> float:
        """τ0: the student's (and the hard loss's) fixed temperature."""
        return self.temperatures[0]

    def epochs_of(self, generation: int) -> range:
        """Epoch indices trained in a generation (gen 0 = last epoch only with the quirk)."""
        start = self.epochs - 1 if generation == 0 and self.gen0_one_epoch else 0
        return range(start, self.epochs)

    @property
    def caches_frozen(self) -> bool:
        return self.cache_frozen and self.color_jitter is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"training config: unknown keys {unknown}")
        return cls(**d)
