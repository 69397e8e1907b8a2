"""Repository on real models, what it loads and when: on demand under a memory budget
(evicting, keeping the pinned, refusing what cannot fit), the first scan in a fresh
process (SavedModel, Keras and ONNX at once), the watcher without a poll, versions gone
from disk. Bounded waits on conditions and explicit scans."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import watchfiles  # noqa: F401 (the watcher under test: CI installs it, a broken one must fail)

import keepwarm
from keepwarm.core.ids import ModelId
from keepwarm.core.states import State
from keepwarm.loading import spec_from_call
from keepwarm.repository import Repository
from keepwarm.repository_status import DiskState
from support.leases import assert_refused
from support.repo_builders import (
    place,
    write_model_toml,
)
from support.waiting import unloaded

WAIT_S = 30.0


def test_on_demand_loads_on_first_use_evicts_keeps_pinned_and_refuses_what_cannot_fit(
    root: Path, example_models: Path
) -> None:
    mlp = example_models / "mlp" / "1"
    estimate = spec_from_call(str(mlp)).estimate_nbytes()
    loaded = spec_from_call(str(mlp)).load()
    resident = loaded.nbytes
    loaded.close()
    # The pinned model plus one other fit (loaded, or being loaded); a third does not.
    budget = resident + estimate + resident // 2
    for name in ("a", "b", "c", "pinned"):
        place(root / name, 1, mlp)
    write_model_toml(root / "pinned", "pinned = true\n")
    x = {"image": np.zeros((1, 784), dtype=np.float32)}
    with Repository(
        root, on_demand=True, max_bytes=budget, budget_timeout=0.3, poll_seconds=0.05
    ) as repo:
        assert repo.wait_ready("pinned", timeout=WAIT_S) == 1  # pinned: loaded at once
        assert {name: repo.manager.state(ModelId(name, 1)) for name in "abc"} == dict.fromkeys(
            "abc"
        )  # the others: not until asked for
        for name in "abc":
            with repo.lease(name, timeout=WAIT_S) as model:
                assert model.predict(x)["probs"].shape == (1, 10)
        models = repo.status().models
        states = {name: s.versions[1].state.value for name, s in models.items()}
        assert states == {"a": "UNLOADED", "b": "UNLOADED", "c": "READY", "pinned": "READY"}
        assert str(models["a"].versions[1].reason).startswith("evicted")
        assert repo.manager.used()[0] <= budget
        with repo.lease("c"):  # c in use, the pinned model pinned: no room for a
            assert_refused(
                repo.lease("a", timeout=WAIT_S), keepwarm.ResourceExhaustedError, "no room"
            )
            assert repo.manager.state(ModelId("c", 1)) is State.READY
        with repo.lease("a", timeout=WAIT_S) as model:  # c released: it can go now
            assert model.version == 1
        assert repo.manager.state(ModelId("pinned", 1)) is State.READY
        assert repo.manager.state(ModelId("c", 1)) is State.UNLOADED
        assert repo.wait_ready("b", timeout=WAIT_S) == 1  # on demand, waiting loads it
        assert repo.manager.state(ModelId("b", 1)) is State.READY


STARTUP = """
import sys
from keepwarm.repository import Repository
from keepwarm.repository_status import DiskState
with Repository(sys.argv[1], poll_seconds=0.05) as repo:
    for name in ("mlp", "mlp_keras", "mlp_onnx"):
        repo.wait_ready(name, timeout=30)
    print(sorted(repo.status().models))
"""


def test_first_scan_loads_savedmodel_keras_and_onnx_at_once_in_a_fresh_process(
    root: Path, example_models: Path
) -> None:
    # The first scan starts every load on its own thread, each importing its framework:
    # TensorFlow's import is not thread-safe (runtimes import frameworks one at a time).
    for name in ("mlp", "mlp_keras", "mlp_onnx"):
        place(root / name, 1, example_models / name / "1")
    done = subprocess.run(
        [sys.executable, "-c", STARTUP, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "['mlp', 'mlp_keras', 'mlp_onnx']"


SPELLINGS = {
    "path": str,
    "file_url": lambda path: path.as_uri(),  # "my models" -> my%20models
    "file_localhost": lambda path: "file://localhost" + path.as_uri().removeprefix("file://"),
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_watcher_picks_up_a_new_version_without_a_poll(
    tmp_path: Path, echo_models: dict[int, Path], spelling: str
) -> None:
    root = tmp_path / "my models"
    place(root / "echo", 1, echo_models[1])
    spelled = SPELLINGS[spelling](root)
    with Repository(spelled, poll_seconds=3600, watch=True) as repo:  # no poll during the test
        assert repo.wait_ready("echo", timeout=WAIT_S) == 1
        place(root / "echo", 2, echo_models[2])  # seen by the file watcher alone
        assert repo.wait_ready("echo", 2, timeout=WAIT_S) == 2
        with repo.lease("echo") as model:
            assert model.version == 2


def test_versions_gone_from_disk_leave_status_once_unloaded(
    root: Path, echo_models: dict[int, Path]
) -> None:
    write_model_toml(root / "echo", '[versions]\npolicy = "all"\n')
    for version in (1, 2):
        place(root / "echo", version, echo_models[version])
    place(root / "other", 1, echo_models[1])
    first, second, other = ModelId("echo", 1), ModelId("echo", 2), ModelId("other", 1)
    with Repository(root, poll_seconds=3600, watch=False) as repo:  # scans: ours alone
        for name, version in (("echo", 1), ("echo", 2), ("other", 1)):
            assert repo.wait_ready(name, version, timeout=WAIT_S) == version
        with repo.lease("echo", 1):
            shutil.rmtree(root / "echo" / "1")
            repo.refresh()
            # Draining: still listed (its files are gone), until its last lease ends.
            gone = repo.status().models["echo"].versions[1]
            assert gone.state is State.DRAINING and gone.disk is DiskState.GONE
        assert unloaded(repo, first)
        repo.refresh()
        assert sorted(repo.status().models["echo"].versions) == [2]
        assert repo.manager.entry(first) is None
        assert repo.manager.state(second) is State.READY
        # A whole model goes: its versions drain, then nothing of it is kept.
        shutil.rmtree(root / "other")
        repo.refresh()
        assert unloaded(repo, other)
        repo.refresh()
        assert "other" not in repo.status().models
        assert repo.manager.entry(other) is None
        # Listed again: loaded afresh.
        place(root / "echo", 1, echo_models[1])
        repo.refresh()
        assert repo.wait_ready("echo", 1, timeout=WAIT_S) == 1
