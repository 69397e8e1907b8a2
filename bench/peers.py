"""Peers for ``bench/serve.py``, each installed by the benchmark in its own virtual
environment under ``bench/.venvs/`` (never by ``make test``), serving the same SavedModels
through their signature, started on loopback.

MLServer: a custom runtime (``tf.saved_model.load`` + the ``serving_default`` signature),
inference in-process (``parallel_workers: 0``), adaptive batching off or on.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import requests

VENVS = Path(__file__).resolve().parent / ".venvs"
MLSERVER_PINS = ("mlserver==1.7.1", "tensorflow==2.21.0")
RUNTIME = """
import numpy as np
import tensorflow as tf
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SavedModelRuntime(MLModel):
    async def load(self) -> bool:
        self._loaded = tf.saved_model.load(self.settings.parameters.uri)
        self._fn = self._loaded.signatures["serving_default"]
        spec = self._fn.structured_input_signature[1]["image"]
        shape = [1 if d is None else d for d in spec.shape.as_list()]
        self._fn(image=tf.zeros(shape, tf.float32))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        out = self._fn(image=tf.constant(x, tf.float32))["probs"].numpy()
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("probs", out)]
        )
"""


def venv(name: str, pins: tuple[str, ...], python: str = sys.executable) -> Path:
    """``bench/.venvs/<name>`` with ``pins`` installed (once; reused while they match)."""
    path = VENVS / name
    stamp = path / ".pins"
    if stamp.exists() and stamp.read_text() == "\n".join(pins):
        return path
    print(f"installing {name} ({', '.join(pins)}) into {path} ...", flush=True)
    subprocess.run([python, "-m", "venv", "--clear", str(path)], check=True)
    subprocess.run([str(path / "bin" / "pip"), "install", "-q", *pins], check=True)
    stamp.write_text("\n".join(pins))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MLServer:
    """``mlserver start`` on the models in ``models`` (name -> version directory)."""

    name = "mlserver"

    def __init__(self, models: Mapping[str, Path], workdir: Path, batching: bool) -> None:
        self.env = venv("mlserver", MLSERVER_PINS)
        self.batching = batching
        root = workdir / f"mlserver-{'batch' if batching else 'nobatch'}"
        root.mkdir(parents=True, exist_ok=True)
        (root / "tf_runtime.py").write_text(RUNTIME)
        self.port = free_port()
        settings = {"http_port": self.port, "grpc_port": free_port(), "metrics_port": free_port(),
                    "parallel_workers": 0, "host": "127.0.0.1"}  # fmt: skip
        (root / "settings.json").write_text(json.dumps(settings))
        for model, path in models.items():
            (root / model).mkdir(exist_ok=True)
            model_settings = {
                "name": model,
                "implementation": "tf_runtime.SavedModelRuntime",
                "parameters": {"uri": str(path)},
                "max_batch_size": 32 if batching else 0,
                "max_batch_time": 0.005 if batching else 0,
            }
            (root / model / "model-settings.json").write_text(json.dumps(model_settings))
        self.root = root
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(self.env / "bin" / "mlserver"), "start", str(root)],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={"PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def infer_url(self, model: str) -> str:
        return f"{self.url}/v2/models/{model}/infer"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Server(Protocol):
    name: str
    proc: subprocess.Popen[str]
    lines: list[str]
    started: float

    def infer_url(self, model: str) -> str: ...


def first_200(server: Server, bodies: Mapping[str, bytes], timeout: float = 300) -> float:
    """Seconds from the server's spawn to a 200 from every model (v2 JSON bodies)."""
    pending = dict(bodies)
    deadline = time.perf_counter() + timeout
    while pending and time.perf_counter() < deadline:
        if server.proc.poll() is not None:
            break
        for model, body in list(pending.items()):
            try:
                answer = requests.post(server.infer_url(model), data=body, timeout=30,
                                       headers={"Content-Type": "application/json"})  # fmt: skip
            except requests.ConnectionError:
                continue
            if answer.status_code == 200:
                del pending[model]
        if pending:
            time.sleep(0.02)
    if pending:
        tail = "".join(server.lines[-30:])
        raise RuntimeError(f"{server.name}: no 200 from {sorted(pending)}:\n{tail}")
    return time.perf_counter() - server.started
