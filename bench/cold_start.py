"""Cold start, from spawning a process to a 200 from both example models (issue 7):
``keepwarm serve``, the same imports, loads and warmups done in-process with
``keepwarm.load`` (the limit), and each peer with its batching off (the setting in which
it starts fastest: one warm call per model at batch 1; keepwarm warms every batch bucket).

Taken in rounds, one start of each way per round and the order rotated from round to round,
so that a burst of other work on the machine, or files not yet in the page cache, hit every
way alike; each way's figure is the median of its rounds. Targets: keepwarm at most
``VS_IN_PROCESS`` x the in-process median, and below every peer's median. Beside each
start, the CPU seconds its processes used up to that first 200 (user + system, children
included, from /proc): the figure that other work on the machine disturbs least.

keepwarm (served and in-process) runs from its own venv, as each peer does from its own:
``bench/.venvs/keepwarm`` (``keepwarm_venv.serve_venv``: the base dependencies, the ``server`` and
``grpc`` extras and TensorFlow, pinned from ``constraints.txt``; built on first use, then
reused, under ``$BENCH_PEER_VENVS`` like the peers'), with the tree under test (the
``keepwarm`` this process imports), copied and byte-compiled as an install is, on
``PYTHONPATH``. The development venv holds more
(the ``optimize`` extra's scikit-learn and scipy, which keras imports at start when present).
"""

from __future__ import annotations

import atexit
import functools
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import keepwarm
from keepwarm_venv import serve_venv
from peers import PeerFailed, check_answer, first_200, start
from proc_stats import tree_cpu_seconds
from served import MODELS, SHAPES, Served

VS_IN_PROCESS = 1.2
IN_PROCESS = "in_process"
Start = tuple[float, float]  # seconds from spawn to the first 200s, CPU seconds used by then


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


ROOT = Path(__file__).resolve().parents[1]


def keepwarm_env(src: Path | None = None) -> tuple[str, dict[str, str]]:
    """The interpreter of keepwarm's own venv (built once), and an environment that puts
    a byte-compiled copy of ``src`` (default: the tree of the ``keepwarm`` imported here;
    see ``compiled_tree``) first on its path."""
    python = str(serve_venv(ROOT) / "bin" / "python")
    tree = src if src is not None else Path(keepwarm.__file__).parents[1]
    return python, {**os.environ, "PYTHONPATH": str(compiled_tree(python, tree.resolve()))}


@functools.cache
def compiled_tree(python: str, src: Path) -> Path:
    """A copy of the source tree ``src`` with its modules byte-compiled once by ``python``,
    as ``pip install`` leaves a package (and the peers' venvs hold theirs): run from a tree
    without ``.pyc`` files (a checkout, under ``PYTHONDONTWRITEBYTECODE``), every start
    compiled keepwarm's ~190 modules again, about 0.2 s of CPU no installed copy pays. In a
    temporary directory removed at exit; the tree under test is left as it is."""
    copy = Path(tempfile.mkdtemp(prefix="keepwarm-compiled-")) / "src"
    atexit.register(shutil.rmtree, copy.parent, ignore_errors=True)
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(
        [python, "-m", "compileall", "-q", str(copy)], check=True, capture_output=True, env=env
    )
    return copy


def in_process(repo: Path, src: Path | None = None) -> Start:
    """From spawn to both models answering, in a fresh process, without a server."""
    code = "import numpy as np, keepwarm\n" + "".join(
        f"keepwarm.load({str(repo / m)!r}).predict(np.zeros((1, *{SHAPES[m]!r}), np.float32))\n"
        for m in MODELS
    )
    python, env = keepwarm_env(src)
    cpu = _children_cpu()
    started = time.perf_counter()
    subprocess.run([python, "-c", code], check=True, capture_output=True, env=env)
    return time.perf_counter() - started, _children_cpu() - cpu


