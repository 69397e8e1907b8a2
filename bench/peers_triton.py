"""Triton as a peer, through PyTriton (``nvidia-pytriton`` bundles a Triton binary): one
bound model per SavedModel, its ``serving_default`` signature called on each batch Triton
hands over. KServe v2 over HTTP: JSON, and the binary tensor extension. Dynamic batching
off (``max_batch_size`` 32, no batcher) or on (``max_batch_size``, queue delay).

Only in a venv made from Debian's ``/usr/bin/python3.11``, with numpy < 2, and with
``TritonSecurityConfig(restricted_endpoints=[])`` (otherwise it demands an access token).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from peers import Batching, PeerFailed, free_port, run_app, stop_group, venv

PYTHON = "/usr/bin/python3.11"
TRITON_PINS = ("nvidia-pytriton==0.7.0", "numpy==1.26.4", "tensorflow==2.21.0")
APP = """
import json
import sys

import numpy as np
import tensorflow as tf
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig


def bind(triton, name, path, batching):
    loaded = tf.saved_model.load(path)
    fn = loaded.signatures["serving_default"]
    inputs = fn.structured_input_signature[1]
    outputs = fn.structured_outputs
    fn(**{k: tf.zeros([1, *s.shape.as_list()[1:]], s.dtype) for k, s in inputs.items()})

    @batch
    def infer(**arrays):
        out = fn(**{k: tf.constant(v) for k, v in arrays.items()})
        return {k: v.numpy() for k, v in out.items()}

    infer.loaded = loaded  # the signature's variables live while the model is bound
    if batching is None:
        config = ModelConfig(max_batch_size=32, batcher=None)
    else:
        size, delay_ms = batching
        config = ModelConfig(max_batch_size=size, batcher=DynamicBatcher(
            max_queue_delay_microseconds=int(delay_ms * 1000)))
    triton.bind(
        model_name=name,
        infer_func=infer,
        inputs=[Tensor(name=k, dtype=s.dtype.as_numpy_dtype, shape=tuple(s.shape.as_list()[1:]))
                for k, s in inputs.items()],
        outputs=[Tensor(name=k, dtype=s.dtype.as_numpy_dtype, shape=tuple(s.shape.as_list()[1:]))
                 for k, s in outputs.items()],
        config=config,
        strict=True,
    )


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    triton_config = TritonConfig(http_address="127.0.0.1", http_port=config["http_port"],
                                 grpc_address="127.0.0.1", grpc_port=config["grpc_port"],
                                 metrics_port=config["metrics_port"], log_verbose=0)
    security = TritonSecurityConfig(restricted_endpoints=[])
    with Triton(config=triton_config, security_config=security) as triton:
        for name, path in config["models"].items():
            bind(triton, name, path, config["batching"])
        triton.serve()
"""


class PyTriton:
    """``python app.py`` in PyTriton's venv, serving ``models`` (name -> version directory)."""

    name = "pytriton"
    binary = True

    def __init__(
        self, models: Mapping[str, Path], workdir: Path, batching: Batching | None
    ) -> None:
        if not Path(PYTHON).exists():
            raise PeerFailed(f"pytriton: needs Debian's {PYTHON} (apt-get install python3.11-venv)")
        env = venv("pytriton", TRITON_PINS, python=PYTHON)
        port = free_port()
        config = {
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "models": {model: str(path) for model, path in models.items()},
            "batching": [batching.max_batch_size, batching.delay_ms] if batching else None,
        }
        self.url = f"http://127.0.0.1:{port}"
        self.started = time.perf_counter()
        self.proc, self.lines = run_app(env, workdir / self.name, APP, config)

    def infer_url(self, model: str) -> str:
        return f"{self.url}/v2/models/{model}/infer"

    def stop(self) -> None:
        stop_group(self.proc)
