"""Repository failures: a broken new version never takes a request from the old one, it is
retried with backoff (not at every scan), and a fixed version is taken; bad model.toml
files; a load that hangs past its timeout; a Python model without allow_unsafe; a version
larger than the budget. Many threads loading and unloading: ``test_repository_races.py``.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import keepwarm
from keepwarm.core.backoff import Backoff
from keepwarm.core.ids import ModelId
from keepwarm.core.states import State
from keepwarm.repository import Repository
from keepwarm.repository_status import DiskState
from support.repo_builders import (
    Probe,
    Traffic,
    place,
    place_python,
    python_files,
    truncate_shard,
    write_model_toml,
)
from support.waiting import wait_until

WAIT_S = 30.0
# The first retry's delay: the scans and reads that must fall inside it take a few
# milliseconds alone, and seconds on a loaded machine; the next delay is ten times as
# long, so the status read after the retry still finds it pending.
BACKOFF_S = 3.0
FACTOR = 10.0
OLD, NEW, FIXED = ModelId("echo", 1), ModelId("echo", 2), ModelId("echo", 3)


def serving_v1(
    root: Path, echo_models: dict[int, Path], backoff: float = BACKOFF_S, **options: float
) -> Repository:
    """Serving echo version 1; Python-runtime versions (the probes) are allowed."""
    place(root / "echo", 1, echo_models[1])
    repo = Repository(root, poll_seconds=0.05, allow_unsafe=True, **options)  # type: ignore[arg-type]
    maximum = FACTOR * FACTOR * backoff
    repo.manager.backoff = Backoff(backoff, maximum, factor=FACTOR, jitter=0.0)
    repo.start()
    assert repo.wait_ready("echo", timeout=WAIT_S) == 1
    return repo


def attempts(repo: Repository, key: ModelId) -> int:
    entry = repo.manager.entry(key)
    return 0 if entry is None else entry.attempt


def until(repo: Repository, predicate: Callable[[], bool]) -> bool:
    return repo.manager.wait_for(predicate, WAIT_S)


def truncated(source: Path, scratch: Path) -> dict[str, bytes | str]:
    copy = scratch / "truncated"
    shutil.copytree(source, copy)
    truncate_shard(copy)
    return {str(p.relative_to(copy)): p.read_bytes() for p in copy.rglob("*") if p.is_file()}


def corrupt_graph(source: Path, scratch: Path) -> dict[str, bytes | str]:
    files = {str(p.relative_to(source)): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    files["saved_model.pb"] = b"\x08\x01 this is not a SavedModel protobuf"
    return files


@pytest.mark.parametrize("broken", ["truncated_variables", "corrupt_graph", "loader_raises"])
def test_broken_new_version_old_keeps_serving_backoff_then_fixed_version_loads(
    root: Path, tmp_path: Path, echo_models: dict[int, Path], probe: type[Probe], broken: str
) -> None:
    if broken == "truncated_variables":
        files, why = truncated(echo_models[2], tmp_path), "truncated"
    elif broken == "corrupt_graph":
        files, why = corrupt_graph(echo_models[2], tmp_path), "savedmodel"
    else:
        files, why = python_files("FailingLoad"), "deliberately unreadable"
    with serving_v1(root, echo_models) as repo, Traffic(repo, "echo", threads=4) as traffic:
        assert traffic.wait_all_served(1)
        place(root / "echo", 2, files=files)
        repo.refresh()
        if broken == "truncated_variables":
            # Refused by the format check: never handed to a loader, at any scan.
            for _ in range(5):
                repo.refresh()
            info = repo.status().models["echo"].versions[2]
            assert info.state is State.NEW and info.disk is DiskState.WAITING_FOR_FILES
            assert why in str(info.reason)
            assert attempts(repo, NEW) == 0
        else:
            assert until(repo, lambda: repo.manager.state(NEW) is State.FAILED)
            info = repo.status().models["echo"].versions[2]
            assert info.state is State.FAILED and why in str(info.reason).lower(), info
            entry = repo.manager.entry(NEW)
            assert entry is not None
            for _ in range(5):  # scans within the backoff do not retry
                repo.refresh()
            assert attempts(repo, NEW) == 1 and time.monotonic() < entry.retry_at
            # After the backoff a poll retries once, and the next delay grows.
            assert until(repo, lambda: entry.failures >= 2)
            assert attempts(repo, NEW) == 2
            assert repo.status().models["echo"].versions[2].to_dict()["retry_in"] > BACKOFF_S
            if broken == "loader_raises":
                assert probe.count("FailingLoad") == 2
        assert traffic.wait_requests(20)
        assert traffic.versions() == {1}
        place(root / "echo", 3, echo_models[3])
        repo.refresh()
        assert repo.wait_ready("echo", 3, timeout=WAIT_S) == 3
        assert until(repo, lambda: repo.manager.state(OLD) is State.UNLOADED)
        assert traffic.wait_all_served(3)
    assert traffic.failures == []
    assert traffic.runs == [[1, 3]] * 4


def test_load_hanging_past_its_timeout_fails_and_waits_for_the_stuck_load(
    root: Path, echo_models: dict[int, Path], probe: type[Probe]
) -> None:
    with (
        serving_v1(root, echo_models, backoff=0.5, load_timeout=0.3) as repo,
        Traffic(repo, "echo", threads=4) as traffic,
    ):
        place_python(root / "echo", 2, "HangingLoad")
        repo.refresh()
        assert probe.entered.wait(WAIT_S)
        assert until(repo, lambda: repo.manager.state(NEW) is State.FAILED)
        info = repo.status().models["echo"].versions[2].to_dict()
        assert "timeout" in info["reason"] and info["stuck_load"] is True
        # Past the backoff, polls still do not start a second load beside the stuck one.
        entry = repo.manager.entry(NEW)
        assert entry is not None and entry.stuck
        assert wait_until(lambda: time.monotonic() >= entry.retry_at, WAIT_S)
        repo.refresh()
        assert probe.count("HangingLoad") == 1
        assert traffic.wait_requests(20) and traffic.versions() == {1}
        probe.gate.set()  # the stuck load returns (and is discarded); a retry then loads
        assert repo.wait_ready("echo", 2, timeout=WAIT_S) == 2
        assert probe.count("HangingLoad") == 2
        assert until(repo, lambda: repo.manager.state(OLD) is State.UNLOADED)
        assert traffic.wait_all_served(2)
    assert traffic.failures == []
    assert traffic.runs == [[1, 2]] * 4


def test_bad_model_toml_keeps_the_last_good_config_and_the_serving_version(
    root: Path, echo_models: dict[int, Path]
) -> None:
    write_model_toml(root / "echo", "[labels]\nstable = 1\n")
    with serving_v1(root, echo_models) as repo, Traffic(repo, "echo", threads=4) as traffic:
        assert traffic.wait_all_served(1)
        # A typo: the file is refused, the last good configuration stays in force.
        write_model_toml(root / "echo", "[lables]\nstable = 1\n")
        repo.refresh()
        error = str(repo.status().models["echo"].config_error)
        assert "model.toml" in error and "'lables'" in error
        with repo.lease("echo", "stable") as model:
            assert model.version == 1
        # Valid TOML naming a runtime that does not exist, with a new version: the new
        # version is not taken, and the old one, though judged anew, keeps serving.
        write_model_toml(root / "echo", 'runtime = "nosuch"\n')
        place(root / "echo", 2, echo_models[2])
        for _ in range(3):
            repo.refresh()
        versions = repo.status().models["echo"].versions
        assert "nosuch" in str(versions[2].reason) and versions[2].state is State.NEW
        assert versions[2].disk is DiskState.WAITING_FOR_FILES
        assert versions[1].state is State.READY and "nosuch" in str(versions[1].disk_reason)
        assert traffic.wait_requests(20) and traffic.versions() == {1}
        write_model_toml(root / "echo", "")
        repo.refresh()
        assert repo.wait_ready("echo", 2, timeout=WAIT_S) == 2
        assert repo.status().models["echo"].config_error is None
        assert traffic.wait_all_served(2)
    assert traffic.failures == []
    assert traffic.runs == [[1, 2]] * 4


def test_a_model_toml_change_is_logged_only_once_status_says_it(
    root: Path, echo_models: dict[int, Path]
) -> None:
    """Whoever reads the log line and then the status finds the status saying it too: the
    status each of the repository's model.toml lines was logged with, read by the handler
    at the moment of the record, already names the change (written after the listing)."""
    seen: list[tuple[str, object]] = []

    with serving_v1(root, echo_models) as repo:

        class Reader(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "model.toml" in record.getMessage():
                    error = repo.status().models["echo"].config_error
                    seen.append((record.getMessage(), error))

        handler = Reader(level=logging.WARNING)
        logger = logging.getLogger("keepwarm.repository")
        logger.addHandler(handler)
        try:
            write_model_toml(root / "echo", "[lables]\nstable = 1\n")
            repo.refresh()
            assert wait_until(lambda: len(seen) == 1, WAIT_S)
            write_model_toml(root / "echo", "")
            repo.refresh()
            assert wait_until(lambda: len(seen) == 2, WAIT_S)
        finally:
            logger.removeHandler(handler)
    (invalid, error), (valid, cleared) = seen
    assert "is invalid" in invalid and "'lables'" in str(error)
    assert "valid again" in valid and cleared is None


def test_new_model_with_a_bad_model_toml_loads_nothing_until_fixed(
    root: Path, echo_models: dict[int, Path]
) -> None:
    place(root / "echo", 1, echo_models[1])
    write_model_toml(root / "echo", "pinned = 'yes'\n")
    with Repository(root, poll_seconds=0.05) as repo:
        for _ in range(3):
            repo.refresh()
        assert repo.manager.state(OLD) is None
        assert "pinned" in str(repo.status().models["echo"].config_error)
        with (
            pytest.raises(keepwarm.UnavailableError, match=r"model\.toml is invalid"),
            repo.lease("echo"),
        ):
            pass
        write_model_toml(root / "echo", "pinned = true\n")
        repo.refresh()
        assert repo.wait_ready("echo", timeout=WAIT_S) == 1
        assert repo.status().models["echo"].versions[1].to_dict()["pinned"] is True


def test_python_model_is_refused_without_allow_unsafe(root: Path, probe: type[Probe]) -> None:
    # A class named by a version's keepwarm.toml is code from whoever can write the
    # repository: it runs only when the server says so.
    place_python(root / "py", 1, "EchoVersion")
    key = ModelId("py", 1)
    with Repository(root, poll_seconds=0.05) as repo:
        assert until(repo, lambda: repo.manager.state(key) is State.FAILED)
        entry = repo.manager.entry(key)
        assert entry is not None and isinstance(entry.error, keepwarm.UnsafeFormatError)
        info = repo.status().models["py"].versions[1]
        assert info.state is State.FAILED and "allow_unsafe" in str(info.reason), info
        assert probe.count("EchoVersion") == 0
    with Repository(root, poll_seconds=0.05, allow_unsafe=True) as repo:
        assert repo.wait_ready("py", timeout=WAIT_S) == 1
        assert probe.count("EchoVersion") == 1


def test_version_larger_than_the_budget_does_not_block_the_others(
    root: Path, echo_models: dict[int, Path], caplog: pytest.LogCaptureFixture
) -> None:
    from keepwarm.loading import spec_from_call

    small = spec_from_call(str(echo_models[2]))
    loaded = small.load()
    budget = 2 * max(small.estimate_nbytes(), loaded.nbytes)
    loaded.close()
    write_model_toml(root / "echo", '[versions]\npolicy = "all"\n')
    place(root / "echo", 1, echo_models[1], files={"padding.bin": bytes(2 * budget)})
    place(root / "echo", 2, echo_models[2])
    big = ModelId("echo", 1)
    with Repository(root, poll_seconds=0.05, max_bytes=budget) as repo:
        assert repo.wait_ready("echo", 2, timeout=WAIT_S) == 2
        for _ in range(3):  # tried again at every scan, logged once
            repo.refresh()
        info = repo.status().models["echo"].versions[1]
        assert "more than the whole budget" in str(info.refused), info
        assert info.state is State.NEW and info.reason == info.refused
        assert repo.manager.state(big) is State.NEW
        logged = [r for r in caplog.records if "more than the whole budget" in r.getMessage()]
        assert len(logged) == 1, logged
        with pytest.raises(keepwarm.UnavailableError, match="version 1"), repo.lease("echo", 1):
            pass
        # No longer wanted: the refusal goes with it, and version 2 keeps serving.
        write_model_toml(root / "echo", "")
        repo.refresh()
        assert repo.status().models["echo"].versions[1].refused is None
        with repo.lease("echo") as model:
            assert model.version == 2
