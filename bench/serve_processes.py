"""``bench/serve_batching.py``'s concurrency-32 cells with ``keepwarm serve --processes N``
beside one process (issue 9).

The issue wants the server to use every core, and measures the peers at their best
configuration (a ``max_batch_size`` x delay sweep); keepwarm's configuration is its number
of server processes. So the 32-client cells (MLP JSON, MobileNetV2 JSON, MobileNetV2
binary) run on one process and on N (the supervisor divides the cores among the
processes' TensorFlow intra-op pools), both reported, and each target is judged on the
better of the two, naming it. The concurrency 1/4/8 on/off cells stay on one process: they
measure batching's idle cost, which does not depend on N.

Each JSON cell alternates ``wrk`` runs on the one-process and the N-process server (both
with batching on), so that the machine's drift hits both alike; the per-round ratios are
N over 1. Runs as short as the on/off cells' (1 s) undercount MobileNetV2 at 32 clients,
whose answers take ~0.3 s: a run counts no answer until its first batches end, so these
runs are as long as the peers' (the caller's ``seconds``). Batch sizes come from each
server's ``/metrics`` (merged over the processes) and memory is the proportional set size
(PSS) of each server's process tree, read after the load.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batching_ab import interleaved
from binary_limit import batch_sizes, new_batches
from keepwarm.process_memory import tree_pss_bytes
from serve import MODELS, Served, wrk

C = 32


def processes_count(text: str) -> int:
    """``--processes``: an integer from 1 (one process only: no N-process rows) to 4 per
    core (``keepwarm serve``'s own bound)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    most = 4 * (os.cpu_count() or 1)
    if not 1 <= count <= most:
        raise argparse.ArgumentTypeError(f"expected 1 to {most} (4 per core), got {count}")
    return count


def label(processes: int) -> str:
    return "1 process" if processes == 1 else f"{processes} processes"


def best(figures: Mapping[str, float]) -> tuple[str, float]:
    """The configuration with the highest figure and that figure; an unmeasured (NaN)
    figure never wins, and all NaN gives the first configuration with NaN."""
    measured = {name: x for name, x in figures.items() if not math.isnan(x)}
    if not measured:
        first = next(iter(figures))
        return first, float("nan")
    name = max(measured, key=lambda key: measured[key])
    return name, measured[name]


def judged(figures: Mapping[str, float], unit: str = "req/s", digits: int = 0) -> str:
    """``figures`` (configuration -> value) for a target's line: the best first, named,
    then the others (``digits`` after the point), so that the line says which
    configuration it judged."""
    name, value = best(figures)
    others = "; ".join(f"{other} {x:.{digits}f}" for other, x in figures.items() if other != name)
    return f"{value:.{digits}f} {unit} ({name}, the best; {others})"


def pss_mb(pid: int) -> float:
    """The proportional set size of ``pid``'s process tree, MB (shared pages divided among
    the processes that map them, so the sum is what the tree holds): the server's own
    reading (``keepwarm.process_memory.tree_pss_bytes``)."""
    return tree_pss_bytes(pid) / 2**20


def json_cells(
    one: Served,
    many: Served,
    processes: int,
    files: Mapping[str, list[Path]],
    seconds: int,
    rounds: int,
    script: Path,
) -> list[dict[str, Any]]:
    """Per model, 32 clients with JSON bodies on ``one`` and ``many`` alternated: a row per
    configuration with its median figures, batch sizes and the N/1 per-round ratios."""
    rows = []
    for model in MODELS:
        servers = {1: one, processes: many}
        for served in servers.values():  # connections and first batches, as the peers'
            wrk(served.infer_url(model), list(files[model]), C, 1.0, script)
        before = {n: batch_sizes(s.url, model) for n, s in servers.items()}
        urls = {False: one.infer_url(model), True: many.infer_url(model)}
        found = interleaved(urls, list(files[model]), C, seconds, rounds, script)
        for n, side in ((1, "off"), (processes, "on")):
            after = batch_sizes(servers[n].url, model)
            rows.append({"model": model, "body": "json", "c": C, "processes": n,
                         **found[side], "sizes": new_batches(before[n], after),
                         "ratio_to_1": 1.0 if n == 1 else found["ratio"],
                         "ratios_to_1": found["ratios"]})  # fmt: skip
    return rows


def print_rows(rows: list[dict[str, Any]], memory: Mapping[int, float]) -> None:
    print(f"{'c=32 cells':22s}{'processes':>10s}{'req/s':>9s}{'p50 ms':>9s}{'x 1 proc':>9s}"
          "  batch sizes")  # fmt: skip
    for x in rows:
        print(f"{x['model'] + ' ' + x['body']:22s}{x['processes']:10d}{x['rps']:9.0f}"
              f"{x['p50_ms']:9.1f}{x['ratio_to_1']:9.2f}  {x.get('sizes', {})}")  # fmt: skip
    for n, mb in memory.items():
        print(f"memory after the c=32 cells, {label(n)}: PSS {mb:.0f} MB (the process tree)")


__all__ = ["best", "json_cells", "judged", "label", "print_rows", "processes_count", "pss_mb"]
