"""The server's lifecycle through HTTP: a version swap under load fails no request;
SIGTERM lets requests in flight complete, refuses new ones, and exits 0."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from support.repo_builders import build_echo_savedmodels, place
from support.server_process import ServerProcess

WAIT_S = 60.0

GATE_MODULE = '''
import os, time
from pathlib import Path

class Gate:
    """Holds requests whose first value is 12345 (not warmup's) until the file named by
    GATE_RELEASE exists (at most 60 s)."""

    def load(self, path):
        self.release = Path(os.environ["GATE_RELEASE"])

    def predict(self, inputs):
        deadline = time.monotonic() + 60
        held = inputs["x"].flat[0] == 12345
        while held and not self.release.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        return {"y": inputs["x"] * 2}
'''
GATE_TOML = """
[python]
class = "gate_model:Gate"

[python.signature]
inputs = [{ name = "x", dtype = "float32", shape = [-1, 2] }]
outputs = [{ name = "y", dtype = "float32", shape = [-1, 2] }]
"""
GATE_BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [12345, 2]}]}


def in_flight(server: ServerProcess) -> float:
    for line in server.get("/metrics").text.splitlines():
        if line.startswith("keepwarm_requests_in_flight "):
            return float(line.split()[1])
    raise AssertionError("no keepwarm_requests_in_flight in /metrics")


def held_report(server: ServerProcess, held: list[Future[requests.Response]]) -> str:
    """What each held request came to, and the server's last lines: a failure says where
    a request that never arrived went."""
    states = []
    for future in held:
        if not future.done():
            states.append("pending")
        elif future.exception() is not None:
            states.append(f"raised {future.exception()!r}")
        else:
            answer = future.result()
            states.append(f"{answer.status_code} {answer.text[:200]!r}")
    return f"held requests: {states}; server output: {server.lines[-30:]}"


def test_sigterm_completes_requests_in_flight_refuses_new_ones_and_exits_0(
    tmp_path: Path,
) -> None:
    root = tmp_path / "models"
    place(root / "gate", 1, files={"keepwarm.toml": GATE_TOML, "gate_model.py": GATE_MODULE})
    release = tmp_path / "release"
    server = ServerProcess(root, "--allow-unsafe", env={"GATE_RELEASE": str(release)})
    try:
        with ThreadPoolExecutor(3) as pool:
            held = [pool.submit(server.post, "/v2/models/gate/infer", GATE_BODY) for _ in range(3)]
            deadline = time.monotonic() + WAIT_S
            while in_flight(server) < 3 and time.monotonic() < deadline:
                threading.Event().wait(0.01)
            assert in_flight(server) == 3, held_report(server, held)
            server.terminate()
            server.wait_for_line("^shutting down")
            assert server.get("/v2/health/ready").status_code == 503
            assert server.get("/v2/health/live").status_code == 200
            refused = server.post("/v2/models/gate/infer", GATE_BODY)
            assert refused.status_code == 503
            assert "shutting down" in refused.json()["error"]
            assert refused.headers["Retry-After"].isdigit()
            tf_refused = server.post("/v1/models/gate:predict", {"instances": [[12345, 2]]})
            assert tf_refused.status_code == 503
            assert server.proc.poll() is None  # still waiting for the held requests
            release.touch()
            answers = [future.result(timeout=WAIT_S) for future in held]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert all(a.json()["outputs"][0]["data"] == [24690, 4] for a in answers)
        assert server.proc.wait(timeout=WAIT_S) == 0
    finally:
        release.touch()
        server.stop()


@pytest.fixture(scope="module")
def echo_versions(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    return build_echo_savedmodels(tmp_path_factory.mktemp("echo"), range(1, 3))


def test_swap_under_load_fails_no_request(tmp_path: Path, echo_versions: dict[int, Path]) -> None:
    root = tmp_path / "models"
    place(root / "echo", 1, echo_versions[1])
    server = ServerProcess(root, "--poll-seconds", "0.2")
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4}]}
    seen: Counter[int] = Counter()
    failures: list[str] = []
    new_seen = threading.Event()
    lock = threading.Lock()

    def client() -> None:
        with requests.Session() as session:
            run(session)

    def run(session: requests.Session) -> None:
        after_new, deadline = 0, time.monotonic() + WAIT_S
        while after_new < 30 and time.monotonic() < deadline:
            answer = session.post(server.url + "/v2/models/echo/infer", json=body, timeout=30)
            if answer.status_code != 200:
                with lock:
                    failures.append(f"{answer.status_code} {answer.text}")
                continue
            version = int(answer.json()["outputs"][0]["data"][0])
            with lock:
                seen[version] += 1
            if version == 2:
                new_seen.set()
            if new_seen.is_set():
                after_new += 1

    try:
        with ThreadPoolExecutor(4) as pool:
            clients = [pool.submit(client) for _ in range(4)]
            place(root / "echo", 2, echo_versions[2])
            for future in clients:
                future.result(timeout=WAIT_S * 2)
        assert failures == []
        assert seen[1] > 0 and seen[2] >= 4 * 30 - 3, seen
    finally:
        server.stop()


def test_strict_readiness_is_blocked_by_a_failed_version(tmp_path: Path) -> None:
    root = tmp_path / "models"
    broken = root / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a protobuf")
    server = ServerProcess(root, "--strict-readiness", wait_ready=False)
    try:
        server.wait_for_line("^FAILED broken version 1")
        answer = server.get("/v2/health/ready")
        assert answer.status_code == 503 and answer.json() == {"ready": False}
        assert server.get("/v2/health/live").status_code == 200
    finally:
        assert server.stop() == 0


def test_tls(tmp_path: Path, example_models: Path) -> None:
    import shutil

    from support.tls import self_signed

    cert_file, key_file = self_signed(tmp_path)
    root = tmp_path / "models"
    shutil.copytree(example_models / "mlp_onnx", root / "mlp_onnx")
    server = ServerProcess(root, "--tls-cert", str(cert_file), "--tls-key", str(key_file))
    try:
        assert server.url.startswith("https://")
        answer = requests.get(server.url + "/v2/health/ready", verify=str(cert_file), timeout=30)
        assert answer.status_code == 200
        with pytest.raises(requests.exceptions.RequestException):  # no plain HTTP on it
            requests.get(server.url.replace("https", "http") + "/v2/health/ready", timeout=3)
    finally:
        assert server.stop() == 0


def test_management_beyond_loopback_without_tls_logs_a_warning(
    tmp_path: Path, example_models: Path
) -> None:
    import shutil

    root = tmp_path / "models"
    shutil.copytree(example_models / "mlp_onnx", root / "mlp_onnx")
    server = ServerProcess(
        root, "--host", "0.0.0.0", "--management-api", env={"KEEPWARM_MANAGEMENT_TOKEN": "t"}
    )
    try:
        warning = server.wait_for_line("without TLS")
        assert '"level": "warning"' in warning
    finally:
        assert server.stop() == 0


SLOW_MODULE = '''
import os, time
from pathlib import Path

class SlowLoad:
    """Loads once the file named by SLOW_RELEASE exists (at most 60 s)."""

    def load(self, path):
        release, deadline = Path(os.environ["SLOW_RELEASE"]), time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.005)

    def predict(self, inputs):
        return {"y": inputs["x"] * 2}
'''


def test_a_request_for_a_loading_model_waits_up_to_its_deadline(tmp_path: Path) -> None:
    root = tmp_path / "models"
    toml = GATE_TOML.replace("gate_model:Gate", "slow_model:SlowLoad")
    place(root / "slow", 1, files={"keepwarm.toml": toml, "slow_model.py": SLOW_MODULE})
    (root / "slow" / "model.toml").write_text("[labels]\nstable = 1\n")
    release = tmp_path / "release"
    server = ServerProcess(
        root, "--allow-unsafe", env={"SLOW_RELEASE": str(release)}, wait_ready=False
    )
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    try:
        server.wait_for_line("^loading slow version 1")
        late = server.post("/v2/models/slow/infer", body, headers={"Keepwarm-Timeout-Ms": "200"})
        assert late.status_code == 504, late.text
        assert "model 'slow'" in late.text and "LOADING" in late.text, late.text
        for path in (
            "/v2/models/slow",
            "/v2/models/slow/config",
            "/v1/models/slow/metadata",
            "/v1/models/slow/labels/stable",  # a label's status: the version it names
        ):
            # the metadata wait has the same deadline (it waited for the load, up to 300 s)
            late = server.get(path, headers={"Keepwarm-Timeout-Ms": "200"}, timeout=20)
            assert late.status_code == 504 and "'slow'" in late.text, (path, late.text)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(server.post, "/v2/models/slow/infer", body)
            deadline = time.monotonic() + WAIT_S
            while in_flight(server) < 1 and time.monotonic() < deadline:
                threading.Event().wait(0.01)
            assert in_flight(server) == 1 and not waiting.done()
            release.touch()
            answer = waiting.result(timeout=WAIT_S)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [2, 4]
    finally:
        release.touch()
        assert server.stop() == 0
