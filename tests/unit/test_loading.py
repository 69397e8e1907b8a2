"""From a URI to a model: canonical keys, version selection, options, warmup samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import keepwarm
from keepwarm.errors import InvalidConfigError, ModelNotFoundError
from keepwarm.loading import canonical_uri, freeze_options, read_samples, select_version
from keepwarm.signature import Signature, TensorSpec


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


def test_select_version_follows_the_repository_rules(tmp_path: Path) -> None:
    for name in ("1", "007", "12", "0", "tmp"):
        (tmp_path / name).mkdir()
    assert select_version(tmp_path, None) == tmp_path / "12"
    assert select_version(tmp_path, 1) == tmp_path / "1"
    with pytest.raises(ModelNotFoundError, match=r"versions present: \[1, 12\]"):
        select_version(tmp_path, 7)  # "007" is not a version (no leading zeros)
    (tmp_path / "saved_model.pbtxt").write_text("")
    assert select_version(tmp_path, None) == tmp_path  # a model itself, numbered children or not


def test_options_keys_must_be_strings() -> None:
    with pytest.raises(InvalidConfigError, match="options keys must be strings"):
        freeze_options({1: "a", "b": 2})  # type: ignore[dict-item]
    assert freeze_options({"b": [1], "a": 2}) == (("a", 2), ("b", "[1]"))


def test_json_warmup_samples_with_integers_feed_a_float_model(tmp_path: Path) -> None:
    path = tmp_path / "warmup.json"
    path.write_text(json.dumps([{"x": [[1, 2]]}]))
    signature = Signature(
        inputs=(TensorSpec("x", np.dtype("float32"), (None, 2)),),
        outputs=(TensorSpec("y", np.dtype("float32"), (None, 2)),),
    )
    (request,) = read_samples(path)
    coerced = signature.coerce(signature.widen_json(request))
    assert coerced["x"].dtype == np.float32
    with pytest.raises(keepwarm.InvalidInputError, match="expected dtype float32"):
        signature.coerce(request)  # arrays built in code are not widened silently


def test_default_cache_budget_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import keepwarm.cache as cache_module

    monkeypatch.setattr(cache_module, "_default", None)
    monkeypatch.setenv("KEEPWARM_MAX_BYTES", "0.5")
    monkeypatch.setenv("KEEPWARM_MAX_MODELS", "3")
    cache = cache_module.default_cache()
    assert cache.manager.max_models == 3
    assert cache.manager.max_bytes is not None and cache.manager.max_bytes > 2**20  # half of RAM
    monkeypatch.setattr(cache_module, "_default", None)
    monkeypatch.setenv("KEEPWARM_MAX_BYTES", "lots")
    with pytest.raises(InvalidConfigError, match="KEEPWARM_MAX_BYTES='lots'"):
        cache_module.default_cache()
