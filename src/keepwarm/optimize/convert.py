"""Run work in a child process (``keepwarm.optimize.child``), bounded by a timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from keepwarm.errors import ConversionError, DeadlineExceededError
from keepwarm.optimize.child import ConversionRequest, OptimizeRequest

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # holds ``keepwarm/``
_NO_LIMIT_SECONDS = 365 * 86400.0
_CHILD = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from keepwarm.optimize.child import main; sys.exit(main(sys.argv[2:]))"
)


def run_conversion(request: ConversionRequest, timeout: float) -> float:
    """Convert as ``request`` says in a child process; return the child's seconds.

    ``DeadlineExceededError`` when it does not finish within ``timeout`` seconds (it is
    killed), ``ConversionError`` with the child's own error when it fails or dies."""
    result = _run_child("convert", request.to_json(), Path(request.result), timeout, request.source)
    return float(result["seconds"])


def run_optimize(request: OptimizeRequest, timeout: float) -> None:
    """``optimize`` as ``request`` says, converting and checking in one child process (the
    caller imports no framework and loads no source model); the report is written to
    ``request.report``. Errors as ``run_conversion``'s."""
    _run_child("optimize", request.to_json(), Path(request.result), timeout, request.source)


def _run_child(mode: str, request: str, result_file: Path, timeout: float, what: str) -> Any:
    request_file = result_file.with_name(f"{mode}-request.json")
    request_file.write_text(request)
    started = time.monotonic()
    parent = str(os.getpid())
    try:
        done = subprocess.run(
            # -c, not -m: the child imports this very keepwarm, wherever it is installed or
            # checked out (its environment is this process's, as it is)
            # the last argument: this process's id (the child ends when this process does)
            [sys.executable, "-c", _CHILD, str(_PACKAGE_ROOT), mode, str(request_file), parent],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            # past a year: no limit (subprocess overflows on a timeout near 1e300 s)
            timeout=None if timeout > _NO_LIMIT_SECONDS else timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DeadlineExceededError(
            f"converting {what} did not finish within {timeout:g} s (the conversion process "
            "was stopped); raise the timeout for a large model"
        ) from exc
    try:
        result = json.loads(result_file.read_text())
    except (OSError, ValueError):
        tail = "\n".join(done.stderr.strip().splitlines()[-5:]) or "no output"
        raise ConversionError(
            f"the conversion of {what} died (exit code {done.returncode}) after "
            f"{time.monotonic() - started:.1f} s: {tail}",
            format="onnx",
        ) from None
    if not result.get("ok"):
        raise ConversionError(
            f"cannot convert {what} to ONNX: {result.get('error')}", format="onnx"
        )
    return result
