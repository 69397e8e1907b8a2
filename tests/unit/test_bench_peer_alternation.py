"""``bench/peer_alternation.py``'s pure logic (serve_batching's c=32 JSON targets judged on
rounds that alternate keepwarm with a peer): the order rotates, the medians and the best
keepwarm configuration are taken per side, the strongest peer is the one judged, and a
target passes at its factor and fails below it or when the peer never answered."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from peer_alternation import alternate, best_config, judge, peer_targets, rotated, strongest
from peer_runs import PeerResults
from peers import Batching

NAN = float("nan")


def runs(*rps: float) -> list[dict[str, float]]:
    return [{"rps": x, "p50_ms": 1.0, "p99_ms": 2.0} for x in rps]


def test_rotated_puts_each_side_in_each_place() -> None:
    sides = ["1 process", "2 processes", "pytriton"]
    orders = [rotated(sides, i) for i in range(3)]
    assert orders[0] == sides
    assert rotated(sides, 3) == sides
    for place in range(3):
        assert sorted(order[place] for order in orders) == sorted(sides)
    assert rotated([], 5) == []
    assert rotated(["a"], 7) == ["a"]


def test_alternate_runs_one_of_each_side_per_round_in_rotated_order() -> None:
    calls: list[str] = []

    def run(side: str, value: float) -> Callable[[], dict[str, float]]:
        def once() -> dict[str, float]:
            calls.append(side)
            return {"rps": value + len(calls)}

        return once

    found = alternate({"a": run("a", 0), "b": run("b", 100), "p": run("p", 200)}, 4)
    assert calls == ["a", "b", "p", "b", "p", "a", "p", "a", "b", "a", "b", "p"]
    assert [x["rps"] for x in found["a"]] == [1, 6, 8, 10]
    assert [x["rps"] for x in found["p"]] == [203, 205, 207, 212]
    assert alternate({"a": run("a", 0)}, 0) == {"a": []}


def test_judge_takes_medians_and_keepwarms_best_configuration() -> None:
    found = {"1 process": runs(100, 300, 200), "2 processes": runs(250, 260, 900),
             "pytriton": runs(100, 130, 120)}  # fmt: skip
    j = judge(found, "pytriton")
    assert j["medians"] == {"1 process": 200, "2 processes": 260, "pytriton": 120}
    assert j["best"] == "2 processes"
    assert j["ratio"] == 260 / 120
    assert j["ratios"] == [2.5, 2.0, 7.5]


def test_judge_gives_nan_when_the_peer_never_answered_and_never_picks_nan() -> None:
    j = judge({"1 process": runs(100), "pytriton": runs(0)}, "pytriton")
    assert math.isnan(j["ratio"]) and math.isnan(j["ratios"][0])
    j = judge({"1 process": runs(NAN), "2 processes": runs(50), "p": runs(10)}, "p")
    assert j["best"] == "2 processes" and j["ratio"] == 5.0


def test_strongest_is_the_lowest_ratio_and_nan_lowest_of_all() -> None:
    a, b, c = {"ratio": 1.5}, {"ratio": 1.2}, {"ratio": NAN}
    assert strongest([a, b]) is b
    assert strongest([a, c, b]) is c


def results() -> PeerResults:
    cells = [{"way": way, "model": model, "body": "json", "c": 32, "rps": 100.0,
              "config": config} for way, config in (("pytriton", "8/5ms"), ("litserve", "off"))
             for model in ("mlp", "mobilenet_v2")]  # fmt: skip
    return PeerResults(cells=cells, cold_s={"pytriton": 1.0, "litserve": 2.0})


def test_best_config_finds_the_sweeps_batching_again() -> None:
    configs = [None, Batching(8, 0), Batching(8, 5), Batching(32, 5)]
    assert best_config(results(), "pytriton", "mlp", configs) == Batching(8, 5)
    assert best_config(results(), "litserve", "mobilenet_v2", configs) is None


def judgement(peer: str, ratio: float) -> dict[str, object]:
    return {"peer": peer, "medians": {"1 process": 1.0, peer: 1.0}, "best": "1 process",
            "ratio": ratio, "ratios": [ratio], "config": "8/5ms"}  # fmt: skip


def test_targets_pass_at_their_factor_and_fail_below() -> None:
    found = {"mlp": [judgement("pytriton", 2.0), judgement("litserve", 0.1)],
             "mobilenet_v2": [judgement("pytriton", 1.3), judgement("litserve", 1.1)]}  # fmt: skip
    targets = peer_targets(found, results())
    assert [t["status"] for t in targets] == ["PASS", "PASS"]
    assert "2.00x pytriton" in targets[0]["value"]  # MLP is judged on PyTriton only
    assert "1.10x litserve" in targets[1]["value"]  # the strongest peer
    assert "the sweep's litserve: 100" in targets[1]["value"]
    found = {"mlp": [judgement("pytriton", 1.99)], "mobilenet_v2": [judgement("p", NAN)]}
    assert [t["status"] for t in peer_targets(found, results())] == ["FAIL", "FAIL"]


def test_no_alternation_no_target() -> None:
    assert peer_targets({}, PeerResults()) == []
    assert peer_targets({"mlp": [judgement("litserve", 3.0)]}, results()) == []
