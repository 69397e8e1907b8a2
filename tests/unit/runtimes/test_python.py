from __future__ import annotations

import pickle
import sys
import textwrap
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from keepwarm.errors import (
    InvalidConfigError,
    ModelLoadError,
    ModelNotFoundError,
    UnavailableError,
    UnsafeFormatError,
)
from keepwarm.loading import spec_from_call
from keepwarm.runtimes import detect_runtime
from keepwarm.runtimes.pickled import PickleRuntime
from keepwarm.runtimes.python import PythonRuntime
from keepwarm.signature import Signature, TensorSpec

RUNTIME = PythonRuntime()
PICKLE = PickleRuntime()
ALLOW: dict[str, object] = {"allow_unsafe": True}

MODULE = """
import numpy as np

class Model:
    def load(self, path):
        self.factor = float((path / "factor.txt").read_text())

    def predict(self, inputs):
        return {"y": inputs["x"] * self.factor}
"""
TOML = """
[python]
class = "{module}:Model"

[python.signature]
inputs = [{{ name = "x", dtype = "float32", shape = [-1, 2] }}]
outputs = [{{ name = "y", dtype = "float32", shape = [-1, 2] }}]
"""


def _model_dir(
    root: Path, factor: float = 2.0, module: str = "kw_test_model", toml: str = TOML
) -> Path:
    root.mkdir(parents=True)
    (root / f"{module}.py").write_text(MODULE)
    (root / "factor.txt").write_text(str(factor))
    (root / "keepwarm.toml").write_text(toml.format(module=module))
    return root


