"""Models for the optimize tests, built by the tests (TensorFlow imported when called)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def sensitive_model(path: Path) -> Path:
    """Scores from 16 features, where one weight (on a feature the samples leave at 0) is
    10,000 times the others: int8 with one scale per tensor rounds every other weight to
    0, so the quantized model answers class 0 whatever the input."""
    import tensorflow as tf

    weights = np.random.default_rng(0).normal(0, 0.01, (16, 10)).astype(np.float32)
    weights[15, 3] = 100.0

    class Sensitive(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(weights)

        @tf.function(input_signature=[tf.TensorSpec((None, 16), tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"scores": tf.nn.softmax(tf.matmul(x, self.w))}

    module = Sensitive()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def svd_model(path: Path) -> None:
    """A real SavedModel tf2onnx cannot convert (ONNX has no SVD)."""
    import tensorflow as tf

    class Svd(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 4, 4), tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": tf.linalg.svd(x, compute_uv=False)}

    module = Svd()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def tf_function_model(
    path: Path, specs: list[tuple[str, tuple[int | None, ...], str]], fn: str
) -> Path:
    """A SavedModel serving ``fn`` (a Python expression over ``tf`` and the inputs, by name,
    giving a dict of outputs) on inputs ``(name, shape, dtype)``."""
    import tensorflow as tf

    names = [name for name, _, _ in specs]
    signature = [tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in specs]

    def serve(*tensors: tf.Tensor) -> dict[str, tf.Tensor]:
        scope = {"tf": tf, **dict(zip(names, tensors, strict=True))}
        return eval(fn, scope)  # the tests' own expressions

    module = tf.Module()
    module.serve = tf.function(serve, input_signature=signature)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path
