"""``keepwarm.settings``: defaults, parsing, files, the environment, precedence."""

from __future__ import annotations

import dataclasses
import pickle
import re
from pathlib import Path

import pytest

import keepwarm
from keepwarm.errors import InvalidConfigError
from keepwarm.settings import (
    ALIASES,
    GRPC_EXPERIMENTS,
    TF_INTER_OP_THREADS,
    BudgetSettings,
    DownloadSettings,
    LoadingSettings,
    ServerSettings,
    Settings,
    grpc_experiments,
    parse_bytes,
    tensorflow_threads,
)
from keepwarm.settings_sections import FIELDS
from keepwarm.settings_values import ram_bytes

GiB = 1 << 30
RAM = ram_bytes()
SRC = Path(__file__).resolve().parents[2] / "src" / "keepwarm"


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
     float("nan"), float("inf"), -0.5, [1], "", "0.0001B", "1e9", "lots%"],
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
        ("KEEPWARM_CACHE_MAX_BYTES", "-5GB", "expected bytes"),
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


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keepwarm.toml"
    path.write_text(text)
    return path


def test_precedence_defaults_file_environment_overrides(tmp_path: Path) -> None:
    file = _write(tmp_path, '[budget]\nmax_bytes = "1GiB"\nmax_models = 2\n[server]\nhttp_port = 1')
    assert Settings.load(file).budget.max_bytes == GiB
    s = Settings.load(file, {"KEEPWARM_MAX_BYTES": "2GiB", "KEEPWARM_SERVER__HTTP_PORT": "2"})
    assert (s.budget.max_bytes, s.budget.max_models, s.server.http_port) == (2 * GiB, 2, 2)
    s = Settings.load(
        file, {"KEEPWARM_MAX_BYTES": "2GiB"}, {"max_bytes": "3GiB", "http_port": None}
    )
    assert (s.budget.max_bytes, s.server.http_port) == (3 * GiB, 1)  # None: not given
    assert Settings.load(environ={}).budget.max_bytes is None  # the default


def test_a_file_holds_every_kind_of_value(tmp_path: Path) -> None:
    file = _write(
        tmp_path,
        """
        [budget]
        max_bytes = 0.5
        [downloads]
        cache_dir = "~/kw"
        offline = true
        cache_max_bytes = 1_000_000
        [server]
        request_timeout_ms = 20
        model_control = "explicit"
        """,
    )
    s = Settings.load(file, {})
    assert s.budget.max_bytes == int(0.5 * RAM)
    assert s.downloads.cache_dir == Path("~/kw").expanduser() and s.downloads.offline
    assert s.downloads.cache_max_bytes == 1_000_000
    assert s.server.request_timeout_ms == 20.0 and s.server.model_control == "explicit"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[budget]\nmax_byts = 1", ["unknown key 'budget.max_byts'", "budget.max_bytes"]),
        ("[budgets]\nmax_bytes = 1", ["unknown section 'budgets'", "budget"]),
        ("max_bytes = 1", ["unknown section 'max_bytes'"]),
        ("budget = 3", ["budget = 3", "expected a table [budget]"]),
        ("[server]\nhttp_port = '80'x", ["not valid TOML"]),
        ('[server]\nhttp_port = "eighty"', ["server.http_port in", "'eighty'", "an integer"]),
        ("[server]\nhttp_port = 80.0", ["server.http_port in", "80.0"]),
        ("[repository]\nwatch = 1", ["repository.watch in", "true or false"]),
        ("[budget]\nmax_bytes = -1", ["budget.max_bytes in", "-1", "expected bytes"]),
        ('[server]\nmanagement_token = "x"', ["secret", "KEEPWARM_MANAGEMENT_TOKEN"]),
    ],
)
def test_file_errors_name_the_key_and_the_file(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    file = _write(tmp_path, text)
    with pytest.raises(InvalidConfigError) as info:
        Settings.load(file, {})
    message = str(info.value)
    assert str(file) in message
    for needle in needles:
        assert needle in message


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="cannot be read"):
        Settings.load(tmp_path / "nope.toml", {})


def test_override_forms() -> None:
    base = Settings()
    assert base.override() is base
    assert base.override(max_bytes="1GiB").budget.max_bytes == GiB
    assert base.override(budget__max_bytes="1GiB").budget.max_bytes == GiB
    assert base.override(budget={"max_bytes": "1GiB"}).budget.max_bytes == GiB
    assert base.override({"server__http_port": 1}).server.http_port == 1
    whole = base.override(downloads=DownloadSettings(offline=True))
    assert whole.downloads.offline and whole.budget == base.budget
    with pytest.raises(InvalidConfigError, match="unknown setting 'max_byte'"):
        base.override(max_byte=1)
    with pytest.raises(InvalidConfigError, match=r"unknown setting 'budget\.nope'"):
        base.override(budget={"nope": 1})
    with pytest.raises(InvalidConfigError, match=r"max_bytes=1\.5: expected bytes"):
        base.override(max_bytes=1.5)
    with pytest.raises(InvalidConfigError, match="budget=3"):
        base.override(budget=3)


def test_the_token_is_never_shown() -> None:
    s = Settings.from_env({"KEEPWARM_MANAGEMENT_TOKEN": "hunter2"})
    assert s.server.management_token == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.to_dict())
    assert s.to_dict()["server"]["management_token"] == "(set)"


def test_nothing_outside_settings_reads_the_environment() -> None:
    readers = re.compile(r"os\.environ|getenv|environ\.get")
    found = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name != "settings.py" and readers.search(path.read_text())
    ]
    assert found == []


def test_grpc_experiments_are_keepwarms_unless_set() -> None:
    unset: dict[str, str] = {}
    assert grpc_experiments(unset) == GRPC_EXPERIMENTS == unset["GRPC_EXPERIMENTS"]
    chosen = {"GRPC_EXPERIMENTS": "-event_engine_client"}
    assert grpc_experiments(chosen) == "-event_engine_client"
    assert chosen == {"GRPC_EXPERIMENTS": "-event_engine_client"}


def test_tensorflow_inter_op_threads_are_keepwarms_unless_set() -> None:
    unset: dict[str, str] = {}
    assert tensorflow_threads(unset) == TF_INTER_OP_THREADS == unset["TF_NUM_INTEROP_THREADS"]
    chosen = {"TF_NUM_INTEROP_THREADS": "4"}
    assert tensorflow_threads(chosen) == "4"
    assert chosen == {"TF_NUM_INTEROP_THREADS": "4"}
