"""Cache keys: one key per model whatever the spelling, and arguments checked before keying."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import keepwarm
from keepwarm.cache_keys import canonical_uri, freeze_options
from keepwarm.errors import InvalidConfigError, InvalidInputError
from support.onnx_graphs import identity


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
    assert freeze_options({"b": [1], "a": 2}) == (("a", ("int", 2)), ("b", ("list", (("int", 1),))))


def test_an_empty_or_non_path_uri_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity(tmp_path / "model.onnx")  # a model in the working directory: "" must not load it
    monkeypatch.chdir(tmp_path)
    cache = keepwarm.ModelCache(warmup=False)
    for uri in ("", "   ", "file://", "file:", "file://localhost", b"model.onnx", None, 123, []):
        with pytest.raises(InvalidInputError, match="model URI") as info:
            keepwarm.load(uri, cache=cache)  # type: ignore[arg-type]
        assert repr(uri) in info.value.message or type(uri).__name__ in info.value.message
    with pytest.raises(InvalidInputError, match="model URI is empty"):
        cache.evict("")
    assert cache.stats()["loads"] == 0
    assert keepwarm.load(Path("model.onnx"), cache=cache).format == "onnx"  # a real path works


def test_version_must_be_a_positive_integer_not_a_boolean(tmp_path: Path) -> None:
    for version in (1, 2):
        identity(tmp_path / "m" / str(version) / "model.onnx")
    cache = keepwarm.ModelCache(warmup=False)
    uri = tmp_path / "m"
    for bad in (True, False, 0, -1, "0", "-1", "abc", "", "01", 1.5, 1.0, [1]):
        with pytest.raises(InvalidInputError, match=r"version=.*positive integer") as info:
            cache.handle(uri, version=bad)  # type: ignore[arg-type]
        assert repr(bad) in info.value.message
    assert "boolean" in _message(lambda: cache.handle(uri, version=True))  # type: ignore[arg-type]
    one = cache.load(uri, version=1)
    assert cache.handle(uri, version="1") is one  # "1" means version 1 (HTTP paths, CLI)
    assert cache.handle(uri, version=np.int64(1)) is one  # type: ignore[arg-type]
    assert cache.handle(uri, version="2") is not one
    assert cache.stats()["loads"] == 1


def _message(call: Callable[[], object]) -> str:
    with pytest.raises(InvalidInputError) as info:
        call()
    return info.value.message


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"a": [1]}, {"a": "[1]"}),  # the list was keyed by its repr: one Model for both
        ({"a": {"b": [1]}}, {"a": {"b": "[1]"}}),
        ({"a": True}, {"a": 1}),  # True == 1: one key
        ({"a": 1.0}, {"a": 1}),
    ],
)
def test_options_that_differ_are_keyed_apart(
    first: dict[str, object], second: dict[str, object]
) -> None:
    assert freeze_options(first) != freeze_options(second)
    cache = keepwarm.ModelCache()
    assert cache.handle("m", options=first) is not cache.handle("m", options=second)


def test_equal_options_share_a_key_whatever_their_order() -> None:
    cache = keepwarm.ModelCache()
    one = cache.handle("m", options={"a": {"b": 1, "c": [2, 3]}, "d": 4})
    assert cache.handle("m", options={"d": 4, "a": {"c": [2, 3], "b": 1}}) is one


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"options": "abc"}, r"options='abc' \(str\): expected a table"),  # AttributeError
        ({"options": [("a", 1)]}, r"options=\[\('a', 1\)\] \(list\): expected a table"),
        ({"batching": {1: 2}}, r"batching keys must be strings"),  # said 'options'
        ({"workers": {1: 2}}, r"workers keys must be strings"),
    ],
)
def test_a_table_argument_of_the_wrong_kind_names_itself(
    kwargs: dict[str, object], expected: str
) -> None:
    with pytest.raises(InvalidConfigError, match=expected):
        keepwarm.ModelCache().handle("m", **kwargs)  # type: ignore[arg-type]
