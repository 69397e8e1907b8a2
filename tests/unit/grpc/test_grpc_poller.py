"""``keepwarm.grpc`` keeps grpcio's server connections on its classic poller (one thread
hand-off fewer per call; see the package docstring), unless the user chose otherwise.
Each case runs in a fresh interpreter: grpcio reads the setting once, when imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src"
PROBE = "import os, keepwarm.grpc.server; print(os.environ.get('GRPC_EXPERIMENTS'))"


def probe(**extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    env.update(extra, PYTHONPATH=str(SRC))
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_server_reads_on_the_classic_poller() -> None:
    assert probe() == "-event_engine_listener"


def test_a_setting_of_the_user_is_kept() -> None:
    assert probe(GRPC_EXPERIMENTS="-event_engine_client") == "-event_engine_client"
