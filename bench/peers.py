"""Peers for ``bench/serve.py`` and ``bench/serve_batching.py``, each installed by the
benchmark in its own virtual environment under ``bench/.venvs/`` (or
``$BENCH_PEER_VENVS``; never by ``make test``),
serving the same SavedModels through their ``serving_default`` signature, on loopback.

- ``mlserver`` (here): a custom runtime, inference in-process (``parallel_workers: 0``),
  adaptive batching off or on;
- ``litserve`` (``peers_litserve.py``): one ``LitAPI`` per model;
- ``pytriton`` (``peers_triton.py``): Triton through PyTriton, dynamic batching off or on.

``start(name, models, workdir, batching)`` starts one; ``sweep`` (``peer_runs.py``) drives
it over batching settings. A peer that cannot be installed, started or that answers wrongly
raises ``PeerFailed`` saying which and why: a benchmark never passes without its peers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import requests

# $BENCH_PEER_VENVS: another checkout's venvs, reused (a worktree need not install its own);
# not KEEPWARM_*: keepwarm refuses unknown variables of its own prefix.
VENVS = Path(os.environ.get("BENCH_PEER_VENVS") or Path(__file__).resolve().parent / ".venvs")
PEERS = ("mlserver", "litserve", "pytriton")
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


class PeerFailed(Exception):
    """A peer could not be installed or started, or answered wrongly (the message says)."""


@dataclass(frozen=True)
class Batching:
    """A peer's batching: at most ``max_batch_size`` requests, waiting ``delay_ms`` at most."""

    max_batch_size: int
    delay_ms: float

    def __str__(self) -> str:
        return f"{self.max_batch_size}/{self.delay_ms:g}ms"


class Answers(Protocol):
    name: str

    def infer_url(self, model: str) -> str: ...


class Server(Answers, Protocol):
    proc: subprocess.Popen[str]
    lines: list[str]
    started: float


class Peer(Server, Protocol):
    binary: bool  # takes the v2 binary tensor extension

    def stop(self) -> None: ...


def start(name: str, models: Mapping[str, Path], workdir: Path, batching: Batching | None) -> Peer:
    """Peer ``name`` (one of ``PEERS``) serving ``models`` (name -> version directory)."""
    if name == "mlserver":
        return MLServer(models, workdir, batching)
    if name == "litserve":
        from peers_litserve import LitServe

        return LitServe(models, workdir, batching)
    if name == "pytriton":
        from peers_triton import PyTriton

        return PyTriton(models, workdir, batching)
    raise SystemExit(f"unknown peer {name!r} (known: {', '.join(PEERS)})")


def venv(
    name: str, pins: tuple[str, ...], python: str = sys.executable, constraints: str = ""
) -> Path:
    """``bench/.venvs/<name>`` with ``pins`` installed (once; reused while they and
    ``constraints`` match). ``constraints``: a pip constraints file's text, which pins
    whatever the install pulls in besides ``pins`` (their own dependencies)."""
    path = VENVS / name
    stamp = path / ".pins"
    wanted = "\n".join(pins) + (f"\n# constraints\n{constraints}" if constraints else "")
    if stamp.exists() and stamp.read_text() == wanted:
        return path
    print(f"installing {name} ({', '.join(pins)}) into {path} ...", flush=True)
    install = [str(path / "bin" / "pip"), "install", "-q", *pins]
    if constraints:
        install += ["--constraint", str(path / "constraints.txt")]
    for command in ([python, "-m", "venv", "--clear", str(path)], install):
        if command is install and constraints:
            (path / "constraints.txt").write_text(constraints)
        try:
            subprocess.run(command, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            tail = "\n".join(str(getattr(exc, "stderr", "") or exc).splitlines()[-15:])
            raise PeerFailed(f"{name}: {' '.join(command[:3])} ... failed:\n{tail}") from exc
    stamp.write_text(wanted)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(
    command: list[str], cwd: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[str], list[str]]:
    """``command`` in its own process group (a peer's children stop with it); its output
    lines are collected by a thread."""
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        with proc.stdout as out:
            for line in out:
                lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    return proc, lines


def run_app(
    env: Path, root: Path, app: str, config: Mapping[str, object]
) -> tuple[subprocess.Popen[str], list[str]]:
    """``app`` written to ``root/app.py``, run by ``env``'s Python with ``config`` as JSON."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text(app)
    command = [str(env / "bin" / "python"), str(root / "app.py"), json.dumps(config)]
    return spawn(command, root, peer_env())


def stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the peer's process group, SIGKILL after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            os.killpg(proc.pid, signal.SIGKILL)  # children left behind by the leader
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        return


def peer_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    return {"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"],
            **(extra or {})}  # fmt: skip


class MLServer:
    """``mlserver start`` on the models in ``models`` (name -> version directory). Its
    adaptive batching needs ``max_batch_time`` > 0: a delay of 0 leaves it off."""

    name = "mlserver"
    binary = False

    def __init__(
        self, models: Mapping[str, Path], workdir: Path, batching: Batching | None
    ) -> None:
        self.env = venv("mlserver", MLSERVER_PINS)
        root = workdir / f"mlserver-{batching or 'off'}".replace("/", "-")
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
                "max_batch_size": batching.max_batch_size if batching else 0,
                "max_batch_time": batching.delay_ms / 1000 if batching else 0,
            }
            (root / model / "model-settings.json").write_text(json.dumps(model_settings))
        self.url = f"http://127.0.0.1:{self.port}"
        self.started = time.perf_counter()
        self.proc, self.lines = spawn([str(self.env / "bin" / "mlserver"), "start", str(root)],
                                      root, peer_env({"PYTHONPATH": str(root)}))  # fmt: skip

    def infer_url(self, model: str) -> str:
        return f"{self.url}/v2/models/{model}/infer"

    def stop(self) -> None:
        stop_group(self.proc)


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
            except (requests.ConnectionError, requests.Timeout):
                continue  # not listening yet, or held while the model loads: ask again
            if answer.status_code == 200:
                del pending[model]
        if pending:
            time.sleep(0.02)
    if pending:
        tail = "".join(server.lines[-30:])
        raise RuntimeError(f"{server.name}: no 200 from {sorted(pending)}:\n{tail}")
    return time.perf_counter() - server.started


def settle(peer: Answers, model: str, body: bytes) -> None:
    """One request answered: a peer that goes on running what the last load generator left
    in flight (first in, first out) has finished it before the next measurement starts."""
    requests.post(peer.infer_url(model), data=body, timeout=300,
                  headers={"Content-Type": "application/json"})  # fmt: skip


def check_answer(peer: Answers, model: str, body: bytes, expected: np.ndarray) -> None:
    """The peer's answer to ``body`` (v2 JSON) equals the direct call's, or PeerFailed."""
    answer = requests.post(peer.infer_url(model), data=body, timeout=30,
                           headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        output = answer.json()["outputs"][0]
        got = np.asarray(output["data"], np.float32).reshape(output["shape"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise PeerFailed(f"{peer.name}: {model} answered {answer.text[:300]!r}") from exc
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-3, atol=1e-5):
        raise PeerFailed(f"{peer.name}: {model} answered {got.ravel()[:4]}..., "
                         f"the direct call {expected.ravel()[:4]}...")  # fmt: skip
