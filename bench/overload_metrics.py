"""The overload cell's reading of the server's ``/metrics`` (``bench/overload.py``): the
batcher's counters, latency table and histograms of one model, and quantiles of a
histogram's growth between two scrapes."""

from __future__ import annotations

import re
from typing import Any

import requests


def scrape(url: str, model: str | None = None) -> dict[str, Any]:
    """The batcher's counters and latency table from ``/metrics``: of ``model`` alone
    when given (else every model's, summed; the table's last model wins)."""
    return parse_metrics(requests.get(url + "/metrics", timeout=30).text, model)


def parse_metrics(text: str, model: str | None = None) -> dict[str, Any]:
    """``scrape``'s reading of one exposition."""
    if model is not None:
        mine = f'model="{model}"'
        text = "\n".join(line for line in text.splitlines() if mine in line)
    found: dict[str, Any] = {"batches": {}, "table": {}, "run": 0.0, "queued": 0.0}
    found.update(rows=0.0, padding=0.0)
    found.update(served=0.0, served_seconds=0.0, buckets={}, runs={}, depth={}, run_sum=0.0)
    found["refusals"] = {}
    for line in text.splitlines():
        if line.startswith("keepwarm_request_seconds"):
            _request_seconds(line, found)
        if line.startswith("keepwarm_refusal_seconds_bucket{"):
            bound = float(re.search(r'le="([^"]+)"', line).group(1))  # type: ignore[union-attr]
            found["refusals"][bound] = found["refusals"].get(bound, 0.0) + float(
                line.rsplit(" ", 1)[1]
            )
        if not line.startswith("keepwarm_batch"):
            continue
        if line.startswith("keepwarm_batch_run_seconds_bucket{"):
            bound = float(re.search(r'le="([^"]+)"', line).group(1))  # type: ignore[union-attr]
            found["runs"][bound] = found["runs"].get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
            continue
        if line.startswith("keepwarm_batch_run_seconds_sum{"):
            found["run_sum"] += float(line.rsplit(" ", 1)[1])
            continue
        value = float(line.rsplit(" ", 1)[1])
        size = re.search(r'size="(\d+)"', line)
        if line.startswith("keepwarm_batches_total{") and size:
            found["batches"][int(size.group(1))] = value
        elif line.startswith("keepwarm_batch_seconds{") and size:
            found["table"][int(size.group(1))] = value
        elif line.startswith("keepwarm_batch_requests_total{") and 'outcome="run"' in line:
            found["run"] += value
        elif line.startswith("keepwarm_batch_queue_depth{"):
            found["depth"][line.rsplit(" ", 1)[0]] = value
        elif line.startswith("keepwarm_batch_queue_seconds_total{"):
            found["queued"] += value
        elif line.startswith("keepwarm_batch_rows_total{"):
            found["padding" if 'kind="padding"' in line else "rows"] += value
    return found


def _request_seconds(line: str, found: dict[str, Any]) -> None:
    """The server's own latency histogram of answered requests (from the lease to the
    answer: the body's reading and decoding come before it)."""
    value = float(line.rsplit(" ", 1)[1])
    if line.startswith("keepwarm_request_seconds_sum{"):
        found["served_seconds"] += value
    elif line.startswith("keepwarm_request_seconds_count{"):
        found["served"] += value
    elif (le := re.search(r'le="([^"]+)"', line)) and line.startswith("keepwarm_request_second"):
        bound = float(le.group(1))
        found["buckets"][bound] = found["buckets"].get(bound, 0.0) + value


def _quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """The upper bound of the histogram bucket holding quantile ``q`` of the span."""
    counts = sorted((le, n - before.get(le, 0.0)) for le, n in after.items())
    total = counts[-1][1] if counts else 0.0
    return next((le for le, n in counts if n >= q * total), float("nan")) if total else float("nan")


def _interpolated(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Quantile ``q`` of a cumulative histogram's growth between two scrapes, linear
    within the bucket that holds it (from the bucket below's bound; the last finite
    bound when it falls past them all)."""
    counts = sorted((le, n - before.get(le, 0.0)) for le, n in after.items())
    total = counts[-1][1] if counts else 0.0
    if not total:
        return float("nan")
    rank, low, below = q * total, 0.0, 0.0
    for le, n in counts:
        if n >= rank:
            if le == float("inf"):
                return low
            return low + (le - low) * (rank - below) / (n - below) if n > below else le
        low, below = le, n
    return low
