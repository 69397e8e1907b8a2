"""The limit of the MLP at concurrency 1: ``keepwarm.load(model).predict`` called in the
benchmark's own process, back to back on one thread, rotating the benches' 8 inputs (the
same ``inputs`` as the bodies ``wrk`` sends). Shared by ``bench/c1_floor.py`` (its
``direct`` sides) and ``bench/c1_rounds.py`` (issue 7's c=1 target in ``bench/serve.py``)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from served import inputs
from wrk_load import BODIES

MODEL = "mlp"


class Direct:
    """The limit: ``keepwarm.load(model).predict`` in this process, one thread; with
    ``pause`` (seconds) a sleep before each call, untimed: a lone client's calls come
    that far apart (its round trip), and TensorFlow's compute thread and the caches
    cool meanwhile (the MLP: ~70 us back to back, ~90-115 us after 0.2 ms)."""

    def __init__(
        self, model_dir: Path, options: dict[str, Any] | None = None, pause: float = 0.0
    ) -> None:
        import keepwarm

        self.pause = pause
        cache = keepwarm.ModelCache()  # each side its own load of the model
        self.model = keepwarm.load(str(model_dir), options=options, cache=cache)
        self.xs = inputs(MODEL, BODIES)
        for x in self.xs:
            self.model.predict(x)

    def run(self, seconds: float) -> dict[str, float]:
        times: list[float] = []
        cpu = time.process_time()
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            if self.pause:
                time.sleep(self.pause)
            start = time.perf_counter()
            self.model.predict(self.xs[len(times) % len(self.xs)])
            times.append(time.perf_counter() - start)
        used = time.process_time() - cpu
        median = statistics.median(times)
        return {"rps": len(times) / seconds, "p50_ms": median * 1e3,
                "p99_ms": sorted(times)[int(len(times) * 0.99)] * 1e3, "failed": 0,
                "cpu_us": used / len(times) * 1e6, "call_us": median * 1e6}  # fmt: skip
