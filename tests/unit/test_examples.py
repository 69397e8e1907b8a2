"""The example repository has the promised layout, and its three MLP formats agree."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

import keepwarm
from keepwarm.examples import (
    DIGITS_TEST,
    FAMILIES,
    LABELS,
    builder_hash,
    built_names,
    is_up_to_date,
    main,
)

EXPECTED = {
    "mlp/1/saved_model.pb",
    "mlp_keras/1/model.keras",
    "mlp_onnx/1/model.onnx",
    "mobilenet_v2/1/saved_model.pb",
    "mobilenet_v2_keras/1/model.keras",
    "mobilenet_v2_onnx/1/model.onnx",
    "digits/1/saved_model.pb",
    "digits/1/test.npz",
}


def test_layout(example_models: Path) -> None:
    names = {p.relative_to(example_models).as_posix() for p in example_models.rglob("*")}
    assert names >= EXPECTED
    assert {p.name for p in example_models.iterdir()} == {
        f"{family}{suffix}"
        for family in FAMILIES
        for suffix in (("",) if family == "digits" else ("", "_keras", "_onnx"))
    }
    assert is_up_to_date(example_models.parent)
    assert len(builder_hash()) == 64


def test_hub_tarball_has_savedmodel_at_root(example_hub_tarball: Path) -> None:
    with tarfile.open(example_hub_tarball) as tar:
        names = set(tar.getnames())
    assert {"saved_model.pb", "variables/variables.index"} <= names


def test_mlp_formats_agree(example_models: Path) -> None:
    import keras
    import onnxruntime as ort
    import tensorflow as tf

    x = np.random.default_rng(0).random((3, 784), dtype=np.float32)

    loaded = tf.saved_model.load(str(example_models / "mlp" / "1"))
    from_savedmodel = loaded.signatures["serving_default"](image=tf.constant(x))["probs"].numpy()

    model = keras.saving.load_model(example_models / "mlp_keras" / "1" / "model.keras")
    from_keras = np.asarray(model(x, training=False)["probs"])

    session = ort.InferenceSession(
        str(example_models / "mlp_onnx" / "1" / "model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    (from_onnx,) = session.run(["probs"], {"image": x})

    assert from_savedmodel.shape == (3, 10)
    np.testing.assert_allclose(from_keras, from_savedmodel, rtol=0, atol=1e-5)
    np.testing.assert_allclose(from_onnx, from_savedmodel, rtol=0, atol=1e-5)
    np.testing.assert_allclose(from_savedmodel.sum(axis=1), 1.0, atol=1e-5)


def test_digits_is_trained_and_keeps_its_test_split(example_models: Path) -> None:
    version = example_models / "digits" / "1"
    with np.load(version / DIGITS_TEST) as data:
        images, labels = data["image"], data[LABELS]
    assert images.shape == (360, 64) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert sorted(set(labels.tolist())) == list(range(10))
    cache = keepwarm.ModelCache()
    try:
        outputs = cache.load(version).predict({"image": images})
    finally:
        cache.close()
    predicted = np.argmax(outputs["probs"], axis=1)
    accuracy = float(np.mean(predicted == labels))
    assert accuracy >= 0.93, accuracy  # about 0.97; random weights give about 0.10


def test_a_dir_holding_what_no_build_wrote_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # was: the build replaced DIR/models whole, and DIR/models/mine went with the old tree
    mine = tmp_path / "models" / "mine" / "1" / "model.onnx"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"not built here")
    assert main([str(tmp_path), "--only", "digits"]) == 2
    said = capsys.readouterr().err
    assert said.startswith(f"error: {tmp_path / 'models'} holds mine, which no example build")
    assert mine.read_bytes() == b"not built here"
    assert not (tmp_path / "models" / "digits").exists()
    # a file where DIR should be: one error line, not a traceback
    taken = tmp_path / "taken"
    taken.write_text("")
    assert main([str(taken)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_what_a_build_writes_is_what_it_may_replace() -> None:
    assert built_names()["models"] == {p.split("/")[0] for p in EXPECTED}
