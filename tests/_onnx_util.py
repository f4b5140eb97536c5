"""Hand-built ONNX models for engine tests (onnx; torch too for ``stamp``, the default)."""

from __future__ import annotations

from onnx import TensorProto, checker, helper, save

from sfrs_edge.model_info import METADATA_KEY, ModelInfo, Preprocessing


def means_model(
    path,
    *,
    scale: float = 1.0,
    h: int = 32,
    w: int = 48,
    normalise: bool = True,
    length: float | None = None,
    out_dim: int = 3,
    meta_dim: int | None = None,
    static: bool = False,
    weights: str = "",
    stamp: bool = True,
):
    """uint8 (N, h, w, 3) → per-channel means × ``scale``, tiled to ``out_dim`` values
    (→ L2-normalised) (× ``length``: the descriptors' norm) → ``descriptor``.

    ``meta_dim``: the descriptor size the metadata claims (default ``out_dim``); ``static``:
    the graph declares its output width; ``weights``: a weights hash (else a fixed fingerprint);
    ``stamp``: record the content digest as an export does (a model without one is refused
    unless allowed)."""
    out = "descriptor" if not normalise and length is None else "t"
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f", "axes"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "s"], ["d"]),
        helper.make_node("Tile", ["d", "reps"], [out]),
    ]
    if normalise:
        nodes.append(
            helper.make_node(
                "LpNormalization", ["t"], ["descriptor" if length is None else "n"], axis=1, p=2
            )
        )
    if length is not None:
        nodes.append(helper.make_node("Mul", ["n" if normalise else "t", "len"], ["descriptor"]))
    inits = [
        helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2]),
        helper.make_tensor("s", TensorProto.FLOAT, [], [scale]),
        helper.make_tensor("reps", TensorProto.INT64, [2], [1, out_dim // 3]),
        helper.make_tensor("len", TensorProto.FLOAT, [], [1.0 if length is None else length]),
    ]
    graph = helper.make_graph(
        nodes,
        "means",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", h, w, 3])],
        [
            helper.make_tensor_value_info(
                "descriptor", TensorProto.FLOAT, ["N", out_dim if static else "D"]
            )
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    info = ModelInfo(
        backbone="means",
        preprocessing=Preprocessing(h, w, (0.0,) * 3, (1.0,) * 3),
        descriptor_dim=out_dim if meta_dim is None else meta_dim,
        num_clusters=1,
        local_dim=3,
        pca_dim=None,
        whitening=False,
        fingerprint="" if weights else "0123456789abcdef",
        weights=weights,
    )
    model.metadata_props.add(key=METADATA_KEY, value=info.to_json())
    checker.check_model(model)
    save(model, str(path))
    if stamp:
        from sfrs_edge.export.onnx_export import stamp_digest

        stamp_digest(path)
    return path
