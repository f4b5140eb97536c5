"""The SFRS network: backbone → NetVLAD → (optional) fused PCA whitening → L2.

:class:`ModelConfig` is the small dataclass saved with every checkpoint and embedded (as
:class:`sfrs_edge.model_info.ModelInfo`) in every exported model.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sfrs_edge import __version__
from sfrs_edge.model_info import ModelInfo, Preprocessing

from .backbones import backbone_spec, create_backbone
from .netvlad import NetVLAD
from .whitening import PCAWhitening


@dataclass
class ModelConfig:
    """Architecture and input convention of an SFRS model."""

    backbone: str = "efficientnet_lite0"
    num_clusters: int = 64
    input_height: int = 0  # 0: the backbone's default
    input_width: int = 0
    pca_dim: int | None = None  # None: no PCA (descriptor = raw NetVLAD)
    whiten: bool = True

    def __post_init__(self) -> None:
        spec = backbone_spec(self.backbone)  # validates the name
        if not self.input_height or not self.input_width:
            self.input_height, self.input_width = spec.default_input_size

    @property
    def local_dim(self) -> int:
        return backbone_spec(self.backbone).out_channels

    @property
    def vlad_dim(self) -> int:
        return self.num_clusters * self.local_dim

    @property
    def descriptor_dim(self) -> int:
        return self.pca_dim or self.vlad_dim

    def preprocessing(self) -> Preprocessing:
        spec = backbone_spec(self.backbone)
        return Preprocessing(
            height=self.input_height,
            width=self.input_width,
            mean=spec.mean,
            std=spec.std,
            scale=spec.scale,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InputAdapter(nn.Module):
    """uint8 NHWC BGR images → normalised float NCHW RGB, inside the graph (docs/DESIGN.md §2.2)."""

    def __init__(self, pre: Preprocessing) -> None:
        super().__init__()
        mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x*scale - mean)/std == x*a + b
        self.register_buffer("a", pre.scale / std, persistent=False)
        self.register_buffer("b", -mean / std, persistent=False)
        self.flip = pre.color_order == "BGR"

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # Cast first: TensorRT's ONNX parser takes a uint8 input only straight into a Cast
        # (NVIDIA/TensorRT issue 3985; onnx-tensorrt ModelImporter.cpp), not through a Transpose.
        x = image.float().permute(0, 3, 1, 2)
        if self.flip:
            x = x.flip(1)
        return x * self.a + self.b


class SFRSNet(nn.Module):
    """Backbone + NetVLAD + optional PCA whitening; ``forward`` gives the global descriptor."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = create_backbone(config.backbone)
        self.netvlad = NetVLAD(config.num_clusters, config.local_dim)
        self.pca = PCAWhitening(config.vlad_dim, config.pca_dim) if config.pca_dim else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone feature map (N, D, H', W') of normalised images."""
        return self.backbone(x)

    def vlad(self, x: torch.Tensor) -> torch.Tensor:
        """Global NetVLAD descriptor before PCA (what training and PCA fitting use)."""
        return self.netvlad(self.features(x))

    def regions(self, x: torch.Tensor) -> torch.Tensor:
        """The 9 normalised region descriptors (N, 9, K·D) for SFRS training."""
        return self.netvlad.regions(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.vlad(x)
        return self.pca(v) if self.pca is not None else v

    def set_pca(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """Fuse a fitted PCA(-whitening) ``y = Wx + b`` into the network."""
        self.pca = PCAWhitening(weight.shape[1], weight.shape[0])
        self.pca.set(weight, bias)
        self.config.pca_dim = int(weight.shape[0])


class ExportWrapper(nn.Module):
    """What is exported: uint8 image in, L2-normalised descriptor out.

    With a ``local`` head (re-ranking, :mod:`.local_features`) the graph has two more outputs:
    ``local_features`` (N, P, D) float16 and ``local_xy`` (N, P, 2) float16 pixel coordinates.
    """

    def __init__(self, net: SFRSNet, local: nn.Module | None = None) -> None:
        super().__init__()
        self.adapter = InputAdapter(net.config.preprocessing())
        self.net = net
        self.local = local

    def forward(self, image: torch.Tensor):
        x = self.adapter(image)
        param = next(self.net.parameters())
        x = x.to(param.dtype)
        if self.local is None:
            return self.net(x).float()
        return self.local.outputs(self.net, x)  # a LocalHead (.local_features)


def fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """A short hash of the weights: maps record it and refuse a different model."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous().float()
        h.update(key.encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def model_info(
    net: SFRSNet,
    precision: str = "fp32",
    provenance: dict | None = None,
    local: dict | None = None,
) -> ModelInfo:
    """The :class:`ModelInfo` embedded in an exported model (``local``: the re-ranking
    outputs' description, see :func:`.local_features.LocalHead.info`)."""
    cfg = net.config
    return ModelInfo(
        backbone=cfg.backbone,
        preprocessing=cfg.preprocessing(),
        descriptor_dim=cfg.descriptor_dim,
        num_clusters=cfg.num_clusters,
        local_dim=cfg.local_dim,
        pca_dim=cfg.pca_dim,
        whitening=bool(cfg.pca_dim) and cfg.whiten,
        weights=fingerprint(net.state_dict()),  # ModelInfo derives its fingerprint from all fields
        precision=precision,
        package_version=__version__,
        provenance=dict(provenance or {}),
        local=local,
    )
