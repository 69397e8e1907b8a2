"""The setup of ``bench/multimodel.py``: its constants and targets, and its models (20 ONNX
MLPs of one size with different random weights, built once into a directory and kept while
their builder's hash matches)."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

import numpy as np

MODELS = 20
SHAPE = (64, 128, 10)
OPSET = 17
SEED = 0
STAMP = ".builder-hash"
SLOTS = 5
THREADS = 8
ZIPF_S = 1.0
REQUESTS = {"full": 5000, "quick": 1500}
# The baseline is short and its p99 is a handful of samples: run it this many times and
# keep the median round (by p99).
BASELINE_ROUNDS = 3
VS_OPTIMUM = 0.9
P99_VS_BASELINE = 1.5
# One ONNX Runtime thread per session: these models are tiny, and 8 request threads on
# 2 cores with a spinning intra-op pool per session would measure the pools, not the cache.
ORT_OPTIONS = {"intra_op_num_threads": 1}


def builder_hash() -> str:
    digest = hashlib.sha256(repr((MODELS, SHAPE, OPSET, SEED)).encode())
    digest.update(metadata.version("onnx").encode())
    return digest.hexdigest()


def build_models(dest: Path) -> list[Path]:
    """``dest/m00.onnx`` ... ``m19.onnx`` (kept while the builder's hash matches)."""
    paths = [dest / f"m{i:02d}.onnx" for i in range(MODELS)]
    stamp = dest / STAMP
    if stamp.is_file() and stamp.read_text() == builder_hash():
        return paths
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    n_in, n_hidden, n_out = SHAPE
    for path in paths:
        weights = {
            "w1": rng.standard_normal((n_in, n_hidden), dtype=np.float32) * 0.1,
            "b1": np.zeros(n_hidden, np.float32),
            "w2": rng.standard_normal((n_hidden, n_out), dtype=np.float32) * 0.1,
            "b2": np.zeros(n_out, np.float32),
        }
        graph = helper.make_graph(
            [
                helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
                helper.make_node("Relu", ["h"], ["r"]),
                helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"]),
                helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
            ],
            path.stem,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n_in])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n_out])],
            [numpy_helper.from_array(value, name) for name, value in weights.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    stamp.write_text(builder_hash())
    return paths
