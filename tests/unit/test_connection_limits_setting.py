"""``[server]`` connection limits (``keep_alive_timeout``, ``header_timeout``,
``body_timeout``, ``max_header_bytes``): read from flags, the environment and the file,
and careless values refused naming the setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keepwarm.cli import build_parser
from keepwarm.cli_serve import serve_settings
from keepwarm.errors import InvalidConfigError
from keepwarm.settings import Settings

TIMEOUTS = ("keep_alive_timeout", "header_timeout", "body_timeout", "write_timeout")


def test_the_defaults_are_the_limits_before_they_were_settings() -> None:
    server = Settings.load(environ={}).server
    limits = (server.keep_alive_timeout, server.header_timeout, server.body_timeout)
    assert limits == (5.0, 30.0, 30.0) and server.max_header_bytes == 64 * 1024
    assert server.write_timeout == 30.0


def test_flags_over_environment_over_file(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        "[server]\nkeep_alive_timeout = 2\nheader_timeout = 3\nbody_timeout = 4.5\n"
        "max_header_bytes = '8KiB'\n"
    )
    args = ["serve", "--config", str(config)]
    from_file = serve_settings(build_parser().parse_args(args), {}).server
    assert (from_file.keep_alive_timeout, from_file.header_timeout) == (2.0, 3.0)
    assert (from_file.body_timeout, from_file.max_header_bytes) == (4.5, 8192)
    environ = {"KEEPWARM_SERVER__HEADER_TIMEOUT": "7", "KEEPWARM_SERVER__MAX_HEADER_BYTES": "4096"}
    from_env = serve_settings(build_parser().parse_args(args), environ).server
    assert (from_env.header_timeout, from_env.max_header_bytes) == (7.0, 4096)
    flags = [*args, "--header-timeout", "0.5", "--max-header-bytes", "2KiB"]
    flags += ["--keep-alive-timeout", "1", "--body-timeout", "60", "--write-timeout", "9"]
    from_flags = serve_settings(build_parser().parse_args(flags), environ).server
    assert from_flags.write_timeout == 9.0
    assert (from_flags.header_timeout, from_flags.max_header_bytes) == (0.5, 2048)
    assert (from_flags.keep_alive_timeout, from_flags.body_timeout) == (1.0, 60.0)


@pytest.mark.parametrize("key", TIMEOUTS)
@pytest.mark.parametrize(
    "value", [0, -1, "0", "-0.5", "nan", "inf", "1e9", 86400.5, "soon", True, [], ""]
)
def test_a_timeout_that_is_not_a_positive_number_up_to_a_day_is_refused(
    key: str, value: object
) -> None:
    with pytest.raises(InvalidConfigError) as info:
        Settings.load(environ={}, overrides={f"server__{key}": value})
    assert f"server__{key}={value!r}: expected a number > 0 and <= 86400" in str(info.value)


@pytest.mark.parametrize(
    "value", [0, 100, 1023, "50%", 0.5, "none", "17MiB", 1 << 40, 1.5, True, "x", ""]
)
def test_a_header_limit_that_is_not_a_size_from_1_kib_to_16_mib_is_refused(
    value: object,
) -> None:
    with pytest.raises(InvalidConfigError) as info:
        Settings.load(environ={}, overrides={"server__max_header_bytes": value})
    assert "expected a size in bytes from 1024 to 16777216" in str(info.value)


def test_bad_values_from_the_environment_and_the_file_name_where_they_came_from(
    tmp_path: Path,
) -> None:
    with pytest.raises(InvalidConfigError, match="KEEPWARM_SERVER__BODY_TIMEOUT='-3'"):
        Settings.load(environ={"KEEPWARM_SERVER__BODY_TIMEOUT": "-3"})
    config = tmp_path / "server.toml"
    config.write_text("[server]\nmax_header_bytes = 'lots'\n")
    with pytest.raises(InvalidConfigError, match=re.escape(f"server.max_header_bytes in {config}")):
        Settings.load(config, environ={})
    config.write_text("[server]\nheader_timeout = true\n")
    with pytest.raises(InvalidConfigError, match=r"server\.header_timeout in"):
        Settings.load(config, environ={})
