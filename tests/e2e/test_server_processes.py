"""``keepwarm serve --processes 2``: a supervisor and two server processes on one port.
Both serve (the merged ``/metrics`` counts every request, each process some); a process
killed is restarted while the other serves and no request on a new connection fails;
SIGTERM lets requests in flight complete and exits 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from test_server_lifecycle import GATE_MODULE, GATE_TOML  # y = 2x; x[0] = 12345 waits

from support.repo_builders import place
from support.server_process import ServerProcess
from support.tls import self_signed

WAIT_S = 60.0
PATH = "/v2/models/gate/infer"


def body(first: float) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [first, 2]}]}


def start(tmp_path: Path) -> tuple[ServerProcess, Path]:
    root = tmp_path / "models"
    place(root / "gate", 1, files={"keepwarm.toml": GATE_TOML, "gate_model.py": GATE_MODULE})
    release = tmp_path / "release"
    env = {"GATE_RELEASE": str(release)}
    return ServerProcess(root, "--allow-unsafe", "--processes", "2", env=env), release


def samples(server: ServerProcess, name: str) -> dict[str, float]:
    """The samples of ``name`` in ``/metrics``: their label text -> value."""
    found = {}
    for line in server.get("/metrics").text.splitlines():
        match = re.match(rf"^{name}(\{{[^}}]*\}})? (\S+)$", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def pids(server: ServerProcess) -> dict[int, int]:
    """Process index -> its latest pid, from the supervisor's ``started`` lines."""
    started = re.findall(r"^process (\d+): started \(pid (\d+)\)$", server.output, re.M)
    return {int(index): int(pid) for index, pid in started}


def test_both_processes_serve_and_metrics_describe_the_whole_server(tmp_path: Path) -> None:
    server, _ = start(tmp_path)
    try:
        out = server.output
        assert out.count("  REST  ") == 1 and out.count("  gRPC  ") == 1
        assert re.search(r"^ready at \S+ \(2 processes\)$", out, re.M)
        assert sorted(pids(server)) == [0, 1]
        for index, pid in pids(server).items():
            assert f"process {index}: ready (pid {pid})" in out
        for _ in range(40):  # a new connection each: the kernel spreads them
            answer = requests.post(server.url + PATH, json=body(1), timeout=WAIT_S)
            assert answer.status_code == 200, answer.text
        total = samples(server, "keepwarm_requests_total")
        assert sum(v for k, v in total.items() if 'model="gate"' in k) == 40
        per_process = samples(server, "keepwarm_server_process_requests_total")
        assert set(per_process) == {'{server_process="0"}', '{server_process="1"}'}
        assert sum(per_process.values()) == 40 and min(per_process.values()) > 0
        assert samples(server, "keepwarm_server_processes_reporting") == {"": 2.0}
        resident = samples(server, "keepwarm_process_resident_bytes")
        assert len(resident) == 2 and min(resident.values()) > 0  # a gauge: per process
        latency = samples(server, "keepwarm_request_seconds_count")
        assert sum(latency.values()) == 40  # a histogram: summed
    finally:
        assert server.stop() == 0


def test_a_killed_process_is_restarted_and_no_new_connection_fails(tmp_path: Path) -> None:
    """The promise: a request on a connection the killed process had accepted may fail
    (here the client sends one at a time: at most one); every request on a new connection
    is answered, those the kernel queued for the dead process once it is back."""
    server, _ = start(tmp_path)
    failures: list[str] = []
    answered = [0]
    done = threading.Event()

    def client() -> None:
        while not done.is_set():
            try:
                answer = requests.post(server.url + PATH, json=body(1), timeout=WAIT_S)
            except requests.ConnectionError as exc:
                failures.append(repr(exc))
                continue
            assert answer.status_code == 200, answer.text
            answered[0] += 1

    try:
        victim = pids(server)[1]
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(client)
            time.sleep(0.3)
            os.kill(victim, signal.SIGKILL)  # one server process; the supervisor stays
            server.wait_for_line(rf"^process 1: pid {victim} died \(signal 9\); restarting")
            line = server.wait_for_line(rf"^process 1: ready \(pid (?!{victim}\))")
            before = answered[0]
            deadline = time.monotonic() + WAIT_S
            while answered[0] < before + 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            done.set()
            running.result(timeout=WAIT_S)
        assert len(failures) <= 1, failures
        assert answered[0] >= before + 20
        new_pid = pids(server)[1]
        assert new_pid != victim and f"(pid {new_pid})" in line
        per_process = samples(server, "keepwarm_server_process_requests_total")
        assert len(per_process) == 2  # the new process reports too
    finally:
        done.set()
        assert server.stop() == 0


