"""``keepwarm.settings`` from the environment: every field from its variable, the short
names, bad values and unknown variables named; nothing else reads the environment; the
process-wide defaults keepwarm sets unless set (gRPC experiments, TF threads)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from keepwarm.errors import InvalidConfigError
from keepwarm.settings import (
    ALIASES,
    GRPC_EXPERIMENTS,
    TF_INTER_OP_THREADS,
    Settings,
    grpc_experiments,
    tensorflow_threads,
)
from keepwarm.settings_sections import FIELDS
from keepwarm.settings_values import ram_bytes

GiB = 1 << 30
RAM = ram_bytes()
SRC = Path(__file__).resolve().parents[2] / "src" / "keepwarm"


# One good text per field, as it would be written in an environment variable.
SAMPLES = {
    ("budget", "max_bytes"): ("2GiB", 2 * GiB),
    ("budget", "max_models"): ("4", 4),
    ("budget", "budget_timeout"): ("7.5", 7.5),
    ("budget", "patience"): ("0", 0.0),
    ("loading", "load_timeout"): ("12", 12.0),
    ("loading", "drain_timeout"): ("3", 3.0),
    ("loading", "retry_initial"): ("0.5", 0.5),
    ("loading", "retry_max"): ("9", 9.0),
    ("loading", "allow_unsafe"): ("yes", True),
    ("warmup", "runs"): ("0", 0),
    ("repository", "poll_seconds"): ("0.25", 0.25),
    ("repository", "watch"): ("off", False),
    ("repository", "on_demand"): ("true", True),
    ("downloads", "cache_dir"): ("/tmp/kw-cache", Path("/tmp/kw-cache")),
    ("downloads", "offline"): ("1", True),
    ("downloads", "cache_max_bytes"): ("300MB", 300_000_000),
    ("downloads", "max_extract_bytes"): ("1G", GiB),
    ("downloads", "http_timeout"): ("5", 5.0),
    ("server", "host"): ("0.0.0.0", "0.0.0.0"),
    ("server", "http_port"): ("9000", 9000),
    ("server", "grpc_port"): ("0", 0),
    ("server", "max_body_bytes"): ("1MiB", 1 << 20),
    ("server", "max_json_depth"): ("8", 8),
    ("server", "request_timeout_ms"): ("250", 250.0),
    ("server", "management_api"): ("on", True),
    ("server", "management_token"): ("s3cret", "s3cret"),
    ("server", "token_file"): ("/run/token", Path("/run/token")),
    ("server", "tls_cert"): ("/c.pem", Path("/c.pem")),
    ("server", "tls_key"): ("/k.pem", Path("/k.pem")),
    ("server", "model_control"): ("EXPLICIT", "explicit"),
    ("server", "strict_readiness"): ("1", True),
    ("server", "processes"): ("4", 4),
    ("server", "model_nice"): ("7", 7),
    ("server", "model_policy"): ("batch", "batch"),
    ("server", "model_priority_scope"): ("runtime", "runtime"),
    ("server", "keep_alive_timeout"): ("0.5", 0.5),
    ("server", "header_timeout"): ("2", 2.0),
    ("server", "body_timeout"): ("90", 90.0),
    ("server", "max_header_bytes"): ("16KiB", 16 << 10),
    ("server", "write_timeout"): ("1.5", 1.5),
    ("batching", "max_batch_size"): ("8", 8),
    ("batching", "max_delay_ms"): ("0.5", 0.5),
    ("batching", "max_queue"): ("16", 16),
    ("workers", "isolate"): ("yes", True),
    ("workers", "max_restarts"): ("0", 0),
    ("workers", "buffer_bytes"): ("8MiB", 8 << 20),
    ("workers", "max_buffer_bytes"): ("1GiB", GiB),
    ("workers", "start_timeout"): ("2.5", 2.5),
    ("workers", "ready_timeout"): ("90", 90.0),
    ("workers", "recycle_unreclaimed_bytes"): ("64MiB", 64 << 20),
    ("workers", "recycle_growth_bytes"): ("1GiB", GiB),
    ("workers", "memory_check_seconds"): ("0.5", 0.5),
}


def test_every_field_has_a_sample() -> None:
    assert set(SAMPLES) == {(s, k) for s, keys in FIELDS.items() for k in keys}


@pytest.mark.parametrize(("section", "key"), sorted(SAMPLES))
def test_every_field_reads_from_its_environment_variable(section: str, key: str) -> None:
    raw, value = SAMPLES[section, key]
    environ = {f"KEEPWARM_{section.upper()}__{key.upper()}": raw}
    if key in ("tls_cert", "tls_key"):  # they go in pairs
        environ["KEEPWARM_SERVER__TLS_CERT"] = environ["KEEPWARM_SERVER__TLS_KEY"] = raw
    assert getattr(getattr(Settings.from_env(environ), section), key) == value


@pytest.mark.parametrize("variable", sorted(ALIASES))
def test_every_short_variable_still_works(variable: str) -> None:
    section, key = ALIASES[variable]
    raw, value = SAMPLES[section, key]
    assert getattr(getattr(Settings.from_env({variable: raw}), section), key) == value


def test_legacy_share_of_ram_and_the_old_error() -> None:
    s = Settings.from_env({"KEEPWARM_MAX_BYTES": "0.5", "KEEPWARM_MAX_MODELS": "3"})
    assert s.budget.max_bytes == int(0.5 * RAM) and s.budget.max_models == 3
    with pytest.raises(InvalidConfigError, match="KEEPWARM_MAX_BYTES='lots': expected bytes"):
        Settings.from_env({"KEEPWARM_MAX_BYTES": "lots"})


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    [
        ("KEEPWARM_SERVER__HTTP_PORT", "http", "an integer from 0 to 65535"),
        ("KEEPWARM_SERVER__HTTP_PORT", "8501.5", "an integer from 0 to 65535"),
        ("KEEPWARM_SERVER__HTTP_PORT", "70000", "an integer from 0 to 65535"),
        ("KEEPWARM_OFFLINE", "maybe", "true or false"),
        ("KEEPWARM_MAX_MODELS", "0", "an integer >= 1"),
        ("KEEPWARM_MAX_MODELS", "2.5", "an integer >= 1"),
        ("KEEPWARM_LOADING__LOAD_TIMEOUT", "-1", "a number > 0"),
        ("KEEPWARM_LOADING__LOAD_TIMEOUT", "nan", "a number > 0"),
        ("KEEPWARM_REPOSITORY__POLL_SECONDS", "soon", "a number > 0"),
        # waits in C types overflowed: the poll thread died of an OverflowError
        ("KEEPWARM_REPOSITORY__POLL_SECONDS", "1e300", "a number > 0 (at most 1e+09)"),
        ("KEEPWARM_LOADING__LOAD_TIMEOUT", "1e300", "a number > 0 (at most 1e+09)"),
        ("KEEPWARM_SERVER__REQUEST_TIMEOUT_MS", "1e300", "(at most 1e+09)"),
        ("KEEPWARM_CACHE_MAX_BYTES", "-5GB", "expected bytes"),
        # every bucket up to it is warmed at load; 10**9 warmup runs kept a load busy
        ("KEEPWARM_BATCHING__MAX_BATCH_SIZE", "1000000", "an integer from 1 to 65536"),
        ("KEEPWARM_WARMUP__RUNS", "1000000000", "an integer from 0 to 1000"),
        # each check reads every worker's PSS (about 20 ms with TensorFlow): 1e-9 kept a
        # thread reading them back to back
        ("KEEPWARM_WORKERS__MEMORY_CHECK_SECONDS", "1e-9", "a number >= 0.1"),
    ],
)
def test_bad_environment_values_name_the_variable(variable: str, raw: str, expected: str) -> None:
    with pytest.raises(InvalidConfigError) as info:
        Settings.from_env({variable: raw})
    assert f"{variable}={raw!r}: expected" in str(info.value)
    assert expected in str(info.value)


def test_unknown_variables_are_errors_with_a_suggestion() -> None:
    with pytest.raises(InvalidConfigError, match="KEEPWARM_SERVER__HTTP_PORT"):
        Settings.from_env({"KEEPWARM_SERVER__HTTP_PROT": "1"})
    with pytest.raises(InvalidConfigError, match="KEEPWARM_MAX_BYTES"):
        Settings.from_env({"KEEPWARM_MAX_BYTE": "1G"})
    # other programs' variables, and empty ones, are not ours to judge
    assert Settings.from_env({"HOME": "/root", "KEEPWARM_MAX_BYTES": " "}) == Settings()


def test_a_short_and_a_long_variable_may_not_disagree() -> None:
    both = {"KEEPWARM_MAX_BYTES": "1GiB", "KEEPWARM_BUDGET__MAX_BYTES": "1024MiB"}
    assert Settings.from_env(both).budget.max_bytes == GiB  # the same value is fine
    both["KEEPWARM_BUDGET__MAX_BYTES"] = "2GiB"
    with pytest.raises(InvalidConfigError, match=r"both set budget\.max_bytes"):
        Settings.from_env(both)


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEPWARM_SERVER__HTTP_PORT", "9001")
    assert Settings.from_env().server.http_port == 9001


def test_nothing_outside_settings_reads_the_environment() -> None:
    readers = re.compile(r"os\.environ|getenv|environ\.get")
    found = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name != "settings.py" and readers.search(path.read_text())
    ]
    assert found == []


@pytest.mark.parametrize(
    ("default", "variable", "keepwarms", "chosen"),
    [
        (grpc_experiments, "GRPC_EXPERIMENTS", GRPC_EXPERIMENTS, "-event_engine_client"),
        (tensorflow_threads, "TF_NUM_INTEROP_THREADS", TF_INTER_OP_THREADS, "4"),
    ],
)
def test_process_defaults_are_keepwarms_unless_set(
    default: Callable[[dict[str, str]], str], variable: str, keepwarms: str, chosen: str
) -> None:
    unset: dict[str, str] = {}
    assert default(unset) == keepwarms == unset[variable]
    given = {variable: chosen}
    assert default(given) == chosen and given == {variable: chosen}
