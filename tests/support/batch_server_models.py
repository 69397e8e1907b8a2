"""Python models for the batching end-to-end tests, served with ``--allow-unsafe``.

Each logs the first value of every row it runs (one line per batch) to a file, so the
test can see what ran. A row whose first value is negative holds the batch: the model
writes a byte to the ``enter`` FIFO and waits for one on the ``release`` FIFO (no sleeps
on either side). ``delay`` seconds per batch stand for the model's cost.
"""

from __future__ import annotations

import json
import os
import select
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from support.server_process import ServerProcess

MODULE = """
import json
import time
from pathlib import Path

import numpy as np

from keepwarm.signature import Signature, TensorSpec


class Model:
    def load(self, path):
        config = json.loads((Path(path) / "paths.json").read_text())
        self.log, self.enter = config["log"], config["enter"]
        self.release, self.delay = config["release"], config["delay"]
        f32 = np.dtype("float32")
        self.signature = Signature(
            (TensorSpec("x", f32, (None, 2)),), (TensorSpec("y", f32, (None, 2)),)
        )

    def predict(self, inputs):
        x = inputs["x"]
        if (x[:, 0] < 0).any():
            with open(self.enter, "wb") as fifo:
                fifo.write(b"e")
            with open(self.release, "rb", buffering=0) as fifo:
                fifo.read(1)  # one byte: unbuffered, so another held batch gets the next
        if self.delay:
            time.sleep(self.delay)
        with open(self.log, "a") as log:
            log.write(" ".join(str(int(v)) for v in x[:, 0]) + "\\n")
        return {"y": x * 2}
"""


class Gate:
    """The test's side of a held model: ``entered()`` waits for the model to hold one
    batch, ``release()`` lets one held batch go on."""

    def __init__(self, folder: Path) -> None:
        self.enter, self.release_path = folder / "enter.fifo", folder / "release.fifo"
        os.mkfifo(self.enter)
        os.mkfifo(self.release_path)
        # Both opened now, read and write (O_RDWR on a FIFO never blocks on Linux), so that
        # no open on either side waits for the other, and no read sees an end of file
        # when the model closes its end: a read waits for a byte.
        self._enter_fd = os.open(self.enter, os.O_RDWR | os.O_NONBLOCK)
        self._release_fd = os.open(self.release_path, os.O_RDWR)

    def entered(self, timeout: float = 60) -> bool:
        ready, _, _ = select.select([self._enter_fd], [], [], timeout)
        return bool(ready) and os.read(self._enter_fd, 1) == b"e"

    def release(self) -> None:
        os.write(self._release_fd, b"r")

    def close(self) -> None:
        os.close(self._enter_fd)
        os.close(self._release_fd)


def place_logged_model(
    model_dir: Path, gate: Gate, log: Path, *, delay: float, batching: str
) -> Path:
    """Version 1 of a logged Python model, whole (its ready marker written last)."""
    version = model_dir / "1"
    version.mkdir(parents=True)
    (version / "logged.py").write_text(MODULE)
    (version / "keepwarm.toml").write_text('[python]\nclass = "logged:Model"\n')
    paths = {
        "log": str(log),
        "enter": str(gate.enter),
        "release": str(gate.release_path),
        "delay": delay,
    }
    (version / "paths.json").write_text(json.dumps(paths))
    (model_dir / "model.toml").write_text(f"[warmup]\nruns = 1\n\n[batching]\n{batching}")
    (version / ".keepwarm-ready").touch()
    return version


def ran(log: Path) -> list[int]:
    """Every row value the model ran, in order (warmup's zeros left out)."""
    if not log.exists():
        return []
    return [int(v) for line in log.read_text().split("\n") for v in line.split() if v != "0"]


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples on the server's ``/metrics`` whose labels include
    ``labels``."""
    total = 0.0
    for line in server.get("/metrics").text.splitlines():
        head, _, value = line.rpartition(" ")
        found_name, _, rest = head.partition("{")
        if found_name != name:
            continue
        found = dict(pair.split("=", 1) for pair in rest.rstrip("}").split(",") if pair)
        if all(found.get(k) == f'"{v}"' for k, v in labels.items()):
            total += float(value)
    return total
