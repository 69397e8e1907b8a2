from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from runtime_models import Mlp

from keepwarm.errors import ModelLoadError
from keepwarm.runtimes import LoadedModel, detect_runtime, get_runtime, registry, runtime_names
from keepwarm.signature import Signature, TensorSpec

_SIG = Signature(
    inputs=(TensorSpec("a", np.dtype("int64"), None),),
    outputs=(TensorSpec("b", np.dtype("int64"), None),),
)


class _Echo:
    signature = _SIG
    nbytes = 0
    nbytes_source = "files"

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"b": inputs["a"]}

    def close(self) -> None:
        pass


class EchoRuntime:
    """A third-party runtime: claims ``.echo`` files, before every built-in."""

    name = "echo"
    priority = 0
    unsafe = False

    def detect(self, path: Path) -> bool:
        return path.suffix == ".echo"

    def incomplete(self, path: Path) -> str | None:
        return None

    def load(self, path: Path, *, signature: str | None, options: Mapping[str, Any]) -> LoadedModel:
        return _Echo()


@pytest.fixture
def echo_registered() -> Iterator[EchoRuntime]:
    runtime = EchoRuntime()
    registry.register(runtime)
    try:
        yield runtime
    finally:
        registry._all().pop(runtime.name, None)


def test_builtins_are_registered() -> None:
    assert {"savedmodel", "keras", "onnx", "python", "pickle"} <= set(runtime_names())
    for name in ("savedmodel", "keras", "onnx", "python", "pickle"):
        runtime = get_runtime(name)
        assert runtime.name == name
        assert runtime.unsafe is (name == "pickle")


def test_detect_picks_each_format(mlp: Mlp) -> None:
    assert detect_runtime(mlp.savedmodel).name == "savedmodel"
    assert detect_runtime(mlp.keras).name == "keras"
    assert detect_runtime(mlp.onnx / "model.onnx").name == "onnx"


def test_unknown_layout_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no model here")
    with pytest.raises(ModelLoadError, match="no runtime recognises"):
        detect_runtime(tmp_path)


@pytest.mark.parametrize("name", ["mlp.tar.gz", "mlp.TGZ"])
def test_a_local_archive_is_said_not_to_be_unpacked(tmp_path: Path, name: str) -> None:
    """keepwarm.load("mlp.tar.gz") listed every format it looks for, none of them a hint
    that only http(s):// archives are unpacked."""
    (tmp_path / name).write_bytes(b"\x1f\x8b")
    with pytest.raises(ModelLoadError, match=r"a local archive is not unpacked: extract it"):
        detect_runtime(tmp_path / name)


def test_a_registered_runtime_is_found(echo_registered: EchoRuntime, tmp_path: Path) -> None:
    path = tmp_path / "m.echo"
    path.write_text("")
    assert "echo" in runtime_names()
    runtime = detect_runtime(path)
    assert runtime is get_runtime("echo") is echo_registered
    model = runtime.load(path, signature=None, options={})
    assert isinstance(model, LoadedModel)
    assert model.predict(model.signature.coerce(np.arange(3)))["b"].tolist() == [0, 1, 2]


def test_a_broken_entry_point_is_logged_and_skipped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    points = [
        EntryPoint("broken", "kw_no_such_package.runtime:Runtime", registry.GROUP),
        EntryPoint("echo", f"{__name__}:EchoRuntime", registry.GROUP),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: points)
    monkeypatch.setattr(registry, "_runtimes", None)
    with caplog.at_level(logging.WARNING, logger="keepwarm.runtimes"):
        names = runtime_names()
        assert runtime_names() == names  # later calls do not raise either
    assert "broken" not in names
    assert {"echo", "savedmodel", "keras", "onnx", "python", "pickle"} <= set(names)
    (record,) = [r for r in caplog.records if r.name == "keepwarm.runtimes"]
    assert record.levelno == logging.WARNING
    assert "'broken'" in record.getMessage()
    assert "ModuleNotFoundError" in record.getMessage()


_NO_FRAMEWORK = """
import json, sys
from pathlib import Path
import keepwarm.runtimes as r
paths = [Path(p) for p in sys.argv[1:]]
found = [r.detect_runtime(p).name for p in paths]
incomplete = [r.get_runtime(n).incomplete(p) for n, p in zip(found, paths)]
heavy = ("tensorflow", "keras", "onnxruntime", "onnx", "tf2onnx", "joblib")
print(json.dumps({"names": r.runtime_names(), "found": found, "incomplete": incomplete,
                  "imported": [m for m in heavy if m in sys.modules]}))
"""


def test_importing_runtimes_imports_no_framework(mlp: Mlp) -> None:
    paths = [str(mlp.savedmodel), str(mlp.keras), str(mlp.onnx)]
    result = subprocess.run(
        [sys.executable, "-c", _NO_FRAMEWORK, *paths],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(result.stdout)
    assert "pickle" in report.pop("names")
    assert report == {
        "found": ["savedmodel", "keras", "onnx"],
        "incomplete": [None, None, None],
        "imported": [],
    }
