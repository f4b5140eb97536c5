"""Local features for re-ranking, taken from the regions the NetVLAD aggregation relies on.

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

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sfrs_edge.errors import ConfigError

from .backbones import VGG16, EfficientNetLite0
from .norms import l2_normalize

WEIGHT_MAPS = ("contribution", "confidence", "norm", "uniform")
LAYERS = ("fine", "final")
LITE0_FINE_BLOCK = 10  # last block of stage 5: 112 channels at stride 16
SUPPRESSED = 2.0  # subtracted from non-peak cells of the [0, 1]-scaled map: rank after peaks


@dataclass
class LocalConfig:
    """How local features are selected and described (saved in the checkpoint and the model)."""

    num_features: int = 128
    dim: int = 64
    weight: str = "contribution"
    layer: str = "final"  # measured: "fine" (stride 16) re-ranks worse (docs/RERANKING.md)
    nms_radius: int = 1  # cells; 0 disables suppression

    def __post_init__(self) -> None:
        if self.weight not in WEIGHT_MAPS:
            raise ConfigError(f"local weight map must be one of {WEIGHT_MAPS}, got {self.weight!r}")
        if self.layer not in LAYERS:
            raise ConfigError(f"local layer must be one of {LAYERS}, got {self.layer!r}")
        if self.num_features < 1 or self.dim < 1 or self.nms_radius < 0:
            raise ConfigError("num_features and dim must be positive, nms_radius not negative")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    """Weight map → NMS → top-N → PCA-reduced descriptors (float16) + pixel coordinates."""

    def __init__(self, config: LocalConfig, in_dim: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.config = config
        self.input_size = input_size
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("components", torch.eye(in_dim)[: config.dim].clone())

    def set_pca(self, mean: np.ndarray, components: np.ndarray) -> None:
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(mean))
            self.components = torch.as_tensor(components, dtype=torch.float32).clone()

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

    def describe(self, dense: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(descriptors (N, P, dim) float16, pixel xy (N, P, 2) float32) at flat cells ``idx``.

        Gathering is a one-hot MatMul (one-hot = clip(1 − (idx − cell)², 0, 1)): TensorRT-safe
        ops only, and P·HW·C multiply-adds, small beside the backbone."""
        c, h, w = (int(v) for v in dense.shape[1:])
        feats = l2_normalize(dense.float(), dim=1).reshape(-1, c, h * w).transpose(1, 2)
        cells = np.arange(h * w, dtype=np.float32)  # numpy: constants in the traced graph
        ih, iw = self.input_size
        table = np.stack([(cells % w + 0.5) * (iw / w), (cells // w + 0.5) * (ih / h)], axis=-1)
        diff = idx.float().unsqueeze(-1) - torch.from_numpy(cells)  # N,P,HW
        onehot = torch.clamp(1.0 - diff * diff, 0.0, 1.0)
        picked = torch.matmul(onehot, feats)  # N,P,C
        desc = l2_normalize((picked - self.mean) @ self.components.t(), dim=-1)
        return desc.half(), torch.matmul(onehot, torch.from_numpy(table.astype(np.float32)))

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
        dense = fine if self.config.layer == "fine" else final
        weights = weight_map(net, final, self.config.weight)
        return self.describe(dense, self.select(weights, tuple(dense.shape[-2:])))


def fit_local_pca(features: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components (dim, C)) of L2-normalised local features (N, C), plain PCA."""
    x = np.asarray(features, np.float64)
    if dim > x.shape[1]:
        raise ConfigError(f"local PCA dim {dim} exceeds the feature channels {x.shape[1]}")
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean.astype(np.float32), vt[:dim].astype(np.float32)


def head_fingerprint(head: LocalHead) -> str:
    """Short hash of the local head (settings + PCA): maps' local features must come from it."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps(head.config.to_dict(), sort_keys=True).encode())
    for t in (head.mean, head.components):
        h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def head_info(head: LocalHead, num_features: int) -> dict[str, Any]:
    """The ``local`` section of the model metadata: settings, outputs, fingerprint.
    ``num_features``: the P the graph emits (``config.num_features`` or fewer on small inputs)."""
    from sfrs_edge.model_info import LOCAL_FEATURES, LOCAL_XY

    cfg = head.config
    return {
        **cfg.to_dict(),
        "fingerprint": head_fingerprint(head),
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
        "components": head.components.detach().cpu().clone(),
    }


def head_from_state(state: dict[str, Any], input_size: tuple[int, int]) -> LocalHead:
    """Rebuild a :class:`LocalHead` from :func:`head_state` (checkpoint key ``local``)."""
    try:
        cfg = LocalConfig(**state["config"])
        head = LocalHead(cfg, int(state["in_dim"]), input_size)
        head.set_pca(state["mean"].numpy(), state["components"].numpy())
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"checkpoint's local-feature head is malformed ({exc})") from exc
    if tuple(head.components.shape) != (cfg.dim, int(state["in_dim"])):
        raise ConfigError("checkpoint's local-feature PCA does not match its settings")
    return head.eval()


@torch.no_grad()
def fit_local_head(
    net: nn.Module, images, config: LocalConfig, batch_size: int = 8, per_image: int = 200
) -> LocalHead:
    """A :class:`LocalHead` whose PCA is fitted on ``per_image`` random locations of each image
    (the ``layer`` map, L2-normalised): what ``init`` and ``export --rerank`` run."""
    from .features import map_images

    gen = torch.Generator().manual_seed(0)

    def sample(n: nn.Module, x: torch.Tensor) -> torch.Tensor:
        fine, final = backbone_maps(n.backbone, x)
        dense = fine if config.layer == "fine" else final
        f = l2_normalize(dense.float(), dim=1).flatten(2).transpose(1, 2)  # N,HW,C
        take = min(per_image, f.shape[1])
        idx = torch.stack([torch.randperm(f.shape[1], generator=gen)[:take] for _ in f])
        return torch.gather(f, 1, idx.unsqueeze(2).expand(-1, -1, f.shape[2])).flatten(0, 1)

    feats = map_images(net, list(images), sample, batch_size)
    head = LocalHead(config, feats.shape[1], net.config.preprocessing().size)
    head.set_pca(*fit_local_pca(feats, config.dim))
    return head.eval()
