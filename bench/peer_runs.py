"""Driving the peers (``bench/peers.py``) for ``bench/serve.py`` and
``bench/serve_batching.py``: each batching configuration started fresh, its answer on each
model checked against the direct call, measured by the caller's ``measure``, and per cell
(model, concurrency, body) the best configuration kept. A peer that fails is named with its
reason; the caller reports it and exits non-zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from peers import PEERS, Batching, Peer, PeerFailed, check_answer, first_200, start

Measure = Callable[[Peer], list[dict[str, Any]]]


@dataclass
class PeerResults:
    cells: list[dict[str, Any]] = field(default_factory=list)  # each peer's best per cell
    cold_s: dict[str, float] = field(default_factory=dict)  # the first configuration's
    failed: dict[str, str] = field(default_factory=dict)  # peer -> why


def peer_names(text: str) -> list[str]:
    """``--peers``: comma-separated names of ``PEERS`` ('' for none); unknown ones refused."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        raise SystemExit(f"unknown peer(s) {', '.join(unknown)} (known: {', '.join(PEERS)})")
    return names


def direct_answers(models_dir: Path, xs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each model's output on its input, called in-process (what every peer must answer)."""
    import keepwarm

    out = {}
    for model, x in xs.items():
        outputs = keepwarm.load(str(models_dir / model)).predict(x)
        out[model] = np.asarray(next(iter(outputs.values())))
    return out


def sweep(
    name: str,
    models: Mapping[str, Path],
    checks: Mapping[str, tuple[bytes, np.ndarray]],
    workdir: Path,
    configs: Sequence[Batching | None],
    measure: Measure,
) -> tuple[list[dict[str, Any]], float]:
    """Peer ``name`` under each of ``configs``: its best cells and the first one's cold start
    (from process start to a 200 on every model of ``checks``: model -> (body, answer))."""
    best: dict[tuple[str, int, str], dict[str, Any]] = {}
    cold = float("nan")
    for i, batching in enumerate(configs):
        peer = start(name, models, workdir, batching)
        try:
            try:
                took = first_200(peer, {m: body for m, (body, _) in checks.items()})
            except RuntimeError as exc:
                raise PeerFailed(str(exc)) from exc
            if i == 0:
                cold = took
            for model, (body, answer) in checks.items():
                check_answer(peer, model, body, answer)
            for cell in measure(peer):
                cell = {"way": name, **cell, "config": str(batching or "off")}
                key = (cell["model"], cell["c"], cell.get("body", "json"))
                if key not in best or cell["rps"] > best[key]["rps"]:
                    best[key] = cell
        finally:
            peer.stop()
    return list(best.values()), cold


def run_peers(
    names: Sequence[str],
    models: Mapping[str, Path],
    checks: Mapping[str, tuple[bytes, np.ndarray]],
    workdir: Path,
    configs: Sequence[Batching | None],
    measure: Measure,
) -> PeerResults:
    """``sweep`` for each peer; a peer that fails is recorded with why, and the others run."""
    results = PeerResults()
    for name in names:
        print(f"peer {name}: {len(configs)} configuration(s) ...", flush=True)
        try:
            cells, cold = sweep(name, models, checks, workdir, configs, measure)
        except PeerFailed as exc:
            print(f"peer {name} FAILED: {exc}", flush=True)
            results.failed[name] = str(exc)
            continue
        results.cells += cells
        results.cold_s[name] = cold
    return results


def failed_peers(results: PeerResults) -> list[dict[str, str]]:
    """A failing target per peer that did not install, start or answer rightly."""
    targets = []
    for name, why in results.failed.items():
        lines = [line.strip() for line in why.splitlines() if line.strip()] or [""]
        value = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
        targets.append({"target": f"peer {name} installed, started and answered as the direct call",
                        "value": value, "status": "FAIL"})  # fmt: skip
    return targets
