"""Warmup: sample files, generated inputs, and what a failed warmup does to a load."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

import keepwarm
from keepwarm.core.ids import ModelId
from keepwarm.core.states import State
from keepwarm.loading import LoadDescription, RuntimeSpec
from keepwarm.repository import Repository
from keepwarm.signature import Signature, TensorSpec
from keepwarm.warmup import read_samples, warmup
from support.onnx_graphs import conv_over_time, frames_of_32

WAIT_S = 30.0


def test_json_warmup_samples_with_integers_feed_a_float_model(tmp_path: Path) -> None:
    path = tmp_path / "warmup.json"
    path.write_text(json.dumps([{"x": [[1, 2]]}]))
    signature = Signature(
        inputs=(TensorSpec("x", np.dtype("float32"), (None, 2)),),
        outputs=(TensorSpec("y", np.dtype("float32"), (None, 2)),),
    )
    (request,) = read_samples(path)
    coerced = signature.coerce(signature.widen_json(request))
    assert coerced["x"].dtype == np.float32
    with pytest.raises(keepwarm.InvalidInputError, match="expected dtype float32"):
        signature.coerce(request)  # arrays built in code are not widened silently


def test_generated_warmup_tries_a_size_that_fits_a_stride_of_32(tmp_path: Path) -> None:
    path = frames_of_32(tmp_path / "detector.onnx")  # L = 1 fails: not a multiple of 32
    model = keepwarm.load(path, cache=keepwarm.ModelCache())  # it failed to load before
    assert model.predict(np.zeros((2, 64), np.float32))["y"].shape == (2, 2, 32)
    spec = RuntimeSpec(LoadDescription(str(path)))
    assert spec.warmup(spec.load()) is None  # warmed with unknown sizes of 32


def test_generated_warmup_that_fails_is_skipped_and_the_model_still_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = conv_over_time(tmp_path / "audio.onnx", kernel=64)  # needs 64 samples or more
    model = keepwarm.load(path, cache=keepwarm.ModelCache())  # it failed to load before
    assert model.predict(np.ones((1, 1, 70), np.float32))["y"].shape == (1, 1, 7)
    spec = RuntimeSpec(LoadDescription(str(path)))
    loaded = spec.load()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keepwarm.warmup"):
        note = spec.warmup(loaded)
    assert note is not None and note.startswith("generated warmup skipped: "), note
    assert "unknown sizes 1:" in note and "unknown sizes 32:" in note, note
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"{spec.description}: {note}")
    ]


def test_only_supplied_samples_that_fail_make_the_load_fail(tmp_path: Path) -> None:
    for name, length in (("bad", 5), ("good", 64)):
        frames_of_32(tmp_path / name / "1" / "model.onnx")
        samples = [{"x": [[0.5] * length]}]
        (tmp_path / name / "1" / "warmup.json").write_text(json.dumps(samples))
        (tmp_path / name / "model.toml").write_text('[warmup]\nsamples = "warmup.json"\n')
    conv_over_time(tmp_path / "audio" / "1" / "model.onnx", kernel=64)  # generated: skipped
    with Repository(tmp_path, poll_seconds=0.05) as repo:
        assert repo.wait_ready("good", timeout=WAIT_S) == 1
        assert repo.wait_ready("audio", timeout=WAIT_S) == 1
        bad = ModelId("bad", 1)
        assert repo.manager.wait_for(lambda: repo.manager.state(bad) is State.FAILED, WAIT_S)
        models = repo.status().models
        reason = str(models["bad"].versions[1].reason)
        assert "supplied sample 1 of 1 failed" in reason and "reshape" in reason.lower(), reason
        audio = models["audio"].versions[1]  # READY, and its reason says warmup was skipped
        assert audio.state is State.READY and str(audio.reason).startswith(
            "generated warmup skipped: "
        ), audio
        with repo.lease("audio") as model:
            assert model.predict(np.ones((1, 1, 64), np.float32))["y"].shape == (1, 1, 1)


def test_a_ragged_sample_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "warmup.json"
    path.write_text(json.dumps({"x": [[1, 2], [3]]}))
    with pytest.raises(keepwarm.InvalidConfigError, match=r"warmup.json: input 'x'"):
        read_samples(path)


class _Exits:
    """A loaded model whose every call raises ``raised``."""

    signature = Signature(
        inputs=(TensorSpec("x", np.dtype("float32"), (None, 2)),),
        outputs=(TensorSpec("y", np.dtype("float32"), (None, 2)),),
    )
    nbytes, nbytes_source = 0, "files"

    def __init__(self, raised: BaseException) -> None:
        self.raised = raised

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise self.raised

    def close(self) -> None:
        pass


def test_a_warm_run_that_calls_sys_exit_is_a_failed_warm_run() -> None:
    note = warmup(_Exits(SystemExit(3)), what="exits")  # generated: a note, still loads
    assert note is not None and "unknown sizes 1: SystemExit: 3" in note, note
    with pytest.raises(keepwarm.ModelLoadError, match="supplied sample 1 of 1 failed"):
        warmup(_Exits(GeneratorExit()), [{"x": np.zeros((1, 2), np.float32)}], what="exits")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during a load is never swallowed
        warmup(_Exits(KeyboardInterrupt()), what="exits")


def test_samples_that_are_not_a_regular_file_are_refused_without_a_read(tmp_path: Path) -> None:
    fifo = tmp_path / "warmup.json"
    os.mkfifo(fifo)  # opened for reading, it waited for a writer: the load thread hung
    with pytest.raises(keepwarm.InvalidConfigError, match="must be a regular file"):
        read_samples(fifo)
    (tmp_path / "zero.npz").symlink_to("/dev/zero")
    with pytest.raises(keepwarm.InvalidConfigError, match="must be a regular file"):
        read_samples(tmp_path / "zero.npz")


@pytest.mark.parametrize(
    ("name", "content"),
    [("bad.json", b"{not json"), ("deep.json", b"[" * 100_000), ("bad.npz", b"PK\x03\x04x")],
)
def test_a_malformed_sample_file_is_a_config_error_naming_it(
    tmp_path: Path, name: str, content: bytes
) -> None:
    """Bad JSON, JSON past the parser's depth and a bad zip were JSONDecodeError,
    RecursionError and BadZipFile: no file named, and not a keepwarm error."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(keepwarm.InvalidConfigError, match=f"^{path}: expected ") as caught:
        read_samples(path)
    assert "cannot be read" in caught.value.message
