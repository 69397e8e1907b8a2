"""What ``keepwarm serve`` checks before it starts anything: the repository API's token
and the TLS files, and that the repository is not one model's directory. Each problem is
an ``InvalidConfigError`` naming the setting. And why a port could not be bound, as the
system says it."""

from __future__ import annotations

import logging
import socket
import stat
from pathlib import Path

from keepwarm.errors import InvalidConfigError
from keepwarm.preload import TENSORFLOW_FILES, TENSORFLOW_SUFFIXES
from keepwarm.settings import ServerSettings, Settings

log = logging.getLogger("keepwarm.server")


def management_token(settings: Settings) -> str | None:
    """The repository API's token: ``KEEPWARM_MANAGEMENT_TOKEN`` or the token file's
    first line. None when the API is off; an error when it is on without a token."""
    server = settings.server
    if not server.management_api:
        if server.model_control == "explicit":
            raise InvalidConfigError(
                "--model-control explicit loads only what the repository API asks for: "
                "turn the API on (--management-api, with a token)"
            )
        if server.token_file is not None or server.management_token:
            given = "server.token_file" if server.token_file else "KEEPWARM_MANAGEMENT_TOKEN"
            log.warning(
                "%s is set but the repository API is off, so no token is used; turn the "
                "API on with --management-api (server.management_api)",
                given,
            )
        return None
    token = server.management_token
    if server.token_file is not None:
        token = _read_token(server.token_file)
    if not token:
        raise InvalidConfigError(
            "the management API is on but has no token: set KEEPWARM_MANAGEMENT_TOKEN or "
            "--token-file (never a flag: command lines are visible to every user)"
        )
    return token


def check_tls(server: ServerSettings) -> None:
    """The TLS files, read as the servers will read them: a bad one is an error naming
    both files before anything starts, not a traceback from the first server to use it."""
    if server.tls_cert is None or server.tls_key is None:
        return
    import ssl

    files = f"server.tls_cert {server.tls_cert} and server.tls_key {server.tls_key}"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(server.tls_cert, server.tls_key)
    except ssl.SSLError as exc:
        raise InvalidConfigError(
            f"{files}: expected a PEM certificate and its private key ({exc})"
        ) from None
    except OSError as exc:
        raise InvalidConfigError(f"{files}: cannot be read ({exc})") from None


def _read_token(path: Path) -> str:
    """The token file's first non-blank line; a warning when other users can read it (not
    an error: a Kubernetes secret is mounted 0644 unless told otherwise)."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidConfigError(f"server.token_file {path}: cannot read a token ({exc})") from None
    if not lines:
        raise InvalidConfigError(f"server.token_file {path}: it is empty; expected the token")
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "server.token_file %s can be read by other users (mode %03o): chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    return lines[0]


def bind_error(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (``[Errno 98] Address already in use``), or None
    when a probe binds it: grpcio's own error says only "Failed to bind to address ...;
    set GRPC_VERBOSITY=debug ...". The probe sets ``SO_REUSEADDR`` as grpcio does, so a
    listening socket is what it finds, not connections closing."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        return str(exc)
    return None


#: What makes a directory a model's version, as the runtimes detect it (by name alone:
#: importing the runtimes here would delay the server's start); TensorFlow's files as the
#: preload finds them.
_MODEL_NAMES = (*TENSORFLOW_FILES, "keepwarm.toml")
_MODEL_SUFFIXES = (*TENSORFLOW_SUFFIXES, ".onnx", ".pkl", ".pickle", ".joblib")


def check_repository_root(root: str) -> None:
    """Refuse a model's own directory given as the repository (TF Serving's
    ``--model_base_path`` names that one): its versions were taken as models without
    versions, ``1: no versions``, and the server started ready, serving nothing."""
    path = Path(root)
    if "://" in root or not path.is_dir():
        return  # a remote store, or a path the repository itself reports
    try:
        versions = sorted(
            int(entry.name)
            for entry in path.iterdir()
            if entry.name.isdigit() and entry.is_dir() and _holds_a_model(entry)
        )
    except OSError:
        return
    if versions:
        parent = path.absolute().parent
        raise InvalidConfigError(
            f"{root} is a model's directory (versions {', '.join(map(str, versions[:5]))}), "
            f"not a repository: serve the directory that holds <model>/<version>/, here "
            f"{parent}, where it is the model {path.absolute().name!r}"
        )


def _holds_a_model(directory: Path) -> bool:
    return any(
        entry.name in _MODEL_NAMES or entry.name.lower().endswith(_MODEL_SUFFIXES)
        for entry in directory.iterdir()
    )
