"""Repository on real TensorFlow models: swaps under load, slow copies, removals, labels,
status and events; on-demand loading, the first scan, the watcher and versions gone from
disk are in ``test_repository_discovery.py``.

Synchronised with events, conditions and explicit scans (``repo.refresh()``); every wait
is bounded.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import watchfiles  # noqa: F401 (the watcher under test: CI installs it, a broken one must fail)

import keepwarm
from keepwarm.core.events import Event
from keepwarm.core.ids import ModelId
from keepwarm.core.states import State
from keepwarm.repository import Repository
from keepwarm.repository_status import DiskState
from keepwarm.sources.filesystem import FilesystemSource, ModelListing
from support.leases import assert_refused
from support.repo_builders import (
    Traffic,
    copy_slowly,
    place,
    write_model_toml,
)
from support.waiting import unloaded

WAIT_S = 30.0


def versions_state(repo: Repository, name: str) -> dict[int, str]:
    return {v: info.state.value for v, info in repo.status().models[name].versions.items()}


class Recorder:
    """Collects the repository's events; waits for one that matches."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait(self, kind: str, key: ModelId, state: State | None = None) -> Event:
        def find() -> Event | None:
            return next(
                (
                    e
                    for e in self.events
                    if e.kind == kind and e.key == key and (state is None or e.state is state)
                ),
                None,
            )

        with self._cond:
            assert self._cond.wait_for(lambda: find() is not None, WAIT_S), (kind, key, state)
            found = find()
        assert found is not None
        return found

    def states(self, key: ModelId) -> list[State | None]:
        with self._cond:
            return [e.state for e in self.events if e.kind == "state" and e.key == key]


@pytest.fixture
def echo_repo(root: Path, echo_models: dict[int, Path]) -> Iterator[Repository]:
    place(root / "echo", 1, echo_models[1])
    with Repository(root, poll_seconds=0.05) as repo:
        assert repo.wait_ready("echo", timeout=WAIT_S) == 1
        yield repo


def test_20_swaps_under_8_predicting_threads_lose_no_request(
    root: Path, echo_models: dict[int, Path], echo_repo: Repository
) -> None:
    repo = echo_repo
    with Traffic(repo, "echo", threads=8) as traffic:
        assert traffic.wait_all_served(1)
        for version in range(2, 22):
            place(root / "echo", version, echo_models[version])
            repo.refresh()
            assert repo.wait_ready("echo", version, timeout=WAIT_S) == version
            assert unloaded(repo, ModelId("echo", version - 1))
            # Every thread moves on to the new version before the next swap begins.
            assert traffic.wait_all_served(version), traffic.runs
    assert traffic.failures == []
    assert traffic.requests > 8 * 21
    for runs in traffic.runs:  # never back to an old version, and every version served
        assert runs == list(range(1, 22))
    states = versions_state(repo, "echo")
    assert states == {**{v: "UNLOADED" for v in range(1, 21)}, 21: "READY"}


def test_version_copied_slowly_is_taken_only_when_whole_and_settled(
    root: Path, echo_models: dict[int, Path]
) -> None:
    place(root / "echo", 1, echo_models[1])
    scans = threading.Semaphore(0)

    class CountingSource(FilesystemSource):
        def scan(self) -> dict[str, ModelListing]:
            listing = super().scan()
            scans.release()
            return listing

    source = CountingSource(root)
    new = ModelId("echo", 2)
    with Repository(root, source=source, poll_seconds=0.05) as repo:
        assert repo.wait_ready("echo", timeout=WAIT_S) == 1
        with Traffic(repo, "echo", threads=4) as traffic:
            steps: list[str] = []

            def pause(what: str) -> None:
                # Longer than a poll: two whole background scans pass, then two of ours.
                while scans.acquire(blocking=False):
                    pass
                for _ in range(3):  # the first may have begun before the write
                    assert scans.acquire(timeout=WAIT_S)
                repo.refresh()
                repo.refresh()
                steps.append(what)
                assert repo.manager.state(new) is None, f"loaded after {what}"
                info = repo.status().models["echo"].versions[2]
                assert info.state is State.NEW, (what, info)
                assert info.disk is DiskState.WAITING_FOR_FILES and info.reason, (what, info)
                assert traffic.wait_requests(4)

            copy_slowly(echo_models[2], root / "echo" / "2", pause)
            assert len(steps) >= 5  # empty dir, assets..., both halves of the data, the index
            assert repo.wait_ready("echo", 2, timeout=WAIT_S) == 2
            assert unloaded(repo, ModelId("echo", 1))
            assert traffic.wait_all_served(2)
    assert traffic.failures == []
    assert traffic.runs == [[1, 2]] * 4


