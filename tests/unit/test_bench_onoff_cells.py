"""``bench/onoff_cells.py``: serve_batching's c=1/4/8 cells in one server process. The
repository it builds (each model on, off and off again), the phases' length, the medians
of per-round ratios and differences with the control beside them, c=1's per-cycle shift,
the targets' bounds (met at the bound, missed past it and on NaN), and a whole cell
against a real server."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.paced_server import paced_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from onoff_cells import (
    C1_CYCLES,
    SIDES,
    c1_seconds,
    cells,
    cycle_shift,
    one_process_repo,
    phase_ms,
    run_seconds,
    served_name,
    summary,
    targets,
)


def test_one_process_repo_serves_each_model_on_off_and_off_again(tmp_path: Path) -> None:
    models = tmp_path / "models"
    for name in ("mlp", "other"):
        (models / name / "1").mkdir(parents=True)
        (models / name / "1" / "saved_model.pb").write_bytes(name.encode())
        (models / name / "model.toml").write_text("[batching]\nmax_batch_size = 32\n")
    repo = one_process_repo(models, ("mlp",), tmp_path / "one")
    assert sorted(p.name for p in repo.iterdir()) == ["mlp", "mlp_off", "mlp_off2"]
    assert [served_name("mlp", side) for side in SIDES] == ["mlp", "mlp_off", "mlp_off2"]
    assert (repo / "mlp" / "model.toml").exists()
    for off in ("mlp_off", "mlp_off2"):
        assert not (repo / off / "model.toml").exists()
        assert (repo / off / "1" / "saved_model.pb").read_bytes() == b"mlp"
    with pytest.raises(FileNotFoundError):
        one_process_repo(models, ("absent",), tmp_path / "two")


def test_phases_are_per_request_at_c1_and_many_answers_long_beyond() -> None:
    assert phase_ms(1, 30.0) == 0
    assert phase_ms(4, 1.5) == 100  # the floor
    assert phase_ms(8, 150.0) == 750  # five answers
    assert run_seconds(2.0, 0.0, 3) == 2.0
    assert run_seconds(2.0, 100.0, 3) == 2.0
    assert run_seconds(2.0, 750.0, 3) == 6.75  # one cycle: each side after each side


def rounds(*pairs: tuple[float, float, float]) -> list[dict[str, dict[str, float]]]:
    """Rounds of (on, off, off2) req/s; p50 = 1000 / req/s ms (NaN at 0 req/s)."""
    return [{side: {"rps": rps, "p50_ms": 1000 / rps if rps else math.nan, "failed": 0}
             for side, rps in zip(SIDES, x, strict=True)} for x in pairs]  # fmt: skip


def test_summary_takes_medians_of_per_round_figures() -> None:
    found = summary(rounds((90, 100, 100), (200, 100, 110), (95, 100, 90)))
    assert found["ratio"] == pytest.approx(0.95)  # rounds 0.9, 2.0, 0.95
    assert found["ratios"] == [0.9, 2.0, 0.95]
    assert found["on"]["rps"] == 95 and found["off"]["rps"] == 100
    assert found["control_ratio"] == pytest.approx(1.0)  # 1.0, 1.1, 0.9
    assert found["p50_diff_ms"] == pytest.approx(1000 / 95 - 10)
    assert found["control_p50_diff_ms"] == pytest.approx(0.0)
    assert found["on"]["failed"] == 0
    assert math.isnan(summary(rounds((90, 0, 100)))["ratio"])


def judged(ratio: float, diff: float, c: int = 1) -> list[str]:
    x = {"ratio": ratio, "ratios": [ratio], "p50_diff_ms": diff, "control_ratio": 1.0,
         "control_p50_diff_ms": 0.0, "on": {"rps": 1.0, "p50_ms": 1.0},
         "off": {"rps": 1.0, "p50_ms": 1.0}}  # fmt: skip
    return [t["status"] for t in targets({("mlp", c): x}, {})]


def test_targets_hold_at_their_bounds_and_fail_past_them() -> None:
    assert judged(0.95, 0.05) == ["PASS", "PASS"]
    assert judged(0.949, 0.0501) == ["FAIL", "FAIL"]
    assert judged(0.96, -1.0, c=4) == ["FAIL", "PASS"]
    assert judged(0.97, 0.05, c=8) == ["PASS", "PASS"]
    assert judged(math.nan, math.nan) == ["FAIL", "FAIL"]


def test_a_request_not_answered_2xx_fails_the_cell() -> None:
    x = summary(rounds((100, 100, 100)))
    assert [t["status"] for t in targets({("mlp", 1): x}, {})] == ["PASS", "PASS"]
    x["off2"]["failed"] = 3
    rows = targets({("mlp", 1): x}, {})
    assert [t["status"] for t in rows] == ["FAIL", "FAIL"]
    assert all("3 requests not answered 2xx" in t["value"] for t in rows)


def test_targets_print_the_two_server_figure_beside() -> None:
    x = summary(rounds((100, 100, 100)))
    two = {("mlp", 1): {"ratio": 0.81, "p50_diff_ms": 0.12}}
    rows = targets({("mlp", 1): x}, two)
    assert "two servers with wrk 0.81x, +0.120 ms" in rows[0]["value"]
    assert "control off2/off 1.000x" in rows[0]["value"]
    assert "one process" in rows[0]["target"]


@pytest.fixture
def server() -> Iterator[str]:
    # The on side sleeps 5 ms an answer: well past what a loaded machine adds to the off
    # sides' answers (a 2 ms sleep against a 0.5 ms margin failed at load 4-6).
    with paced_server({"/v2/models/mlp/infer": 0.005}, None) as url:
        yield url


def test_cells_measure_each_concurrency_through_the_client(server: str, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(b'{"inputs": []}')
    p50s = {("mlp", c): 1.0 for c in (1, 4, 8)}
    found = cells(server, {"mlp": [body]}, p50s, 0.3, 2, tmp_path)
    assert sorted(found) == [("mlp", 1), ("mlp", 4), ("mlp", 8)]
    assert found[("mlp", 1)]["phase_ms"] == 0 and found[("mlp", 4)]["phase_ms"] == 100
    for x in found.values():
        assert x["on"]["p50_ms"] >= 5.0  # the slow side is the on side
        assert x["p50_diff_ms"] > 2.0
        assert x["ratio"] < 1 and len(x["ratios"]) == 2
        # off2 against off, both unslept: near zero, and well under the on side's 5 ms
        # sleep (three suites at once on 2 cores put it at 3.0 ms once: 1.5 was too tight).
        assert abs(x["control_p50_diff_ms"]) < 4.0
    assert found[("mlp", 1)]["cycle_diff_ms"] > 2.0  # c=1: per cycle, from the latencies
    assert "cycle_diff_ms" not in found[("mlp", 4)]
    statuses = [t["status"] for t in targets(found, {})]
    assert statuses.count("FAIL") == 6


def test_cycle_shift_takes_the_drift_out_of_each_cycle() -> None:
    # Two rounds of 2 cycles each (3 sides: 3 requests per side a cycle); the machine's
    # speed doubles from one cycle to the next, the on side 1 ms slower throughout.
    slow, fast = [0.010] * 3, [0.020] * 3
    run = {"on": [x + 0.001 for x in slow + fast], "off": slow + fast, "off2": slow + fast}
    shift, se, n = cycle_shift([run, run], "on", "off")
    assert (shift, se, n) == (pytest.approx(1.0), pytest.approx(0.0), 4)
    assert cycle_shift([run, run], "off2", "off")[0] == pytest.approx(0.0)
    partial = {side: x[:5] for side, x in run.items()}  # the last cycle cut short
    assert cycle_shift([partial], "on", "off")[2] == 1
    assert math.isnan(cycle_shift([partial], "on", "off")[0])


def test_c1_p50_is_judged_per_cycle_when_the_latencies_are_there() -> None:
    latencies = [{"on": [0.010] * 6, "off": [0.010] * 6, "off2": [0.010] * 6}]
    x = summary(rounds((90, 100, 100)), latencies)  # per round: p50 +1.1 ms
    assert x["cycle_diff_ms"] == pytest.approx(0.0) and x["cycles"] == 2
    rows = targets({("mlp", 1): x}, {})
    assert [t["status"] for t in rows] == ["FAIL", "PASS"]
    assert "per cycle +- 0.000, 2 cycles" in rows[1]["value"]
    assert "per round +1.111" in rows[1]["value"]
    assert "cycle_diff_ms" not in summary(rounds((90, 100, 100)))


def test_c1_rounds_last_long_enough_for_the_cycles() -> None:
    assert c1_seconds(45.0, 3, 6) == pytest.approx(C1_CYCLES * 9 * 0.045 / 6)
