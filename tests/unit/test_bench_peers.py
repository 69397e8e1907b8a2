"""The benchmarks' peer helpers (``bench/peers.py``, ``bench/peer_runs.py``) without the
peers themselves (those are installed only by the benchmarks): a wrong answer, a failed
peer and an unknown name each fail loudly, and a stopped peer leaves no child behind."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from keepwarm_venv import serve_pins
from peer_runs import PeerResults, failed_peers, peer_names
from peers import (
    VENVS,
    Batching,
    PeerFailed,
    check_answer,
    spawn,
    stop_group,
    venv,
)

EXPECTED = np.array([[0.25, 0.75]], np.float32)


class Answering:
    """A loopback server answering every POST with ``self.body``; quacks as a Peer."""

    name = "fake"

    def __init__(self) -> None:
        self.body = b""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever)
        self.thread.start()

    def infer_url(self, model: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{model}"

    def answer(self, data: list[float], shape: list[int]) -> None:
        outputs = [{"name": "probs", "shape": shape, "data": data}]
        self.body = json.dumps({"outputs": outputs}).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def peer() -> Iterator[Answering]:
    server = Answering()
    yield server
    server.close()


def test_the_direct_calls_answer_passes(peer: Answering) -> None:
    peer.answer([0.25, 0.75], [1, 2])
    check_answer(peer, "mlp", b"{}", EXPECTED)


@pytest.mark.parametrize(
    ("data", "shape"), [([0.75, 0.25], [1, 2]), ([0.25, 0.75], [2, 1]), ([0.25], [1, 1])]
)
def test_a_wrong_answer_fails_naming_peer_and_model(
    peer: Answering, data: list[float], shape: list[int]
) -> None:
    peer.answer(data, shape)
    with pytest.raises(PeerFailed, match="fake: mlp answered"):
        check_answer(peer, "mlp", b"{}", EXPECTED)


def test_an_answer_that_is_not_v2_fails(peer: Answering) -> None:
    peer.body = b'{"predictions": [[0.25, 0.75]]}'
    with pytest.raises(PeerFailed, match="predictions"):
        check_answer(peer, "mlp", b"{}", EXPECTED)


def test_a_failed_peer_is_a_failed_target() -> None:
    results = PeerResults(failed={"pytriton": "pytriton: pip install ... failed:\nno wheel"})
    (target,) = failed_peers(results)
    assert target["status"] == "FAIL"
    assert "pytriton" in target["target"]
    assert target["value"] == "pytriton: pip install ... failed: ... no wheel"
    assert failed_peers(PeerResults(cold_s={"mlserver": 5.0})) == []


def test_a_peer_that_cannot_be_installed_says_which_and_why(tmp_path: Path) -> None:
    with pytest.raises(PeerFailed, match=r"(?s)no-python: .*venv.*No such file"):
        venv("no-python", ("nothing==1.0",), python=str(tmp_path / "python3.11"))
    assert not (VENVS / "no-python").exists()


def test_peer_names() -> None:
    assert peer_names("") == []
    assert peer_names("mlserver, pytriton") == ["mlserver", "pytriton"]
    with pytest.raises(SystemExit, match=r"unknown peer.*tritn"):
        peer_names("mlserver,tritn")


def test_batching_names_itself() -> None:
    assert str(Batching(32, 5.0)) == "32/5ms"
    assert str(Batching(8, 0.5)) == "8/0.5ms"


def test_stopping_a_peer_stops_its_children(tmp_path: Path) -> None:
    proc, lines = spawn(
        ["/bin/sh", "-c", "sleep 300 & echo $!; wait"], tmp_path, {"PATH": "/usr/bin:/bin"}
    )
    deadline = time.monotonic() + 30
    while not lines and time.monotonic() < deadline:
        time.sleep(0.01)  # the child's pid, printed by the shell
    child = int(lines[0])
    assert alive(child)
    stop_group(proc)
    assert proc.returncode is not None
    deadline = time.monotonic() + 30
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)  # a signal is delivered, not awaited
    assert not alive(child)


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for whoever adopted it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_keepwarms_own_venv_holds_what_serve_needs_and_not_the_optimize_extra() -> None:
    root = Path(__file__).resolve().parents[2]
    pins = serve_pins(root)
    names = {pin.split("==")[0].lower().replace("_", "-") for pin in pins}
    assert {"tensorflow", "uvicorn", "orjson", "pysimdjson", "grpcio", "numpy"} <= names
    assert not names & {"scikit-learn", "scipy", "tf2onnx", "onnx", "pytest"}
    pinned = {
        line.partition("==")[0].lower().replace("_", "-"): line.strip()
        for line in (root / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    for pin in pins:  # the versions the development venv has, exactly
        assert pinned[pin.split("==")[0].lower().replace("_", "-")] == pin


def test_a_serve_dependency_without_a_pin_is_named(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\ndependencies = ["numpy>=1"]\n'
        '[project.optional-dependencies]\nserver = ["orjson>=3"]\ngrpc = []\n'
    )
    (tmp_path / "constraints.txt").write_text("numpy==2.0.0\n")
    with pytest.raises(PeerFailed, match="orjson, tensorflow"):
        serve_pins(tmp_path)


def test_a_venv_installs_under_its_constraints_and_is_rebuilt_when_they_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """keepwarm's bench venv had ml_dtypes 0.7.0 where constraints.txt pins 0.5.4 (0.6 s
    more CPU at every start): what the pins pull in is constrained too."""
    import peers

    log = tmp_path / "pip.log"
    pip = tmp_path / "pip"  # logs its first arguments and the constraints it was given
    pip.write_text(
        f"#!{sys.executable}\nimport pathlib, sys\nargs = sys.argv[1:]\n"
        "given = pathlib.Path(args[args.index('--constraint') + 1]).read_text()\n"
        f"with open({str(log)!r}, 'a') as log:\n"
        "    log.write(' '.join(args[:3]) + ' | ' + given)\n"
    )
    python = tmp_path / "python"  # "python -m venv --clear PATH": PATH/bin/pip is that pip
    python.write_text(
        f"#!{sys.executable}\nimport pathlib, shutil, sys\n"
        "bin = pathlib.Path(sys.argv[-1]) / 'bin'\nbin.mkdir(parents=True, exist_ok=True)\n"
        f"shutil.copy({str(pip)!r}, bin / 'pip')\n"
    )
    for script in (pip, python):
        script.chmod(0o755)
    monkeypatch.setattr(peers, "VENVS", tmp_path / "venvs")
    venv("x", ("numpy==2.0.0",), str(python), constraints="ml_dtypes==0.5.4\n")
    venv("x", ("numpy==2.0.0",), str(python), constraints="ml_dtypes==0.5.4\n")  # reused
    assert log.read_text() == "install -q numpy==2.0.0 | ml_dtypes==0.5.4\n"
    venv("x", ("numpy==2.0.0",), str(python), constraints="ml_dtypes==0.5.5\n")
    assert log.read_text().splitlines()[-1].endswith("| ml_dtypes==0.5.5")


def test_keepwarms_own_venv_is_built_under_constraints_txt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keepwarm_venv

    root = Path(__file__).resolve().parents[2]
    asked: dict[str, object] = {}

    def record(name: str, pins: tuple[str, ...], constraints: str = "") -> Path:
        asked.update(name=name, pins=pins, constraints=constraints)
        return tmp_path

    monkeypatch.setattr(keepwarm_venv, "venv", record)
    assert keepwarm_venv.serve_venv(root) == tmp_path
    assert asked["constraints"] == (root / "constraints.txt").read_text()
    assert "ml_dtypes==0.5.4" in str(asked["constraints"]).splitlines()
