"""``bench/serve_processes.py``'s helpers (serve_batching's c=32 cells on one process and
on N): the ``--processes`` option refuses what ``keepwarm serve`` would, the best
configuration is picked and named, and a server's process tree is read whole (CPU, batch
counts, memory) even while a process ends."""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from binary_limit import new_batches, tree_faults, tree_switches
from proc_stats import tree_cpu_seconds, tree_pids
from serve_processes import best, judged, label, processes_count, pss_mb

NAN = float("nan")


def test_processes_count_takes_1_to_4_per_core() -> None:
    most = 4 * (os.cpu_count() or 1)
    assert processes_count("1") == 1
    assert processes_count(str(most)) == most
    for text in ("0", "-2", str(most + 1), "two", "", "1.5", "1e9"):
        with pytest.raises(argparse.ArgumentTypeError):
            processes_count(text)


def test_processes_count_through_argparse_exits_with_a_usage_error() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=processes_count, default=2)
    assert parser.parse_args([]).processes == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["--processes", "0"])


def test_label() -> None:
    assert label(1) == "1 process"
    assert label(2) == "2 processes"


def test_best_is_the_highest_and_an_unmeasured_figure_never_wins() -> None:
    assert best({"1 process": 4125.0, "2 processes": 7795.0}) == ("2 processes", 7795.0)
    assert best({"1 process": 0.93, "2 processes": 0.91}) == ("1 process", 0.93)
    assert best({"1 process": NAN, "2 processes": 3.0}) == ("2 processes", 3.0)
    assert best({"1 process": 3.0, "2 processes": NAN}) == ("1 process", 3.0)
    name, value = best({"1 process": NAN, "2 processes": NAN})
    assert name == "1 process" and math.isnan(value)


def test_judged_names_the_best_first_and_keeps_the_other() -> None:
    line = judged({"1 process": 4125.0, "2 processes": 7795.0})
    assert line == "7795 req/s (2 processes, the best; 1 process 4125)"
    line = judged({"1 process": 0.93, "2 processes": 1.08}, "x", 2)
    assert line == "1.08 x (2 processes, the best; 1 process 0.93)"


def test_new_batches_counts_only_what_grew() -> None:
    before = {1: 3.0, 16: 10.0}
    after = {1: 3.0, 8: 4.0, 16: 12.0}
    assert new_batches(before, after) == {8: 4, 16: 2}
    assert new_batches({}, {}) == {}


def test_a_process_tree_is_read_whole() -> None:
    """A parent with a child that burns CPU: the child is in the tree, and the tree's CPU,
    switches and faults include it; a pid that is gone reads as nothing."""
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import time\\nfor _ in range(3): time.sleep(0.01)\\n'\n"
        "'end = time.time() + 30\\nwhile time.time() < end: pass'])\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        try:
            assert set(tree_pids(parent.pid)) == {parent.pid, child}
            own = tree_cpu_seconds(child)
            deadline = 200
            # The child's CPU counts; its sleeps give it switches (a busy loop alone on an idle
            # core may never be switched out).
            while (tree_cpu_seconds(parent.pid) <= own or not tree_switches(child)) and deadline:
                deadline -= 1
                subprocess.run(["sleep", "0.01"], check=True)
            assert tree_cpu_seconds(parent.pid) > 0
            # The child's counters are read first: they only grow, so the tree's read after
            # includes at least as many (read the other way round, the busy child's
            # switches could pass the tree's between the two reads).
            switches, faults = tree_switches(child), tree_faults(child)
            assert tree_switches(parent.pid) >= switches > 0
            assert tree_faults(parent.pid) >= faults > 0
            assert pss_mb(parent.pid) > pss_mb(child) > 0
        finally:
            os.kill(child, signal.SIGTERM)
            parent.wait(timeout=30)
    assert tree_pids(parent.pid) == []
    assert tree_switches(parent.pid) == tree_faults(parent.pid) == 0
    assert pss_mb(parent.pid) == 0
