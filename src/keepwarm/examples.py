"""Build the example model repository: random weights, a fixed seed, no downloads.

``python -m keepwarm.examples [DIR]`` (default ``examples``) writes::

    DIR/models/mlp/1/                       SavedModel (``model.export``)
    DIR/models/mlp_keras/1/model.keras      the same MLP, Keras format
    DIR/models/mlp_onnx/1/model.onnx        the same MLP, through tf2onnx
    DIR/models/mobilenet_v2{,_keras,_onnx}/1/   MobileNetV2 (``weights=None``), three ways
    DIR/models/digits/1/                    an MLP 64-256-256-10 trained on scikit-learn's
                                            handwritten digits (SavedModel), with
    DIR/models/digits/1/test.npz            its held-out test split: ``image`` and ``labels``
    DIR/models/<name>/model.toml            [batching] on (see keepwarm.config)
    DIR/hub/mlp.tar.gz                      the MLP SavedModel as TF Hub serves it
    DIR/.builder-hash                       written last; a match means "up to date"

Every model has one input, ``image``, and one output, ``probs`` (the models return a
dict, so the SavedModel signature, the Keras model and the ONNX graph all use that name).
The MLP is 784-256-10; MobileNetV2 takes (224, 224, 3); the digits model takes the 8x8
images flattened to 64 values in [0, 1] and is trained (seeded, a few seconds on a CPU) so
that accuracy is measured on a real task: about 97% on its 360 test images.

A build happens in a temporary directory inside DIR and is renamed into place, under a
file lock, so concurrent test sessions share one build.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

SEED = 0
STAMP = ".builder-hash"
FAMILIES = ("mlp", "mobilenet_v2", "digits")
INPUT = "image"
OUTPUT = "probs"
_VERSIONED = ("tensorflow", "keras", "tf2onnx", "onnx", "scikit-learn")
DIGITS_TEST = "test.npz"  # inside the digits version directory
LABELS = "labels"
# Served with dynamic batching: concurrent requests share a batch; an idle model never
# waits (the other keys come from Settings.batching).
MODEL_TOML = "[batching]\nmax_batch_size = 32\n"


def builder_hash() -> str:
    """Hash of this file's source and the versions of the tools that build the models."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for dist in _VERSIONED:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "missing"
        digest.update(f"{dist}={version}\n".encode())
    return digest.hexdigest()


def is_up_to_date(dest: Path, families: Sequence[str] = FAMILIES) -> bool:
    """True when ``dest`` holds a build of ``families`` by this builder."""
    try:
        stamp = json.loads((dest / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("hash") == builder_hash() and set(families) <= set(stamp.get("models", []))


def build_examples(dest: Path, only: Sequence[str] | None = None, force: bool = False) -> Path:
    """Build into ``dest`` unless it is up to date; return ``dest / "models"``."""
    families = tuple(only) if only else FAMILIES
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown example models {sorted(unknown)}; choose from {FAMILIES}")
    dest.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest / ".build.lock")):
        if not force and is_up_to_date(dest, families):
            print(f"examples up to date in {dest}")
            return dest / "models"
        _check_replaceable(dest)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=dest, prefix=".build-") as tmp:
            work = Path(tmp)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _build_all(work, families)
            (dest / STAMP).unlink(missing_ok=True)
            for part in ("models", "hub"):
                _swap_in(work / part, dest / part)
        stamp = {"hash": builder_hash(), "models": list(families)}
        (dest / STAMP).write_text(json.dumps(stamp) + "\n")
        print(f"examples built in {dest} in {time.perf_counter() - started:.1f} s")
    return dest / "models"


class ExamplesError(ValueError):
    """DIR cannot take a build: what is there would be lost, or it is not a directory."""


def built_names() -> dict[str, set[str]]:
    """What a build writes into ``DIR/models`` and ``DIR/hub`` (replaced whole)."""
    models = {f"{family}{suffix}" for family in FAMILIES for suffix in ("", "_keras", "_onnx")}
    return {"models": (models - {"digits_keras", "digits_onnx"}), "hub": {"mlp.tar.gz"}}


def _check_replaceable(dest: Path) -> None:
    """Refuse a ``dest`` whose ``models/`` or ``hub/`` holds what no build wrote (hidden
    names aside): the build replaces both whole, and a user's own ``DIR/models/<name>``
    was deleted with the old tree."""
    for part, names in built_names().items():
        target = dest / part
        if not target.exists():
            continue
        if not target.is_dir():
            raise ExamplesError(f"{target} is not a directory; choose another DIR")
        foreign = sorted(p.name for p in target.iterdir() if p.name not in names)
        foreign = [name for name in foreign if not name.startswith(".")]
        if foreign:
            raise ExamplesError(
                f"{target} holds {', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}, "
                f"which no example build wrote: a build replaces {target} whole; choose "
                "another DIR, or move them out"
            )


