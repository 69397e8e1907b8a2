"""Building model-repository version directories for tests, and Python-runtime probe models.

Versions are placed the way a careful writer does it: copied into a hidden directory
inside the model directory, the marker written last, then renamed to the version number
(one atomic ``rename``). The probe classes below are named from ``keepwarm.toml`` files
as ``support.repo_builders:<Class>``; their class-level ``Probe`` records what happened.
A Python-runtime version runs code shipped in the repository: a ``Repository`` serves it
only when made with ``allow_unsafe=True``.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from keepwarm.signature import Signature, TensorSpec

MARKER = ".keepwarm-ready"
F32 = np.dtype("float32")
GATE_TIMEOUT_S = 30.0
ECHO_SIGNATURE = Signature(
    inputs=(TensorSpec("x", F32, (None, 4)),), outputs=(TensorSpec("version", F32, (None,)),)
)


# ------------------------------------------------------------------ placing versions


def place(
    model_dir: Path,
    version: int,
    source: Path | None = None,
    *,
    files: dict[str, bytes | str] | None = None,
    marker: bool = True,
) -> Path:
    """Make ``model_dir/<version>`` appear at once: a copy of ``source`` plus ``files``."""
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f".incoming-{version}-{uuid.uuid4().hex[:8]}"
    if source is not None:
        shutil.copytree(source, staging)
    else:
        staging.mkdir()
    for relative, content in (files or {}).items():
        target = staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            target.write_text(content)
        else:
            target.write_bytes(content)
    if marker:
        (staging / MARKER).touch()
    final = model_dir / str(version)
    os.rename(staging, final)
    return final


def python_files(cls: str) -> dict[str, bytes | str]:
    """The files of a Python-runtime version whose class is ``support.repo_builders:cls``."""
    return {"keepwarm.toml": f'[python]\nclass = "support.repo_builders:{cls}"\n'}


def place_python(model_dir: Path, version: int, cls: str) -> Path:
    """A Python-runtime version (served only with ``Repository(..., allow_unsafe=True)``)."""
    return place(model_dir, version, files=python_files(cls))


def write_model_toml(model_dir: Path, text: str) -> None:
    """Replace ``model.toml`` atomically (a reader never sees half a file)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f".model-{uuid.uuid4().hex[:8]}.toml"
    staging.write_text(text)
    os.replace(staging, model_dir / "model.toml")


