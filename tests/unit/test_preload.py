"""TensorFlow's native libraries preloaded on a thread at ``keepwarm serve``'s start
(``keepwarm.preload``): only for a repository that will import TensorFlow here, without
the GIL, and an import afterwards that works and reuses them."""

from __future__ import annotations

import ctypes
import importlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keepwarm import preload

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the preload is for Linux's dynamic loader"
)


def _file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    ("relative", "holds"),
    [
        ("mlp/1/saved_model.pb", True),
        ("mlp/1/model.keras", True),
        ("mlp/2/weights.H5", True),
        ("saved_model.pb", True),  # the repository is one SavedModel
        ("mlp/1/model.onnx", False),
        ("mlp/1/model.pkl", False),
        ("a/b/c/d/saved_model.pb", False),  # deeper than REPO/MODEL/VERSION/
        ("mlp/.cache/1/saved_model.pb", False),  # hidden directories are not models
    ],
)
def test_holds_tensorflow_models(tmp_path: Path, relative: str, holds: bool) -> None:
    _file(tmp_path / "repo" / relative)
    assert preload.holds_tensorflow_models(tmp_path / "repo") is holds


def test_not_a_local_directory(tmp_path: Path) -> None:
    assert not preload.holds_tensorflow_models(tmp_path / "missing")
    assert not preload.holds_tensorflow_models(_file(tmp_path / "saved_model.pb"))
    assert not preload.holds_tensorflow_models("s3://bucket/models")
    assert preload.preload_tensorflow("s3://bucket/models") is None


def test_a_huge_directory_is_not_scanned_to_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preload, "_MAX_ENTRIES", 5)
    for i in range(6):
        (tmp_path / f"m{i}").mkdir()
    _file(tmp_path / "m0" / "1" / "saved_model.pb")
    assert not preload.holds_tensorflow_models(tmp_path)


def test_no_preload_for_other_formats_or_isolated_models(tmp_path: Path) -> None:
    _file(tmp_path / "onnx" / "mlp" / "1" / "model.onnx")
    assert preload.preload_tensorflow(str(tmp_path / "onnx")) is None
    _file(tmp_path / "tf" / "mlp" / "1" / "saved_model.pb")
    assert preload.preload_tensorflow(str(tmp_path / "tf"), isolate=True) is None


def test_the_libraries_are_tensorflows_own() -> None:
    paths = preload.tensorflow_libraries()
    importlib.import_module("tensorflow")  # an extra make test installs: missing fails
    assert [p.name for p in paths] == list(preload.TENSORFLOW_LIBRARIES)
    assert all(p.parent.name == "tensorflow" and p.is_file() for p in paths)


def test_dlopen_is_called_without_the_gil() -> None:
    # A CDLL function releases the GIL for the call; a PYTHONAPI one (PyDLL) would not,
    # and the preload would stop every other thread as the import does.
    dlopen = preload._dlopen()
    assert not dlopen._flags_ & ctypes._FUNCFLAG_PYTHONAPI  # type: ignore[attr-defined]


def test_missing_library_stops_the_preload(tmp_path: Path) -> None:
    assert preload.load_libraries([tmp_path / "libmissing.so", tmp_path / "libnext.so"]) == []


def test_tensorflow_imports_and_runs_after_the_preload(
    example_models: Path, tmp_path: Path
) -> None:
    importlib.import_module("tensorflow")  # an extra make test installs: missing fails
    repo = tmp_path / "repo"
    shutil.copytree(example_models / "mlp", repo / "mlp")
    code = textwrap.dedent(
        f"""
        import sys
        from keepwarm.preload import preload_tensorflow

        thread = preload_tensorflow({str(repo)!r})
        thread.join(120)
        maps = open("/proc/self/maps").read()
        print("mapped", "libtensorflow_cc.so.2" in maps, "tensorflow" in sys.modules)
        import numpy as np
        import tensorflow as tf

        model = tf.saved_model.load({str(repo / "mlp" / "1")!r})
        out = model.signatures["serving_default"](image=tf.zeros((2, 784)))
        print("ran", next(iter(out.values())).shape)
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mapped True False" in done.stdout
    assert "ran (2, 10)" in done.stdout


def test_serve_starts_without_the_heavy_imports() -> None:
    # What ``keepwarm serve`` imports before ``serve`` starts the preload: none of numpy,
    # the model cache, the loading machinery, the workers or the optimize command.
    code = textwrap.dedent(
        """
        import sys
        import keepwarm.cli, keepwarm.server
        from keepwarm.cli_serve import serve_parser

        serve_parser().parse_args(["serve", "models", "--port", "0"])
        heavy = ("numpy", "tensorflow", "keepwarm.cache", "keepwarm.loading",
                 "keepwarm.workers", "keepwarm.optimize", "keepwarm.batching")
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy or m in heavy
                     or any(m.startswith(h + ".") for h in heavy)))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_the_package_names_load_on_first_use() -> None:
    import keepwarm
    from keepwarm.cache import ModelCache, load

    assert keepwarm.load is load and keepwarm.ModelCache is ModelCache
    assert {"load", "Model", "Repository", "Settings"} <= set(dir(keepwarm))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        keepwarm.nothing  # noqa: B018


def test_an_unreadable_directory_is_not_scanned(tmp_path: Path) -> None:
    _file(tmp_path / "repo" / "open" / "1" / "model.onnx")
    locked = tmp_path / "repo" / "locked"
    _file(locked / "1" / "saved_model.pb")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("this user reads any directory (root)")
        assert not preload.holds_tensorflow_models(tmp_path / "repo")
    finally:
        locked.chmod(0o755)