def _swap_in(new: Path, target: Path) -> None:
    """Rename ``new`` onto ``target``; the old tree is renamed aside first, then removed."""
    old = target.with_name(f".old-{target.name}-{time.monotonic_ns()}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _timed(what: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    print(f"  {what:<44} {time.perf_counter() - started:6.2f} s", flush=True)


def _build_all(work: Path, families: Sequence[str]) -> None:
    with _timed("import tensorflow, keras, tf2onnx"):
        import keras
        import tensorflow as tf
        import tf2onnx  # noqa: F401  (timed here, used in _write_onnx)
    builders: dict[str, Callable[[Any], Any]] = {"mlp": _mlp, "mobilenet_v2": _mobilenet_v2}
    models = work / "models"
    for family in families:
        keras.utils.set_random_seed(SEED)
        if family == "digits":
            _write_digits(keras, models / family / "1")
            continue
        with _timed(f"build {family}"):
            model = builders[family](keras)
        _write_formats(tf, model, models, family)
    if "mlp" in families:
        with _timed("hub/mlp.tar.gz"):
            write_hub_tarball(models / "mlp" / "1", work / "hub" / "mlp.tar.gz")
    else:
        (work / "hub").mkdir()


def _mlp(keras: Any) -> Any:
    image = keras.Input((784,), name=INPUT)
    hidden = keras.layers.Dense(256, activation="relu", name="hidden")(image)
    probs = keras.layers.Dense(10, activation="softmax", name=OUTPUT)(hidden)
    return keras.Model(image, {OUTPUT: probs}, name="mlp")


def _mobilenet_v2(keras: Any) -> Any:
    image = keras.Input((224, 224, 3), name=INPUT)
    base = keras.applications.MobileNetV2(input_tensor=image, weights=None)
    return keras.Model(image, {OUTPUT: base.output}, name="mobilenet_v2")


def _write_digits(keras: Any, version: Path) -> None:
    """Train the digits MLP on 80% of ``load_digits`` and keep the other 20% beside it."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (data.data / 16.0).astype(np.float32)
    labels = data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, random_state=SEED, stratify=labels
    )
    with _timed("train digits (64-256-256-10)"):
        image = keras.Input((64,), name=INPUT)
        hidden = keras.layers.Dense(256, activation="relu", name="hidden_1")(image)
        hidden = keras.layers.Dense(256, activation="relu", name="hidden_2")(hidden)
        probs = keras.layers.Dense(10, activation="softmax", name=OUTPUT)(hidden)
        model = keras.Model(image, {OUTPUT: probs}, name="digits")
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3), loss={OUTPUT: "sparse_categorical_crossentropy"}
        )
        model.fit(x_train, {OUTPUT: y_train}, epochs=30, batch_size=32, shuffle=True, verbose=0)
    predicted = np.argmax(model(x_test, training=False)[OUTPUT], axis=1)
    print(f"  digits test accuracy {np.mean(predicted == y_test):.4f} on {len(y_test)} images")
    with _timed("digits/1 (SavedModel)"):
        model.export(str(version), verbose=False)
    np.savez(version / DIGITS_TEST, **{INPUT: x_test, LABELS: y_test})


def _write_formats(tf: Any, model: Any, models: Path, family: str) -> None:
    with _timed(f"{family}/1 (SavedModel)"):
        model.export(str(models / family / "1"), verbose=False)
    for name in (family, f"{family}_keras", f"{family}_onnx"):
        (models / name).mkdir(parents=True, exist_ok=True)
        (models / name / "model.toml").write_text(MODEL_TOML)
    keras_dir = models / f"{family}_keras" / "1"
    keras_dir.mkdir(parents=True)
    with _timed(f"{family}_keras/1/model.keras"):
        model.save(str(keras_dir / "model.keras"))
    onnx_dir = models / f"{family}_onnx" / "1"
    onnx_dir.mkdir(parents=True)
    with _timed(f"{family}_onnx/1/model.onnx (tf2onnx)"):
        _write_onnx(tf, model, onnx_dir / "model.onnx")


def _write_onnx(tf: Any, model: Any, path: Path) -> None:
    import tf2onnx

    spec = model.inputs[0]
    signature = [tf.TensorSpec((None, *spec.shape[1:]), tf.float32, name=INPUT)]
    function = tf.function(lambda image: model(image, training=False))
    tf2onnx.convert.from_function(
        function, input_signature=signature, opset=17, output_path=str(path)
    )


def write_hub_tarball(savedmodel: Path, tarball: Path) -> None:
    """Pack a SavedModel as TF Hub serves it: a gzipped tar, files at the archive root."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with (
        tarball.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w") as tar,
    ):
        for path in sorted(savedmodel.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(savedmodel).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_file():
                with path.open("rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keepwarm.examples",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dir", nargs="?", default="examples", type=Path, help="where to build (default: examples)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=FAMILIES,
        help="build only this model family (repeatable)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        build_examples(args.dir, only=args.only, force=args.force)
    except (ExamplesError, OSError) as exc:  # a file named DIR, no permission
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
