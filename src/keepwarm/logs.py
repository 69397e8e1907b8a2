"""Logs as JSON lines: one record per event, control characters escaped (JSON does it)."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True)


def configure_json_logs(level: int = logging.INFO) -> None:
    """Send keepwarm's and uvicorn's logs to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    for name in ("keepwarm", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


# Native libraries' start-up lines (TensorFlow, XLA, absl): glog-style info and warning
# lines, absl's notice, and the CUDA probe's error on a machine without a GPU, printed
# before any logging can be configured. Other native errors pass.
_CHATTER = re.compile(
    rb"^(?:[IW]\d{4} \d\d:\d\d:\d\d"
    rb"|E\d{4} \d\d:\d\d:\d\d\S* +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit"
    rb"|WARNING: All log messages before absl|To enable the following instructions:)"
)


def is_native_chatter(line: bytes) -> bool:
    """True for one of the native libraries' start-up lines (see ``_CHATTER``)."""
    return _CHATTER.match(line) is not None


def quiet_native_chatter() -> Callable[[], None]:
    """Route file descriptor 2 through a thread that drops native libraries' start-up
    chatter (which no environment variable silences) and passes every other line on.
    Returns ``restore``: puts file descriptor 2 back once every line has passed."""
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as source:
            pending = b""
            while chunk := source.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = b"".join(line + b"\n" for line in lines if not _CHATTER.match(line))
                if kept:
                    os.write(original, kept)
            if pending and not _CHATTER.match(pending):
                os.write(original, pending)

    thread = threading.Thread(target=pump, name="keepwarm-stderr", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the pump sees its end
        thread.join(timeout=5)
        os.close(original)

    return restore
