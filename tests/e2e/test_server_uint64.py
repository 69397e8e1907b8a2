"""UINT64 inputs given as JSON through a real server, into a TensorFlow SavedModel whose
signature takes uint64 (TensorFlow serves one: identity and bitwise ops run on uint64):
every integer up to 2**64 - 1 reaches the model exactly, over the KServe v2 API and TF
Serving's REST API (row and columnar); one out of range is a 400 naming the input and the
range. numpy makes float64 of a list holding an integer past int64's range: [1, 2**63]
was refused, and [1, 2**64 - 1] called out of range."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.server_process import ServerProcess

EDGES = [1, 2**63, 2**64 - 1, 0, 2**63 - 1]
RANGE = "input 'x': values out of range for uint64 ([0, 18446744073709551615])"


def _uint64_savedmodel(path: Path) -> None:
    import tensorflow as tf

    class Wide(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None], tf.uint64, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {
                "y": tf.identity(x),
                "low": tf.bitwise.bitwise_and(x, tf.constant(1, tf.uint64)),
            }

    module = Wide()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("uint64") / "models"
    _uint64_savedmodel(root / "wide" / "1")
    process = ServerProcess(root)
    yield process
    process.stop()


def test_v2_json_takes_every_uint64_exactly(served: ServerProcess) -> None:
    tensor = {"name": "x", "datatype": "UINT64", "shape": [len(EDGES)], "data": EDGES}
    answer = served.post("/v2/models/wide/infer", {"inputs": [tensor]})
    assert answer.status_code == 200, answer.text
    outputs = {out["name"]: out for out in answer.json()["outputs"]}
    assert outputs["y"]["datatype"] == "UINT64" and outputs["y"]["data"] == EDGES
    assert outputs["low"]["data"] == [v & 1 for v in EDGES]
    for data in (["-1", str(2**63)], ["1", str(2**64)]):
        body = '{"inputs": [{"name": "x", "datatype": "UINT64", "shape": [2], "data": ['
        answer = served.post("/v2/models/wide/infer", body + ", ".join(data) + "]}]}")
        assert answer.status_code == 400 and RANGE in answer.json()["error"], answer.text


def test_tf_serving_rest_takes_every_uint64_exactly(served: ServerProcess) -> None:
    for document, key in (({"instances": EDGES}, "predictions"), ({"inputs": EDGES}, "outputs")):
        answer = served.post("/v1/models/wide:predict", document)
        assert answer.status_code == 200, answer.text
        found = answer.json()[key]
        got = [row["y"] for row in found] if key == "predictions" else found["y"]
        assert got == EDGES
    for literal in ("-1", str(2**64)):
        answer = served.post("/v1/models/wide:predict", f'{{"instances": [{2**63}, {literal}]}}')
        assert answer.status_code == 400 and RANGE in answer.json()["error"], answer.text
