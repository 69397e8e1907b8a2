"""Which TensorFlow executor runs the flat call (``runtimes/_executor.py``): the
single-threaded one where the function runs under it, TensorFlow's default where it
refuses (control flow), chosen on the first call; results identical either way."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_models import random_inputs as _inputs
from runtime_models import same_outputs as _same
from runtime_models import save_loop, save_several, save_v1_cond, several_inputs

from keepwarm.config import parse_model_config
from keepwarm.errors import InvalidConfigError, UnavailableError
from keepwarm.runtimes.keras import KerasRuntime
from keepwarm.runtimes.savedmodel import SavedModelRuntime

RUNTIME = SavedModelRuntime()
SINGLE = "single-threaded"


def _both(path: Path, runtime: Any = RUNTIME) -> tuple[Any, Any]:
    """The model loaded without the option and with ``tf_executor = "default"``."""
    auto = runtime.load(path, signature=None, options={})
    default = runtime.load(path, signature=None, options={"tf_executor": "default"})
    assert auto.call_path == default.call_path == "flat"
    assert auto.tf_executor == "undecided" and default.tf_executor.startswith("default")
    return auto, default


@pytest.mark.parametrize(("name", "batches"), [("mlp", (1, 32)), ("mobilenet_v2", (1, 3))])
def test_example_models_run_single_threaded_with_the_same_results(
    example_models: Path, name: str, batches: tuple[int, ...]
) -> None:
    auto, default = _both(example_models / name / "1")
    for batch in batches:
        inputs = _inputs(auto, batch)
        out = auto.predict(inputs)
        assert auto.tf_executor == SINGLE
        _same(out, default.predict(inputs))
        _same(out, auto.call_ordinary(inputs))


def test_keras_model_runs_single_threaded_with_the_same_results(example_models: Path) -> None:
    auto, default = _both(example_models / "mlp_keras" / "1", KerasRuntime())
    for batch in (1, 32):
        inputs = _inputs(auto, batch)
        _same(auto.predict(inputs), default.predict(inputs))
        assert auto.tf_executor == SINGLE
        _same(auto.predict(inputs), auto.call_ordinary(inputs))
    auto.close()
    with pytest.raises(UnavailableError):
        auto.predict(_inputs(auto, 1))


def test_several_dtypes_and_an_assertion_which_is_control_flow(tmp_path: Path) -> None:
    """``tf.debugging`` assertions are a ``tf.cond`` inside: the single-threaded executor
    refuses the graph, and a model's own error decides nothing."""
    import tensorflow as tf

    auto, default = _both(save_several(tmp_path / "several"))
    bad = {**several_inputs(), "alpha": np.array([-1, 2], np.int64)}
    with pytest.raises(tf.errors.InvalidArgumentError, match="alpha must not be negative"):
        auto.predict(bad)
    assert auto.tf_executor == "undecided"
    inputs = auto.signature.coerce(several_inputs())
    _same(auto.predict(inputs), default.predict(inputs))
    assert auto.tf_executor.startswith("default (the single-threaded executor refused")
    assert "does not support switch op" in auto.tf_executor
    _same(auto.predict(inputs), auto.call_ordinary(inputs))
    with pytest.raises(tf.errors.InvalidArgumentError, match="alpha must not be negative"):
        auto.predict(bad)


@pytest.mark.parametrize("save", [save_loop, save_v1_cond], ids=["tf2-loop", "tf1-cond"])
def test_control_flow_falls_back_to_the_default_executor(
    tmp_path: Path, save: Any, caplog: pytest.LogCaptureFixture
) -> None:
    auto, default = _both(save(tmp_path / "model"))
    cases = [{"x": np.ones((2, 3), np.float32), "n": np.array(n, np.int32)} for n in (3, 0)]
    cases += [{"x": -np.ones((1, 3), np.float32), "n": np.array(1, np.int32)}]
    names = {s.name for s in auto.signature.inputs}
    with caplog.at_level(logging.INFO, logger="keepwarm.runtimes"):
        for case in cases:
            inputs = {k: v for k, v in case.items() if k in names}
            out = auto.predict(inputs)
            assert auto.tf_executor.startswith("default (the single-threaded executor refused")
            assert "control flow" in auto.tf_executor or "switch" in auto.tf_executor
            _same(out, default.predict(inputs))
            _same(out, auto.call_ordinary(inputs))
    assert [r.getMessage() for r in caplog.records].count(
        f"TensorFlow executor for the model's calls: {auto.tf_executor[:300]}"
    ) == 1
    if save is save_loop:  # 1 -> 2.5 -> 4.75 -> 8.125, summed over 6 values > 10: minus 10
        np.testing.assert_allclose(auto.predict(cases[0])["z"], np.full((2, 3), -1.875))


def test_batched_and_served_through_the_library_face(example_models: Path) -> None:
    """Wrapped for batching (which has an ``executor`` of its own), warmed, then called."""
    import keepwarm

    cache = keepwarm.ModelCache()
    try:
        model = keepwarm.load(example_models / "mlp", batching=True, cache=cache)
        lease = model.acquire(timeout=60)
        try:
            raw = lease.model.raw.inner
            inputs = _inputs(raw, 3)
            got, expected = model.predict(inputs), raw.call_ordinary(inputs)
            # within float32 rounding: a batch may be padded to another size (other kernels)
            np.testing.assert_allclose(got["probs"], expected["probs"], rtol=1e-5, atol=1e-7)
            assert raw.tf_executor == SINGLE
        finally:
            lease.release()
    finally:
        cache.close()


def test_single_threaded_is_the_default_choice_by_name(example_models: Path) -> None:
    options = {"tf_executor": "single_threaded"}
    model = RUNTIME.load(example_models / "mlp" / "1", signature=None, options=options)
    model.predict(_inputs(model, 2))
    assert model.tf_executor == SINGLE


@pytest.mark.parametrize("value", ["single", "SINGLE_THREADED_EXECUTOR", "auto", 1, True, ""])
def test_bad_option_values_are_clear_errors(example_models: Path, mlp: Any, value: object) -> None:
    loads = [
        (RUNTIME, example_models / "mlp" / "1", "savedmodel"),
        (KerasRuntime(), mlp.keras, "keras"),
    ]
    for runtime, path, name in loads:
        with pytest.raises(InvalidConfigError) as info:
            runtime.load(path, signature=None, options={"tf_executor": value})
        assert str(info.value) == (
            f"{name} option tf_executor must be one of 'single_threaded', 'default', got {value!r}"
        )


def test_model_toml_passes_the_option_through_and_refuses_bad_values() -> None:
    config = parse_model_config('[options]\ntf_executor = "default"\n', source="model.toml")
    assert config.options == {"tf_executor": "default"}
    for text, given in [('"single"', "'single'"), ("1", "1"), ("true", "True")]:
        with pytest.raises(InvalidConfigError) as info:
            parse_model_config(f"[options]\ntf_executor = {text}\n", source="m/model.toml")
        assert str(info.value) == (
            'm/model.toml: options.tf_executor: expected one of "single_threaded", "default", '
            f"got {given}"
        )
