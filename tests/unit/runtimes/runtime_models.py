"""Shared by the runtime tests: one tiny MLP (8-16-4, input ``x``, output layer ``probs``),
saved in each format the runtimes read: a SavedModel, a ``.keras`` file and an ONNX file;
SavedModels of several dtypes and of control flow (TensorFlow 2's and 1's)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MLP_NBYTES = (8 * 16 + 16 + 16 * 4 + 4) * 4  # float32 weights and biases


@dataclass(frozen=True)
class Mlp:
    model: Any  # the Keras model, for reference outputs
    savedmodel: Path
    keras: Path  # a directory holding model.keras
    onnx: Path  # a directory holding model.onnx

    def reference(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(x, training=False))


def build_mlp(root: Path) -> Mlp:
    import keras
    import tensorflow as tf
    import tf2onnx

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,), name="x")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, name="probs")(hidden))
    model.export(str(root / "savedmodel"), verbose=False)
    (root / "keras").mkdir()
    model.save(root / "keras" / "model.keras")
    (root / "onnx").mkdir()
    tf2onnx.convert.from_keras(
        model,
        input_signature=(tf.TensorSpec((None, 8), tf.float32, name="x"),),
        opset=17,
        output_path=str(root / "onnx" / "model.onnx"),
    )
    return Mlp(model, root / "savedmodel", root / "keras", root / "onnx")


def save_several(path: Path) -> Path:
    """A SavedModel whose inputs and outputs are of several dtypes (float, int64, string,
    bool), names not sorted; a negative ``alpha`` fails its own assertion."""
    import tensorflow as tf

    class Several(tf.Module):
        def __init__(self) -> None:
            self.scale = tf.Variable([1.0, 2.0, 3.0])

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 3], tf.float32, name="zeta"),
                tf.TensorSpec([None], tf.int64, name="alpha"),
                tf.TensorSpec([None, 3], tf.float32, name="mid"),
                tf.TensorSpec([None], tf.string, name="text"),
            ]
        )
        def serve(self, zeta: Any, alpha: Any, mid: Any, text: Any) -> dict[str, Any]:
            tf.debugging.assert_non_negative(alpha, message="alpha must not be negative")
            return {
                "z_out": zeta * self.scale - mid,
                "a_count": alpha * 2,
                "b_text": tf.strings.upper(text),
                "flag": alpha > 1,
            }

    module = Several()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def several_inputs() -> dict[str, np.ndarray]:
    return {
        "zeta": np.arange(6, dtype=np.float32).reshape(2, 3),
        "alpha": np.array([1, 5], np.int64),
        "mid": np.full((2, 3), 0.5, np.float32),
        "text": np.array([b"ab", b"c"], dtype=object),
    }


def save_loop(path: Path) -> Path:
    """A SavedModel with TensorFlow 2's control flow: ``y`` is ``x`` after ``n`` rounds of
    ``y * 1.5 + 1`` (``tf.while_loop``), ``z`` is ``y - 10`` or ``y + 10`` (``tf.cond``)."""
    import tensorflow as tf

    class Loop(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 3], tf.float32, name="x"),
                tf.TensorSpec([], tf.int32, name="n"),
            ]
        )
        def serve(self, x: Any, n: Any) -> dict[str, Any]:
            _, y = tf.while_loop(
                lambda i, y: i < n, lambda i, y: (i + 1, y * 1.5 + 1.0), (tf.constant(0), x)
            )
            z = tf.cond(tf.reduce_sum(y) > 10.0, lambda: y - 10.0, lambda: y + 10.0)
            return {"y": y, "z": z}

    module = Loop()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def save_v1_cond(path: Path) -> Path:
    """A TensorFlow 1 SavedModel (a session's graph) whose ``tf.compat.v1.cond`` is
    ``Switch``/``Merge`` nodes: ``y`` is ``x * w`` when ``x`` sums above 0, else ``x - w``."""
    import tensorflow as tf

    graph = tf.Graph()
    was_v2 = tf.compat.v1.control_flow_v2_enabled()
    tf.compat.v1.disable_control_flow_v2()
    try:
        with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
            x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
            w = tf.compat.v1.get_variable("w", initializer=tf.constant([1.0, 2.0, 3.0]))
            y = tf.compat.v1.cond(tf.reduce_sum(x) > 0, lambda: x * w, lambda: x - w)
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(str(path))
            signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={"serving_default": signature}
            )
            builder.save()
    finally:
        if was_v2:
            tf.compat.v1.enable_control_flow_v2()
    assert any(node.op == "Switch" for node in graph.as_graph_def().node)
    return path


def same_outputs(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """The same names in the same order, each the same dtype, shape and values."""
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape
        np.testing.assert_array_equal(got[name], value)


def random_inputs(model: Any, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 values for each of ``model``'s inputs, ``batch`` for every unknown size."""
    rng = np.random.default_rng(seed)
    shapes = {s.name: [batch if d is None else d for d in s.shape] for s in model.signature.inputs}
    return {name: rng.random(shape).astype(np.float32) for name, shape in shapes.items()}
