"""``server.processes``: the setting's bounds, what the supervisor refuses, and the
merge of several processes' ``/metrics`` into one."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from keepwarm.errors import InvalidConfigError
from keepwarm.metrics_merge import merge_expositions
from keepwarm.settings import Settings, tensorflow_intra_threads
from keepwarm.supervisor import check_processes, child_settings, hold_grpc_port, listening_sockets


@pytest.mark.parametrize("value", [0, -1, "two", 2.5, "", True, 65, "1e3"])
def test_bad_process_counts_are_refused(value: object) -> None:
    with pytest.raises(InvalidConfigError, match=r"server(\.|__)processes"):
        Settings.load(overrides={"server__processes": value})


def test_the_count_comes_from_flag_environment_and_file(tmp_path: Path) -> None:
    assert Settings.load(environ={}).server.processes == 1
    environ = {"KEEPWARM_SERVER__PROCESSES": "3"}
    assert Settings.load(environ=environ).server.processes == 3
    config = tmp_path / "server.toml"
    config.write_text("[server]\nprocesses = 2\n")
    assert Settings.load(file=config, environ={}).server.processes == 2
    with pytest.raises(InvalidConfigError, match="KEEPWARM_SERVER__PROCESSES"):
        Settings.load(environ={"KEEPWARM_SERVER__PROCESSES": "0"})


def test_more_than_four_per_core_is_refused() -> None:
    too_many = 4 * (os.cpu_count() or 1) + 1
    if too_many > 64:
        pytest.skip("this machine allows every count the setting does")
    settings = Settings.load(environ={}, overrides={"server__processes": too_many})
    with pytest.raises(InvalidConfigError, match="at most 4 per core"):
        check_processes(settings)


def test_the_management_api_is_refused_with_several_processes() -> None:
    for overrides in ({"server__management_api": True}, {"server__model_control": "explicit"}):
        settings = Settings.load(environ={}, overrides={"server__processes": 2, **overrides})
        with pytest.raises(InvalidConfigError, match="needs --processes 1"):
            check_processes(settings)


def test_a_bad_count_exits_2_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    from keepwarm.cli import main

    assert main(["serve", ".", "--processes", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --processes 0 (server.processes): ") and "from 1 to 64" in err
    assert main(["serve", ".", "--processes", "2", "--management-api"]) == 2
    assert "needs --processes 1" in capsys.readouterr().err


def test_listening_sockets_share_one_port_also_port_0() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 3)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(ports) == 1 and 0 not in ports
        with socket.create_connection(("127.0.0.1", ports.pop()), timeout=5):
            pass  # accepted into one of their queues
    finally:
        for sock in sockets:
            sock.close()


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidConfigError, match=f"server.http_port {port}"):
            listening_sockets("127.0.0.1", port, 2)


def test_a_host_that_does_not_resolve_is_a_clear_error() -> None:
    with pytest.raises(InvalidConfigError, match=r"server\.http_port 0 on nowhere\.invalid: "):
        listening_sockets("nowhere.invalid", 0, 2)
    with pytest.raises(InvalidConfigError, match=r"server\.grpc_port 0 on nowhere\.invalid: "):
        hold_grpc_port("nowhere.invalid", 0)


def test_a_port_another_server_shares_is_refused_too() -> None:
    # SO_REUSEPORT lets every socket that sets it bind the port: a second server started
    # by mistake would take half of the first one's connections
    first = listening_sockets("127.0.0.1", 0, 2)
    try:
        port = first[0].getsockname()[1]
        with pytest.raises(InvalidConfigError, match=f"server.http_port {port}"):
            listening_sockets("127.0.0.1", port, 2)
    finally:
        for sock in first:
            sock.close()


def test_a_grpc_port_another_server_shares_is_refused() -> None:
    with socket.socket() as grpc_server:  # as grpcio binds: SO_REUSEPORT
        grpc_server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        grpc_server.bind(("127.0.0.1", 0))
        grpc_server.listen()
        port = grpc_server.getsockname()[1]
        with pytest.raises(InvalidConfigError, match=f"server.grpc_port {port}"):
            hold_grpc_port("127.0.0.1", port)
    hold, free = hold_grpc_port("127.0.0.1", port)  # given back: free again
    assert (hold, free) == (None, port)


PROCESS_0 = b"""# HELP keepwarm_requests_total Inference requests by outcome.
# TYPE keepwarm_requests_total counter
keepwarm_requests_total{code="OK",model="m",protocol="v2",version="1"} 3.0
keepwarm_requests_total{code="NOT_FOUND",model="m",protocol="v2",version="1"} 1.0
# HELP keepwarm_request_seconds Latency.
# TYPE keepwarm_request_seconds histogram
keepwarm_request_seconds_bucket{le="0.1",model="m",protocol="v2",version="1"} 2.0
keepwarm_request_seconds_bucket{le="+Inf",model="m",protocol="v2",version="1"} 3.0
keepwarm_request_seconds_count{model="m",protocol="v2",version="1"} 3.0
keepwarm_request_seconds_sum{model="m",protocol="v2",version="1"} 0.5
# HELP keepwarm_requests_in_flight In flight.
# TYPE keepwarm_requests_in_flight gauge
keepwarm_requests_in_flight 2.0
"""
PROCESS_1 = b"""# HELP keepwarm_requests_total Inference requests by outcome.
# TYPE keepwarm_requests_total counter
keepwarm_requests_total{code="OK",model="m",protocol="v2",version="1"} 5.0
keepwarm_requests_total{code="OK",model="n",protocol="v2",version="1"} 1.0
# HELP keepwarm_request_seconds Latency.
# TYPE keepwarm_request_seconds histogram
keepwarm_request_seconds_bucket{le="0.1",model="m",protocol="v2",version="1"} 1.0
keepwarm_request_seconds_bucket{le="+Inf",model="m",protocol="v2",version="1"} 5.0
keepwarm_request_seconds_count{model="m",protocol="v2",version="1"} 5.0
keepwarm_request_seconds_sum{model="m",protocol="v2",version="1"} 2.25
# HELP keepwarm_requests_in_flight In flight.
# TYPE keepwarm_requests_in_flight gauge
keepwarm_requests_in_flight 0.0
"""


def parsed(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_counters_and_histograms_are_summed_gauges_kept_per_process() -> None:
    merged = parsed(merge_expositions({0: PROCESS_0, 1: PROCESS_1}, 3))
    m = (("model", "m"), ("protocol", "v2"), ("version", "1"))
    assert merged[("keepwarm_requests_total", (("code", "OK"), *m))] == 8.0
    assert merged[("keepwarm_requests_total", (("code", "NOT_FOUND"), *m))] == 1.0
    n = (("code", "OK"), ("model", "n"), ("protocol", "v2"), ("version", "1"))
    assert merged[("keepwarm_requests_total", n)] == 1.0
    assert merged[("keepwarm_request_seconds_bucket", (("le", "0.1"), *m))] == 3.0
    assert merged[("keepwarm_request_seconds_bucket", (("le", "+Inf"), *m))] == 8.0
    assert merged[("keepwarm_request_seconds_count", m)] == 8.0
    assert merged[("keepwarm_request_seconds_sum", m)] == 2.75
    assert merged[("keepwarm_requests_in_flight", (("server_process", "0"),))] == 2.0
    assert merged[("keepwarm_requests_in_flight", (("server_process", "1"),))] == 0.0
    assert merged[("keepwarm_server_processes", ())] == 3.0
    assert merged[("keepwarm_server_processes_reporting", ())] == 2.0  # one did not answer
    per = "keepwarm_server_process_requests_total"
    assert merged[(per, (("server_process", "0"),))] == 4.0
    assert merged[(per, (("server_process", "1"),))] == 6.0


def test_a_garbled_exposition_is_an_error_not_a_silent_gap() -> None:
    with pytest.raises(ValueError):
        merge_expositions({0: PROCESS_0, 1: b"keepwarm_requests_total{oops 1\n"}, 2)


def test_each_process_gets_its_share_of_the_memory_budget_and_the_ports() -> None:
    settings = Settings.load(
        environ={},
        overrides={"server__processes": 3, "budget__max_bytes": "3GiB", "budget__max_models": 4},
    )
    each = child_settings(settings, 8601, 8600)
    assert each.budget.max_bytes == 1 << 30 and each.budget.max_models == 4
    assert each.server.processes == 1
    assert (each.server.http_port, each.server.grpc_port) == (8601, 8600)
    unbounded = Settings.load(environ={}, overrides={"server__processes": 2})
    assert child_settings(unbounded, 1, 2).budget.max_bytes is None


def test_tensorflow_intra_op_threads_are_divided_among_the_processes() -> None:
    environ: dict[str, str] = {}
    assert tensorflow_intra_threads(2, environ, cores=8) == "4"
    assert environ == {"TF_NUM_INTRAOP_THREADS": "4"}
    assert tensorflow_intra_threads(3, {}, cores=2) == "1"  # never 0
    given = {"TF_NUM_INTRAOP_THREADS": "6"}
    assert tensorflow_intra_threads(2, given, cores=8) == "6"  # the user's choice stays
