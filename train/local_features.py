"""Local features for re-ranking, taken from the regions the NetVLAD aggregation relies on.

Two kinds (``LocalConfig.descriptor``):

- ``patches`` (default): Patch-NetVLAD descriptors (:mod:`.patch_vlad`): the network's own
  NetVLAD residuals summed over windows of ``patch_sizes`` cells, intra- and L2-normalised,
  reduced by the head's ``projection`` (PCA-whitening fitted at ``init --rerank``), one segment
  of the output per window size;
- ``cells``: single backbone cells (the earlier variant, kept for comparison), described below.

FoL (Wang et al., AAAI 2025) keeps local features only where its aggregator puts mass. NetVLAD
has no dustbin (soft assignments sum to 1 everywhere), so the weight of a location here is one
of (:data:`WEIGHT_MAPS`):

- ``contribution``: how much the location's soft-assigned residuals point along the final
  descriptor g, Σ_k a_k(x)·⟨x̂ − c_k, u_k⟩ / (‖V_k‖·Z) with u = g (or Wᵀg_w after PCA
  whitening, which is linear): the share of the global similarity that comes from x;
- ``confidence``: max_k a_k(x), how sharply the location is assigned;
- ``norm``: ‖x‖ of the backbone activation before L2 normalisation;
- ``uniform``: every location alike (region selection off; with ``num_features`` = all
  locations this is the Patch-NetVLAD-like "all locations" variant).

The top ``num_features`` locations after max-pool non-maximum suppression are kept (static
shapes: suppressed cells are demoted, not removed, so TopK always has enough). Their
descriptors are the backbone's dense features (``layer``: ``fine`` = an earlier stride-16 map,
``final`` = the map NetVLAD aggregates), L2-normalised, projected by a PCA fitted at ``init``
and L2-normalised again, emitted as float16 with pixel coordinates in the network input.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sfrs_edge.errors import ConfigError

from .backbones import VGG16, EfficientNetLite0
from .norms import l2_normalize
from .patch_vlad import (
    fit_whitening,
    grid_size,
    normalize_vlad,
    residual_map,
    window_centres,
    window_sums,
)

log = logging.getLogger(__name__)
WEIGHT_MAPS = ("contribution", "confidence", "norm", "uniform")
LAYERS = ("fine", "final")
DESCRIPTORS = ("patches", "cells")
LITE0_FINE_BLOCK = 10  # last block of stage 5: 112 channels at stride 16
SUPPRESSED = 2.0  # subtracted from non-peak cells of the [0, 1]-scaled map: rank after peaks


@dataclass
class LocalConfig:
    """How local features are selected and described (saved in the checkpoint and the model).

    ``descriptor``: ``patches`` (windows of ``patch_sizes`` cells, :mod:`.patch_vlad`) or
    ``cells``. ``num_features``: locations kept per patch size (cells: in total), the top ones
    by ``weight`` after NMS of ``nms_radius`` (in cells of that size's window grid); all of them
    when there are fewer. ``dim``: size after the projection; ``whiten``: PCA-whitening (else
    plain PCA). ``layer`` applies to cells only (patches aggregate the final map, as NetVLAD).
    """

    # the default is the measured best with RerankConfig's defaults, chosen on the tuning pairs
    # only (docs/RERANKING.md): patch descriptors of 1, 2 and 5 cells, PCA-whitened
    descriptor: str = "patches"
    patch_sizes: tuple[int, ...] = (1, 2, 5)
    num_features: int = 128
    dim: int = 64
    whiten: bool = True
    weight: str = "contribution"
    layer: str = "final"  # measured: "fine" (stride 16) re-ranks worse (docs/RERANKING.md)
    nms_radius: int = 1  # cells; 0 disables suppression

    def __post_init__(self) -> None:
        self.patch_sizes = tuple(int(s) for s in self.patch_sizes)  # JSON gives lists
        if self.descriptor not in DESCRIPTORS:
            raise ConfigError(
                f"local descriptor must be one of {DESCRIPTORS}, got {self.descriptor!r}"
            )
        if (
            not self.patch_sizes
            or min(self.patch_sizes) < 1
            or len(set(self.patch_sizes)) != len(self.patch_sizes)
        ):
            raise ConfigError(f"patch_sizes must be distinct positive ints, got {self.patch_sizes}")
        if self.weight not in WEIGHT_MAPS:
            raise ConfigError(f"local weight map must be one of {WEIGHT_MAPS}, got {self.weight!r}")
        if self.layer not in LAYERS:
            raise ConfigError(f"local layer must be one of {LAYERS}, got {self.layer!r}")
        if self.num_features < 1 or self.dim < 1 or self.nms_radius < 0:
            raise ConfigError("num_features and dim must be positive, nms_radius not negative")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["patch_sizes"] = list(self.patch_sizes)
        return d

    @property
    def sizes(self) -> tuple[int, ...]:
        """Window sizes of the output's segments (cells: one segment of size 1)."""
        return self.patch_sizes if self.descriptor == "patches" else (1,)

    def fitted_to(self, map_size: tuple[int, int]) -> LocalConfig:
        """These settings for a final map of ``map_size`` cells: patch sizes larger than the
        map are dropped, with a warning (a small input, e.g. 96 × 160 px = 3 × 5 Lite0 cells,
        has no 5 × 5 window); ConfigError when none fits."""
        if self.descriptor != "patches":
            return self
        h, w = (int(v) for v in map_size)
        fit = tuple(s for s in self.patch_sizes if s <= min(h, w))
        if not fit:
            raise ConfigError(
                f"no patch size of {list(self.patch_sizes)} fits the {h}x{w}-cell feature map; "
                "use smaller patch_sizes or a larger input"
            )
        if fit != self.patch_sizes:
            log.warning(
                "patch sizes %s do not fit the %dx%d-cell feature map of this input size; "
                "the local head uses %s",
                [s for s in self.patch_sizes if s not in fit],
                h,
                w,
                list(fit),
            )
        return replace(self, patch_sizes=fit)


def backbone_maps(backbone: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fine, final) feature maps of normalised images: final is what NetVLAD aggregates."""
    if isinstance(backbone, EfficientNetLite0):
        y = F.relu6(backbone._bn0(backbone._conv_stem(x)))
        fine = y
        for i, block in enumerate(backbone._blocks):
            y = block(y)
            if i == LITE0_FINE_BLOCK:
                fine = y
        return fine, y
    if isinstance(backbone, VGG16):  # conv5_3 is already stride 16
        y = backbone(x)
        return y, y
    raise ConfigError(f"no local-feature layer known for {type(backbone).__name__}")


@torch.no_grad()
def final_map_size(net: nn.Module) -> tuple[int, int]:
    """(rows, cols) of the map NetVLAD aggregates at the net's input size (one probe pass)."""
    h, w = net.config.preprocessing().size
    p = next(net.parameters())
    final = backbone_maps(net.backbone, torch.zeros(1, 3, h, w, dtype=p.dtype))[1]
    return int(final.shape[-2]), int(final.shape[-1])


def fine_channels(backbone: str) -> int:
    return {"efficientnet_lite0": 112, "vgg16": 512}[backbone]


def weight_map(net: nn.Module, final: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-location weight (N, H, W) of the final feature map ``final`` (N, D, H, W).

    Static shapes only (sizes as Python ints, -1 for the batch): the exported graph must pass
    the TensorRT check of :mod:`sfrs_edge.export.trt_compat` (no Shape arithmetic).
    """
    d, h, w = (int(v) for v in final.shape[1:])
    if kind == "uniform":
        return final[:, 0].float() * 0.0
    if kind == "norm":
        return torch.sqrt((final.float() ** 2).sum(1))
    vlad = net.netvlad
    k = vlad.num_clusters
    xn = vlad.local_features(final).float()
    logits = F.conv2d(xn, vlad.conv.weight.float())
    assign = torch.softmax(logits, dim=1)  # N,K,H,W
    if kind == "confidence":
        return torch.amax(assign, dim=1)
    a = assign.reshape(-1, k, h * w)
    feats = xn.reshape(-1, d, h * w)
    centroids = vlad.centroids.float()
    raw = torch.matmul(a, feats.transpose(1, 2)) - a.sum(2, keepdim=True) * centroids  # N,K,D
    # clamped before the sqrt (same values): finite gradients for empty clusters (train/norms.py)
    knorm = torch.sqrt((raw * raw).sum(-1).clamp_min(1e-24))  # N,K
    vn = raw / knorm.unsqueeze(-1)
    z = torch.sqrt((vn * vn).sum((1, 2)).clamp_min(1e-24))  # N
    g = vn.reshape(-1, k * d) / z.unsqueeze(1)
    if net.pca is not None:  # ⟨W c, normalize(Wg+b)⟩ = ⟨c, Wᵀ g_w⟩ (fp32 even in fp16 exports)
        wt, b = net.pca.linear.weight.float(), net.pca.linear.bias.float()
        g = l2_normalize(g @ wt.t() + b, dim=-1) @ wt
    u = g.reshape(-1, k, d) / (knorm * z.unsqueeze(1)).unsqueeze(-1)  # N,K,D
    along = torch.matmul(u, feats) - (u * centroids).sum(-1, keepdim=True)  # N,K,HW
    return (a * along).sum(1).reshape(-1, h, w)


def _interp_matrix(n_out: int, n_in: int) -> torch.Tensor:
    """(n_out, n_in) linear-interpolation weights (half-pixel centres, edges clamped): a
    resize as a constant MatMul, which keeps the graph free of Resize shape inputs."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        src = min(max((i + 0.5) * n_in / n_out - 0.5, 0.0), n_in - 1)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, n_in - 1)
        m[i, i0] += 1 - (src - i0)
        m[i, i1] += src - i0
    return torch.from_numpy(m)


class LocalHead(nn.Module):
    """Weight map → NMS → top-N → projected descriptors (float16) + pixel coordinates.

    ``projection`` (dim, in_dim) and ``mean`` (in_dim,) are the head's learnable interface
    (docs/RERANKING.md, "Local head interface"): a descriptor is
    normalize(projection · (v − mean)) of the L2-normalised input v (a cell's backbone feature,
    or a window's normalised NetVLAD, in_dim = K·C). ``init`` fits them as a PCA(-whitening);
    training may replace them (keep them in :func:`head_state`, the export emits them as is).
    """

    def __init__(self, config: LocalConfig, in_dim: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.config = config
        self.input_size = input_size
        self.register_buffer("mean", torch.zeros(in_dim))
        self.projection = nn.Parameter(torch.eye(in_dim)[: config.dim].clone(), requires_grad=False)

    def set_projection(self, mean: np.ndarray, projection: np.ndarray) -> None:
        """Install a fitted (mean, projection (dim, in_dim))."""
        with torch.no_grad():
            self.mean = torch.as_tensor(mean, dtype=torch.float32).clone()  # a buffer still
            self.projection = nn.Parameter(
                torch.as_tensor(projection, dtype=torch.float32).clone(), requires_grad=False
            )

    def select(self, weights: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Flat indices (N, P) of the kept cells of a (N, H, W) weight map resized to ``size``."""
        h, w = (int(v) for v in size)
        if tuple(int(v) for v in weights.shape[-2:]) != (h, w):
            rh = _interp_matrix(h, int(weights.shape[-2]))
            rw = _interp_matrix(w, int(weights.shape[-1]))
            weights = torch.matmul(torch.matmul(rh, weights), rw.t())
        r = self.config.nms_radius
        if r:  # cells below their neighbourhood's maximum rank after every peak
            # Scale each map to [0, 1] first: contribution weights are ~1/HW, and subtracting a
            # constant far above that scale leaves float32 too little resolution to order the
            # suppressed cells (torch and onnxruntime then break the ties differently).
            hi = weights.amax(dim=(1, 2), keepdim=True)
            lo = (weights * -1.0).amax(dim=(1, 2), keepdim=True) * -1.0  # Mul + ReduceMax only
            weights = (weights - lo) / (hi - lo + 1e-12)
            peak = F.max_pool2d(weights.unsqueeze(1), 2 * r + 1, stride=1, padding=r).squeeze(1)
            below = torch.clamp((peak - weights) * 1e6, 0.0, 1.0)  # 1 below a peak, 0 at it
            weights = weights - below * SUPPRESSED
        p = min(self.config.num_features, h * w)
        return torch.topk(weights.reshape(-1, h * w), p, dim=1).indices

    @staticmethod
    def _onehot(idx: torch.Tensor, cells: int) -> torch.Tensor:
        """(N, P, cells) one-hot rows of flat indices: gathers become MatMuls (TensorRT-safe
        ops only: one-hot = clip(1 − (idx − cell)², 0, 1))."""
        diff = idx.float().unsqueeze(-1) - torch.from_numpy(np.arange(cells, dtype=np.float32))
        return torch.clamp(1.0 - diff * diff, 0.0, 1.0)

    def _project(self, v: torch.Tensor) -> torch.Tensor:
        """normalize(projection · (v − mean)) of (N, M, in_dim) rows."""
        return l2_normalize((v - self.mean) @ self.projection.t(), dim=-1)

    def describe(self, dense: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cells: (descriptors (N, P, dim) float16, pixel xy (N, P, 2) float32) at flat cells
        ``idx`` of the (N, C, H, W) map ``dense``."""
        c, h, w = (int(v) for v in dense.shape[1:])
        feats = l2_normalize(dense.float(), dim=1).reshape(-1, c, h * w).transpose(1, 2)
        table = window_centres((h, w), 1, self.input_size)
        onehot = self._onehot(idx, h * w)  # N,P,HW
        desc = self._project(torch.matmul(onehot, feats))  # N,P,C → N,P,dim
        return desc.half(), torch.matmul(onehot, torch.from_numpy(table))

    def patch_vlads(self, net: nn.Module, final: torch.Tensor) -> list[torch.Tensor]:
        """Normalised window VLADs (N, K·C, M_s) of every window, one tensor per patch size."""
        res = residual_map(net, final)
        k, kc = net.netvlad.num_clusters, int(res.shape[1])
        out = []
        for s in self.config.patch_sizes:
            gh, gw = grid_size(tuple(final.shape[-2:]), s)
            out.append(normalize_vlad(window_sums(res, s).reshape(-1, kc, gh * gw), k))
        return out

    def patches(
        self, net: nn.Module, final: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches: every size's top windows (by summed ``weights``), concatenated in
        ``patch_sizes`` order: (descriptors (N, ΣP_s, dim) float16, pixel xy (N, ΣP_s, 2))."""
        map_size = tuple(int(v) for v in final.shape[-2:])
        feats, xys = [], []
        for s, v in zip(self.config.patch_sizes, self.patch_vlads(net, final), strict=True):
            gh, gw = grid_size(map_size, s)
            wsum = window_sums(weights.unsqueeze(1), s).squeeze(1)  # N,gh,gw
            onehot = self._onehot(self.select(wsum, (gh, gw)), gh * gw)  # N,P,M
            # Project every window, then pick: the pick runs on dim-wide rows, not K·C-wide.
            desc = self._project(v.transpose(1, 2))  # N,M,dim
            feats.append(torch.matmul(onehot, desc))
            xys.append(
                torch.matmul(onehot, torch.from_numpy(window_centres(map_size, s, self.input_size)))
            )
        return torch.cat(feats, 1).half(), torch.cat(xys, 1)

    def outputs(
        self, net: nn.Module, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the exported graph emits for normalised images ``x``: descriptor (float32),
        local features (float16), pixel xy (float16)."""
        fine, final = backbone_maps(net.backbone, x)
        desc = net.netvlad(final)
        desc = net.pca(desc) if net.pca is not None else desc
        feats, xy = self(net, fine.float(), final.float())
        return desc.float(), feats, xy.half()

    def forward(
        self, net: nn.Module, fine: torch.Tensor, final: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weights = weight_map(net, final, self.config.weight)
        if self.config.descriptor == "patches":
            return self.patches(net, final, weights)
        dense = fine if self.config.layer == "fine" else final
        return self.describe(dense, self.select(weights, tuple(dense.shape[-2:])))

    def segments(self, map_size: tuple[int, int]) -> list[dict[str, Any]]:
        """The output's segments for a final map of ``map_size`` cells: window size, count,
        window grid (rows, cols) and the pixel size of one grid step (for spatial scoring)."""
        h, w = (int(v) for v in map_size)
        ih, iw = self.input_size
        out = []
        for s in self.config.sizes:
            gh, gw = grid_size((h, w), s)
            out.append(
                {
                    "size": s,
                    "count": min(self.config.num_features, gh * gw),
                    "grid": [gh, gw],
                    "step_px": [iw / w, ih / h],
                }
            )
        return out


def fit_local_pca(features: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components (dim, C)) of L2-normalised local features (N, C), plain PCA."""
    x = np.asarray(features, np.float64)
    if dim > x.shape[1]:
        raise ConfigError(f"local PCA dim {dim} exceeds the feature channels {x.shape[1]}")
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean.astype(np.float32), vt[:dim].astype(np.float32)


def fit_projection(samples: np.ndarray, config: LocalConfig) -> tuple[np.ndarray, np.ndarray]:
    """(mean, projection) for ``config`` from L2-normalised input rows (N, in_dim)."""
    if config.whiten or samples.shape[1] > 4096:  # K·C-wide rows: randomised SVD
        return fit_whitening(samples, config.dim, whiten=config.whiten)
    return fit_local_pca(samples, config.dim)


def head_fingerprint(head: LocalHead) -> str:
    """Short hash of the local head (settings + projection): maps' local features must come
    from it."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps(head.config.to_dict(), sort_keys=True).encode())
    for t in (head.mean, head.projection):
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def head_info(head: LocalHead, num_features: int, map_size: tuple[int, int]) -> dict[str, Any]:
    """The ``local`` section of the model metadata: settings, outputs, segments, fingerprint.
    ``num_features``: the P the graph emits; ``map_size``: the final map's cells."""
    from sfrs_edge.model_info import LOCAL_FEATURES, LOCAL_XY

    cfg = head.config
    segments = head.segments(map_size)
    if sum(seg["count"] for seg in segments) != num_features:
        raise ConfigError(f"local head segments {segments} do not add up to {num_features}")
    return {
        **cfg.to_dict(),
        "fingerprint": head_fingerprint(head),
        "segments": segments,
        "outputs": {
            LOCAL_FEATURES: {"shape": [num_features, cfg.dim], "dtype": "float16"},
            LOCAL_XY: {"shape": [num_features, 2], "dtype": "float16", "units": "input px"},
        },
    }


def head_state(head: LocalHead) -> dict[str, Any]:
    """What a checkpoint stores (key ``local``): plain tensors and a config dict."""
    return {
        "config": head.config.to_dict(),
        "in_dim": int(head.mean.shape[0]),
        "mean": head.mean.detach().cpu().clone(),
        "projection": head.projection.detach().cpu().clone(),
    }


def head_from_state(state: dict[str, Any], input_size: tuple[int, int]) -> LocalHead:
    """Rebuild a :class:`LocalHead` from :func:`head_state` (checkpoint key ``local``).
    Checkpoints written before patch descriptors (cells, ``components``) still load."""
    try:
        config = dict(state["config"])
        config.setdefault("descriptor", "cells")  # before patches existed
        config.setdefault("whiten", False)
        cfg = LocalConfig(**config)
        head = LocalHead(cfg, int(state["in_dim"]), input_size)
        proj = state["projection"] if "projection" in state else state["components"]
        head.set_projection(state["mean"].numpy(), proj.numpy())
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"checkpoint's local-feature head is malformed ({exc})") from exc
    if tuple(head.projection.shape) != (cfg.dim, int(state["in_dim"])):
        raise ConfigError("checkpoint's local-feature projection does not match its settings")
    return head.eval()


@torch.no_grad()
def fit_local_head(
    net: nn.Module, images, config: LocalConfig, batch_size: int = 8, per_image: int | None = None
) -> LocalHead:
    """A :class:`LocalHead` whose projection is fitted on ``per_image`` random locations of each
    image (per patch size; default 200 cells or 10 windows): what ``init --rerank`` and
    ``export --rerank`` run."""
    from .features import map_images

    gen = torch.Generator().manual_seed(0)
    size = net.config.preprocessing().size
    config = config.fitted_to(final_map_size(net))
    patches = config.descriptor == "patches"
    per_image = per_image or (10 if patches else 200)
    probe = LocalHead(config, 1, size)

    def pick(rows: torch.Tensor) -> torch.Tensor:  # rows N,M,D → N·take,D
        take = min(per_image, rows.shape[1])
        idx = torch.stack([torch.randperm(rows.shape[1], generator=gen)[:take] for _ in rows])
        return torch.gather(rows, 1, idx.unsqueeze(2).expand(-1, -1, rows.shape[2])).flatten(0, 1)

    def sample(n: nn.Module, x: torch.Tensor) -> torch.Tensor:
        fine, final = backbone_maps(n.backbone, x)
        if patches:
            return torch.cat([pick(v.transpose(1, 2)) for v in probe.patch_vlads(n, final)])
        dense = fine if config.layer == "fine" else final
        return pick(l2_normalize(dense.float(), dim=1).flatten(2).transpose(1, 2))

    feats = map_images(net, list(images), sample, batch_size)
    head = LocalHead(config, feats.shape[1], net.config.preprocessing().size)
    head.set_projection(*fit_projection(feats, config))
    return head.eval()
