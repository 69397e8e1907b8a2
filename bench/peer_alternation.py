"""``bench/serve_batching.py``'s c=32 JSON targets against the peers, judged on runs taken
in turn (issue 9).

The peer sweep (``bench/peer_runs.py``) measures each peer minutes after keepwarm's own
cells, and this machine's speed drifts up to 2x between minutes, so a target judged across
the two phases can pass or fail on the drift alone. After the sweep, each peer that a
target compares with is started again at its best configuration for the cell (model, JSON,
32 clients), and ``wrk`` runs on it and on each keepwarm configuration (1 and N server
processes) alternate round by round, the same seconds each, the order rotated each round
so that no side always runs first. The targets are judged on the medians of those rounds;
the sweep's own figures stay printed beside them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from peer_runs import PeerResults
from peers import Batching, Peer, PeerFailed, check_answer, first_200, settle, start
from served import MODELS, Served
from wrk_load import wrk

C = 32
Run = Callable[[], dict[str, float]]


def rotated(sides: Sequence[str], index: int) -> list[str]:
    """Round ``index``'s order: ``sides`` rotated by ``index``, so each side takes each
    place in turn."""
    shift = index % len(sides) if sides else 0
    return [*sides[shift:], *sides[:shift]]


def alternate(runs: Mapping[str, Run], rounds: int) -> dict[str, list[dict[str, float]]]:
    """``rounds`` rounds of one run per side (``runs``: side -> one measurement), in
    ``rotated`` order; each side's figures in round order."""
    found: dict[str, list[dict[str, float]]] = {side: [] for side in runs}
    for index in range(rounds):
        for side in rotated(list(runs), index):
            found[side].append(runs[side]())
    return found


def judge(found: Mapping[str, list[dict[str, float]]], peer: str) -> dict[str, Any]:
    """One alternation (side -> its runs, ``peer`` one of the sides, the others keepwarm's
    configurations): each side's median req/s, keepwarm's best configuration by its
    median, its ratio to the peer's median (what a target judges) and the per-round ratios
    (shown). No answer from the peer (a median of 0, or no runs) gives a NaN ratio, which
    fails any target."""
    medians = {side: statistics.median(r["rps"] for r in runs) if runs else float("nan")
               for side, runs in found.items()}  # fmt: skip
    ours = {side: x for side, x in medians.items() if side != peer}
    name = max(ours, key=lambda side: -1.0 if np.isnan(ours[side]) else ours[side])
    theirs = medians[peer]
    ratio = ours[name] / theirs if theirs > 0 else float("nan")
    per_round = [
        mine["rps"] / other["rps"] if other["rps"] else float("nan")
        for mine, other in zip(found[name], found[peer], strict=True)
    ]
    return {"peer": peer, "medians": medians, "best": name, "ratio": ratio,
            "ratios": [round(x, 3) for x in per_round]}  # fmt: skip


