"""keepwarm's own venv for the benchmarks' cold starts (``bench/cold_start.py``), built as
a peer's is (``peers.venv``: once, then reused; under ``$BENCH_PEER_VENVS`` when set)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from peers import PeerFailed, venv

#: What ``keepwarm serve`` runs on in the benchmarks' own venv (``serve_venv``): the base
#: dependencies, the ``server`` and ``grpc`` extras and TensorFlow, as the peers' venvs hold
#: their server and TensorFlow only. The shared development venv also has the ``optimize``
#: extra, whose scikit-learn and scipy keras imports at start (about 0.7 s of CPU). Every
#: package installed is at its ``constraints.txt`` pin (``serve_venv``).
SERVE_EXTRAS = ("server", "grpc")
SERVE_ALSO = ("tensorflow",)


def serve_pins(root: Path) -> tuple[str, ...]:
    """The exact pins (from ``constraints.txt``) of keepwarm's base dependencies, its
    ``SERVE_EXTRAS`` and ``SERVE_ALSO``, read from ``root``'s ``pyproject.toml``."""
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in SERVE_EXTRAS:
        wanted += project["optional-dependencies"][extra]
    pinned = {}
    for line in (root / "constraints.txt").read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pinned[_canonical(name)] = f"{name.strip()}=={version.strip()}"
    names = [re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0] for spec in wanted]
    missing = [n for n in (*names, *SERVE_ALSO) if _canonical(n) not in pinned]
    if missing:
        raise PeerFailed(f"keepwarm: no pin in constraints.txt for {', '.join(missing)}")
    return tuple(sorted({pinned[_canonical(n)] for n in (*names, *SERVE_ALSO)}))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def serve_venv(root: Path) -> Path:
    """``bench/.venvs/keepwarm``: what ``keepwarm serve`` needs and nothing else (see
    ``SERVE_EXTRAS``), built once like a peer's; keepwarm itself is not installed there,
    the tree under test is put on ``PYTHONPATH``. Installed under ``constraints.txt``, so
    that what those pull in is pinned as in the development venv too (``ml_dtypes``,
    which TensorFlow imports, unpinned resolved to 0.7.0: 0.6-0.7 s more CPU at every
    start than the pinned 0.5.4, in its extension's start-up)."""
    return venv("keepwarm", serve_pins(root), constraints=(root / "constraints.txt").read_text())
