"""SIGTERM while a model call hangs forever in the server's own process (no workers),
reached through gRPC, whose thread pool the interpreter joins at exit: past the drain
timeout the request is answered UNAVAILABLE and the server exits 0 without the call (it
never exited: the interpreter's exit waited for that thread)."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from support.server_process import ServerProcess
from support.worker_models import Gate

WAIT_S = 60.0


def test_a_call_that_never_returns_does_not_keep_the_server_from_exiting(
    tmp_path: Path,
) -> None:
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()
    gate = Gate(gate_dir)
    model = tmp_path / "models" / "gated"
    (model / "1").mkdir(parents=True)
    (model / "model.toml").write_text("[warmup]\nruns = 0\n")
    (model / "1" / "keepwarm.toml").write_text('[python]\nclass = "support.worker_models:Gated"\n')
    (model / "1" / "gate").write_text(str(gate_dir))
    server = ServerProcess(tmp_path / "models", "--allow-unsafe", "--drain-timeout", "1")
    try:
        found = re.search(r"gRPC\s+(\S+:\d+)", server.wait_for_line(r"gRPC"))
        assert found is not None
        client = grpcclient.InferenceServerClient(found.group(1))
        outcome: dict[str, Any] = {}

        def call() -> None:
            given = grpcclient.InferInput("x", [1, 4], "FP32")
            given.set_data_from_numpy(np.ones((1, 4), np.float32))
            try:
                outcome["answer"] = client.infer("gated", [given])
            except Exception as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=call)
        thread.start()
        gate.wait_started()  # the call is in the model, and stays there
        server.terminate()
        thread.join(WAIT_S)
        assert server.proc.wait(WAIT_S) == 0, server.output
        assert "exiting without them" in server.output
        error = outcome["error"]
        assert error.status() == "StatusCode.UNAVAILABLE", error
        client.close()
    finally:
        server.stop()
        gate.close()
