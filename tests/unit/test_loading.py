"""From a URI to a model: version selection and the default cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from keepwarm.errors import InvalidConfigError, ModelNotFoundError
from keepwarm.loading import select_version


def test_select_version_follows_the_repository_rules(tmp_path: Path) -> None:
    for name in ("1", "007", "12", "0", "tmp"):
        (tmp_path / name).mkdir()
    assert select_version(tmp_path, None) == tmp_path / "12"
    assert select_version(tmp_path, 1) == tmp_path / "1"
    with pytest.raises(ModelNotFoundError, match=r"versions present: \[1, 12\]"):
        select_version(tmp_path, 7)  # "007" is not a version (no leading zeros)
    (tmp_path / "saved_model.pbtxt").write_text("")
    assert select_version(tmp_path, None) == tmp_path  # a model itself, numbered children or not


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


def test_a_description_carries_the_optimize_plan_as_plain_data(tmp_path: Path) -> None:
    import pickle

    from keepwarm.loading import LoadDescription

    plan = {"to": "onnx", "quantize": "dynamic", "min_agreement": 0.99}
    described = LoadDescription(str(tmp_path), optimize=plan)
    assert pickle.loads(pickle.dumps(described)).optimize == plan
    plan["quantize"] = "float16"  # the description keeps its own copy
    assert described.optimize == {"to": "onnx", "quantize": "dynamic", "min_agreement": 0.99}
    with pytest.raises(InvalidConfigError, match="optimize must be a mapping"):
        LoadDescription(str(tmp_path), optimize="onnx")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match=r"optimize\['gate'\] must be plain data"):
        LoadDescription(str(tmp_path), optimize={"gate": object()})
