"""Cache keys: one key per model whatever the spelling, and arguments checked before keying."""

from __future__ import annotations

from pathlib import Path

import pytest

import keepwarm
from keepwarm.cache_keys import canonical_uri, freeze_options
from keepwarm.errors import InvalidConfigError


def test_canonical_uri_one_key_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a b").mkdir()
    monkeypatch.chdir(tmp_path)
    want = str(tmp_path / "a b")
    assert canonical_uri("a b") == want
    assert canonical_uri(tmp_path / "x" / ".." / "a b") == want
    assert canonical_uri((tmp_path / "a b").as_uri()) == want  # file:///.../a%20b
    assert canonical_uri("s3://bucket/models/m") == "s3://bucket/models/m"


def test_relative_handle_follows_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = keepwarm.ModelCache()
    for name in ("one", "two"):
        (tmp_path / name / "m").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "one")
    first = cache.handle("m")
    monkeypatch.chdir(tmp_path / "two")
    second = cache.handle("m")
    assert first is not second
    assert first.uri == str(tmp_path / "one" / "m") and second.uri == str(tmp_path / "two" / "m")


def test_options_keys_must_be_strings() -> None:
    with pytest.raises(InvalidConfigError, match="options keys must be strings"):
        freeze_options({1: "a", "b": 2})  # type: ignore[dict-item]
    assert freeze_options({"b": [1], "a": 2}) == (("a", 2), ("b", "[1]"))