class Tripler:
    signature = Signature(
        inputs=(TensorSpec("v", np.dtype("float64"), (None,)),),
        outputs=(TensorSpec("w", np.dtype("float64"), (None,)),),
        name="triple",
    )

    def load(self, path: Path) -> None:
        self.closed = False

    def predict(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return inputs["v"] * 3  # one array for a one-output model

    def close(self) -> None:
        self.closed = True


class Doubler:
    """A picklable 'estimator' with a scikit-learn-like predict."""

    n_features_in_ = 2

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x.sum(axis=1) * 2


def test_loads_the_class_named_in_keepwarm_toml(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    assert RUNTIME.detect(root) and RUNTIME.incomplete(root) is None
    assert detect_runtime(root).name == "python"
    model = RUNTIME.load(root, signature=None, options=ALLOW)
    assert [s.describe() for s in model.signature.inputs] == ["x: float32[-1, 2]"]
    inputs = model.signature.coerce(np.ones((3, 2)))  # float64 cast to float32
    out = model.predict(inputs)
    assert out["y"].dtype == np.float32 and out["y"].tolist() == [[2.0, 2.0]] * 3
    assert model.nbytes_source == "files" and model.nbytes > 0


def test_each_version_runs_its_own_module(tmp_path: Path) -> None:
    one = RUNTIME.load(_model_dir(tmp_path / "1", 2.0, "kw_same"), signature=None, options=ALLOW)
    (tmp_path / "2").mkdir()
    root = _model_dir(tmp_path / "2" / "m", 5.0, "kw_same")
    (root / "kw_same.py").write_text(MODULE.replace("* self.factor", "* self.factor + 1"))
    two = RUNTIME.load(root, signature=None, options=ALLOW)
    x = {"x": np.ones((1, 2), np.float32)}
    assert one.predict(x)["y"].tolist() == [[2.0, 2.0]]
    assert two.predict(x)["y"].tolist() == [[6.0, 6.0]]


def test_class_object_with_its_own_signature(tmp_path: Path) -> None:
    model = RUNTIME.load(tmp_path, signature=None, options={"class": Tripler})
    assert model.signature.name == "triple"
    assert model.predict({"v": np.array([1.0, 2.0])})["w"].tolist() == [3.0, 6.0]
    with pytest.raises(ModelNotFoundError, match="triple"):
        RUNTIME.load(tmp_path, signature="other", options={"class": Tripler})
    model.close()
    with pytest.raises(UnavailableError):
        model.predict({"v": np.array([1.0])})


def test_a_signature_is_required(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m", toml='[python]\nclass = "{module}:Model"\n')
    with pytest.raises(InvalidConfigError, match="declares no signature"):
        RUNTIME.load(root, signature=None, options=ALLOW)


def test_missing_class_and_bad_config(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="no Python model class"):
        RUNTIME.load(tmp_path, signature=None, options={})
    (tmp_path / "keepwarm.toml").write_text("[python\n")
    assert not RUNTIME.detect(tmp_path)
    assert "cannot be read" in (RUNTIME.incomplete(tmp_path) or "")


def test_errors_in_user_code_are_load_errors(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m")
    (root / "factor.txt").unlink()
    with pytest.raises(ModelLoadError, match="failed to load") as info:
        RUNTIME.load(root, signature=None, options=ALLOW)
    assert isinstance(info.value.__cause__, FileNotFoundError)
    with pytest.raises(ModelLoadError, match="cannot import"):
        RUNTIME.load(root, signature=None, options={"class": "kw_no_such_module:Model"})


def test_pickle_is_refused_by_the_loading_layer_without_allow_unsafe(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(Doubler()))
    assert detect_runtime(tmp_path).name == "pickle"
    assert PICKLE.unsafe and PICKLE.incomplete(tmp_path) is None
    with pytest.raises(UnsafeFormatError, match=r"options=\{'allow_unsafe': True\}") as info:
        spec_from_call(str(tmp_path)).load()
    assert info.value.format == "pickle"
    model = spec_from_call(str(tmp_path), options=ALLOW).load()
    assert model.signature.inputs[0].name == "input"


def test_the_pickle_runtime_leaves_the_unsafe_check_to_the_loading_layer(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(Doubler()))
    model = PICKLE.load(tmp_path, signature=None, options={})  # no second, different check
    assert model.signature.inputs[0].name == "input"


def test_pickle_loads_when_allowed(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(Doubler()))
    model = PICKLE.load(tmp_path, signature=None, options={"allow_unsafe": True})
    assert [s.describe() for s in model.signature.inputs] == ["input: float64[-1, 2]"]
    out = model.predict(model.signature.coerce(np.array([[1, 2], [3, 4]], np.float64)))
    assert out["output"].tolist() == [6.0, 14.0]


def test_truncated_pickle_is_incomplete(tmp_path: Path) -> None:
    (tmp_path / "m.pickle").write_bytes(pickle.dumps(Doubler())[:-1])
    assert "truncated" in (PICKLE.incomplete(tmp_path) or "")


def test_the_documented_keepwarm_toml_parses() -> None:
    import tomllib

    from keepwarm.runtimes import python

    block = (python.__doc__ or "").split("::", 1)[1].split("``options", 1)[0]
    parsed = tomllib.loads(textwrap.dedent(block))
    assert parsed["python"]["signature"]["inputs"][0]["name"] == "x"


_IMPORTED_MARKER = """
import pathlib
pathlib.Path(__file__).with_name("imported").write_text("ran")
"""


def test_a_class_named_by_keepwarm_toml_is_refused_without_allow_unsafe(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m", module="kw_refused_model")
    (root / "kw_refused_model.py").write_text(_IMPORTED_MARKER + MODULE)
    for options in ({}, {"allow_unsafe": "yes"}, {"allow_unsafe": 1}):
        with pytest.raises(UnsafeFormatError) as info:
            RUNTIME.load(root, signature=None, options=options)
        message = str(info.value)
        assert "keepwarm.toml" in message and "kw_refused_model:Model" in message
        assert "options={'allow_unsafe': True}" in message
        assert "Repository(..., allow_unsafe=True)" in message
        assert info.value.format == "python"
    assert not (root / "imported").exists()  # the model's module was never imported
    with pytest.raises(UnsafeFormatError):  # the whole load path says the same
        spec_from_call(str(root)).load()
    model = RUNTIME.load(root, signature=None, options=ALLOW)
    assert (root / "imported").read_text() == "ran"
    assert model.predict({"x": np.ones((1, 2), np.float32)})["y"].tolist() == [[2.0, 2.0]]


def test_a_class_the_caller_names_needs_no_allow_unsafe(tmp_path: Path) -> None:
    root = _model_dir(tmp_path / "m", module="kw_callers_model")
    model = RUNTIME.load(root, signature="triple", options={"class": Tripler})
    assert model.signature.name == "triple"
    model = RUNTIME.load(root, signature=None, options={"class": "kw_callers_model:Model"})
    assert model.predict({"x": np.ones((1, 2), np.float32)})["y"].tolist() == [[2.0, 2.0]]


def test_an_unknown_signature_name_is_not_found_for_a_pickle(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(Doubler()))
    with pytest.raises(ModelNotFoundError, match=r"'other'.*available signatures: serving_default"):
        PICKLE.load(tmp_path, signature="other", options=ALLOW)
    model = PICKLE.load(tmp_path, signature="serving_default", options=ALLOW)
    assert model.signature.name == "serving_default"


def test_loads_while_other_threads_import(tmp_path: Path) -> None:
    """A server loads several models at once: while one thread imports a model's module,
    others add to ``sys.modules`` and take from it; the load must not trip over that
    (it once failed with 'dictionary changed size during iteration')."""
    root = _model_dir(tmp_path / "m", 2.0, "kw_churn")
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            names = [f"kw_churn_other_{i}" for i in range(64)]
            while not stop.is_set():
                for name in names:
                    sys.modules[name] = types.ModuleType(name)
                for name in names:
                    sys.modules.pop(name, None)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    other = threading.Thread(target=churn, daemon=True)
    other.start()
    try:
        for _ in range(200):
            model = RUNTIME.load(root, signature=None, options=ALLOW)
            assert model.predict({"x": np.ones((1, 2), np.float32)})["y"].tolist() == [[2, 2]]
    finally:
        stop.set()
        other.join(10)
        sys.setswitchinterval(switch)
    assert not other.is_alive() and errors == []
