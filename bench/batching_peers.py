"""``bench/serve_batching.py``'s peer sweep: 32 clients on each peer at its best over the
batching grid, then each JSON target's peers at their best alternated with keepwarm's
configurations (``bench/peer_alternation.py``). Moved out of ``serve_batching.py``
unchanged, to keep that driver near 300 lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peer_alternation import alternated
from peer_runs import PeerResults, direct_answers, run_peers
from peers import Batching, Peer, settle
from serve import MODELS, Served, inputs, wrk


def peer_sweep(
    names: list[str],
    repo: Path,
    files: dict[str, list[Path]],
    binary: list[str],
    scripts: tuple[Path, Path],
    seconds: float,
    quick: bool,
    keepwarm: dict[str, Served],
    rounds: int,
) -> tuple[PeerResults, dict[str, list[dict[str, Any]]]]:
    """32 clients on each peer at its best over the batching grid: MLP and MobileNetV2 with
    JSON, MobileNetV2 with binary tensors where the peer takes them; medians of ``runs``.
    Then each JSON target's peers (PyTriton for MLP, all for MobileNetV2) at their best,
    alternated with ``keepwarm``'s configurations for ``rounds`` (``peer_alternation``)."""
    sizes, delays, runs = ((8, 32), (0, 5), 1) if quick else ((8, 16, 32), (0, 2, 5), 3)
    configs = [Batching(size, delay) for size in sizes for delay in delays]
    answers = direct_answers(repo, {model: inputs(model, 1)[0] for model in MODELS})
    checks = {model: (files[model][0].read_bytes(), answers[model]) for model in MODELS}

    def median(
        peer: Peer, model: str, bodies: list[Path] | list[str], script: Path
    ) -> dict[str, float]:
        url = peer.infer_url(model)
        wrk(url, bodies, 32, 1.0, script)
        found = []
        for _ in range(runs):
            settle(peer, model, checks[model][0])
            found.append(wrk(url, bodies, 32, seconds, script))
        return sorted(found, key=lambda figures: figures["rps"])[len(found) // 2]

    def measure(peer: Peer) -> list[dict[str, Any]]:
        cells = [{"model": model, "body": "json", "c": 32,
                  **median(peer, model, files[model], scripts[0])} for model in MODELS]  # fmt: skip
        if peer.binary:
            figures = median(peer, "mobilenet_v2", binary, scripts[1])
            cells.append({"model": "mobilenet_v2", "body": "binary", "c": 32, **figures})
        return cells

    versions = {model: repo / model / "1" for model in MODELS}
    peers = run_peers(names, versions, checks, repo.parent / "peers", configs, measure)
    wanted = {"mlp": [n for n in names if n == "pytriton"], "mobilenet_v2": names}
    return peers, alternated(wanted, peers, configs, versions, checks, repo.parent / "peers",
                             keepwarm, files, scripts[0], int(seconds), rounds)  # fmt: skip