def strongest(judgements: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The judgement against the strongest peer: the lowest ratio (NaN, no answer, lowest
    of all), so that passing it passes against every peer."""
    return min(judgements, key=lambda j: -1.0 if np.isnan(j["ratio"]) else j["ratio"])


def text(j: dict[str, Any], sweep_rps: float) -> str:
    """A target's value: the alternated medians, keepwarm's best named, the per-round
    ratios, and the peer's figure from the sweep beside them."""
    sides = "; ".join(f"{side} {x:.0f}" for side, x in j["medians"].items())
    return (f"{j['ratio']:.2f}x {j['peer']} (alternated medians, req/s: {sides}; keepwarm's "
            f"best {j['best']}; rounds {j['ratios']}; the sweep's {j['peer']}: "
            f"{sweep_rps:.0f})")  # fmt: skip


def best_config(
    peers: PeerResults, way: str, model: str, configs: Sequence[Batching | None]
) -> Batching | None:
    """The sweep's best configuration of peer ``way`` for ``model``'s c=32 JSON cell."""
    key = (way, model, C, "json")
    cell = next(x for x in peers.cells if (x["way"], x["model"], x["c"], x["body"]) == key)
    return next(b for b in configs if str(b or "off") == cell["config"])


def _settled_wrk(
    peer: Peer, model: str, url: str, bodies: list[str], seconds: int, script: Path
) -> dict[str, float]:
    """One c=32 run on ``url`` once the peer has answered ``model``'s first body (so it has
    run what the last run left queued)."""
    settle(peer, model, Path(bodies[0]).read_bytes())
    return wrk(url, bodies, C, seconds, script)


def alternated(
    wanted: Mapping[str, Sequence[str]],
    peers: PeerResults,
    configs: Sequence[Batching | None],
    versions: Mapping[str, Path],
    checks: Mapping[str, tuple[bytes, np.ndarray]],
    workdir: Path,
    keepwarm: Mapping[str, Served],
    files: Mapping[str, list[Path]],
    script: Path,
    seconds: int,
    rounds: int,
) -> dict[str, list[dict[str, Any]]]:
    """Per model, a ``judge`` against each peer in ``wanted[model]`` that the sweep
    measured, its best configuration started again and alternated with ``keepwarm``
    (label -> server). A peer that fails now is added to ``peers.failed``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for model in MODELS:
        bodies = [str(p) for p in files[model]]
        for way in wanted.get(model, ()):
            if way not in peers.cold_s:
                continue
            batching = best_config(peers, way, model, configs)
            print(f"peer {way} {batching or 'off'}: {model} alternated with keepwarm ...",
                  flush=True)  # fmt: skip
            try:
                peer = start(way, versions, workdir, batching)
            except PeerFailed as exc:
                peers.failed[way] = f"alternated with keepwarm: {exc}"
                continue
            try:
                try:
                    first_200(peer, {m: body for m, (body, _) in checks.items()})
                    check_answer(peer, model, *checks[model])
                except (RuntimeError, PeerFailed) as exc:
                    peers.failed[way] = f"alternated with keepwarm: {exc}"
                    continue
                urls = {**{side: s.infer_url(model) for side, s in keepwarm.items()},
                        way: peer.infer_url(model)}  # fmt: skip
                for url in urls.values():  # connections and first batches
                    wrk(url, bodies, C, 1.0, script)
                runs = {side: partial(_settled_wrk, peer, model, url, bodies, seconds,
                                      script) for side, url in urls.items()}  # fmt: skip
                found = alternate(runs, rounds)
            finally:
                peer.stop()
            judged = judge(found, way)
            out.setdefault(model, []).append({**judged, "config": str(batching or "off")})
    return out


def peer_targets(
    found: Mapping[str, list[dict[str, Any]]], peers: PeerResults
) -> list[dict[str, str]]:
    """The c=32 JSON targets on the alternated medians: MLP at least 2x PyTriton's,
    MobileNetV2 at least 1.1x the strongest peer's (the lowest ratio)."""

    def sweep_rps(j: dict[str, Any], model: str) -> float:
        return next((x["rps"] for x in peers.cells if (x["way"], x["model"], x["body"])
                     == (j["peer"], model, "json")), float("nan"))  # fmt: skip

    targets = []
    for model, name, factor, judgements in (
        ("mlp", "mlp c=32 >= 2x PyTriton's best", 2.0,
         [j for j in found.get("mlp", []) if j["peer"] == "pytriton"]),
        ("mobilenet_v2", "mobilenet_v2 c=32 JSON >= 1.1x the best peer's", 1.1,
         found.get("mobilenet_v2", [])),
    ):  # fmt: skip
        if judgements:
            j = strongest(judgements)
            targets.append({"target": f"{name} (medians of alternated rounds; keepwarm's "
                                      f"best configuration; the peer at its sweep's best, "
                                      f"{j['config']})",
                            "value": text(j, sweep_rps(j, model)),
                            "status": "PASS" if j["ratio"] >= factor else "FAIL"})  # fmt: skip
    return targets


__all__ = [
    "alternate",
    "alternated",
    "best_config",
    "judge",
    "peer_targets",
    "rotated",
    "strongest",
    "text",
]
