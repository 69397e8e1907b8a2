"""Version policy: pure functions over sets of versions."""

from __future__ import annotations

import pytest

from keepwarm.config import ModelConfig, VersionPolicy
from keepwarm.core.version_policy import (
    aspired_versions,
    default_version,
    keep_for_availability,
    resolve_version,
)
from keepwarm.errors import ModelNotFoundError, UnavailableError

NO_LABELS: dict[str, int] = {}


def test_latest_all_and_specific() -> None:
    available = [1, 5, 3, 2]
    assert aspired_versions(available, VersionPolicy(), NO_LABELS) == {5}
    assert aspired_versions(available, VersionPolicy("latest", n=2), NO_LABELS) == {5, 3}
    assert aspired_versions(available, VersionPolicy("latest", n=9), NO_LABELS) == {1, 2, 3, 5}
    assert aspired_versions(available, VersionPolicy("all"), NO_LABELS) == {1, 2, 3, 5}
    specific = VersionPolicy("specific", versions=(2, 4))
    assert aspired_versions(available, specific, NO_LABELS) == {2}
    assert aspired_versions([], VersionPolicy(), NO_LABELS) == set()


def test_labelled_versions_are_aspired_when_present() -> None:
    labels = {"stable": 3, "canary": 5, "gone": 9}
    assert aspired_versions([1, 3, 5], VersionPolicy(), labels) == {3, 5}
    assert aspired_versions([1, 3, 6], VersionPolicy(), labels) == {3, 6}


def test_keep_the_highest_old_version_until_a_new_one_is_ready() -> None:
    # 3 is wanted but still loading: keep serving 2 (the highest ready), not 1.
    assert keep_for_availability({3}, ready={1, 2}, available={1, 2, 3}) == {2}
    # 3 is ready: the old ones may go.
    assert keep_for_availability({3}, ready={2, 3}, available={2, 3}) == set()
    # A version whose files are gone is never kept.
    assert keep_for_availability({3}, ready={2}, available={3}) == set()
    assert keep_for_availability({3}, ready={1, 2}, available={1, 3}) == {1}
    # Nothing ready at all: nothing to keep.
    assert keep_for_availability({3}, ready=set(), available={1, 3}) == set()


def test_default_version() -> None:
    assert default_version({1, 4, 2}, ModelConfig()) == 4
    assert default_version(set(), ModelConfig()) is None
    labelled = ModelConfig(labels={"stable": 2}, default="stable")
    assert default_version({1, 2, 4}, labelled) == 2
    assert default_version({1, 4}, labelled) is None  # never a silent fallback
    assert default_version({1, 4}, ModelConfig(default=1)) == 1
    assert default_version({4}, ModelConfig(default=1)) is None


def test_resolve_a_version_number() -> None:
    assert resolve_version(2, {1, 2}, ModelConfig()) == 2
    with pytest.raises(ModelNotFoundError, match=r"version 7 of model 'm' .*ready versions: 1, 2"):
        resolve_version(7, {1, 2}, ModelConfig(), model="m")
    with pytest.raises(UnavailableError, match="version 3 of model 'm' is not ready yet"):
        resolve_version(3, {1, 2}, ModelConfig(), model="m", pending={3})
    with pytest.raises(ModelNotFoundError, match="expected a version number"):
        resolve_version(True, {1}, ModelConfig())


def test_resolve_a_label() -> None:
    config = ModelConfig(labels={"stable": 2, "canary": 3})
    assert resolve_version("stable", {2, 3}, config) == 2
    assert resolve_version("canary", {2, 3}, config) == 3
    with pytest.raises(ModelNotFoundError, match=r"label 'beta' .*canary \(version 3\), stable"):
        resolve_version("beta", {2, 3}, config)
    with pytest.raises(ModelNotFoundError, match="has no labels"):
        resolve_version("beta", {2}, ModelConfig())
    with pytest.raises(ModelNotFoundError, match="give a number"):
        resolve_version("2", {2}, ModelConfig())
    with pytest.raises(ModelNotFoundError, match=r"version 3 \(label 'canary'\).*not served"):
        resolve_version("canary", {2}, config)
    with pytest.raises(UnavailableError, match=r"label 'canary'.*not ready yet"):
        resolve_version("canary", {2}, config, pending={3})


def test_resolve_the_default() -> None:
    assert resolve_version(None, {1, 3}, ModelConfig()) == 3
    config = ModelConfig(labels={"stable": 2}, default="stable")
    assert resolve_version(None, {1, 2, 3}, config) == 2
    with pytest.raises(ModelNotFoundError, match=r"default version 2 \(label 'stable'\)"):
        resolve_version(None, {1, 3}, config)
    with pytest.raises(UnavailableError, match="default version 2"):
        resolve_version(None, {1, 3}, config, pending={2})
    with pytest.raises(ModelNotFoundError, match="model 'm' has no ready version"):
        resolve_version(None, set(), ModelConfig(), model="m")
    with pytest.raises(UnavailableError, match=r"no version .* is ready yet \(loading: 1\)"):
        resolve_version(None, set(), ModelConfig(), pending={1})
    with pytest.raises(ModelNotFoundError, match=r"default label 'prod' .* is not defined"):
        resolve_version(None, {1}, ModelConfig(default="prod"))