def test_sigterm_drains_every_process_and_exits_0(tmp_path: Path) -> None:
    server, release = start(tmp_path)
    try:
        with ThreadPoolExecutor(6) as pool:
            held = [
                pool.submit(requests.post, server.url + PATH, json=body(12345), timeout=WAIT_S)
                for _ in range(6)
            ]
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                in_flight = samples(server, "keepwarm_requests_in_flight")
                if sum(in_flight.values()) == 6:
                    break
                time.sleep(0.02)
            assert sum(in_flight.values()) == 6
            assert len(in_flight) == 2
            server.terminate()
            server.wait_for_line(r"^\[process 0\] shutting down")
            server.wait_for_line(r"^\[process 1\] shutting down")
            assert requests.get(server.url + "/v2/health/ready", timeout=WAIT_S).status_code == 503
            assert server.proc.poll() is None  # still waiting for the held requests
            release.touch()
            answers = [future.result(timeout=WAIT_S) for future in held]
        assert [a.status_code for a in answers] == [200] * 6
        assert server.proc.wait(timeout=WAIT_S) == 0
        server.wait_for_line("^stopped$")
    finally:
        release.touch()
        server.stop()


def test_a_process_that_fails_at_start_stops_the_server(tmp_path: Path) -> None:
    """A start-up error in the processes (here the TLS key is not a key: each process reads
    its TLS files) ends the whole server with that process's exit code, its sibling
    stopped too: no half a server."""
    root = tmp_path / "models"
    place(root / "gate", 1, files={"keepwarm.toml": GATE_TOML, "gate_model.py": GATE_MODULE})
    cert, _ = self_signed(tmp_path)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    command = [sys.executable, "-m", "keepwarm", "serve", str(root), "--port", "0"]
    command += ["--grpc-port", "0", "--processes", "2", "--allow-unsafe"]
    command += ["--tls-cert", str(cert), "--tls-key", str(junk)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=WAIT_S)
    assert done.returncode == 2, done.stderr
    assert f"server.tls_key {junk}" in done.stderr
    started = re.findall(r"started \(pid (\d+)\)", done.stderr)
    assert len(started) == 2
    for pid in started:  # both gone (reaped by the supervisor)
        assert not Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_signal_while_the_processes_start_ends_the_start_as_one_servers_does(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """Signalled as soon as the supervisor said the second process started (it is still
    in its interpreter's start-up, its handlers not in place), the server exits as a
    single server does (SIGTERM 0, SIGINT 130): it exited 241 and 254, the processes'
    deaths by the signal (-15, -2) taken for its exit code, with no process left."""
    root = tmp_path / "models"
    place(root / "gate", 1, files={"keepwarm.toml": GATE_TOML, "gate_model.py": GATE_MODULE})
    command = [sys.executable, "-m", "keepwarm", "serve", str(root), "--port", "0"]
    command += ["--grpc-port", "0", "--processes", "2", "--allow-unsafe"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    lines = []
    try:
        for line in proc.stderr:  # bounded: the server prints a few lines, then stops
            lines.append(line)
            if line.startswith("process 1: started"):
                proc.send_signal(sig)
                break
        rest = proc.communicate(timeout=WAIT_S)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + rest
    assert proc.returncode == code, output
    assert output.rstrip().endswith("stopped"), output
    assert "Fatal Python error" not in output and "Traceback" not in output, output
    for pid in re.findall(r"started \(pid (\d+)\)", output):
        assert not Path(f"/proc/{pid}").exists()
