"""Self-verification of an exported model: onnxruntime (CPU) against torch fp32 on real images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sfrs_edge.train.model import ExportWrapper, SFRSNet

from sfrs_edge.backends.onnx import create_session
from sfrs_edge.embedding import embed_images
from sfrs_edge.errors import ModelError
from sfrs_edge.model_info import INPUT_NAME

# Minimum cosine between torch fp32 and exported descriptors (docs/DESIGN.md §3.5).
THRESHOLDS = {"fp32": 0.9999, "fp16": 0.999}
# Re-ranking outputs: share of selected locations that agree with torch (near-ties may swap),
# and the mean cosine of the float16 local descriptors at agreeing locations.
LOCAL_AGREEMENT = {"fp32": 0.95, "fp16": 0.9}
LOCAL_COSINE = 0.99


@dataclass(frozen=True)
class Parity:
    """Cosine between torch fp32 and onnxruntime descriptors over the verification images."""

    min_cos: float
    mean_cos: float
    num_images: int
    local_agreement: float | None = None  # re-ranking outputs only
    local_cos: float | None = None

    def line(self) -> str:
        local = (
            ""
            if self.local_agreement is None
            else f"; local features: {100 * self.local_agreement:.1f} % same locations, "
            f"mean cosine {self.local_cos:.4f}"
        )
        return (
            f"parity vs torch fp32: min cosine {self.min_cos:.6f}, mean {self.mean_cos:.6f} "
            f"on {self.num_images} images{local}"
        )


def _local_parity(want: tuple, got: list, segment: np.ndarray | None = None) -> tuple[float, float]:
    """(share of locations selected by both, mean cosine of their descriptors). ``segment``:
    the output segment (patch size) of every row; locations are compared within a segment
    (windows of different sizes can share a centre)."""
    agree, cos = [], []
    for wf, wxy, gf, gxy in zip(want[0], want[1], got[1], got[2], strict=True):
        seg = np.zeros(len(wxy), np.int64) if segment is None else segment

        def keys(xy: np.ndarray, seg: np.ndarray = seg) -> list[tuple]:
            rounded = np.round(xy.astype(np.float64), 1).tolist()
            return [(int(s), *v) for s, v in zip(seg, rounded, strict=True)]

        wkeys = {k: i for i, k in enumerate(keys(wxy))}
        pairs = [(wkeys[k], j) for j, k in enumerate(keys(gxy)) if k in wkeys]
        agree.append(len(pairs) / len(wxy))
        if pairs:
            a = wf[[p[0] for p in pairs]].astype(np.float64)
            b = gf[[p[1] for p in pairs]].astype(np.float64)
            cos.append(
                (a * b).sum(1)
                / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
            )
    c = np.concatenate(cos) if cos else np.zeros(1)
    return float(np.mean(agree)), float(np.nan_to_num(c).mean())


def parity(
    onnx_path: Path,
    reference: SFRSNet,
    images: Sequence[str | os.PathLike],
    batch_size: int = 4,
    local: torch.nn.Module | None = None,
) -> Parity:
    """Cosines between ``reference`` (fp32 torch) and the ONNX model on ``images`` (with a
    ``local`` head: also the agreement of the re-ranking outputs).

    Both models see the same batches: the embedding pipeline (:mod:`sfrs_edge.embedding`)
    decodes the images once and hands each batch to a callable that runs torch and onnxruntime
    side by side, returning both outputs as row-aligned arrays.
    """
    if not images:
        raise ModelError("export verification needs at least one real image")
    pre = reference.config.preprocessing()
    wrapper = ExportWrapper(reference, local).eval()
    sess = create_session(onnx_path)

    @torch.no_grad()
    def both(batch: np.ndarray) -> dict[str, np.ndarray]:
        out = wrapper(torch.from_numpy(batch))
        want = out[0] if local is not None else out
        try:
            outputs = sess.run(None, {INPUT_NAME: batch})
        except Exception as exc:
            raise ModelError(f"{onnx_path}: onnxruntime failed to run the model ({exc})") from exc
        got = {"descriptor": outputs[0], "want": want.numpy()}
        if local is not None:
            if len(outputs) != 3:
                raise ModelError(f"{onnx_path}: expected 3 outputs, the model has {len(outputs)}")
            got.update(
                want_features=out[1].float().numpy(),
                want_xy=out[2].float().numpy(),
                local_features=outputs[1],
                local_xy=outputs[2],
            )
        if outputs[0].shape != got["want"].shape:
            raise ModelError(
                f"{onnx_path}: output shape {outputs[0].shape}, expected {got['want'].shape}"
            )
        return got

    res = embed_images(both, images, batch_size, preprocessing=pre).outputs
    got, want = res["descriptor"].astype(np.float64), res["want"].astype(np.float64)
    num = (got * want).sum(1)
    den = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    c = np.where(np.isfinite(num) & (den > 0), num / np.maximum(den, 1e-30), -1.0)
    if local is None:
        return Parity(float(c.min()), float(c.mean()), len(c))
    from sfrs_edge.train.local_features import final_map_size

    counts = [s["count"] for s in local.segments(final_map_size(reference))]
    agree, lcos = _local_parity(
        (res["want_features"], res["want_xy"]),
        [None, res["local_features"], res["local_xy"]],
        np.repeat(np.arange(len(counts)), counts),
    )
    return Parity(float(c.min()), float(c.mean()), len(c), agree, lcos)


def check(result: Parity, precision: str, source: str | os.PathLike) -> None:
    """Raise :class:`ModelError` when parity is below the threshold for ``precision``."""
    threshold = THRESHOLDS[precision]
    if not result.min_cos >= threshold:
        raise ModelError(
            f"{source}: export verification failed: {result.line()}; {precision} needs min "
            f"cosine >= {threshold}. Nothing was written."
        )
    if result.local_agreement is not None and not (
        result.local_agreement >= LOCAL_AGREEMENT[precision] and result.local_cos >= LOCAL_COSINE
    ):
        raise ModelError(
            f"{source}: export verification of the re-ranking outputs failed: {result.line()}; "
            f"needs >= {100 * LOCAL_AGREEMENT[precision]:.0f} % same locations and mean cosine "
            f">= {LOCAL_COSINE}. Nothing was written."
        )
