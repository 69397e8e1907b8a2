"""Python models for the worker-process tests, importable by name in a worker
(``support.worker_models:<Class>``). Each reads what it needs from its model directory."""

from __future__ import annotations

import os
import select
import sys
from pathlib import Path

import numpy as np

from keepwarm.signature import Signature, TensorSpec

F32 = np.dtype("float32")
VECTOR = Signature(
    inputs=(TensorSpec("x", F32, (None, 4)),), outputs=(TensorSpec("y", F32, (None, 4)),)
)


class Affine:
    """``y = 2 * x + 1``; a second output ``pid``, the worker's process id, is not in the
    signature: ``Pid`` has it."""

    signature = VECTOR

    def load(self, path: Path) -> None:
        self.path = path

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] * 2 + 1}


class Pid:
    """Answers with the id of the process it runs in (one row per input row)."""

    signature = Signature(
        inputs=(TensorSpec("x", F32, (None, 4)),),
        outputs=(TensorSpec("pid", np.dtype("int64"), (None,)),),
    )

    def load(self, path: Path) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"pid": np.full(len(inputs["x"]), os.getpid(), dtype=np.int64)}


class Gated:
    """Each call says it started (its process id, 10 digits, written to the FIFO
    ``started``), then waits for a byte on the FIFO ``release`` before it answers
    ``x + 1``: a test can kill its worker while a call is surely inside ``predict``. The
    FIFOs are in the directory named by the file ``gate`` when there is one (a repository
    version then holds no FIFO), else in the model's own directory."""

    signature = VECTOR

    def load(self, path: Path) -> None:
        named = path / "gate"
        self.gate = Path(named.read_text().strip()) if named.is_file() else path

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with open(self.gate / "started", "wb") as started:
            started.write(f"{os.getpid():>10}".encode())
        with open(self.gate / "release", "rb") as release:
            release.read(1)
        return {"y": inputs["x"] + 1}


class Gate:
    """The test's side of a ``Gated`` model: its two FIFOs, held open read-write (opening
    never blocks, and the model's own opens never wait for the test)."""

    def __init__(self, directory: Path, started: str = "started") -> None:
        os.mkfifo(directory / started)
        os.mkfifo(directory / "release")
        self.started = os.open(directory / started, os.O_RDWR)
        self.release = os.open(directory / "release", os.O_RDWR)

    def wait_started(self, timeout: float = 30.0) -> int:
        """Once a call is inside the model's ``predict``: the pid of the process it is in."""
        readable, _, _ = select.select([self.started], [], [], timeout)
        assert readable, "no call reached the model"
        return int(os.read(self.started, 10))

    def let_one_finish(self) -> None:
        os.write(self.release, b"r")

    def close(self) -> None:
        os.close(self.started)
        os.close(self.release)


class SlowToLoad:
    """Its load says it started (its process id, 10 digits, written to the FIFO
    ``loading``), then, while a file ``hold`` is there, waits for a byte on the FIFO
    ``release``: a test holds a load (the first, or a restart's) inside its worker. The
    FIFOs and ``hold`` are in the directory named by the file ``gate`` when there is one
    (a repository version then holds no FIFO), else in the model's own directory.
    ``predict``: ``x + 1``."""

    signature = VECTOR

    def load(self, path: Path) -> None:
        named = path / "gate"
        gate = Path(named.read_text().strip()) if named.is_file() else path
        with open(gate / "loading", "wb") as loading:
            loading.write(f"{os.getpid():>10}".encode())
        if (gate / "hold").exists():
            with open(gate / "release", "rb") as release:
                release.read(1)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] + 1}


class LoadGate:
    """The test's side of ``SlowToLoad``: a ``Gate`` whose first FIFO is ``loading``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._gate = Gate(directory, started="loading")

    def hold(self) -> None:
        """Loads from now on wait for ``let_one_load``."""
        (self.directory / "hold").touch()

    def wait_loading(self, timeout: float = 60.0) -> int:
        """Once a load is inside the model's ``load``: the pid of the process it is in."""
        return self._gate.wait_started(timeout)

    def let_one_load(self) -> None:
        self._gate.let_one_finish()

    def close(self) -> None:
        self._gate.close()


class Crashes:
    """Dies on every call, after saying why on stderr."""

    signature = VECTOR

    def load(self, path: Path) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # A native library's start-up line first: dropped from the tail and from stderr.
        sys.stderr.write("I0000 00:00:1796166137.671957   18659 port.cc:153] oneDNN ops on.\n")
        sys.stderr.write("Crashes: about to die on purpose\n")
        sys.stderr.flush()
        os._exit(3)


class Raises:
    """Raises a ValueError naming the rows it got."""

    signature = VECTOR

    def load(self, path: Path) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise ValueError(f"cannot handle {len(inputs['x'])} rows")


class Wide:
    """``y`` is ``x`` repeated ``factor`` times along axis 1 (``factor`` read from the file
    ``factor``): an answer larger than the request."""

    signature = Signature(
        inputs=(TensorSpec("x", F32, (None, None)),), outputs=(TensorSpec("y", F32, (None, None)),)
    )

    def load(self, path: Path) -> None:
        self.factor = int((path / "factor").read_text())

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": np.tile(inputs["x"], (1, self.factor))}


class Text:
    """Text in, text out: upper-cased."""

    signature = Signature(
        inputs=(TensorSpec("s", np.dtype(object), (None,)),),
        outputs=(TensorSpec("t", np.dtype(object), (None,)),),
    )

    def load(self, path: Path) -> None:
        pass

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"t": np.array([str(s).upper() for s in inputs["s"]], dtype=object)}


class FailsToLoad:
    """Its load raises, with a message the error must carry."""

    signature = VECTOR

    def load(self, path: Path) -> None:
        raise RuntimeError("the weights are missing (on purpose)")

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise AssertionError("never called")


class RecordingHook:
    """A worker hook: reports the worker's pid and how many models it held, per event."""

    def __call__(self, event: str, key: str) -> dict[str, float]:
        return {"pid": float(os.getpid()), "key_length": float(len(key))}
