"""Cheaper models, with the change in answers measured: ``keepwarm optimize``.

``optimize(source, quantize=..., publish_to=...)`` converts a SavedModel, a ``.keras``
file, a TF Hub handle (or an ONNX model) to ONNX, applies ONNX Runtime's graph
optimisations, optionally quantizes it, checks it against the source on samples and
returns an ``OptimizeResult`` (its ``report``, a ``Report``); a ``Gate`` decides whether
it may be published as the next version of a model. tf2onnx, onnx and
onnxconverter-common (the ``optimize`` extra) are imported only in the conversion child
process.

Tolerances (the default gate, ``Gate.default``): unquantized, every output within 1e-4
of the source; quantized (``dynamic``, ``float16``, ``static``), the same top-1 answer on
at least 99% of the samples.
"""

from keepwarm.optimize.api import OptimizeResult, optimize
from keepwarm.optimize.report import Gate, Latency, OutputChange, Report, Side

__all__ = ["Gate", "Latency", "OptimizeResult", "OutputChange", "Report", "Side", "optimize"]