def served(
    repo: Path,
    bodies: Mapping[str, bytes],
    src: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Start:
    """``keepwarm serve`` (of tree ``src``: see ``keepwarm_env``; ``extra_env`` added to its
    environment) from spawn to a 200 from every model."""
    python, env = keepwarm_env(src)
    env.update(extra_env or {})
    server = Served(repo, python=python, env=env)
    try:
        return first_200(server, bodies), tree_cpu_seconds(server.proc.pid)
    finally:
        server.stop()


def peer(
    name: str,
    repo: Path,
    bodies: Mapping[str, bytes],
    answers: Mapping[str, np.ndarray] | None,
    workdir: Path,
) -> Start:
    """Peer ``name``, batching off, from spawn to a 200 from every model; its answers are
    checked against the direct call's when ``answers`` are given."""
    server = start(name, {m: repo / m / "1" for m in MODELS}, workdir, None)
    try:
        try:
            took = first_200(server, bodies), tree_cpu_seconds(server.proc.pid)
        except RuntimeError as exc:
            raise PeerFailed(str(exc)) from exc
        for model, expected in (answers or {}).items():
            check_answer(server, model, bodies[model], expected)
        return took
    finally:
        server.stop()


def cold_starts(
    repo: Path,
    bodies: Mapping[str, bytes],
    peers: Sequence[str],
    rounds: int,
    workdir: Path,
    answers: Mapping[str, np.ndarray],
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, str]]:
    """Every way's cold starts, ``rounds`` of them taken in turn: seconds, CPU seconds, and
    the peers that failed (name -> why: they take no further part)."""
    ways: dict[str, Callable[[bool], Start]] = {
        IN_PROCESS: lambda first: in_process(repo),
        "keepwarm": lambda first: served(repo, bodies),
    }
    for name in peers:
        ways[name] = functools.partial(peer_way, name, repo, bodies, answers, workdir)
    return in_turn(ways, rounds)


def peer_way(
    name: str,
    repo: Path,
    bodies: Mapping[str, bytes],
    answers: Mapping[str, np.ndarray],
    workdir: Path,
    first: bool,
) -> Start:
    return peer(name, repo, bodies, answers if first else None, workdir)


def in_turn(
    ways: Mapping[str, Callable[[bool], Start]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, str]]:
    """``rounds`` starts of each way (called with whether it is its first), the order
    rotated each round: seconds, CPU seconds, and the ways that failed (name -> why)."""
    names = list(ways)
    times: dict[str, list[float]] = {way: [] for way in names}
    cpu: dict[str, list[float]] = {way: [] for way in names}
    failed: dict[str, str] = {}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for way in order:
            if way in failed:
                continue
            try:
                took, used = ways[way](r == 0)
                times[way].append(took)
                cpu[way].append(used)
            except PeerFailed as exc:
                print(f"peer {way} FAILED: {exc}", flush=True)
                failed[way] = str(exc)
        line = ", ".join(
            f"{w} {times[w][-1]:.2f} (cpu {cpu[w][-1]:.2f})" for w in order if w not in failed
        )
        print(f"cold start round {r + 1}/{rounds} (s): {line}", flush=True)
    times = {way: took for way, took in times.items() if way not in failed}
    return times, {way: cpu[way] for way in times}, failed


def medians(times: Mapping[str, list[float]]) -> dict[str, float]:
    return {way: statistics.median(took) for way, took in times.items()}


def targets(times: Mapping[str, list[float]]) -> list[dict[str, Any]]:
    """Issue 7's cold-start targets, on the medians of ``times``."""
    median = medians(times)
    ours, limit = median["keepwarm"], median[IN_PROCESS]
    rounds = len(times["keepwarm"])
    out = [
        {"target": f"cold start <= {VS_IN_PROCESS}x in-process (medians of {rounds})",
         "value": f"{ours:.2f} s vs {limit:.2f} s ({ours / limit:.2f}x)",
         "status": "PASS" if ours <= VS_IN_PROCESS * limit else "FAIL"},
    ]  # fmt: skip
    for way, took in median.items():
        if way in (IN_PROCESS, "keepwarm"):
            continue
        out.append(
            {"target": f"cold start below {way}'s (medians of {rounds})",
             "value": f"{ours:.2f} s vs {took:.2f} s",
             "status": "PASS" if ours < took else "FAIL"}
        )  # fmt: skip
    return out


def table(times: Mapping[str, list[float]], cpu: Mapping[str, list[float]]) -> str:
    """One line per way: median, min and max of its rounds, and its median CPU seconds."""
    lines = [f"{'cold start':14s}{'median s':>10s}{'min':>8s}{'max':>8s}{'cpu s':>8s}"]
    for way, took in times.items():
        lines.append(
            f"{way:14s}{statistics.median(took):10.2f}{min(took):8.2f}{max(took):8.2f}"
            f"{statistics.median(cpu[way]):8.2f}"
        )
    return "\n".join(lines)
