"""One ``keepwarm serve`` process shared by the end-to-end tests that do not stop it.

Its repository: the example MLP as a SavedModel and as ONNX, a model with a text input
and a bytes output (for ``b64``), a model whose only version cannot load, and a model
directory without versions.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.server_process import ServerProcess


def build_text_model(dest: Path) -> Path:
    """A SavedModel: ``text`` (string [-1]) -> ``length`` (int32) and ``echo_bytes``."""
    import tensorflow as tf

    class Text(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text: Any) -> dict[str, Any]:
            return {"length": tf.strings.length(text), "echo_bytes": text}

    module = Text()
    tf.saved_model.save(module, str(dest), signatures={"serving_default": module.serve})
    return dest


@pytest.fixture(scope="session")
def served_root(example_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served") / "models"
    root.mkdir()
    for name in ("mlp", "mlp_onnx"):
        shutil.copytree(example_models / name, root / name)
    build_text_model(root / "text" / "1")
    broken = root / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    (root / "empty").mkdir()
    return root


@pytest.fixture(scope="session")
def server(served_root: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(served_root)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def direct_mlp(served_root: Path) -> Any:
    """The MLP loaded in this process: the limit every served answer must equal."""
    import keepwarm

    return keepwarm.load(str(served_root / "mlp"))


@pytest.fixture(scope="session")
def grpc_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The gRPC tests' server over ``support.grpc_repo``'s repository, serving (its
    health service says so), shared by the ``test_grpc_*`` modules."""
    from support.grpc_repo import OPTIONS, build, serve, wait_serving

    root = build(tmp_path_factory.mktemp("grpc") / "models")
    with serve(root, *OPTIONS) as process:
        wait_serving(process.grpc_address)
        yield process
