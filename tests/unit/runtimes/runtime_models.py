"""Shared by the runtime tests: one tiny MLP (8-16-4, input ``x``, output layer ``probs``),
saved in each format the runtimes read: a SavedModel, a ``.keras`` file and an ONNX file."""

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
