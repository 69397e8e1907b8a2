"""The repository's library face used carelessly: arguments of the wrong kind get a typed
error naming them, never the default version's answer, a scan of the working directory or
a wait without end."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest

from keepwarm import InvalidConfigError, InvalidInputError, Repository
from support.misbehaving_models import two_versions


@pytest.mark.parametrize("version", [1.0, 2.5, b"1", [1], object()])
def test_a_version_of_another_type_is_refused_not_served_as_the_default(
    tmp_path: Path, version: object
) -> None:
    """It fell through every check to the default version: lease("m", 1.0) answered from
    version 2."""
    with Repository(two_versions(tmp_path), allow_unsafe=True, poll_seconds=0.2) as repo:
        assert repo.wait_ready("m", 1, timeout=30) == 1
        assert repo.wait_ready("m", 2, timeout=30) == 2
        for ask in (repo.try_acquire, repo.acquire):
            with pytest.raises(InvalidInputError, match=r"version .* of model 'm': expected"):
                ask("m", version)  # type: ignore[arg-type]
        with repo.lease("m", 1) as model:
            assert model.version == 1


@pytest.mark.parametrize("name", [None, 5, b"m", ["m"]])
def test_a_model_name_of_another_type_is_refused(tmp_path: Path, name: object) -> None:
    with Repository(two_versions(tmp_path), allow_unsafe=True, poll_seconds=0.2) as repo:
        assert repo.wait_ready("m", 2, timeout=30) == 2
        for ask in (repo.try_acquire, repo.acquire):
            with pytest.raises(InvalidInputError, match=r"model name .*expected a string"):
                ask(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"root": None}, r"repository root None: expected"),
        ({"root": 5}, r"repository root 5: expected"),
        ({"root": b"models"}, r"repository root b'models': expected"),
        ({"root": ""}, r"repository root '': expected"),  # was the working directory
    ],
)
def test_a_repository_refuses_a_root_of_the_wrong_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, object], expected: str
) -> None:
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError, match=expected):
        Repository(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"allow_unsafe": "yes"}, r"allow_unsafe='yes': expected true or false"),
        ({"on_demand": 1}, r"on_demand=1: expected true or false"),
        ({"watch": "no"}, r"watch='no': expected true or false"),
    ],
)
def test_a_repository_refuses_a_switch_that_is_not_a_bool(
    tmp_path: Path, kwargs: dict[str, object], expected: str
) -> None:
    """'yes' was taken as the settings take the environment's text."""
    with pytest.raises(InvalidConfigError, match=expected):
        Repository(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_a_subscriber_that_is_not_callable_is_refused(tmp_path: Path) -> None:
    """It was taken, and every event then logged a TypeError."""
    repo = Repository(two_versions(tmp_path), allow_unsafe=True)
    with repo, pytest.raises(InvalidInputError, match=r"subscriber 5: expected a callable"):
        repo.subscribe(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", ["5", True, float("nan")])
def test_wait_ready_refuses_a_timeout_that_is_not_a_number(tmp_path: Path, timeout: object) -> None:
    """'5' raised TypeError; nan never timed out."""
    repo = Repository(tmp_path, allow_unsafe=True, poll_seconds=0.05)
    with repo, pytest.raises(InvalidInputError, match=r"timeout=.*expected a number"):
        repo.wait_ready("m", timeout=timeout)  # type: ignore[arg-type]


def test_wait_ready_without_bound_waits_for_a_model_listed_later(tmp_path: Path) -> None:
    """math.inf: OverflowError from the condition's wait, once the model was not listed."""
    repo = Repository(tmp_path, allow_unsafe=True, poll_seconds=0.05)
    with repo:
        placing = threading.Timer(0.3, two_versions, (tmp_path,))
        placing.start()
        try:
            assert repo.wait_ready("m", 2, timeout=math.inf) == 2
        finally:
            placing.join()
