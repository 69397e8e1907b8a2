"""``keepwarm serve`` as the benchmarks run it, and the example models' inputs: shared by
``bench/serve.py``, ``bench/cold_start.py``, ``bench/serve_batching.py`` and
``bench/perf_analyzer.py``."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

MODELS = ("mlp", "mobilenet_v2")
SHAPES = {"mlp": (784,), "mobilenet_v2": (224, 224, 3)}


def inputs(model: str, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((1, *SHAPES[model]), dtype=np.float32) for _ in range(n)]


def v2_body(x: np.ndarray) -> bytes:
    tensor = {"name": "image", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel()}
    return orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)


class Served:
    """``keepwarm serve REPO`` on free REST and gRPC ports (``extra`` flags, ``env`` its
    environment, ``python`` the interpreter: this one unless given); ``started`` is taken
    just before the process is spawned (the cold start counts from there)."""

    name = "keepwarm"

    def __init__(
        self,
        repo: Path,
        *,
        env: dict[str, str] | None = None,
        extra: Sequence[str] = (),
        python: str = sys.executable,
    ) -> None:
        self.started = time.perf_counter()
        command = [python, "-m", "keepwarm", "serve", str(repo), "--port", "0"]
        self.proc = subprocess.Popen(
            [*command, "--grpc-port", "0", *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.url = ""
        self.grpc = ""
        found = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                match = re.search(r"REST  (http://\S+)", line)
                if match:
                    self.url = match.group(1)
                grpc_match = re.search(r"gRPC  (\S+:\d+)", line)
                if grpc_match:
                    self.grpc = grpc_match.group(1)
                if self.url and self.grpc:
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(120) or not self.url:
            raise SystemExit("keepwarm serve did not start:\n" + "".join(self.lines))

    def infer_url(self, model: str) -> str:
        return f"{self.url}/v2/models/{model}/infer"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)

    def until_warm(self, timeout: float = 120.0) -> float:
        """Wait until every batcher's batch sizes are warm (``/metrics``:
        ``keepwarm_batch_warm_rows`` at ``keepwarm_batch_max_rows``; they warm on a thread
        once a version serves, and meanwhile they take the cores from the first requests:
        the MLP's concurrency-1 p99 was 0.13-0.63 s in the first 2 s after ``ready`` with
        MobileNetV2's buckets warming beside it, 16 ms with the MLP alone). The seconds
        waited; raises past ``timeout``."""
        import urllib.error
        import urllib.request

        began = time.perf_counter()
        while True:
            try:  # ready first: a version still loading has no batcher to show yet
                urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=30).close()
            except urllib.error.HTTPError:
                text = ""
            else:
                with urllib.request.urlopen(f"{self.url}/metrics", timeout=30) as answer:
                    text = answer.read().decode()
            found = {
                name: dict(re.findall(rf"^{name}(\{{[^}}]*\}}) (\S+)$", text, re.M))
                for name in ("keepwarm_batch_warm_rows", "keepwarm_batch_max_rows")
            }
            if text and found["keepwarm_batch_warm_rows"] == found["keepwarm_batch_max_rows"]:
                return time.perf_counter() - began
            if time.perf_counter() - began > timeout:
                raise SystemExit(f"keepwarm's batch sizes not warm after {timeout:g} s: {found}")
            time.sleep(0.1)
