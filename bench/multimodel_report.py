"""The report of ``bench/multimodel.py``: its targets judged, and its table printed."""

from __future__ import annotations

from typing import Any

from multimodel_setup import BASELINE_ROUNDS, MODELS, P99_VS_BASELINE, THREADS, VS_OPTIMUM, ZIPF_S


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    vs_optimum = r["hit_ratio"]["keepwarm"] / r["hit_ratio"]["belady"]
    vs_baseline = r["hits_during_loads"]["p99_ms"] / r["baseline"]["p99_ms"]
    return [
        {
            "name": "hit ratio / Belady",
            "value": vs_optimum,
            "target": f">= {VS_OPTIMUM}",
            "pass": vs_optimum >= VS_OPTIMUM,
        },
        {
            "name": "hit p99 while loads run / baseline p99",
            "value": vs_baseline,
            "target": f"<= {P99_VS_BASELINE}",
            "pass": vs_baseline <= P99_VS_BASELINE,
        },
        {"name": "errors", "value": r["errors"], "target": "== 0", "pass": r["errors"] == 0},
        {
            "name": "requests recorded by on_access",
            "value": r["recorded"],
            "target": f"== {r['requests']}",
            "pass": r["recorded"] == r["requests"],
        },
    ]


def print_table(r: dict[str, Any], found: list[dict[str, Any]]) -> None:
    b, ratio, c = r["budget"], r["hit_ratio"], r["counters"]
    print(
        f"{MODELS} models, budget max_models={b['max_models']}, max_bytes={b['max_bytes']} "
        f"(5 x {b['unit']}: file {b['file_bytes']} B, Model.nbytes {b['model_nbytes']} B); "
        f"Zipf s={ZIPF_S}, {r['requests']} requests, {THREADS} threads"
    )
    print()
    print(f"{'hit ratio':<34} {'value':>8} {'x Belady':>9}")
    for name, key in (
        ("keepwarm (1 - loads/requests)", "keepwarm"),
        ("Belady (offline optimum)", "belady"),
        ("plain LRU", "lru"),
    ):
        print(f"{name:<34} {ratio[key]:>8.3f} {ratio[key] / ratio['belady']:>9.3f}")
    print(f"{'keepwarm, READY on arrival':<34} {ratio['keepwarm_ready_on_arrival']:>8.3f}")
    print()
    print(f"{'latency':<34} {'n':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for name, key in (
        ("hits while loads run", "hits_during_loads"),
        ("all hits, main run", "hits_all_main"),
        ("misses (triggered/joined a load)", "misses_main"),
        ("baseline: all loaded, all hits", "baseline"),
    ):
        row = r[key]
        print(f"{name:<34} {row['n']:>6} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f}")
    base = r["baseline"]
    during = r["hits_during_loads"]
    print(
        f"{'ratio, while loads / baseline':<34} {'':>6} "
        f"{during['p50_ms'] / base['p50_ms']:>8.2f} {during['p99_ms'] / base['p99_ms']:>8.2f}"
    )
    print()
    print(
        f"loads {c['loads']}, saved by single-flight (coalesced) {c['coalesced']}, "
        f"evictions {c['evictions']}, failures {c['failures']}, errors {r['errors']}; "
        f"main run {r['seconds']['main']:.1f} s"
    )
    if r["extra_loads"]:
        print(
            f"  {r['extra_loads']} loads were repeats for a request already waiting: its "
            "model was evicted between READY and its lease"
        )
    print(
        f"  baseline p99 of its {BASELINE_ROUNDS} rounds (median kept): "
        + ", ".join(f"{v:.3f}" for v in base["p99_ms_rounds"])
        + " ms"
    )
    for sample in r["error_samples"]:
        print(f"  error: {sample}")
    for target in found:
        verdict = "PASS" if target["pass"] else "FAIL"
        value = target["value"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{verdict}  {target['name']} = {shown} (target {target['target']})")
