"""Export: checkpoint → verified ONNX (fp32/fp16) → optional TensorRT engine. Needs torch."""

from .pipeline import ExportReport, export_checkpoint, export_model
from .tensorrt_engine import build_engine

__all__ = ["ExportReport", "build_engine", "export_checkpoint", "export_model"]
