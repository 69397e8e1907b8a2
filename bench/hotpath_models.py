"""The models of ``bench/hotpath.py``: a tiny ONNX MatMul built here, the example MLP, and
a repository entry for either with the run's ONNX Runtime options."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / ".test-cache" / "examples"
WARMUP_TOML = "[warmup]\nruns = 1\n"


def build_tiny(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "w"
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def example_mlp() -> Path:
    from keepwarm.examples import build_examples

    return build_examples(EXAMPLES, only=["mlp"]) / "mlp_onnx" / "1" / "model.onnx"


def ort_options(args: argparse.Namespace) -> dict[str, int]:
    return {} if args.intra_op_threads is None else {"intra_op_num_threads": args.intra_op_threads}


def model_toml(args: argparse.Namespace) -> str:
    options = "".join(f"{k} = {v}\n" for k, v in ort_options(args).items())
    return WARMUP_TOML + (f"[options]\n{options}" if options else "")


def add_model(root: Path, name: str, onnx_file: Path, toml: str) -> None:
    version = root / name / "1"
    version.mkdir(parents=True)
    shutil.copy(onnx_file, version / "model.onnx")
    (version / ".keepwarm-ready").touch()
    (root / name / "model.toml").write_text(toml)
