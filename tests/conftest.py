"""Fixtures shared by every test: the example models, and an isolated keepwarm cache.
Hypothesis and Keras keep their files in temporary directories (not ``.hypothesis/`` in
the clone, nor ``~/.keras``), and no example's run time fails a test (the machine may be
loaded)."""

from __future__ import annotations

import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Read by Hypothesis when it first stores anything (its example database, its caches):
# set before any test runs, so the run writes nothing into the repository's tree.
os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = tempfile.mkdtemp(prefix="keepwarm-hypothesis-")
# Keras reads its configuration (backend, float type) from, and writes a default one to,
# ``~/.keras`` at import: the run neither depends on the user's nor leaves one there.
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="keepwarm-keras-")

from pathlib import Path

import pytest
from hypothesis import settings

from keepwarm.examples import build_examples

# Hypothesis's default deadline (200 ms an example) fails a property test whose example
# waited for a core on a loaded machine: what is checked is the answer, not its speed.
# No database: a run replays nothing an earlier run stored.
settings.register_profile("keepwarm", deadline=None, database=None)
settings.load_profile("keepwarm")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / ".test-cache" / "examples"


def pytest_runtestloop(session: pytest.Session) -> None:
    """When a test will use the example models, build them before the first test runs: in
    a fresh clone that takes minutes on a loaded machine (TensorFlow, Keras and ONNX
    models), which counted against the first such test's time limit (``timeout``, which
    covers its fixtures' setup). Then the loop runs as usual (None: the next hook's turn)."""
    if session.config.option.collectonly:
        return
    if any("example_models" in getattr(item, "fixturenames", ()) for item in session.items):
        build_examples(EXAMPLES)


@pytest.fixture(scope="session")
def example_models() -> Path:
    """The example model repository (``<name>/<version>/``), built once and reused
    across sessions while the builder's hash matches."""
    return build_examples(EXAMPLES)


@pytest.fixture(scope="session")
def example_hub_tarball(example_models: Path) -> Path:
    """The MLP SavedModel packed as TF Hub serves it (``mlp.tar.gz``)."""
    return example_models.parent / "hub" / "mlp.tar.gz"


@pytest.fixture(autouse=True)
def _isolated_keepwarm_env(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test gets its own empty download cache, and is online unless it says otherwise."""
    monkeypatch.setenv("KEEPWARM_CACHE_DIR", str(tmp_path_factory.mktemp("keepwarm-cache")))
    monkeypatch.delenv("KEEPWARM_OFFLINE", raising=False)


def pytest_unconfigure(config: pytest.Config) -> None:
    for made in ("HYPOTHESIS_STORAGE_DIRECTORY", "KERAS_HOME"):
        shutil.rmtree(os.environ[made], ignore_errors=True)