def truncate_shard(version_dir: Path) -> Path:
    """Cut the SavedModel's (first) variables data shard to half its length."""
    shard = next((version_dir / "variables").glob("variables.data-*"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    return shard


def copy_slowly(source: Path, dest: Path, pause: Callable[[str], None]) -> None:
    """Copy a SavedModel into ``dest`` file by file, each data file in two halves, calling
    ``pause(what was just written)`` after every step. ``saved_model.pb`` comes last, so
    the format is incomplete until the very end."""
    files = sorted(
        (p for p in source.rglob("*") if p.is_file()),
        key=lambda p: (p.name == "saved_model.pb", p.name == "variables.index", str(p)),
    )
    dest.mkdir()
    pause("(empty directory)")
    for path in files:
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes()
        if path.name.startswith("variables.data") and len(data) > 1:
            with target.open("wb") as out:
                out.write(data[: len(data) // 2])
            pause(f"{path.name} (first half)")
            with target.open("ab") as out:
                out.write(data[len(data) // 2 :])
        else:
            target.write_bytes(data)
        if path.name != "saved_model.pb":
            pause(path.name)


def build_echo_savedmodels(dest: Path, versions: range) -> dict[int, Path]:
    """Real TensorFlow SavedModels whose output ``version`` (one float per row) is their
    version number; input ``x``: float32 ``[-1, 4]``. About 80 ms each."""
    import tensorflow as tf

    class Echo(tf.Module):  # type: ignore[misc]
        def __init__(self, version: int) -> None:
            super().__init__()
            self.version = tf.Variable(float(version))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"version": tf.fill(tf.shape(x)[:1], self.version)}

    out: dict[int, Path] = {}
    for version in versions:
        module = Echo(version)
        path = dest / str(version)
        tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
        out[version] = path
    return out


# ------------------------------------------------------------------ probe models


class Probe:
    """What the probe models saw; reset by each test that uses them."""

    lock: ClassVar[threading.Lock] = threading.Lock()
    loads: ClassVar[Counter[str]] = Counter()  # load() calls per class name
    predicts: ClassVar[Counter[str]] = Counter()  # predict() calls of CountingPredict, per dir
    active: ClassVar[Counter[str]] = Counter()  # loads running now, per directory
    max_active: ClassVar[int] = 0
    gate: ClassVar[threading.Event] = threading.Event()  # HangingLoad waits for it
    entered: ClassVar[threading.Event] = threading.Event()  # a HangingLoad has started

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.loads.clear()
            cls.predicts.clear()
            cls.active.clear()
            cls.max_active = 0
        cls.gate.clear()
        cls.entered.clear()

    @classmethod
    def count(cls, name: str) -> int:
        with cls.lock:
            return cls.loads[name]


class EchoVersion:
    """Predicts its own version number (the name of the directory it was loaded from).
    Counts concurrent loads per directory: ``Probe.max_active`` above 1 is a double load."""

    signature = ECHO_SIGNATURE

    def load(self, path: str | os.PathLike[str]) -> None:
        directory = os.fspath(path)
        with Probe.lock:
            Probe.loads[type(self).__name__] += 1
            Probe.active[directory] += 1
            Probe.max_active = max(Probe.max_active, Probe.active[directory])
        try:
            self.build(directory)
        finally:
            with Probe.lock:
                Probe.active[directory] -= 1

    def build(self, directory: str) -> None:
        self.version = float(Path(directory).name)
        self.weights = np.full((64, 64), self.version, dtype=F32) @ np.eye(64, dtype=F32)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"version": np.full(len(inputs["x"]), self.version, dtype=F32)}


class CountingPredict(EchoVersion):
    """Counts its ``predict`` calls (warmup included) in ``Probe.predicts``, per directory."""

    def build(self, directory: str) -> None:
        super().build(directory)
        self.directory = directory

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with Probe.lock:
            Probe.predicts[self.directory] += 1
        return super().predict(inputs)


class FailingLoad(EchoVersion):
    def load(self, path: str | os.PathLike[str]) -> None:
        with Probe.lock:
            Probe.loads[type(self).__name__] += 1
        raise RuntimeError("weights deliberately unreadable")


class HangingLoad(EchoVersion):
    def load(self, path: str | os.PathLike[str]) -> None:
        with Probe.lock:
            Probe.loads[type(self).__name__] += 1
        Probe.entered.set()
        if not Probe.gate.wait(GATE_TIMEOUT_S):
            raise TimeoutError("the test never opened the gate")
        self.build(os.fspath(path))


# ------------------------------------------------------------------ traffic


class Traffic:
    """``threads`` callers that lease ``name`` and predict without pause until stopped.

    Each thread records the versions it was served, in order (run-length: consecutive
    repeats are merged). A request fails when it raises, or when its output does not come
    wholly from the version its lease names. Use as a context manager.
    """

    def __init__(
        self, repo: Any, name: str, *, threads: int = 8, version: int | str | None = None
    ) -> None:
        self.repo, self.name, self.version = repo, name, version
        self.runs: list[list[int]] = [[] for _ in range(threads)]
        self.failures: list[BaseException] = []
        self.requests = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(GATE_TIMEOUT_S)

    def _run(self, index: int) -> None:
        x = np.ones((3, 4), dtype=F32)
        runs = self.runs[index]
        while not self._stop.is_set():
            try:
                with self.repo.lease(self.name, self.version, timeout=GATE_TIMEOUT_S) as model:
                    out = model.predict({"x": x})["version"]
                    served = model.version
                if set(out.tolist()) != {float(served)}:
                    raise AssertionError(f"lease of version {served} answered {out.tolist()}")
            except BaseException as exc:  # every failure is counted, none stops the test
                with self._cond:
                    self.failures.append(exc)
                    self._cond.notify_all()
                continue
            with self._cond:
                if not runs or runs[-1] != served:
                    runs.append(served)
                self.requests += 1
                self._cond.notify_all()

    def wait_all_served(self, version: int, timeout: float = GATE_TIMEOUT_S) -> bool:
        """Wait until every thread has been served ``version`` (or a later one)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: all(r and r[-1] >= version for r in self.runs), timeout
            )

    def wait_requests(self, more: int, timeout: float = GATE_TIMEOUT_S) -> bool:
        """Wait until ``more`` further requests have been answered."""
        with self._cond:
            target = self.requests + more
            return self._cond.wait_for(lambda: self.requests >= target, timeout)

    def versions(self) -> set[int]:
        with self._cond:
            return {v for runs in self.runs for v in runs}
