"""Two processes resolving one URL share one download through the cross-process lock."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

WAIT_S = 30.0
WAITING = "waiting for the lock"
SCRIPT = f"""
import logging
import sys
from pathlib import Path
from keepwarm.sources.resolve import resolve_uri


class Waiting(logging.Handler):
    # filelock logs, at DEBUG, each attempt that finds its lock held by another.
    said = False

    def emit(self, record):
        if "not acquired" in record.getMessage() and not self.said:
            self.said = True
            print({WAITING!r}, flush=True)


logging.getLogger("filelock").setLevel(logging.DEBUG)
logging.getLogger("filelock").addHandler(Waiting())
print("started", flush=True)
print(resolve_uri(sys.argv[1], cache_dir=Path(sys.argv[2])), flush=True)
"""


class Output:
    """Every line the processes print, read as it comes (each by a thread of its own)."""

    def __init__(self, streams: list[IO[str]]) -> None:
        self.lines: list[list[str]] = [[] for _ in streams]
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in zip(streams, self.lines, strict=True)
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            with self._cond:
                lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_printed(self, line: str, processes: int) -> bool:
        """Wait until ``processes`` of the processes have printed ``line``."""
        with self._cond:
            return self._cond.wait_for(
                lambda: sum(line in lines for lines in self.lines) >= processes, WAIT_S
            )

    def join(self) -> list[list[str]]:
        for thread in self._threads:
            thread.join(WAIT_S)
        return self.lines


def test_two_processes_one_get(
    http_server, cache_dir: Path, savedmodel_targz: bytes, tmp_path: Path
) -> None:
    gate = threading.Event()
    url = http_server.add("/m.tar.gz", savedmodel_targz, gate=gate)
    with (tmp_path / "stderr").open("w+") as stderr:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", SCRIPT, url, str(cache_dir)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            for _ in range(2)
        ]
        output = Output([proc.stdout for proc in procs if proc.stdout is not None])
        try:
            assert output.wait_printed("started", 2)
            # One process is inside the download, held at the server, and the other is
            # waiting for the entry's lock: only then can the second GET be ruled out.
            assert http_server.received.wait(WAIT_S)
            assert output.wait_printed(WAITING, 1), output.lines
            assert http_server.count() == 1
            gate.set()
            codes = [proc.wait(timeout=60) for proc in procs]
        finally:
            gate.set()
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            lines = output.join()  # the readers end at the end of the processes' output
            for proc in procs:
                if proc.stdout is not None:
                    proc.stdout.close()
        stderr.seek(0)
        assert codes == [0, 0], stderr.read()
    paths = {printed[-1] for printed in lines}
    assert len(paths) == 1
    assert (Path(paths.pop()) / "saved_model.pb").is_file()
    assert http_server.count() == 1
