"""Cold starts of several builds of ``keepwarm serve`` against each other (and, optionally,
the in-process limit and peers), taken in rounds in a rotating order so that the drift of a
shared machine hits every side alike (``cold_start.in_turn``).

Each side is a source tree, ``--tree NAME=PATH/src`` (the same tree twice with different
``--env NAME:VAR=VALUE``), run from keepwarm's own bench venv as ``bench/serve.py`` runs it.

    python bench/cold_ab.py --tree now=src --tree main=/work/main/src --rounds 5 \\
        --models .test-cache/examples/models [--peers mlserver] [--in-process]

Prints each round, then per side the median seconds and CPU seconds to the first 200 on
both example models, and the median over rounds of each side's ratio to the first side's.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import cold_start
from peer_runs import direct_answers
from served import MODELS, inputs, v2_body

ROOT = Path(__file__).resolve().parents[1]


def _pairs(values: list[str], sep: str, what: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        name, found, rest = value.partition(sep)
        if not found or not name or not rest:
            raise SystemExit(f"{what}: expected NAME{sep}VALUE, got {value!r}")
        out.append((name, rest))
    return out


def ratios(figures: dict[str, list[float]], base: str) -> dict[str, float]:
    """Each side's median, over the rounds, of its figure over ``base``'s in that round."""
    return {
        way: statistics.median(x / b for x, b in zip(took, figures[base], strict=False))
        for way, took in figures.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH/src")
    parser.add_argument("--env", action="append", default=[], metavar="NAME:VAR=VALUE")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", type=Path, default=ROOT / ".test-cache/examples/models")
    parser.add_argument("--peers", default="", help="comma-separated peers (e.g. mlserver)")
    parser.add_argument("--in-process", action="store_true", help="the in-process limit too")
    args = parser.parse_args()
    trees = {name: Path(path).resolve() for name, path in _pairs(args.tree, "=", "--tree")}
    if not trees:
        raise SystemExit("give at least one --tree NAME=PATH/src")
    envs: dict[str, dict[str, str]] = {name: {} for name in trees}
    for name, assignment in _pairs(args.env, ":", "--env"):
        var, _, value = assignment.partition("=")
        envs.setdefault(name, {})[var] = value
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = work / "models"
        for model in MODELS:
            shutil.copytree(args.models / model, repo / model)
        bodies = {m: v2_body(inputs(m, 1)[0]) for m in MODELS}
        ways: dict[str, Callable[[bool], cold_start.Start]] = {
            name: functools.partial(_served, repo, bodies, src, envs[name])
            for name, src in trees.items()
        }
        if args.in_process:
            ways[cold_start.IN_PROCESS] = lambda first: cold_start.in_process(repo)
        peers = [p for p in args.peers.split(",") if p]
        answers = direct_answers(repo, {m: inputs(m, 1)[0] for m in MODELS}) if peers else {}
        for name in peers:
            ways[name] = functools.partial(cold_start.peer_way, name, repo, bodies, answers, work)
        times, cpu, _ = cold_start.in_turn(ways, args.rounds)
    print(cold_start.table(times, cpu))
    base = next(iter(times))
    wall, used = ratios(times, base), ratios(cpu, base)
    for way in times:
        print(f"{way:14s} vs {base}: wall {wall[way]:.3f}x  cpu {used[way]:.3f}x (median ratios)")


def _served(
    repo: Path, bodies: dict[str, bytes], src: Path, env: dict[str, str], first: bool
) -> cold_start.Start:
    return cold_start.served(repo, bodies, src, env)


if __name__ == "__main__":
    main()
