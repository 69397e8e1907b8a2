"""``keepwarm serve`` flags become Settings: flags over environment over file over defaults."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from keepwarm.cli import build_parser
from keepwarm.cli_serve import serve_settings
from keepwarm.errors import InvalidConfigError
from keepwarm.settings import Settings


def settings_for(*argv: str, environ: dict[str, str] | None = None) -> Settings:
    return serve_settings(build_parser().parse_args(["serve", *argv]), environ or {})


def test_defaults_and_flags(tmp_path: Path) -> None:
    settings = settings_for()
    assert settings.server.host == "127.0.0.1" and settings.server.http_port == 8501
    args = build_parser().parse_args(
        ["serve", "models", "--port", "9001", "--on-demand", "--max-bytes", "1GiB",
         "--model-control", "explicit", "--strict-readiness", "--no-watch"]
    )  # fmt: skip
    assert args.repo == "models"
    settings = serve_settings(args, {})
    assert settings.server.http_port == 9001
    assert settings.server.model_control == "explicit" and settings.server.strict_readiness
    assert settings.repository.on_demand and not settings.repository.watch
    assert settings.budget.max_bytes == 1 << 30
    assert build_parser().parse_args(["serve", "--http-port", "7"]).http_port == 7


def test_flags_over_environment_over_file(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("[server]\nhttp_port = 9003\nhost = '0.0.0.0'\nmax_json_depth = 10\n")
    environ = {"KEEPWARM_SERVER__HTTP_PORT": "9002", "KEEPWARM_SERVER__HOST": "127.0.0.2"}
    from_file = settings_for("--config", str(config))
    assert from_file.server.http_port == 9003 and from_file.server.max_json_depth == 10
    from_env = settings_for("--config", str(config), environ=environ)
    assert from_env.server.http_port == 9002 and from_env.server.host == "127.0.0.2"
    from_flag = settings_for("--config", str(config), "--port", "9001", environ=environ)
    assert from_flag.server.http_port == 9001 and from_flag.server.host == "127.0.0.2"


def test_unknown_keys_in_the_file_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("[server]\nhttp_prot = 1\n")
    with pytest.raises(InvalidConfigError, match="http_prot"):
        settings_for("--config", str(config))


def test_a_bad_flag_exits_2_with_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    from keepwarm.cli import main

    assert main(["serve", ".", "--max-bytes", "lots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "max_bytes" in err


def test_the_management_token_never_comes_from_a_flag() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--management-token", "x"])


def test_grpc_port_flag_over_environment() -> None:
    assert settings_for().server.grpc_port == 8500
    environ = {"KEEPWARM_SERVER__GRPC_PORT": "9500"}
    assert settings_for(environ=environ).server.grpc_port == 9500
    assert settings_for("--grpc-port", "0", environ=environ).server.grpc_port == 0


def test_an_empty_token_file_is_said_to_be_empty(tmp_path: Path) -> None:
    from keepwarm.server import management_token

    token_file = tmp_path / "token"
    token_file.write_text("\n  \n")  # was "cannot read a token (list index out of range)"
    settings = settings_for("--management-api", "--token-file", str(token_file))
    with pytest.raises(InvalidConfigError, match=f"server.token_file {token_file}: it is empty"):
        management_token(settings)


def test_a_token_file_other_users_can_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from keepwarm.server import management_token

    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    settings = settings_for("--management-api", "--token-file", str(token_file))
    token_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="keepwarm.server"):
        assert management_token(settings) == "s3cret"  # served (a mounted secret is 0644)
    assert f"server.token_file {token_file} can be read by other users" in caplog.text
    caplog.clear()
    token_file.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="keepwarm.server"):
        assert management_token(settings) == "s3cret"
    assert caplog.text == ""


def test_a_token_with_the_api_off_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A token file given without --management-api was ignored silently: a user who
    expected the repository API on found it answering 404/403."""
    from keepwarm.server import management_token

    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    token_file.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="keepwarm.server"):
        assert management_token(settings_for("--token-file", str(token_file))) is None
    assert "server.token_file is set but the repository API is off" in caplog.text
    assert "--management-api" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keepwarm.server"):
        assert management_token(settings_for()) is None  # nothing given: nothing said
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--http-port", "70000"], "--http-port 70000 (server.http_port): expected an integer"),
        (["--grpc-port", "-1"], "--grpc-port -1 (server.grpc_port): expected an integer"),
        (["--poll-seconds", "nan"], "--poll-seconds nan (repository.poll_seconds): expected"),
        (["--max-bytes", "lots"], "--max-bytes 'lots' (budget.max_bytes): expected bytes"),
    ],
)
def test_a_bad_flag_is_named_as_it_was_typed(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from keepwarm.cli import main

    # was "server__http_port=70000", a spelling the user never typed
    assert main(["serve", ".", *argv]) == 2
    assert capsys.readouterr().err.startswith(f"error: {said}")


def test_one_port_for_rest_and_grpc_is_refused() -> None:
    # was: REST bound, then "gRPC port 9000: Failed to bind ...; set GRPC_VERBOSITY=debug"
    with pytest.raises(InvalidConfigError, match=r"http_port and server\.grpc_port are both 9000"):
        settings_for("--port", "9000", "--grpc-port", "9000")
    environ = {"KEEPWARM_SERVER__GRPC_PORT": "8501"}
    with pytest.raises(InvalidConfigError, match="both 8501"):
        settings_for(environ=environ)  # the default REST port
    assert settings_for("--port", "0", "--grpc-port", "0").server.grpc_port == 0  # any two


@pytest.mark.parametrize(
    ("flag", "variable"),
    [
        ("--max-body-bytes", "KEEPWARM_SERVER__MAX_BODY_BYTES"),
        (None, "KEEPWARM_DOWNLOADS__MAX_EXTRACT_BYTES"),
        (None, "KEEPWARM_WORKERS__BUFFER_BYTES"),
        (None, "KEEPWARM_WORKERS__MAX_BUFFER_BYTES"),
    ],
)
def test_a_limit_that_must_hold_names_the_source_of_none(flag: str | None, variable: str) -> None:
    # was "server.max_body_bytes=None: expected a size in bytes" (neither the flag nor the
    # variable named), after an error for 'lots' that listed 'none' as accepted
    for argv, environ, source in [
        ([flag, "none"] if flag else [], {} if flag else {variable: "none"}, flag or variable),
        ([], {variable: "lots"}, variable),
    ]:
        with pytest.raises(InvalidConfigError) as info:
            settings_for(*argv, environ=environ)
        said = str(info.value)
        assert said.startswith(source) and "expected bytes" in said, said
        assert "none" not in said.partition("expected")[2], said
    assert settings_for(environ={variable: "8MiB"}) is not None


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_number_that_is_not_finite_is_said_to_be_so(value: str) -> None:
    # was "--drain-timeout inf (loading.drain_timeout): expected a number >= 0"
    with pytest.raises(InvalidConfigError) as info:
        settings_for("--drain-timeout", value)
    assert str(info.value).endswith("expected a number >= 0 (a finite one)"), info.value
    with pytest.raises(InvalidConfigError, match=r"a number > 0 and <= 86400 \(a finite one\)$"):
        settings_for(environ={"KEEPWARM_SERVER__WRITE_TIMEOUT": value})
