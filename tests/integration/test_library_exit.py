"""A script that calls ``keepwarm.load`` on a batched model and ends: its batch sizes
were still warming on a daemon thread, which the interpreter ended inside the model's
call at exit. In a native runtime that aborted the process: the example ONNX MLP (its
``model.toml`` has ``[batching]``), loaded and left, printed ``terminate called without
an active exception`` and exited 134 in 4 of 8 runs. Each script runs in a fresh
interpreter (``subprocess``), as a user's would."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
# A Python model whose warm run of more than one row writes ``start N``, waits RUN_S,
# then writes ``end N``; the script ends as soon as the run at 2 rows has started.
SCRIPT = """
import sys, time
import numpy as np
import keepwarm
from keepwarm.signature import Signature, TensorSpec

RUN_S = 0.5
trace = open(sys.argv[1], "a", buffering=1)

class Slow:
    signature = Signature(
        (TensorSpec("x", np.dtype("float32"), (None, 2)),),
        (TensorSpec("y", np.dtype("float32"), (None, 2)),),
    )

    def load(self, path):
        del path

    def predict(self, inputs):
        rows = len(inputs["x"])
        if rows > 1:
            trace.write(f"start {rows}\\n")
            time.sleep(RUN_S)
            trace.write(f"end {rows}\\n")
        return {"y": inputs["x"] * 2}

keepwarm.load(sys.argv[2], options={"class": Slow}, batching={"max_batch_size": 8})
for _ in range(600):  # until the run at 2 rows is under way (at most 60 s)
    if "start 2" in open(sys.argv[1]).read():
        break
    time.sleep(0.1)
"""


# A repository of one Python model whose load writes ``loading``, waits LOAD_S, then
# writes ``loaded``; the script starts the repository and ends, never closing it, as soon
# as the load is under way.
REPOSITORY_SCRIPT = """
import sys, time
from keepwarm import Repository

repo = Repository(sys.argv[2], allow_unsafe=True, watch=False)
repo.start()
for _ in range(600):  # until the load is under way (at most 60 s)
    if "loading" in open(sys.argv[1]).read():
        break
    time.sleep(0.1)
"""
MODEL = """
import os, time
import numpy as np
from keepwarm.signature import Signature, TensorSpec

LOAD_S = 0.5

class Model:
    signature = Signature(
        (TensorSpec("x", np.dtype("float32"), (None, 2)),),
        (TensorSpec("y", np.dtype("float32"), (None, 2)),),
    )

    def load(self, path):
        with open(os.environ["KW_TRACE"], "a") as trace:
            trace.write("loading\\n")
        time.sleep(LOAD_S)
        with open(os.environ["KW_TRACE"], "a") as trace:
            trace.write("loaded\\n")

    def predict(self, inputs):
        return {"y": inputs["x"] * 2}
"""


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_warm_run_under_way_at_exit_ends_and_no_other_starts(tmp_path: Path) -> None:
    """Exit waits for the warm run under way (it ends), and starts no further one."""
    (tmp_path / "script.py").write_text(textwrap.dedent(SCRIPT))
    trace = tmp_path / "trace.txt"
    trace.touch()
    model_dir = tmp_path / "slow"
    model_dir.mkdir()
    done = _run("script.py", str(trace), str(model_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert trace.read_text().split("\n") == ["start 2", "end 2", ""], done.stderr


def test_a_script_that_loads_the_batched_onnx_mlp_and_ends_exits_0(
    tmp_path: Path, example_models: Path
) -> None:
    """The README's first lines, as a script: load, and end (three fresh interpreters)."""
    model = example_models / "mlp_onnx"
    for _ in range(3):
        done = _run("-c", f"import keepwarm; keepwarm.load({str(model)!r})", cwd=tmp_path)
        assert done.returncode == 0 and "terminate" not in done.stderr, done.stderr


def test_a_repository_left_open_at_exit_lets_its_load_under_way_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit waits for a load under way (it was cut: 'loading' only; with the example
    models, TensorFlow's and ONNX Runtime's loads aborted the process, exit 134)."""
    (tmp_path / "script.py").write_text(textwrap.dedent(REPOSITORY_SCRIPT))
    version = tmp_path / "repo" / "slow" / "1"
    version.mkdir(parents=True)
    (version / "model.py").write_text(textwrap.dedent(MODEL))
    (version / "keepwarm.toml").write_text('[python]\nclass = "model:Model"\n')
    (version / ".keepwarm-ready").touch()
    trace = tmp_path / "trace.txt"
    trace.touch()
    monkeypatch.setenv("KW_TRACE", str(trace))
    done = _run("script.py", str(trace), str(tmp_path / "repo"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert trace.read_text().split("\n") == ["loading", "loaded", ""], done.stderr
