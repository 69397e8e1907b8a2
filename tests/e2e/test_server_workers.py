"""A Python model served from worker processes by the real server: it answers; a worker
killed with ``kill -9`` in the middle of a request makes that request a 503 naming the
model (with Retry-After), the worker comes back, and the next request is answered; the
restart is counted in ``/metrics``; stopping the server leaves no worker behind."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from support.server_process import ServerProcess
from support.waiting import process_alive, wait_until
from support.worker_models import Gate

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def _place(root: Path, gate_dir: Path, *, workers: bool = True) -> None:
    model = root / "gated"
    version = model / "1"
    version.mkdir(parents=True)
    table = "[workers]\nprocesses = 1\n\n" if workers else ""
    (model / "model.toml").write_text(table + "[warmup]\nruns = 0\n")
    (version / "keepwarm.toml").write_text('[python]\nclass = "support.worker_models:Gated"\n')
    (version / "gate").write_text(str(gate_dir))


def _infer(server: ServerProcess, out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        out["response"] = server.post("/v2/models/gated/infer", BODY)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_killed_worker_gives_503_then_the_model_answers_again(tmp_path: Path) -> None:
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    gate = Gate(gate_dir)
    _place(tmp_path / "models", gate_dir)
    server = ServerProcess(tmp_path / "models", "--allow-unsafe")
    pids: list[int] = []
    try:
        first: dict[str, Any] = {}
        thread = _infer(server, first)
        pids.append(gate.wait_started())
        assert pids[0] != server.proc.pid
        gate.let_one_finish()
        thread.join(60)
        assert first["response"].status_code == 200, first["response"].text
        assert first["response"].json()["outputs"][0]["data"] == [2.0, 3.0, 4.0, 5.0]
        before = server.get("/metrics").text  # the series exists before the first restart
        assert 'keepwarm_worker_restarts_total{model="gated"} 0.0' in before

        killed: dict[str, Any] = {}
        thread = _infer(server, killed)
        assert gate.wait_started() == pids[0]
        os.kill(pids[0], signal.SIGKILL)
        thread.join(60)
        response = killed["response"]
        assert response.status_code == 503, response.text
        assert "model 'gated'" in response.json()["error"]
        assert "signal 9" in response.json()["error"]
        assert "Retry-After" in response.headers

        again: dict[str, Any] = {}
        thread = _infer(server, again)
        pids.append(gate.wait_started())  # the restarted worker has the model loaded
        assert pids[1] != pids[0]
        gate.let_one_finish()
        thread.join(60)
        assert again["response"].status_code == 200, again["response"].text
        metrics = server.get("/metrics").text
        assert 'keepwarm_worker_restarts_total{model="gated"} 1.0' in metrics
    finally:
        server.stop()
        gate.close()
    assert wait_until(lambda: not process_alive(pids[-1]))


def test_sigterm_past_the_drain_timeout_kills_a_hung_worker_at_once(tmp_path: Path) -> None:
    """A request whose model hangs in its worker outlives ``--drain-timeout 1``: the server
    then kills that worker instead of waiting 10 s more for its call, the request gets a
    503 saying why, and the server exits 0."""
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    gate = Gate(gate_dir)
    _place(tmp_path / "models", gate_dir)
    server = ServerProcess(tmp_path / "models", "--allow-unsafe", "--drain-timeout", "1")
    try:
        hung: dict[str, Any] = {}
        thread = _infer(server, hung)
        pid = gate.wait_started()
        started = time.monotonic()
        server.terminate()
        code = server.proc.wait(60)
        took = time.monotonic() - started
        thread.join(60)
        assert code == 0, server.output
        assert not process_alive(pid)
        assert took < 8.0, f"exit took {took:.1f} s after SIGTERM (drain timeout 1 s)"
        response = hung["response"]  # answered, saying why (was uvicorn's bare 500)
        assert response.status_code == 503, response.text
        assert "still running when the server's drain timeout passed" in response.json()["error"]
    finally:
        server.stop()
        gate.close()


def test_a_request_hung_in_process_past_the_drain_timeout_gets_503(tmp_path: Path) -> None:
    """A request whose model hangs in the server's own process (no workers) outlives
    ``--drain-timeout 1`` and uvicorn's grace: it is answered 503 saying the server shut
    down before it was answered (it got uvicorn's bare 500), and the server exits 0 once
    the call returns."""
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    gate = Gate(gate_dir)
    _place(tmp_path / "models", gate_dir, workers=False)
    server = ServerProcess(tmp_path / "models", "--allow-unsafe", "--drain-timeout", "1")
    try:
        hung: dict[str, Any] = {}
        thread = _infer(server, hung)
        gate.wait_started()
        server.terminate()
        thread.join(60)
        response = hung["response"]
        assert response.status_code == 503, response.text
        assert "shut down before this request was answered" in response.json()["error"]
        assert "Retry-After" in response.headers
        gate.let_one_finish()  # the call returns: the process can end
        assert server.proc.wait(60) == 0, server.output
    finally:
        server.stop()
        gate.close()
