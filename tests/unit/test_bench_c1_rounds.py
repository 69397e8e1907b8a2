"""``bench/c1_rounds.py``'s judging (issue 7's MLP c=1 target in ``bench/serve.py``, on rounds
alternating the direct call with the served MLP): per-round differences in order, their
median (every round kept), the bound met at it and missed past it, on NaN and on a failed
request, the per-round table's order, and ``serve.py`` judging the rounds, not the single
runs beside them."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from c1_rounds import differences, judge, table, target
from peer_runs import PeerResults
from serve import throughput_targets

NAN = float("nan")


def rounds(*pairs: tuple[float, float], failed: int = 0) -> dict[str, list[dict[str, float]]]:
    """Rounds of (direct p50, served p50) ms; req/s 1000 / p50; ``failed`` on the served
    side of the last round."""
    found: dict[str, list[dict[str, float]]] = {"direct": [], "served": []}
    for direct, served in pairs:
        found["direct"].append({"p50_ms": direct, "rps": 1000 / direct, "failed": 0})
        found["served"].append({"p50_ms": served, "rps": 1000 / served, "failed": 0})
    found["served"][-1]["failed"] = failed
    return found


def test_differences_are_served_minus_direct_round_by_round() -> None:
    found = rounds((0.25, 0.5), (0.125, 0.75), (0.5, 0.25))
    assert differences(found) == [0.25, 0.625, -0.25]
    found["direct"].pop()
    with pytest.raises(ValueError):  # a side short of a round is refused, not cut
        differences(found)


def test_the_median_of_the_rounds_is_judged_and_no_round_dropped() -> None:
    j = judge(rounds((0.25, 0.5), (0.125, 0.75), (0.5, 0.25), (0.25, 0.375)))
    assert j["differences_ms"] == [0.25, 0.625, -0.25, 0.125]
    assert j["median_ms"] == 0.1875  # the even count's middle two, both kept
    assert j["status"] == "PASS"
    # one slow round (a machine hiccup) does not fail it, two of three do
    assert judge(rounds((0.25, 0.375), (0.25, 5.0), (0.25, 0.5)))["status"] == "PASS"
    assert judge(rounds((0.25, 0.375), (0.25, 5.0), (0.25, 0.75)))["status"] == "FAIL"


def test_the_bound_is_met_at_it_and_missed_past_it() -> None:
    assert judge(rounds((0.25, 0.75)), bound=0.5)["status"] == "PASS"
    assert judge(rounds((0.25, 0.7500001)), bound=0.5)["status"] == "FAIL"
    assert judge(rounds((0.174, 0.474)))["status"] == "PASS"  # 0.3 ms, the target's
    assert judge(rounds((0.174, 0.583)))["status"] == "FAIL"  # the single run's +0.409


def test_no_answer_or_a_failed_request_fails_it() -> None:
    j = judge(rounds((0.25, 0.375), (0.25, NAN), (0.25, 0.375)))
    assert math.isnan(j["median_ms"]) and j["status"] == "FAIL"
    j = judge({"direct": [], "served": []})
    assert math.isnan(j["median_ms"]) and j["status"] == "FAIL"
    j = judge(rounds((0.25, 0.375), (0.25, 0.375), failed=2))
    assert j["failed"] == 2 and j["status"] == "FAIL"


def test_the_target_shows_the_rounds_and_the_single_runs_beside() -> None:
    t = target(rounds((0.25, 0.5), (0.125, 0.75), (0.5, 0.25)), (0.583, 0.174))
    assert t["status"] == "PASS"
    assert t["value"].startswith("+0.250 ms (median of 3 alternated rounds: ")
    assert "+0.250, +0.625, -0.250" in t["value"]
    assert "single runs, not judged: 0.583 vs 0.174 (+0.409)" in t["value"]
    t = target(rounds((0.25, 0.375), failed=3), (0.5, 0.25))
    assert t["status"] == "FAIL" and "3 failed requests" in t["value"]


def test_the_table_names_who_ran_first_as_the_rounds_alternate() -> None:
    lines = table(rounds((0.25, 0.5), (0.125, 0.75), (0.5, 0.25))).splitlines()
    assert len(lines) == 4
    assert "round 0 (direct first)" in lines[1] and "+0.250" in lines[1]
    assert "round 1 (served first)" in lines[2] and "+0.625" in lines[2]
    assert "round 2 (direct first)" in lines[3] and "-0.250" in lines[3]


def test_serve_judges_the_rounds_not_the_single_runs() -> None:
    def cell(model: str, way: str, c: int, p50: float) -> dict[str, object]:
        each = [{"rps": 100.0, "p50_ms": p50}] * 3
        return {"model": model, "way": way, "c": c, "rps": 100.0, "p50_ms": p50, "rounds": each}

    cells = [cell("mlp", "keepwarm", 1, 0.583), cell("mlp", "direct", 1, 0.174),
             cell("mlp", "keepwarm", 32, 1.0)]  # fmt: skip
    cells += [cell("mobilenet_v2", way, 8, 1.0) for way in ("grpc-raw", "rest-binary", "rest-json")]
    cells += [cell("mlp", way, 1, 1.0) for way in ("grpc-raw", "rest-binary")]
    passed = throughput_targets(cells, PeerResults(), rounds((0.25, 0.5), (0.25, 0.5)))[0]
    assert passed["status"] == "PASS" and "(alternated rounds)" in passed["target"]
    failed = throughput_targets(cells, PeerResults(), rounds((0.25, 0.625), (0.25, 0.625)))[0]
    assert failed["status"] == "FAIL" and "+0.375 ms" in failed["value"]
