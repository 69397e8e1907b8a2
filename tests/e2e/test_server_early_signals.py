"""A signal that start-up code swallows is not lost: ``keepwarm serve`` records SIGINT and
SIGTERM from its first line (``keepwarm.early_signals``) and raises a recorded one again
where its own handlers go in place, so a Ctrl-C or SIGTERM that a library's ``except
BaseException`` ate during the start still ends it (was: the server started and ran on);
and a second Ctrl-C during the start ends the process at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXIT_S = 60

# ``keepwarm serve``, with a step of its start (the TensorFlow preload) that sends the
# process a signal and swallows what Python raises for it, as careless start-up code does
_DRIVER = """
import os, signal, sys, time
import keepwarm.server as server
signum = getattr(signal, sys.argv.pop(1))
twice = sys.argv.pop(1) == "twice"
original = server.preload_tensorflow

def preload(*args, **kwargs):
    for _ in range(2 if twice else 1):
        try:
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises in here
        except BaseException:
            pass  # swallowed
    return original(*args, **kwargs)

server.preload_tensorflow = preload
from keepwarm.cli import main
sys.exit(main())
"""


def _run(root: Path, signame: str, times: str) -> tuple[int, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": src}
    command = [sys.executable, "-c", _DRIVER, signame, times, "serve", str(root)]
    done = subprocess.run(
        [*command, "--port", "0", "--grpc-port", "0"], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, env=env, timeout=EXIT_S,
    )  # fmt: skip
    return done.returncode, done.stdout


@pytest.fixture
def root(tmp_path: Path, example_models: Path) -> Path:
    import shutil

    root = tmp_path / "models"
    shutil.copytree(example_models / "mlp", root / "mlp")  # TensorFlow: the preload runs
    return root


def test_a_swallowed_ctrl_c_still_ends_the_start(root: Path) -> None:
    code, output = _run(root, "SIGINT", "once")
    assert code == 130, output
    assert output.splitlines()[-1] == "interrupted", output
    assert "Traceback" not in output, output
    assert "REST" not in output, output  # nothing was served


def test_a_swallowed_sigterm_still_ends_the_start(root: Path) -> None:
    code, output = _run(root, "SIGTERM", "once")
    assert code == 0, output
    assert output.splitlines()[-1] == "stopped", output
    assert "REST" not in output, output


def test_a_second_ctrl_c_during_the_start_ends_it_at_once(root: Path) -> None:
    code, output = _run(root, "SIGINT", "twice")
    assert code == 130, output
    assert output.splitlines()[-1] == "interrupted", output
