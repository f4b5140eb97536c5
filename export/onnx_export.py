"""Trace an :class:`SFRSNet` to ONNX: uint8 NHWC BGR ``image`` in, float32 ``descriptor`` out.

We use the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): it needs no
onnxscript, it is deterministic for a fixed-size image model like ours (only the batch axis is
dynamic; the spatial padding of the TF-"SAME" convs is computed from static sizes), and it emits
plain Conv/MatMul/ReduceSum/Softmax/Cast ops that onnxruntime and TensorRT's ONNX parser take.
The dynamo exporter in torch 2.x still changes between releases (decompositions, opset
conversion) and adds nothing for a static graph.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import shape_inference
from sfrs_edge.train.model import ExportWrapper, SFRSNet

from sfrs_edge.errors import ModelError
from sfrs_edge.model_digest import DIGEST_KEY, file_digest
from sfrs_edge.model_info import (
    INPUT_NAME,
    LOCAL_FEATURES,
    LOCAL_XY,
    METADATA_KEY,
    OUTPUT_NAME,
    ModelInfo,
)

from .trt_compat import static_output_dims

__all__ = ["check_graph", "graph_summary", "stamp_digest", "write_onnx"]
FORBIDDEN_OPS = ("Einsum",)  # docs/DESIGN.md §3.1: no einsum in exported graphs


@torch.no_grad()
def write_onnx(
    net: SFRSNet, path: Path, info: ModelInfo, opset: int = 17, local: torch.nn.Module | None = None
) -> onnx.ModelProto:
    """Export ``net`` (any dtype; fp32 input adapter) to ``path`` with ``info`` embedded.

    ``local``: a re-ranking head; adds the ``local_features`` and ``local_xy`` outputs."""
    cfg = net.config
    wrapper = ExportWrapper(net, local).eval()
    outputs = [OUTPUT_NAME] + ([LOCAL_FEATURES, LOCAL_XY] if local is not None else [])
    dummy = torch.zeros(2, cfg.input_height, cfg.input_width, 3, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on static shape arithmetic
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *outputs]},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load(str(path))
    if local is not None:  # per-image shapes are static: say so in the graph's outputs
        static = {o: spec["shape"] for o, spec in info.local["outputs"].items()}
        for out in model.graph.output:
            if out.name in static:
                for dim, size in zip(
                    out.type.tensor_type.shape.dim[1:], static[out.name], strict=True
                ):
                    dim.Clear()
                    dim.dim_value = int(size)
    check_graph(model, path)
    static_output_dims(model)  # (batch, dim), not (batch, "Castdescriptor_dim_1")
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    model.producer_name = "sfrs-edge"
    model.producer_version = info.package_version
    onnx.save(model, str(path))
    return stamp_digest(path, model)


def stamp_digest(path: str | os.PathLike, model: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """Record the content digest (:mod:`sfrs_edge.model_digest`) in the ONNX file at ``path``.

    Call it last, after every other change to the model: the runtime refuses a file whose
    content no longer matches. Works for any sfrs-edge ONNX (e.g. a quantised copy).
    """
    model = onnx.load(str(path)) if model is None else model
    stale = [i for i, e in enumerate(model.metadata_props) if e.key == DIGEST_KEY]
    for i in reversed(stale):
        del model.metadata_props[i]
    if stale:
        onnx.save(model, str(path))
    digest, _ = file_digest(path)
    model.metadata_props.add(key=DIGEST_KEY, value=digest)
    onnx.save(model, str(path))
    check, meta = file_digest(path)
    if check != digest or meta.get(DIGEST_KEY) != digest:
        raise ModelError(f"{path}: content digest changed when it was stored (protobuf layout)")
    return model


def check_graph(model: onnx.ModelProto, source: str | os.PathLike = "model") -> None:
    """Refuse graphs with ops the design rules out (einsum)."""
    bad = sorted({n.op_type for n in model.graph.node if n.op_type in FORBIDDEN_OPS})
    if bad:
        raise ModelError(f"{source}: exported graph contains forbidden ops {bad}")


def graph_summary(model: onnx.ModelProto) -> dict:
    """Op counts, Cast targets and the largest intermediate tensor (elements per image).

    Shape inference runs on a copy with the batch fixed to 1, so sizes are per image.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.initializer[:]  # shapes only; keeps inference cheap for 512 MiB PCA layers
    for vi in list(m.graph.input) + list(m.graph.output):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_param")
        dim.dim_value = 1
    inits = {i.name: i for i in model.graph.initializer}
    for name, init in inits.items():
        vi = onnx.helper.make_tensor_value_info(name, init.data_type, list(init.dims))
        m.graph.input.append(vi)
    inferred = shape_inference.infer_shapes(m)
    largest, largest_name = 0, ""
    for vi in inferred.graph.value_info:
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            n = int(np.prod([d.dim_value for d in dims]))
            if n > largest:
                largest, largest_name = n, vi.name
    casts = Counter(
        onnx.TensorProto.DataType.Name(a.i)
        for n in model.graph.node
        if n.op_type == "Cast"
        for a in n.attribute
        if a.name == "to"
    )
    return {
        "ops": dict(Counter(n.op_type for n in model.graph.node)),
        "casts": dict(casts),
        "largest_intermediate": largest,
        "largest_intermediate_name": largest_name,
        "initializer_types": dict(
            Counter(onnx.TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer)
        ),
    }
