"""Two processes resolving one URL share one download through the cross-process lock."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

SCRIPT = """
import sys
from pathlib import Path
from keepwarm.sources.resolve import resolve_uri
print("started", flush=True)
print(resolve_uri(sys.argv[1], cache_dir=Path(sys.argv[2])), flush=True)
"""


def test_two_processes_one_get(http_server, cache_dir: Path, savedmodel_targz: bytes) -> None:
    gate = threading.Event()
    url = http_server.add("/m.tar.gz", savedmodel_targz, gate=gate)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, url, str(cache_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "started"
        # One process is now inside the download, held at the server; the other either
        # waits on the entry's lock or is about to. Give it a moment to get there.
        assert http_server.received.wait(30)
        time.sleep(0.3)
        assert http_server.count() == 1
        gate.set()
        results = [proc.communicate(timeout=60) for proc in procs]
    finally:
        gate.set()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert [proc.returncode for proc in procs] == [0, 0], results
    paths = {out.strip() for out, _err in results}
    assert len(paths) == 1
    assert (Path(paths.pop()) / "saved_model.pb").is_file()
    assert http_server.count() == 1
