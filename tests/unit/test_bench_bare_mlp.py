"""``bench/bare_mlp.py``, the floor servers of ``bench/c1_floor.py``: each way of calling
the MLP (keepwarm's flat call, numpy, a TensorFlow 1 session) answers a v2 JSON and a
binary request with the library's own result, and ``GET /`` gives the calls' count and
median times since the last asking."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module", params=["keepwarm", "numpy", "session"])
def bare(request: pytest.FixtureRequest, example_models: Path) -> Iterator[str]:
    model = example_models / "mlp" / "1"
    command = [sys.executable, str(BENCH / "bare_mlp.py"), str(model), "--call", request.param]
    env = {"PYTHONPATH": str(SRC), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=env)  # fmt: skip
    assert proc.stdout is not None
    with proc, proc.stdout:
        try:
            for line in proc.stdout:
                match = re.match(r"PORT (\d+)", line)
                if match:
                    yield f"http://127.0.0.1:{match.group(1)}"
                    break
            else:
                pytest.fail(f"bare_mlp.py --call {request.param} did not start")
        finally:
            proc.terminate()


def _post(url: str, body: bytes, headers: dict[str, str]) -> np.ndarray:
    request = urllib.request.Request(url + "/v2/models/mlp/infer", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        out = json.loads(answer.read())["outputs"][0]
    assert out["name"] == "probs" and out["shape"] == [1, 10]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def _stats(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/", timeout=30) as answer:
        stats: dict[str, float] = json.loads(answer.read())
    return stats


def test_each_call_answers_the_libraries_result_and_is_timed(
    bare: str, example_models: Path
) -> None:
    import keepwarm

    x = np.random.default_rng(3).random((1, 784), dtype=np.float32)
    expected = keepwarm.load(str(example_models / "mlp" / "1")).predict({"image": x})["probs"]
    _stats(bare)  # the warmup's call is not counted below
    tensor = {"name": "image", "datatype": "FP32", "shape": [1, 784]}
    body = json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode()
    np.testing.assert_allclose(_post(bare, body, {}), expected, rtol=1e-4, atol=1e-6)
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": 3136}}]})
    binary = header.encode() + x.tobytes()
    length = {"Inference-Header-Content-Length": str(len(header))}
    np.testing.assert_allclose(_post(bare, binary, length), expected, rtol=1e-4, atol=1e-6)
    stats = _stats(bare)
    assert stats["calls"] == 2
    assert stats["cpu_us"] > 0 and 0 < stats["wall_us"] < 1e6
    assert _stats(bare)["calls"] == 0
