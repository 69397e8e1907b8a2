"""``[optimize]`` in model.toml: a repository serves the converted graph, cached by the
source's content; a model whose conversion fails, or that the gate refuses, serves from
its source and its status says why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from keepwarm.examples import DIGITS_TEST
from keepwarm.repository import Repository
from keepwarm.runtimes.onnx import OnnxModel
from keepwarm.runtimes.savedmodel import SavedModel
from keepwarm.sources.filesystem import MARKER
from support.optimize_models import sensitive_model, svd_model

WAIT_S = 120.0


def _reason(repo: Repository, name: str, version: int = 1) -> str:
    info = repo.status().models[name].versions[version]
    assert info.state.value == "READY", info
    return str(info.reason)


def _cached() -> list[Path]:
    root = Path(os.environ["KEEPWARM_CACHE_DIR"]) / "optimized"
    return sorted(p for p in root.iterdir() if not p.name.startswith("."))


def test_serves_the_converted_graph_and_caches_it(example_models: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    version = root / "digits" / "1"
    shutil.copytree(example_models / "digits" / "1", version)
    with np.load(version / DIGITS_TEST) as data:
        images = data["image"][:64]
    np.savez(version / "warmup.npz", image=images)
    (version / MARKER).touch()
    (root / "digits" / "model.toml").write_text(
        '[optimize]\nto = "onnx"\nquantize = "dynamic"\n[warmup]\nsamples = "warmup.npz"\n'
    )
    answers = []
    for attempt in ("converts", "finds it cached"):
        started = time.monotonic()
        with Repository(root, poll_seconds=3600, watch=False) as repo:
            assert repo.wait_ready("digits", timeout=WAIT_S) == 1
            reason = _reason(repo, "digits")
            with repo.lease("digits") as model:
                assert isinstance(model.raw, OnnxModel), (attempt, reason)
                answers.append(model.predict({"image": images})["probs"])
        assert reason.startswith("serving the ONNX + dynamic graph converted from the savedmodel")
        assert "on 64 samples" in reason
        assert ("cached" in reason) == (attempt == "finds it cached"), reason
    assert time.monotonic() - started < 30  # cached: no child process, no check
    (entry,) = _cached()
    report = json.loads((entry / "report.json").read_text())
    assert report["passed"] and report["quantize"] == "dynamic" and report["samples"] == 64
    np.testing.assert_array_equal(answers[0], answers[1])
    agreement = np.mean(answers[0].argmax(1) == _source_top1(version, images))
    assert agreement >= 0.99


def _source_top1(version: Path, images: np.ndarray) -> np.ndarray:
    """The source's top-1 answers, computed here, apart from the repository."""
    from keepwarm.runtimes.savedmodel import SavedModelRuntime

    model = SavedModelRuntime().load(version, signature=None, options={})
    try:
        return model.predict({"image": images})["probs"].argmax(1)
    finally:
        model.close()


