from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from runtime_models import MLP_NBYTES, Mlp

from keepwarm.errors import (
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    UnavailableError,
)
from keepwarm.runtimes import detect_runtime
from keepwarm.runtimes.savedmodel import SavedModel, SavedModelRuntime, has_savedmodel_parts

RUNTIME = SavedModelRuntime()


@pytest.fixture(scope="module")
def loaded(mlp: Mlp) -> SavedModel:
    return RUNTIME.load(mlp.savedmodel, signature=None, options={})


def _copy(mlp: Mlp, tmp_path: Path) -> Path:
    return Path(shutil.copytree(mlp.savedmodel, tmp_path / "model"))


def _shard(root: Path) -> Path:
    return root / "variables" / "variables.data-00000-of-00001"


def test_detects_the_directory_and_a_directory_holding_it(mlp: Mlp) -> None:
    assert RUNTIME.detect(mlp.savedmodel)
    assert RUNTIME.detect(mlp.savedmodel.parent / "savedmodel" / "saved_model.pb")
    assert not RUNTIME.detect(mlp.keras)
    assert detect_runtime(mlp.savedmodel).name == "savedmodel"


def test_signature_and_nbytes_come_from_the_model(loaded: SavedModel) -> None:
    sig = loaded.signature
    assert sig.name == "serving_default"
    assert [(s.name, s.dtype, s.shape) for s in sig.inputs] == [
        ("x", np.dtype("float32"), (None, 8))
    ]
    assert [(s.name, s.shape) for s in sig.outputs] == [("output_0", (None, 4))]
    assert (loaded.nbytes, loaded.nbytes_source) == (MLP_NBYTES, "framework")


def test_predict_matches_the_framework(mlp: Mlp, loaded: SavedModel, batch: np.ndarray) -> None:
    out = loaded.predict({"x": batch})
    assert list(out) == ["output_0"]
    assert isinstance(out["output_0"], np.ndarray)
    assert np.abs(out["output_0"] - mlp.reference(batch)).max() <= 1e-5


def test_float64_is_cast_by_the_signature(loaded: SavedModel, batch: np.ndarray) -> None:
    inputs = loaded.signature.coerce(batch.astype(np.float64))
    np.testing.assert_allclose(
        loaded.predict(inputs)["output_0"], loaded.predict({"x": batch})["output_0"], atol=1e-6
    )


def test_wrong_shape_names_the_input(loaded: SavedModel) -> None:
    with pytest.raises(InvalidInputError, match=r"'x'.*expected shape"):
        loaded.signature.coerce({"x": np.zeros((2, 7), np.float32)})


def test_unknown_signature_lists_the_available_ones(mlp: Mlp) -> None:
    with pytest.raises(ModelNotFoundError, match=r"'nope'.*serve, serving_default"):
        RUNTIME.load(mlp.savedmodel, signature="nope", options={})


def test_other_signature_by_name(mlp: Mlp, batch: np.ndarray) -> None:
    model = RUNTIME.load(mlp.savedmodel, signature="serve", options={})
    assert model.signature.name == "serve"
    (out,) = model.predict({spec.name: batch for spec in model.signature.inputs}).values()
    assert np.abs(out - mlp.reference(batch)).max() <= 1e-5


def test_complete_model_is_not_incomplete(mlp: Mlp) -> None:
    assert RUNTIME.incomplete(mlp.savedmodel) is None


def test_corrupt_graph_is_a_load_error(mlp: Mlp, tmp_path: Path) -> None:
    root = _copy(mlp, tmp_path)
    (root / "saved_model.pb").write_bytes(b"\xff\xfe not a protobuf" * 3)
    with pytest.raises(ModelLoadError, match=r"saved_model\.pb is corrupt") as info:
        RUNTIME.load(root, signature=None, options={})
    assert info.value.format == "savedmodel"
    assert info.value.__cause__ is not None


def test_truncated_shard_is_incomplete_and_refused(mlp: Mlp, tmp_path: Path) -> None:
    root = _copy(mlp, tmp_path)
    shard = _shard(root)
    shard.write_bytes(shard.read_bytes()[:100])
    reason = RUNTIME.incomplete(root)
    assert reason is not None and "truncated" in reason and shard.name in reason
    with pytest.raises(ModelLoadError, match="truncated") as info:
        RUNTIME.load(root, signature=None, options={})
    assert info.value.format == "savedmodel"


@pytest.mark.parametrize("missing", ["shard", "index", "graph"])
def test_missing_files_are_incomplete(mlp: Mlp, tmp_path: Path, missing: str) -> None:
    root = _copy(mlp, tmp_path)
    target = {
        "shard": _shard(root),
        "index": root / "variables" / "variables.index",
        "graph": root / "saved_model.pb",
    }[missing]
    target.unlink()
    reason = RUNTIME.incomplete(root)
    assert reason is not None
    assert (target.name if missing != "graph" else "no saved_model.pb") in reason


def test_truncated_index_is_incomplete(mlp: Mlp, tmp_path: Path) -> None:
    root = _copy(mlp, tmp_path)
    index = root / "variables" / "variables.index"
    index.write_bytes(index.read_bytes()[:-10])
    assert "variables.index" in (RUNTIME.incomplete(root) or "")


def test_string_tensors_and_no_variables(tmp_path: Path) -> None:
    import tensorflow as tf

    class Echo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"upper": tf.strings.upper(text)}

    echo = Echo()
    tf.saved_model.save(echo, str(tmp_path / "echo"), signatures={"serving_default": echo.serve})
    model = RUNTIME.load(tmp_path / "echo", signature=None, options={})
    assert model.signature.inputs[0].dtype == np.dtype(object)
    assert model.nbytes_source == "files" and model.nbytes > 0
    out = model.predict(model.signature.coerce({"text": np.array(["ab", "c"])}))
    assert out["upper"].tolist() == [b"AB", b"C"]


def test_closed_model_refuses_calls(mlp: Mlp, batch: np.ndarray) -> None:
    model = RUNTIME.load(mlp.savedmodel, signature=None, options={})
    model.close()
    with pytest.raises(UnavailableError):
        model.predict({"x": batch})


def test_an_empty_graph_file_is_incomplete(mlp: Mlp, tmp_path: Path) -> None:
    root = _copy(mlp, tmp_path)
    (root / "saved_model.pb").write_bytes(b"")
    assert "saved_model.pb is empty" in (RUNTIME.incomplete(root) or "")


def test_has_savedmodel_parts(tmp_path: Path) -> None:
    assert not has_savedmodel_parts(tmp_path)
    (tmp_path / "variables").mkdir()
    (tmp_path / "variables" / "variables.index").write_bytes(b"x")
    assert has_savedmodel_parts(tmp_path) and not RUNTIME.detect(tmp_path)
    assert "no saved_model.pb" in (RUNTIME.incomplete(tmp_path) or "")
    (tmp_path / "variables" / "variables.index").unlink()
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "saved_model.pb").write_bytes(b"g")
    assert has_savedmodel_parts(tmp_path)
