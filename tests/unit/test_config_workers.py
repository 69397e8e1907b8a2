"""``[workers]`` in model.toml, ``keepwarm.load(workers=...)`` and ``Settings.workers``:
parsed, every mistake named, and the model routed to worker processes when they say so
(isolation included: an ONNX model then runs in a worker process)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from keepwarm.cache import ModelCache
from keepwarm.config import parse_model_config
from keepwarm.config_workers import WorkersConfig, workers_argument
from keepwarm.errors import InvalidConfigError
from keepwarm.repository import Repository
from keepwarm.settings import Settings, WorkerSettings
from keepwarm.workers import WorkerModel


def test_the_table_is_read_and_isolate_follows_the_settings_when_left_out() -> None:
    config = parse_model_config("[workers]\nprocesses = 3\n", source="m/model.toml")
    assert config.workers == WorkersConfig(processes=3, isolate=False)
    assert config.workers is not None
    assert config.workers.with_defaults(WorkerSettings(isolate=True)).isolate is True
    given = parse_model_config("[workers]\nisolate = false\n", source="m/model.toml").workers
    assert given is not None and given.processes == 1
    assert given.with_defaults(WorkerSettings(isolate=True)).isolate is False
    assert parse_model_config("", source="m/model.toml").workers is None
    assert parse_model_config("[workers]\n", source="m/model.toml").workers == WorkersConfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("processes = 0", "workers.processes: expected an integer from 1 to 64, got 0"),
        ("processes = 65", "workers.processes: expected an integer from 1 to 64, got 65"),
        ("processes = 1.5", "workers.processes: expected an integer from 1 to 64, got 1.5"),
        ("processes = true", "workers.processes: expected an integer from 1 to 64, got True"),
        ('processes = "2"', "workers.processes: expected an integer from 1 to 64, got '2'"),
        ('isolate = "yes"', "workers.isolate: expected true or false, got 'yes'"),
        ("threads = 2", "unknown key 'workers.threads' in [workers]"),
    ],
)
def test_mistakes_are_named(text: str, expected: str) -> None:
    with pytest.raises(InvalidConfigError, match=r"m/model\.toml") as caught:
        parse_model_config(f"[workers]\n{text}\n", source="m/model.toml")
    assert expected in caught.value.message
    with pytest.raises(InvalidConfigError, match=r"model\.toml: workers: expected a table"):
        parse_model_config("workers = 2\n", source="m/model.toml")


def test_the_load_argument() -> None:
    server = WorkerSettings(isolate=True)
    assert workers_argument(None, server) is None
    assert workers_argument(False, server) is None
    assert workers_argument(True, server) == WorkersConfig(processes=1, isolate=True)
    table = workers_argument({"processes": 2}, server)
    assert table == WorkersConfig(processes=2, isolate=True)
    with pytest.raises(InvalidConfigError, match=r"workers=: unknown key 'workers\.procs'"):
        workers_argument({"procs": 2}, server)
    with pytest.raises(InvalidConfigError, match="workers=3: expected True, False, None"):
        workers_argument(3, server)


def test_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {"KEEPWARM_WORKERS__ISOLATE": "on", "KEEPWARM_WORKERS__MAX_RESTARTS": "5"}
    )
    assert settings.workers == WorkerSettings(isolate=True, max_restarts=5)
    with pytest.raises(
        InvalidConfigError, match=r"KEEPWARM_WORKERS__MAX_RESTARTS='-1': expected an integer >= 0"
    ):
        Settings.from_env({"KEEPWARM_WORKERS__MAX_RESTARTS": "-1"})
    with pytest.raises(InvalidConfigError, match="max_buffer_bytes >= buffer_bytes"):
        WorkerSettings(buffer_bytes="1GiB", max_buffer_bytes="1MiB")


def _onnx_copy(example_models: Path, tmp_path: Path, toml: str) -> Path:
    model = tmp_path / "mlp_onnx"
    shutil.copytree(example_models / "mlp_onnx", model)
    (model / "model.toml").write_text(toml)
    return model


def test_isolation_puts_an_onnx_model_in_a_worker(example_models: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(1).random((2, 784), dtype=np.float32)
    path = _onnx_copy(example_models, tmp_path, "")
    isolated = ModelCache(settings=Settings.from_env({}, isolate=True), warmup=False)
    local = ModelCache(settings=Settings.from_env({}), warmup=False)
    try:
        with isolated.lease(path) as leased:
            assert isinstance(leased.raw, WorkerModel)
            assert leased.raw.format == "onnx"
            remote = leased.predict(x)["probs"]
        with isolated.lease(path, workers=False) as leased:  # False wins over the settings
            assert not isinstance(leased.raw, WorkerModel)
        with local.lease(path) as leased:
            assert not isinstance(leased.raw, WorkerModel)
            np.testing.assert_allclose(remote, leased.predict(x)["probs"], rtol=1e-6)
    finally:
        isolated.close()
        local.close()


def test_a_repository_model_toml_puts_a_model_in_workers(
    example_models: Path, tmp_path: Path
) -> None:
    _onnx_copy(example_models, tmp_path, "[workers]\nprocesses = 2\nisolate = true\n")
    settings = Settings.from_env({}, watch=False, warmup__runs=0)
    with Repository(tmp_path, settings=settings) as repo:
        repo.wait_ready("mlp_onnx")
        with repo.lease("mlp_onnx") as leased:
            raw = leased.raw
            assert isinstance(raw, WorkerModel)
            assert len(raw.workers()) == 2
            assert leased.predict({"image": np.zeros((1, 784), np.float32)})["probs"].shape == (
                1,
                10,
            )
