"""Quantized models in: QONNX, ONNX QDQ and Brevitas exports, with their own quantization kept.

``load_quantized(path, calibration=None)`` reads the model (``graph.py``), fits every layer's
output quantizer with the engine's per-row requantization (``fit.py``, exact) and returns a
``CompressedModel`` (``build.py``), which ``compile``, the golden model, the simulation and
the board builds take as they take ``sparseforge.compress``'s.  ``reference.py`` runs the
model with its own reference executor (qonnx's, or onnxruntime for QDQ) to compare.
"""

from .build import load_quantized
from .graph import SUPPORTED_NODES, UnsupportedModel

__all__ = ["SUPPORTED_NODES", "UnsupportedModel", "load_quantized"]
