"""InferenceService's pure parts: names, versions, the management token, path scrubbing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from keepwarm.control import ControlledSource
from keepwarm.errors import InvalidInputError, PermissionDeniedError, UnauthenticatedError
from keepwarm.repository import Repository
from keepwarm.service import InferenceService
from keepwarm.service_names import check_name, parse_version
from keepwarm.service_process import SWITCH_INTERVAL_SECONDS, tune_interpreter


@pytest.mark.parametrize("name", ["mlp", "a.b-c_d", "9lives", "x" * 128])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "..", ".hidden", "a/b", "a\\b", "a..b", "x" * 129, "é"])
def test_bad_names_are_invalid_input(name: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid model name"):
        check_name(name)


def test_versions_and_labels() -> None:
    assert parse_version(None) is None and parse_version("") is None
    assert parse_version("3") == 3
    assert parse_version("stable") == "stable"
    with pytest.raises(InvalidInputError, match="positive"):
        parse_version("0")
    with pytest.raises(InvalidInputError, match="invalid version label"):
        parse_version("../x")


@pytest.mark.parametrize("text", ["\u00b2", "\u0661", "\uff11"])  # superscript, Arabic, wide
def test_digits_other_than_ascii_are_neither_a_version_nor_a_label(text: str) -> None:
    # str.isdigit() says yes to each; int() refused "²" (a 500) and read the others as 1.
    with pytest.raises(InvalidInputError, match="invalid version label"):
        parse_version(text)


def test_error_text_names_files_relative_to_the_root(tmp_path: Path) -> None:
    root = tmp_path / "models"
    root.mkdir()
    service = InferenceService(Repository(root))
    try:
        text = f"cannot read {root}/mlp/1/saved_model.pb in {root}"
        assert service.public(text) == "cannot read mlp/1/saved_model.pb in the repository"
        linked = tmp_path / "link"
        linked.symlink_to(root)
        spelled = InferenceService(Repository(linked))
        try:
            assert spelled.public(f"{root}/m/1: bad") == "m/1: bad"  # the resolved spelling
            assert spelled.public(f"{linked}/m/1: bad") == "m/1: bad"
        finally:
            spelled.close()
    finally:
        service.close()


def test_a_relative_root_replaces_only_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    for root in (".", "models"):
        service = InferenceService(Repository(root))
        try:
            absolute = (tmp_path / root).resolve()
            text = f"model 'x' not found (models: a.b); see {absolute}/x/1"
            assert service.public(text) == "model 'x' not found (models: a.b); see x/1"
        finally:
            service.close()


def test_management_token(tmp_path: Path) -> None:
    repository = Repository(tmp_path)
    off = InferenceService(repository)
    on = InferenceService(
        repository, control=ControlledSource(repository, "poll"), management_token="t0ken"
    )
    try:
        with pytest.raises(PermissionDeniedError, match="off"):
            off.management.authorize("t0ken")
        with pytest.raises(UnauthenticatedError):
            on.management.authorize(None)
        with pytest.raises(PermissionDeniedError, match="wrong"):
            on.management.authorize("t0ke")
        on.management.authorize("t0ken")
    finally:
        off.close()
        on.close()


def test_serving_tunes_the_switch_interval_and_restores_it() -> None:
    before = sys.getswitchinterval()
    restore = tune_interpreter()
    try:
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_SECONDS)
    finally:
        restore()
    assert sys.getswitchinterval() == before
