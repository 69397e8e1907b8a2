"""``ModelCache``, ``Repository`` and the CLI take one ``Settings``; arguments override it."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import keepwarm
from keepwarm.cli import main
from keepwarm.errors import InvalidConfigError
from keepwarm.settings import (
    BudgetSettings,
    DownloadSettings,
    LoadingSettings,
    RepositorySettings,
    Settings,
    WarmupSettings,
)
from keepwarm.settings_values import ram_bytes
from support.http_server import FakeServer, serve
from support.repo_builders import CountingPredict, Probe, place_python

GiB = 1 << 30


@pytest.fixture
def http_server() -> Iterator[FakeServer]:
    with serve() as fake:
        yield fake


@pytest.fixture
def onnx_targz(example_models: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(example_models / "mlp_onnx" / "1" / "model.onnx", arcname="model.onnx")
    return buffer.getvalue()


@pytest.fixture
def probe() -> Iterator[type[Probe]]:
    Probe.reset()
    yield Probe
    Probe.reset()


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("[!.]*.json")) if cache_dir.is_dir() else []


# ------------------------------------------------------------------ ModelCache


@pytest.mark.parametrize(
    ("given", "nbytes"),
    [(0.5, int(0.5 * ram_bytes())), ("50%", ram_bytes() // 2), ("8GiB", 8 * GiB)],
)
def test_model_cache_max_bytes_means_what_it_means_everywhere(
    tmp_path: Path, given: object, nbytes: int
) -> None:
    cache = keepwarm.ModelCache(max_bytes=given)  # type: ignore[arg-type]
    try:
        assert cache.manager.max_bytes == nbytes
        assert cache.settings.budget.max_bytes == nbytes
    finally:
        cache.close()
    with Repository_(tmp_path, max_bytes=given) as repo:
        assert repo.manager.max_bytes == nbytes


@pytest.mark.parametrize("given", [-1, 0, True, "lots", 1.5, 1.0])
def test_model_cache_refuses_bad_sizes_naming_the_argument(given: object) -> None:
    with pytest.raises(InvalidConfigError, match=rf"^max_bytes={given!r}: expected bytes"):
        keepwarm.ModelCache(max_bytes=given)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match=rf"^max_bytes={given!r}: expected bytes"):
        keepwarm.Repository("/nonexistent", max_bytes=given)  # type: ignore[arg-type]


def test_model_cache_takes_its_settings_and_arguments_override_them() -> None:
    settings = Settings(
        budget=BudgetSettings(max_models=2, budget_timeout=4.0, patience=0.5),
        loading=LoadingSettings(load_timeout=7.0, retry_initial=0.1, retry_max=2.0),
    )
    cache = keepwarm.ModelCache(settings=settings)
    try:
        manager = cache.manager
        assert (manager.max_models, manager.budget_timeout, manager.patience) == (2, 4.0, 0.5)
        assert manager.load_timeout == 7.0
        assert (manager.backoff.initial, manager.backoff.maximum) == (0.1, 2.0)
    finally:
        cache.close()
    cache = keepwarm.ModelCache(max_models=5, load_timeout=9.0, settings=settings)
    try:
        assert (cache.manager.max_models, cache.manager.load_timeout) == (5, 9.0)
        assert cache.manager.patience == 0.5  # the rest from the settings
    finally:
        cache.close()


def test_model_cache_reads_the_environment_unless_given_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEEPWARM_MAX_MODELS", "4")
    monkeypatch.setenv("KEEPWARM_BUDGET__BUDGET_TIMEOUT", "2.5")
    cache = keepwarm.ModelCache()
    explicit = keepwarm.ModelCache(settings=Settings())
    try:
        assert (cache.manager.max_models, cache.manager.budget_timeout) == (4, 2.5)
        assert (explicit.manager.max_models, explicit.manager.budget_timeout) == (None, 30.0)
    finally:
        cache.close()
        explicit.close()
    monkeypatch.setenv("KEEPWARM_MAX_MODELS", "four")
    with pytest.raises(InvalidConfigError, match="KEEPWARM_MAX_MODELS='four'"):
        keepwarm.ModelCache()
    with pytest.raises(InvalidConfigError, match=r"settings=\{'max_models': 4\}: expected"):
        keepwarm.ModelCache(settings={"max_models": 4})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("settings", "warmup", "calls"),
    [
        (Settings(warmup=WarmupSettings(runs=5)), None, 5),
        (Settings(warmup=WarmupSettings(runs=5)), True, 5),
        (Settings(warmup=WarmupSettings(runs=5)), False, 0),
        (Settings(), None, 3),
    ],
)
def test_model_cache_warms_up_as_its_settings_say(
    tmp_path: Path, probe: type[Probe], settings: Settings, warmup: bool | None, calls: int
) -> None:
    model_dir = tmp_path / "1"
    model_dir.mkdir()
    cache = keepwarm.ModelCache(settings=settings, warmup=warmup)
    try:
        cache.load(model_dir, options={"class": CountingPredict})
        assert probe.predicts[str(model_dir)] == calls
    finally:
        cache.close()
    with pytest.raises(InvalidConfigError, match="warmup='no'"):
        keepwarm.ModelCache(warmup="no")  # type: ignore[arg-type]


def test_model_cache_downloads_into_its_settings_cache_dir(
    tmp_path: Path, http_server: FakeServer, onnx_targz: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_env = tmp_path / "env-cache"
    mine = tmp_path / "my-cache"
    monkeypatch.setenv("KEEPWARM_CACHE_DIR", str(from_env))
    url = http_server.add("/mlp.tar.gz", onnx_targz)
    cache = keepwarm.ModelCache(settings=Settings(downloads=DownloadSettings(cache_dir=mine)))
    try:
        model = cache.load(url)
        assert model.signature.inputs[0].name == "image"
    finally:
        cache.close()
    assert len(_entries(mine)) == 1 and _entries(from_env) == []
    offline = Settings(downloads=DownloadSettings(cache_dir=from_env, offline=True))
    cache = keepwarm.ModelCache(settings=offline)
    try:
        with pytest.raises(keepwarm.ModelNotFoundError, match="offline"):
            cache.load(url)
    finally:
        cache.close()
    assert http_server.count() == 1


# ------------------------------------------------------------------ Repository


class Repository_:
    """A Repository that is made but never started (its constructor is what is tested)."""

    def __init__(self, root: Path, **kwargs: object) -> None:
        self.repo = keepwarm.Repository(root, **kwargs)  # type: ignore[arg-type]

    def __enter__(self) -> keepwarm.Repository:
        return self.repo

    def __exit__(self, *exc: object) -> None:
        self.repo.close()


def test_repository_takes_its_settings_and_arguments_override_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        repository=RepositorySettings(poll_seconds=0.5, watch=False, on_demand=True),
        loading=LoadingSettings(drain_timeout=2.0, allow_unsafe=True, load_timeout=8.0),
        budget=BudgetSettings(max_models=3),
    )
    with Repository_(tmp_path, settings=settings) as repo:
        assert (repo.poll_seconds, repo.on_demand, repo.allow_unsafe) == (0.5, True, True)
        assert (repo.drain_timeout, repo.manager.load_timeout) == (2.0, 8.0)
        assert repo.manager.max_models == 3
    overridden = Repository_(
        tmp_path, settings=settings, on_demand=False, poll_seconds=3, max_models=1
    )
    with overridden as repo:
        assert (repo.on_demand, repo.poll_seconds, repo.manager.max_models) == (False, 3.0, 1)
        assert repo.allow_unsafe
    monkeypatch.setenv("KEEPWARM_REPOSITORY__ON_DEMAND", "yes")
    monkeypatch.setenv("KEEPWARM_MAX_BYTES", "1GiB")
    with Repository_(tmp_path) as repo:
        assert repo.on_demand and repo.manager.max_bytes == GiB
    with pytest.raises(InvalidConfigError, match="poll_seconds=0: expected a number > 0"):
        keepwarm.Repository("/nonexistent", poll_seconds=0)


def test_repository_warms_up_and_allows_code_as_its_settings_say(
    tmp_path: Path, probe: type[Probe]
) -> None:
    version = place_python(tmp_path / "m", 1, "CountingPredict")
    settings = Settings(
        warmup=WarmupSettings(runs=4),
        loading=LoadingSettings(allow_unsafe=True),
        repository=RepositorySettings(watch=False),
    )
    with keepwarm.Repository(tmp_path, settings=settings) as repo:
        assert repo.wait_ready("m", timeout=30) == 1
    assert probe.predicts[str(version)] == 4


# ------------------------------------------------------------------ the CLI


def test_cli_builds_its_settings_from_flags_environment_and_file(
    tmp_path: Path,
    http_server: FakeServer,
    onnx_targz: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = http_server.add("/mlp.tar.gz", onnx_targz)
    from_file, from_env, from_flag = (tmp_path / name for name in ("file", "env", "flag"))
    config = tmp_path / "keepwarm.toml"
    config.write_text(f'[downloads]\ncache_dir = "{from_file}"\n')
    monkeypatch.delenv("KEEPWARM_CACHE_DIR")
    assert main(["inspect", url, "-q", "--config", str(config)]) == 0
    assert len(_entries(from_file)) == 1
    monkeypatch.setenv("KEEPWARM_CACHE_DIR", str(from_env))
    assert main(["inspect", url, "-q", "--config", str(config)]) == 0
    assert len(_entries(from_env)) == 1
    args = ["inspect", url, "-q", "--config", str(config), "--cache-dir", str(from_flag)]
    assert main(args) == 0
    assert len(_entries(from_flag)) == 1
    assert http_server.count() == 3
    assert main([*args, "--offline"]) == 0  # cached there: no download
    assert main(["inspect", url, "-q", "--cache-dir", str(tmp_path / "empty"), "--offline"]) == 2
    assert "offline" in capsys.readouterr().err
    assert http_server.count() == 3


def test_cli_reports_bad_settings_as_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "keepwarm.toml"
    config.write_text("[downloads]\ncache_dri = 'x'\n")
    assert main(["inspect", "whatever", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown key 'downloads.cache_dri'") and str(config) in err
    monkeypatch.setenv("KEEPWARM_OFFLINE", "perhaps")
    assert main(["inspect", "whatever"]) == 2
    assert "KEEPWARM_OFFLINE='perhaps': expected true or false" in capsys.readouterr().err
