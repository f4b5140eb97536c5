"""Settings of making a model, as small nested dataclasses saved with what they make.

:class:`~.model.ModelConfig` (architecture and input) is the one place for model fields;
:class:`InitConfig` (``sfrs-edge init``) and :class:`TrainConfig` (``sfrs-edge train``) hold
one, plus the k-means settings (:class:`KMeansConfig`) they share. Each is saved in the
checkpoint it produces (as a nested dict). The flat layout of pre-release checkpoints is not
read: ``from_dict`` says so in one line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from sfrs_edge.errors import ConfigError

from .model import ModelConfig

_MODEL_FIELDS = {f.name for f in fields(ModelConfig)}


def _nested(d: dict[str, Any], what: str, known: set[str]) -> dict[str, Any]:
    """``d`` with its ``model``/``kmeans`` sections as dataclasses; unknown keys fail."""
    d = dict(d)
    flat = sorted((set(d) & _MODEL_FIELDS) - known)
    if flat and "model" not in d:
        raise ConfigError(
            f"{what}: saved in the flat layout of an sfrs-edge pre-release (model fields "
            f"{', '.join(flat)} at the top level), which is no longer read; make it again "
            "(`sfrs-edge init`, or a new training run)"
        )
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"{what}: unknown keys {unknown}")
    try:
        return {
            **d,
            "model": ModelConfig(**dict(d.get("model") or {})),
            "kmeans": KMeansConfig(**dict(d.get("kmeans") or {})),
        }
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from exc


class SavedConfig:
    """``to_dict``/``from_dict`` of the configs saved with checkpoints (nested dicts)."""

    what = "config"  # names the config in error messages

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """The config saved as ``d`` (nested, as :meth:`to_dict` writes it)."""
        return cls(**_nested(d, cls.what, {f.name for f in fields(cls)}))


@dataclass
class KMeansConfig:
    """NetVLAD cluster initialisation: k-means on local descriptors sampled from images
    (the authors' recipe, docs/DESIGN.md §5.1: 100 descriptors from each of 500 images)."""

    descriptors_per_image: int = 100
    max_images: int = 500
    iters: int = 100


@dataclass
class InitConfig(SavedConfig):
    """Settings of ``sfrs-edge init`` (an off-the-shelf model); saved in its provenance."""

    what = "init config"

    model: ModelConfig = field(default_factory=ModelConfig)
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    weights: str | None = None  # backbone ImageNet weights file (required for vgg16)
    seed: int = 43
    batch_size: int = 8


@dataclass
class TrainConfig(SavedConfig):
    """SFRS generational training settings (units of radii = the dataset's position units)."""

    what = "training config"

    # the model trained; its PCA whitening (docs/DESIGN.md §5.5) is fitted at the end on ``pca_images``
    model: ModelConfig = field(default_factory=lambda: ModelConfig(pca_dim=4096))
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    weights: str | None = None  # backbone ImageNet weights file (vgg16 needs one)
    first_trainable: int | None = None  # vgg16: module index (24 = conv5); lite0: block (11)
    # ground truth (§5.3)
    pos_radius: float = 10.0
    nonneg_radius: float = 25.0
    eval_radius: float = 25.0
    # generations and epochs (§5.2)
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
    # losses (§5.4)
    temperatures: list[float] = field(default_factory=lambda: [0.07, 0.07, 0.06, 0.05])
    soft_weight: float = 0.5
    # mining (§5.3)
    neg_num: int = 10
    neg_pool: int = 1000
    pos_num: int = 10
    pos_pool: int = 20
    cache_size: int = 1000  # queries per mining chunk (re-embedding before each)
    # data / speed
    color_jitter: tuple[float, float, float, float] | None = (0.7, 0.7, 0.7, 0.5)
    cache_frozen: bool = True  # cache frozen-layer outputs (only used when color_jitter is None)
    batch_size: int = 8  # embedding batch size
    pca_images: int = 10000
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

    def init_config(self) -> InitConfig:
        """The off-the-shelf start of every generation: this model without PCA."""
        return InitConfig(
            model=replace(self.model, pca_dim=None),
            kmeans=self.kmeans,
            weights=self.weights,
            seed=self.seed,
            batch_size=self.batch_size,
        )