def test_a_model_whose_conversion_fails_serves_from_its_source(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    svd_model(root / "svd" / "1")
    (root / "svd" / "1" / MARKER).touch()
    (root / "svd" / "model.toml").write_text('[optimize]\nto = "onnx"\n')
    with Repository(root, poll_seconds=3600, watch=False) as repo:
        assert repo.wait_ready("svd", timeout=WAIT_S) == 1
        reason = _reason(repo, "svd")
        with repo.lease("svd") as model:
            assert isinstance(model.raw, SavedModel)
            x = np.eye(4, dtype=np.float32)[None] * 3.0
            np.testing.assert_allclose(model.predict({"x": x})["y"], [[3.0] * 4], rtol=1e-5)
    assert reason.startswith("optimize: cannot convert "), reason
    assert "Svd" in reason and reason.endswith("; serving the savedmodel source")


def test_the_gate_refusing_serves_the_source_and_says_which_limit(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    version = sensitive_model(root / "sensitive" / "1")
    x = np.random.default_rng(2).random((100, 16), dtype=np.float32)
    x[:, 15] = 0.0
    np.savez(version / "warmup.npz", x=x)
    (version / MARKER).touch()
    (root / "sensitive" / "model.toml").write_text(
        '[optimize]\nto = "onnx"\nquantize = "dynamic"\n[warmup]\nsamples = "warmup.npz"\n'
    )
    with Repository(root, poll_seconds=3600, watch=False) as repo:
        assert repo.wait_ready("sensitive", timeout=WAIT_S) == 1
        reason = _reason(repo, "sensitive")
        with repo.lease("sensitive") as model:
            assert isinstance(model.raw, SavedModel)
    assert reason.startswith(
        "optimize: the gate refused the ONNX + dynamic graph: --min-agreement: output 'scores'"
    ), reason
    assert reason.endswith("; serving the savedmodel source")


def test_a_model_that_is_already_onnx_is_served_as_it_is(
    example_models: Path, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(example_models / "mlp_onnx" / "1", root / "m" / "1")
    (root / "m" / "1" / MARKER).touch()
    (root / "m" / "model.toml").write_text('[optimize]\nto = "onnx"\n')
    with Repository(root, poll_seconds=3600, watch=False) as repo:
        assert repo.wait_ready("m", timeout=WAIT_S) == 1
        assert _reason(repo, "m") == (
            "optimize: onnx models are not converted; serving it as it is"
        )


_SERVE_WITHOUT_TF = """
import json, sys
from keepwarm.repository import Repository
with Repository(sys.argv[1], poll_seconds=3600, watch=False) as repo:
    repo.wait_ready("digits", timeout=120)
    reason = repo.status().models["digits"].versions[1].reason
print(json.dumps({"reason": reason, "tensorflow": "tensorflow" in sys.modules}))
"""


def test_the_serving_process_imports_no_tensorflow(example_models: Path, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(example_models / "digits" / "1", root / "digits" / "1")
    (root / "digits" / "1" / MARKER).touch()
    (root / "digits" / "model.toml").write_text('[optimize]\nto = "onnx"\n')
    done = subprocess.run(
        [sys.executable, "-c", _SERVE_WITHOUT_TF, str(root)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["reason"].startswith("serving the ONNX graph converted from the savedmodel")
    assert result["tensorflow"] is False  # converted and checked in a child process


def test_options_reach_the_onnx_runtime_and_a_graph_that_does_not_load_falls_back(
    example_models: Path, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(example_models / "digits" / "1", root / "digits" / "1")
    (root / "digits" / "1" / MARKER).touch()
    (root / "digits" / "model.toml").write_text(
        '[optimize]\nto = "onnx"\n[options]\ngraph_optimization_level = "fastest"\n'
    )
    with Repository(root, poll_seconds=3600, watch=False) as repo:
        assert repo.wait_ready("digits", timeout=WAIT_S) == 1
        reason = _reason(repo, "digits")
        with repo.lease("digits") as model:
            assert isinstance(model.raw, SavedModel)
    assert reason.startswith("optimize: the converted graph does not load: onnx option ")
    assert "graph_optimization_level" in reason and "'fastest'" in reason
    assert reason.endswith("; serving the savedmodel source")


def test_a_version_written_in_place_while_it_converts_keeps_no_graph(
    example_models: Path, tmp_path: Path
) -> None:
    """A file added to the version while its conversion ran: the graph was cached under
    the key of the files as they were before (the next load of that content would take a
    graph made from other files). Now nothing is cached and the source serves, saying
    why."""
    root = tmp_path / "repo"
    version = root / "mlp" / "1"
    shutil.copytree(example_models / "mlp" / "1", version)
    (version / MARKER).touch()
    (root / "mlp" / "model.toml").write_text('[optimize]\nto = "onnx"\n')
    staging = Path(os.environ["KEEPWARM_CACHE_DIR"]) / "optimized"
    with Repository(root, poll_seconds=3600, watch=False) as repo:
        ready: list[int] = []
        waiter = threading.Thread(
            target=lambda: ready.append(repo.wait_ready("mlp", timeout=WAIT_S))
        )
        waiter.start()  # the load (and its conversion) starts on demand
        # the conversion has started once its staging directory exists (mlp: seconds)
        deadline = time.monotonic() + WAIT_S
        while not list(staging.glob(".tmp-*")) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert list(staging.glob(".tmp-*")), "the conversion did not start"
        (version / "notes.txt").write_text("written in place")
        waiter.join(WAIT_S)
        assert ready == [1]
        reason = _reason(repo, "mlp")
        with repo.lease("mlp") as model:
            assert isinstance(model.raw, SavedModel), reason
    assert "changed while it was converted" in reason and reason.endswith("savedmodel source")
    assert _cached() == []
