"""``server.model_nice``: in ``keepwarm serve`` the threads that run models (the runtime's
pools, made during the load, and the batch executor's) run at the configured nice value
above the server's, while the event loop's thread keeps the server's own; with
``server.model_priority_scope = "runtime"`` only the runtime's pools are lowered."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from support.server_process import ServerProcess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux threads")


def threads(pid: int) -> dict[int, tuple[str, int]]:
    """Each thread of ``pid``: its name and nice value, from ``/proc`` (a thread that
    ended between the listing and the read is left out)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        nice = int(stat[stat.rindex(")") + 2 :].split()[16])
        found[int(task.name)] = (name, nice)
    return found


@pytest.mark.parametrize("scope", ["all", "runtime"])
def test_model_threads_run_lower_than_the_event_loop(
    example_models: Path, tmp_path: Path, scope: str
) -> None:
    root = tmp_path / "models"
    shutil.copytree(example_models / "mlp", root / "mlp")
    base = os.getpriority(os.PRIO_PROCESS, 0)
    lowered = min(19, base + 2)
    assert lowered > base, "the tests run at nice 19: nothing can be lowered"
    env = {"KEEPWARM_SERVER__MODEL_NICE": "2", "KEEPWARM_SERVER__MODEL_PRIORITY_SCOPE": scope}
    server = ServerProcess(root, "--no-watch", env=env)
    try:
        body = {"inputs": [{"name": "image", "shape": [1, 784], "datatype": "FP32",
                            "data": [0.5] * 784}]}  # fmt: skip
        reply = server.post("/v2/models/mlp/infer", body)
        assert reply.status_code == 200, reply.text
        found = threads(server.proc.pid)
    finally:
        server.stop()
    assert found[server.proc.pid][1] == base  # the main thread: the event loop
    runtime = [nice for name, nice in found.values() if name.startswith("tf_")]
    assert runtime and set(runtime) == {lowered}, found
    executor = [nice for name, nice in found.values() if name.startswith("keepwarm-batch")]
    if scope == "runtime":  # the batch executor's threads keep the server's priority
        assert set(executor) <= {base}, found
        return
    assert set(executor) <= {lowered}, found
    # TensorFlow's pools, the batch executor's threads and the load's own thread at least
    assert sum(nice == lowered for _, nice in found.values()) >= 4, found
    assert sum(nice == base for _, nice in found.values()) >= 4, found  # the server's own
