"""``keepwarm.settings`` from files and overrides: precedence (defaults < file <
environment < overrides), every kind of value in a file, file errors naming the key and
the file, override forms; the management token is never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from keepwarm.errors import InvalidConfigError
from keepwarm.settings import (
    DownloadSettings,
    Settings,
)
from keepwarm.settings_values import ram_bytes

GiB = 1 << 30
RAM = ram_bytes()


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
        ("max_bytes = 1", ["max_bytes = 1", "outside any section", "under [budget]"]),
        ("max_byts = 1", ["unknown section 'max_byts'"]),
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