def test_version_removed_while_leased_finishes_its_requests(
    root: Path, example_models: Path
) -> None:
    mlp = example_models / "mlp" / "1"
    write_model_toml(root / "mlp", '[versions]\npolicy = "all"\n')
    place(root / "mlp", 1, mlp)
    place(root / "mlp", 2, mlp)
    x = np.random.default_rng(0).random((2, 784), dtype=np.float32)
    with Repository(root, poll_seconds=0.05) as repo:
        repo.wait_ready("mlp", 1, timeout=WAIT_S)
        repo.wait_ready("mlp", 2, timeout=WAIT_S)
        with repo.lease("mlp", 2) as held:
            want = held.predict({"image": x})["probs"]
            shutil.rmtree(root / "mlp" / "2")
            repo.refresh()
            assert repo.manager.state(ModelId("mlp", 2)) is State.DRAINING
            # In flight: the held version still answers, with the same weights.
            np.testing.assert_allclose(held.predict({"image": x})["probs"], want, atol=1e-6)
            assert_refused(repo.lease("mlp", 2), keepwarm.ModelNotFoundError, "version 2")
            with repo.lease("mlp") as other:  # the default moves to what remains
                assert other.version == 1
        assert unloaded(repo, ModelId("mlp", 2))
        # The last version goes: the model is there but has nothing to serve.
        shutil.rmtree(root / "mlp" / "1")
        repo.refresh()
        assert unloaded(repo, ModelId("mlp", 1))
        assert_refused(repo.lease("mlp"), keepwarm.ModelNotFoundError, "no version")
        shutil.rmtree(root / "mlp")
        repo.refresh()
        assert_refused(repo.lease("mlp"), keepwarm.ModelNotFoundError, "not found")
        assert "mlp" not in repo.status().models


def test_labels_and_default_label(root: Path, echo_models: dict[int, Path]) -> None:
    for version in (1, 2, 3):
        place(root / "echo", version, echo_models[version])
    write_model_toml(root / "echo", 'default = "stable"\n[labels]\nstable = 1\ncanary = 2\n')
    x = {"x": np.zeros((1, 4), dtype=np.float32)}
    with Repository(root, poll_seconds=0.05) as repo:
        for version in (1, 2, 3):  # latest (3) plus every labelled version
            repo.wait_ready("echo", version, timeout=WAIT_S)
        for asked, want in (("stable", 1), ("canary", 2), (None, 1), (3, 3)):
            with repo.lease("echo", asked) as model:
                assert model.version == want
                assert model.predict(x)["version"].tolist() == [float(want)]
        assert_refused(
            repo.lease("echo", "nightly"), keepwarm.ModelNotFoundError, r"canary \(version 2"
        )
        # Relabel: stable moves to 2; version 1 is no longer wanted and unloads.
        write_model_toml(root / "echo", 'default = "stable"\n[labels]\nstable = 2\n')
        repo.refresh()
        assert unloaded(repo, ModelId("echo", 1))
        with repo.lease("echo") as model:
            assert model.version == 2
        assert_refused(repo.lease("echo", "canary"), keepwarm.ModelNotFoundError, "canary")


def test_status_events_and_memory_given_back(root: Path, echo_models: dict[int, Path]) -> None:
    place(root / "echo", 1, echo_models[1])
    recorder = Recorder()
    first, second = ModelId("echo", 1), ModelId("echo", 2)
    repo = Repository(root, poll_seconds=0.05)
    unsubscribe = repo.subscribe(recorder)  # before start: the first load is seen too
    with repo:
        repo.wait_ready("echo", timeout=WAIT_S)
        recorder.wait("state", first, State.READY)
        assert recorder.states(first) == [State.LOADING, State.WARMING, State.READY]
        status = repo.status()
        info = status.models["echo"]
        assert info.config_error is None and status.listing_error is None
        ready = info.versions[1].to_dict()
        assert ready["state"] == "READY" and ready["nbytes"] > 0 and ready["load_seconds"] > 0
        assert ready["leases"] == 0 and ready["failures"] == 0 and ready["reason"] is None
        assert ready["disk"] == "taken" and json.loads(json.dumps(status.to_dict()))
        with repo.lease("echo"):
            assert repo.status().models["echo"].versions[1].to_dict()["leases"] == 1

        place(root / "echo", 2, echo_models[2])
        repo.refresh()
        recorder.wait("state", first, State.UNLOADED)
        assert recorder.states(first)[3:] == [State.DRAINING, State.UNLOADED]
        assert recorder.states(second) == [State.LOADING, State.WARMING, State.READY]
        # The reaper closes the old version and measures what came back (batched, <= ~1 s).
        reclaimed = recorder.wait("reclaimed", first)
        assert reclaimed.nbytes is not None and reclaimed.nbytes >= 0
        gone = repo.status().models["echo"].versions[1].to_dict()
        assert gone["state"] == "UNLOADED" and gone["reason"] == "no longer wanted"
        assert isinstance(gone["unreclaimed_bytes"], int) and gone["nbytes"] == 0
        unsubscribe()
