"""``bench/inproc_pairs.py``: serve_batching's in-process cell with its sides (on, off and
the control off2) alternating in phases within one process. The phases' count (whole
cycles of the pair order), each side's calls and time routed to it, the medians of
per-round ratios with the control beside, and a whole cell on a real ONNX model."""

from __future__ import annotations

import math
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from support import onnx_graphs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from inproc_pairs import cell, in_process, measure, phase_count
from paired_load import side_for


def test_a_round_is_whole_cycles_in_which_each_side_follows_each_side_equally() -> None:
    assert phase_count(1.0, 10.0, 3) == 306  # 300 wanted, rounded up to cycles of 9
    assert phase_count(0.001, 10.0, 3) == 9  # one cycle at the least
    assert phase_count(0.2, 10.0, 2) == 40
    phases = phase_count(0.1, 10.0, 3)
    sides = [side_for(i, 3) for i in range(phases)]
    follows = Counter(zip(sides, sides[1:] + sides[:1], strict=True))
    assert sorted(follows) == [(a, b) for a in range(3) for b in range(3)]
    assert set(follows.values()) == {phases // 9}
    assert set(Counter(sides).values()) == {phases // 3}


@pytest.mark.parametrize("threads", [1, 3])
def test_each_sides_calls_and_phases_are_its_own(threads: int) -> None:
    made = Counter[str]()
    lock = threading.Lock()

    def call(side: str, work: int) -> None:
        sum(range(work))
        with lock:
            made[side] += 1

    predicts = {"on": lambda: call("on", 300), "off": lambda: call("off", 100),
                "off2": lambda: call("off2", 100)}  # fmt: skip
    runs = measure(predicts, threads, 0.03, 2, phase_ms=2.0)
    assert len(runs) == 2
    phases = phase_count(0.03, 2.0, 3)
    for side in predicts:
        assert made[side] == sum(r[side]["requests"] for r in runs) > 0
        for r in runs:  # every phase lasts its 2 ms at least: a third of them are this side's
            assert r[side]["seconds"] >= phases / 3 * 2e-3
            assert r[side]["rps"] == pytest.approx(r[side]["requests"] / r[side]["seconds"])
            assert r[side]["cpu_us"] > 0 and r[side]["p50_ms"] <= r[side]["p99_ms"]


def test_a_failing_call_fails_the_run() -> None:
    def fails() -> None:
        raise ValueError("no")

    with pytest.raises(RuntimeError, match="predict call failed"):
        measure({"on": fails, "off": lambda: None, "off2": lambda: None}, 2, 0.01, 1, 1.0)


def test_the_cell_is_the_median_of_per_round_ratios_with_the_control_beside() -> None:
    def side(rps: float, p50: float) -> dict[str, float]:
        return {"rps": rps, "p50_ms": p50, "cpu_us": rps / 10, "switches": 1.0}

    runs = [
        {"on": side(90, 1.2), "off": side(100, 1.0), "off2": side(110, 1.1)},
        {"on": side(300, 0.5), "off": side(200, 0.4), "off2": side(180, 0.3)},
        {"on": side(95, 1.0), "off": side(100, 1.0), "off2": side(100, 1.0)},
    ]
    found = cell(runs, 8)
    assert found["threads"] == 8
    assert found["ratios"] == [0.9, 1.5, 0.95]
    assert found["ratio"] == 0.95  # the median of the rounds' ratios, not of the medians
    assert found["control_ratios"] == [1.1, 0.9, 1.0] and found["control_ratio"] == 1.0
    assert (found["off"], found["on"], found["off2"]) == (100, 95, 110)
    assert found["p50_diff_ms"] == pytest.approx(0.1)
    assert found["control_p50_diff_ms"] == pytest.approx(0.0)
    assert found["cpu_us_on"] == 9.5 and found["switches_off2"] == 1.0


def test_a_whole_cell_on_a_real_model(tmp_path: Path) -> None:
    model_dir = tmp_path / "dense"
    onnx_graphs.dense(model_dir / "1" / "model.onnx")
    (model_dir / "1" / ".keepwarm-ready").touch()
    x = np.ones((1, 16), np.float32)
    cells = in_process(model_dir, x, (1, 4), 0.05, 2, phase_ms=5.0)
    assert [c["threads"] for c in cells] == [1, 4]
    for c in cells:
        assert len(c["ratios"]) == len(c["control_ratios"]) == 2
        for key in ("off", "on", "off2", "ratio", "control_ratio", "cpu_us_on"):
            assert math.isfinite(c[key]) and c[key] > 0, key
