"""LitServe as a peer: one ``LitAPI`` per model at ``/predict/<model>`` (two paths that
both end in ``/infer`` confuse its readiness check), loading the SavedModel and calling its
``serving_default`` signature. It takes the v2 JSON body the other peers take and answers
with a v2-like ``{"outputs": [...]}``. Batching is LitServe's own (``max_batch_size``,
``batch_timeout``, set on the API: LitServer's parameters of those names are deprecated).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from peers import Batching, free_port, run_app, stop_group, venv

LITSERVE_PINS = ("litserve==0.2.19", "tensorflow==2.21.0")
APP = """
import json
import sys

import litserve as ls
import numpy as np


class SavedModelAPI(ls.LitAPI):
    def __init__(self, name, path, max_batch_size, batch_timeout):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout,
                         api_path="/predict/" + name)
        self.path = path

    def setup(self, device):
        import tensorflow as tf

        self.tf = tf
        self.loaded = tf.saved_model.load(self.path)
        self.fn = self.loaded.signatures["serving_default"]
        self.input = next(iter(self.fn.structured_input_signature[1]))
        spec = self.fn.structured_input_signature[1][self.input]
        self.fn(**{self.input: tf.zeros([1, *spec.shape.as_list()[1:]], tf.float32)})

    def decode_request(self, request):
        tensor = request["inputs"][0]
        return np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])

    def batch(self, inputs):
        return np.concatenate(inputs)

    def predict(self, x):
        out = self.fn(**{self.input: self.tf.constant(x)})
        return next(iter(out.values())).numpy()

    def unbatch(self, output):  # one row per request: the benchmark sends single rows
        return [output[i : i + 1] for i in range(len(output))]

    def encode_response(self, output):
        return {"outputs": [{"name": "probs", "datatype": "FP32", "shape": list(output.shape),
                             "data": output.ravel().tolist()}]}


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    apis = [SavedModelAPI(name, path, config["max_batch_size"], config["batch_timeout"])
            for name, path in config["models"].items()]
    server = ls.LitServer(apis, accelerator="cpu", timeout=60)
    server.run(host="127.0.0.1", port=config["port"], generate_client_file=False,
               log_level="warning")
"""


class LitServe:
    """``python app.py`` in LitServe's venv, serving ``models`` (name -> version directory)."""

    name = "litserve"
    binary = False

    def __init__(
        self, models: Mapping[str, Path], workdir: Path, batching: Batching | None
    ) -> None:
        env = venv("litserve", LITSERVE_PINS)
        port = free_port()
        config = {
            "port": port,
            "models": {model: str(path) for model, path in models.items()},
            "max_batch_size": batching.max_batch_size if batching else 1,
            "batch_timeout": batching.delay_ms / 1000 if batching else 0.0,
        }
        self.url = f"http://127.0.0.1:{port}"
        self.started = time.perf_counter()
        self.proc, self.lines = run_app(env, workdir / self.name, APP, config)

    def infer_url(self, model: str) -> str:
        return f"{self.url}/predict/{model}"

    def stop(self) -> None:
        stop_group(self.proc)
