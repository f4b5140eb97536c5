"""``export_model``: checkpoint/network → verified, self-describing ONNX file, written atomically."""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sfrs_edge.train.model import SFRSNet, model_info

from sfrs_edge.atomic import atomic_path
from sfrs_edge.errors import ConfigError
from sfrs_edge.model_info import ModelInfo

from . import verify
from .onnx_export import write_onnx
from .trt_compat import check_tensorrt_compatible

log = logging.getLogger(__name__)
PRECISIONS = ("fp32", "fp16")
MIN_INPUT_SIDE = 32


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how well it matches torch fp32."""

    path: Path
    info: ModelInfo
    parity: verify.Parity
    seconds: float
    precision: str

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    @property
    def min_cos(self) -> float:
        return self.parity.min_cos

    @property
    def mean_cos(self) -> float:
        return self.parity.mean_cos

    @property
    def num_images(self) -> int:
        return self.parity.num_images

    def line(self) -> str:
        """The parity line (one wording, owned by :class:`verify.Parity`)."""
        return self.parity.line()


def prepare(
    net: SFRSNet, pca_dim: int | None = None, input_size: tuple[int, int] | None = None
) -> SFRSNet:
    """An fp32 eval copy of ``net`` with the PCA truncated and the input size overridden."""
    net = copy.deepcopy(net).float().eval()
    if pca_dim is not None:
        if net.pca is None:
            raise ConfigError(
                f"--pca-dim {pca_dim}: this model has no PCA whitening layer (its descriptor is "
                f"the raw {net.config.vlad_dim}-d NetVLAD); re-run `sfrs-edge init --pca-dim N`"
            )
        net.pca.truncate(pca_dim)
        net.config.pca_dim = pca_dim
    if input_size is not None:
        h, w = (int(v) for v in input_size)
        if h < MIN_INPUT_SIDE or w < MIN_INPUT_SIDE:
            raise ConfigError(f"input size {h}x{w} is too small (at least 32x32)")
        net.config.input_height, net.config.input_width = h, w
    return net


def _json_safe(provenance: dict | None) -> dict:
    return json.loads(json.dumps(dict(provenance or {}), default=str))


def export_model(
    net: SFRSNet,
    output: str | os.PathLike,
    *,
    fp16: bool = False,
    pca_dim: int | None = None,
    input_size: tuple[int, int] | None = None,
    verify_images: Sequence[str | os.PathLike],
    provenance: dict | None = None,
    opset: int = 17,
    local=None,
) -> ExportReport:
    """Export ``net`` to ONNX at ``output``; verified on ``verify_images`` before it appears.

    The fingerprint is computed on the fp32 weights after any PCA truncation, so fp16 and fp32
    exports of the same weights share it. On failure nothing is left at (or beside) ``output``.
    ``local``: a :class:`~sfrs_edge.train.local_features.LocalHead`; the model then also emits
    re-ranking local features (its own fingerprint in ``info.local``; the global one is kept,
    so maps built without local features still open).
    """
    t0 = time.time()
    output = Path(output)
    images = [Path(p) for p in verify_images]
    if not images:
        raise ConfigError("export needs real images to verify against: pass --verify-images DIR")
    precision = "fp16" if fp16 else "fp32"
    ref = prepare(net, pca_dim, input_size)
    local_info = None
    if local is not None:
        import torch
        from sfrs_edge.train.local_features import final_map_size, head_info
        from sfrs_edge.train.model import ExportWrapper

        local = copy.deepcopy(local).float().eval()
        local.input_size = ref.config.preprocessing().size
        h, w = local.input_size
        with torch.no_grad():  # P is fixed by the input size: read it off one forward pass
            probe = ExportWrapper(ref, local)(torch.zeros(1, h, w, 3, dtype=torch.uint8))
        local_info = head_info(local, int(probe[1].shape[1]), final_map_size(ref))
    info = model_info(ref, precision=precision, provenance=_json_safe(provenance), local=local_info)
    exported = copy.deepcopy(ref)  # tracing must not touch the reference
    if fp16:
        exported.half()
    if output.is_dir():
        raise ConfigError(f"{output}: is a directory; give a file name such as model.onnx")
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:  # verified before it replaces anything at output
        extra = {"local": local} if local is not None else {}
        model = write_onnx(exported, tmp, info, opset=opset, **extra)
        del exported
        # Refuse before reporting success what TensorRT's parser would refuse on the device.
        check_tensorrt_compatible(model, output)
        del model
        result = verify.parity(tmp, ref, images, local=local)
        log.info("%s", result.line())
        verify.check(result, precision, output)
    return ExportReport(
        path=output,
        info=info,
        parity=result,
        seconds=round(time.time() - t0, 2),
        precision=precision,
    )


def export_checkpoint(
    checkpoint: str | os.PathLike, output: str | os.PathLike, **kwargs
) -> ExportReport:
    """Load an sfrs-edge checkpoint and :func:`export_model` it (same keyword arguments).

    ``provenance`` defaults to the checkpoint's, with the checkpoint path added.
    """
    from sfrs_edge.train.checkpoint import load_checkpoint

    net, prov = load_checkpoint(checkpoint)
    if kwargs.get("rerank"):
        kwargs["local"] = local_head(checkpoint, net, kwargs.get("verify_images") or [])
    kwargs.pop("rerank", None)
    if kwargs.get("provenance") is None:
        kwargs["provenance"] = {**prov, "checkpoint": str(Path(checkpoint).resolve())}
    return export_model(net, output, **kwargs)


def local_head(checkpoint: str | os.PathLike, net: SFRSNet, images: Sequence, config=None):
    """The checkpoint's re-ranking head, or one fitted now on ``images`` when it has none
    (imported models): projection fitted on the verification images, logged, and kept in the
    checkpoint. ``config``: the :class:`~sfrs_edge.train.local_features.LocalConfig` of a new
    head (default: the measured default)."""
    from sfrs_edge.train.checkpoint import read_checkpoint
    from sfrs_edge.train.local_features import LocalConfig, fit_local_head, head_from_state

    state = read_checkpoint(checkpoint).get("local")
    size = net.config.preprocessing().size
    if state:
        return head_from_state(state, size)
    if len(images) < 2:
        raise ConfigError(
            f"{checkpoint}: has no local-feature PCA and too few images to fit one; re-run "
            "`sfrs-edge init` or pass --verify-images DIR with real images"
        )
    log.info(
        "%s: no local-feature projection in the checkpoint; fitting it on %d images and "
        "storing it there (later exports reuse it)",
        checkpoint,
        len(images),
    )
    head = fit_local_head(net, images, config or LocalConfig())
    store_local_head(checkpoint, head)
    return head


def store_local_head(checkpoint: str | os.PathLike, head) -> None:
    """Write ``head`` into the checkpoint (key ``local``), atomically: a later export emits
    the same local features, so maps built with either export stay comparable."""
    import torch
    from sfrs_edge.train.checkpoint import read_checkpoint
    from sfrs_edge.train.local_features import head_state

    from sfrs_edge.atomic import atomic_file

    payload = read_checkpoint(checkpoint)
    payload["local"] = head_state(head)
    with atomic_file(Path(checkpoint)) as f:
        torch.save(payload, f)
