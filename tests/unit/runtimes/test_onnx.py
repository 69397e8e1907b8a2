from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from runtime_models import MLP_NBYTES, Mlp

from keepwarm.errors import (
    InvalidConfigError,
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
)
from keepwarm.runtimes import detect_runtime
from keepwarm.runtimes.onnx import OnnxModel, OnnxRuntime

RUNTIME = OnnxRuntime()


@pytest.fixture(scope="module")
def loaded(mlp: Mlp) -> OnnxModel:
    return RUNTIME.load(mlp.onnx, signature=None, options={"intra_op_num_threads": 1})


def test_detects_a_file_and_a_directory_holding_one(mlp: Mlp) -> None:
    assert RUNTIME.detect(mlp.onnx)
    assert RUNTIME.detect(mlp.onnx / "model.onnx")
    assert not RUNTIME.detect(mlp.keras)
    assert detect_runtime(mlp.onnx).name == "onnx"


def test_signature_from_the_session(mlp: Mlp, loaded: OnnxModel) -> None:
    sig = loaded.signature
    assert [(s.name, s.dtype, s.shape) for s in sig.inputs] == [
        ("x", np.dtype("float32"), (None, 8))
    ]
    assert [(s.dtype, s.shape) for s in sig.outputs] == [(np.dtype("float32"), (None, 4))]
    import onnx

    graph = onnx.load(str(mlp.onnx / "model.onnx")).graph
    weights = sum(onnx.numpy_helper.to_array(init).nbytes for init in graph.initializer)
    assert (loaded.nbytes, loaded.nbytes_source) == (weights, "framework")
    assert 0 < loaded.nbytes <= MLP_NBYTES  # tf2onnx folds away the all-zero biases


def test_predict_matches_the_framework(mlp: Mlp, loaded: OnnxModel, batch: np.ndarray) -> None:
    (out,) = loaded.predict({"x": batch}).values()
    assert np.abs(out - mlp.reference(batch)).max() <= 1e-5


def test_float64_is_cast_and_wrong_shape_refused(loaded: OnnxModel, batch: np.ndarray) -> None:
    (out,) = loaded.predict(loaded.signature.coerce({"x": batch.astype(np.float64)})).values()
    (want,) = loaded.predict({"x": batch}).values()
    np.testing.assert_allclose(out, want, atol=1e-6)
    with pytest.raises(InvalidInputError, match="'x'"):
        loaded.signature.coerce({"x": np.zeros((8,), np.float32)})


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_session_options(mlp: Mlp, batch: np.ndarray, level: str) -> None:
    model = RUNTIME.load(
        mlp.onnx,
        signature=None,
        options={
            "intra_op_num_threads": 1,
            "inter_op_num_threads": 1,
            "graph_optimization_level": level,
        },
    )
    (out,) = model.predict({"x": batch}).values()
    assert np.abs(out - mlp.reference(batch)).max() <= 1e-5


@pytest.mark.parametrize(
    "options", [{"graph_optimization_level": "max"}, {"intra_op_num_threads": "two"}]
)
def test_bad_options_are_config_errors(mlp: Mlp, options: dict[str, object]) -> None:
    with pytest.raises(InvalidConfigError):
        RUNTIME.load(mlp.onnx, signature=None, options=options)


def test_without_the_onnx_package_nbytes_is_the_file_size(
    mlp: Mlp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    model = RUNTIME.load(mlp.onnx, signature=None, options={})
    assert model.nbytes_source == "files"
    assert model.nbytes == (mlp.onnx / "model.onnx").stat().st_size


def test_corrupt_and_empty_files(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    assert "empty" in (RUNTIME.incomplete(tmp_path) or "")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelLoadError, match="cannot load the ONNX model") as info:
        RUNTIME.load(tmp_path, signature=None, options={})
    assert info.value.format == "onnx" and info.value.__cause__ is not None


def test_an_unknown_signature_name_is_not_found(mlp: Mlp) -> None:
    with pytest.raises(ModelNotFoundError, match=r"'other'.*available signatures: serving_default"):
        RUNTIME.load(mlp.onnx, signature="other", options={})
    model = RUNTIME.load(mlp.onnx, signature="serving_default", options={})
    assert model.signature.name == "serving_default"
