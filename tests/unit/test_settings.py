"""``keepwarm.settings``: defaults and parsing; the environment is in
``test_settings_env.py``, files, precedence and overrides in ``test_settings_files.py``."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

import keepwarm
from keepwarm.errors import InvalidConfigError
from keepwarm.settings import (
    BudgetSettings,
    LoadingSettings,
    ServerSettings,
    Settings,
    parse_bytes,
)
from keepwarm.settings_values import ram_bytes

GiB = 1 << 30
RAM = ram_bytes()


def test_defaults_are_the_contract() -> None:
    s = Settings()
    assert (s.budget.max_bytes, s.budget.max_models) == (None, None)
    assert (s.budget.budget_timeout, s.budget.patience) == (30.0, 1.0)
    assert s.loading == LoadingSettings(300.0, 30.0, 1.0, 300.0, False)
    assert s.warmup.runs == 3
    assert (s.repository.poll_seconds, s.repository.watch, s.repository.on_demand) == (
        1.0,
        True,
        False,
    )
    d = s.downloads
    assert (d.cache_dir, d.offline, d.cache_max_bytes, d.max_extract_bytes) == (
        None,
        False,
        None,
        8 * GiB,
    )
    v = s.server
    assert (v.host, v.http_port, v.grpc_port) == ("127.0.0.1", 8501, 8500)
    assert (v.max_body_bytes, v.max_json_depth, v.request_timeout_ms) == (64 << 20, 64, None)
    assert (v.management_api, v.token_file, v.tls_cert, v.tls_key) == (False, None, None, None)
    assert (v.model_control, v.strict_readiness) == ("poll", False)
    assert (s.batching.max_batch_size, s.batching.max_delay_ms, s.batching.max_queue) == (
        32,
        5.0,
        256,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.budget.max_bytes = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("given", "nbytes"),
    [
        (123, 123),
        ("123", 123),
        (" 8GiB ", 8 * GiB),
        ("8gib", 8 * GiB),
        ("512MB", 512_000_000),
        ("512M", 512 << 20),
        ("1.5G", int(1.5 * GiB)),
        ("2KiB", 2048),
        ("10 B", 10),
        (8e9, 8_000_000_000),
        ("50%", RAM // 2),
        ("100%", RAM),
        (0.5, int(0.5 * RAM)),
        ("0.25", int(0.25 * RAM)),
        (None, None),
        ("none", None),
    ],
)
def test_parse_bytes_accepts(given: object, nbytes: int | None) -> None:
    result = parse_bytes(given)
    assert result == nbytes or (result is not None and nbytes is not None and result - nbytes <= 1)


@pytest.mark.parametrize(
    "given",
    [-1, 0, True, False, "lots", 1.5, 1.0, "1.0", "1.5", "0", "-3", "0%", "150%", "GiB", "8XB",
     float("nan"), float("inf"), -0.5, [1], "", "0.0001B", "1e9", "lots%", "1.5b", "2.5 B"],
)  # fmt: skip
def test_parse_bytes_refuses(given: object) -> None:
    with pytest.raises(InvalidConfigError) as info:
        parse_bytes(given)
    message = str(info.value)
    assert repr(given) in message and "expected bytes" in message and "share of RAM" in message


def test_parse_bytes_names_what_it_parses() -> None:
    with pytest.raises(InvalidConfigError, match=r"^--max-bytes='x': expected bytes"):
        parse_bytes("x", name="--max-bytes")


def test_settings_cross_process_boundaries_as_they_are() -> None:
    s = Settings.from_env({"KEEPWARM_CACHE_DIR": "/tmp/kw", "KEEPWARM_MAX_BYTES": "50%"})
    assert pickle.loads(pickle.dumps(s)) == s
    assert keepwarm.Settings is Settings


def test_one_point_zero_is_ambiguous_and_says_how_to_mean_all_of_ram() -> None:
    with pytest.raises(InvalidConfigError, match="100%"):
        BudgetSettings(max_bytes=1.0)


def test_a_section_parses_its_fields_and_names_them() -> None:
    assert BudgetSettings(max_bytes="50%").max_bytes == pytest.approx(RAM // 2, abs=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError, match=r"budget\.max_bytes=-1: expected bytes"):
        BudgetSettings(max_bytes=-1)
    with pytest.raises(InvalidConfigError, match=r"server\.http_port=70000: expected an integer"):
        ServerSettings(http_port=70000)
    with pytest.raises(InvalidConfigError, match=r"loading\.load_timeout=0: expected a number > 0"):
        LoadingSettings(load_timeout=0)
    with pytest.raises(InvalidConfigError, match=r"retry_initial=0: expected a number > 0"):
        LoadingSettings(retry_initial=0)  # a failing load would be retried in a busy loop
    with pytest.raises(InvalidConfigError, match="retry_max >= retry_initial"):
        LoadingSettings(retry_initial=10, retry_max=5)
    with pytest.raises(InvalidConfigError, match="both or neither"):
        ServerSettings(tls_cert=Path("cert.pem"))
    with pytest.raises(InvalidConfigError, match="'poll' or 'explicit'"):
        ServerSettings(model_control="sometimes")
