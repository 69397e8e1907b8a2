"""model.toml: every key parsed, every mistake named."""

from __future__ import annotations

import contextlib
import operator
import os
import threading
from pathlib import Path

import pytest

from keepwarm.config import (
    BatchingConfig,
    ModelConfig,
    OptimizeConfig,
    VersionPolicy,
    load_model_config,
    parse_model_config,
)
from keepwarm.errors import InvalidConfigError

FULL = """
runtime = "savedmodel"
signature = "serving_default"
pinned = true
default = "stable"

[versions]
policy = "latest"
latest = 2

[labels]
stable = 3
canary = 4

[warmup]
runs = 5
samples = "assets.extra/warmup.npz"

[options]
intra_op_num_threads = 2
tags = ["serve"]

[batching]
max_batch_size = 16
max_delay_ms = 1
max_queue = 64
"""


def test_every_key_is_read() -> None:
    config = parse_model_config(FULL, source="m/model.toml")
    assert config.runtime == "savedmodel"
    assert config.signature == "serving_default"
    assert config.pinned is True
    assert config.default == "stable"
    assert config.policy == VersionPolicy("latest", n=2)
    assert dict(config.labels) == {"stable": 3, "canary": 4}
    assert config.warmup_runs == 5
    assert config.warmup_samples == "assets.extra/warmup.npz"
    assert dict(config.options) == {"intra_op_num_threads": 2, "tags": ["serve"]}
    assert config.batching == BatchingConfig(max_batch_size=16, max_delay_ms=1.0, max_queue=64)
    assert isinstance(config.batching.max_delay_ms, float)


def test_empty_file_and_missing_file_are_the_defaults(tmp_path: Path) -> None:
    assert parse_model_config("", source="x") == ModelConfig()
    assert load_model_config(tmp_path / "model.toml") == ModelConfig()
    defaults = ModelConfig()
    assert defaults.policy == VersionPolicy("latest", n=1)
    assert defaults.warmup_runs is None  # the settings' warmup.runs
    assert defaults.batching is None and not defaults.pinned


def test_config_is_read_only() -> None:
    config = parse_model_config(FULL, source="x")
    with pytest.raises(TypeError):
        operator.setitem(config.labels, "stable", 9)
    with pytest.raises(TypeError):
        operator.setitem(config.options, "intra_op_num_threads", 9)


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ('[versions]\npolicy = "all"', VersionPolicy("all")),
        ("[versions]\nspecific = [4, 3, 4]", VersionPolicy("specific", versions=(3, 4))),
        (
            '[versions]\npolicy = "specific"\nspecific = [7]',
            VersionPolicy("specific", versions=(7,)),
        ),
        ("[versions]\nlatest = 3", VersionPolicy("latest", n=3)),
    ],
)
def test_version_policies(text: str, policy: VersionPolicy) -> None:
    assert parse_model_config(text, source="x").policy == policy


def test_default_may_be_a_version_and_batching_keys_are_optional() -> None:
    config = parse_model_config("default = 3\n[batching]\nmax_queue = 8", source="x")
    assert config.default == 3
    assert config.batching == BatchingConfig(max_queue=8)
    assert config.batching.run_alone is None  # the batch slots, decided at load
    alone = parse_model_config("[batching]\nrun_alone = 2", source="x").batching
    assert alone is not None and alone.run_alone == 2
    assert parse_model_config("[warmup]\nruns = 0", source="x").warmup_runs == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('runtme = "onnx"', ["'runtme'", "allowed keys", "runtime"]),
        ('[versions]\npolcy = "all"', ["'versions.polcy'", "[versions]", "policy"]),
        ("[warmup]\nrun = 1", ["'warmup.run'", "runs, samples"]),
        ("[batching]\nbatch_size = 1", ["'batching.batch_size'", "max_batch_size"]),
        ("runtime = 3", ["runtime:", "a non-empty string", "3"]),
        ('signature = " "', ["signature:", "non-empty string"]),
        ('pinned = "yes"', ["pinned:", "true or false", "'yes'"]),
        ('default = "prod"', ["default:", "labels", "none are defined", "'prod'"]),
        ('default = "prod"\n[labels]\nstable = 1', ["default:", "stable", "'prod'"]),
        ("default = 0", ["default:", "positive integer", "0"]),
        ("default = true", ["default:", "True"]),
        ("versions = 1", ["versions:", "a table"]),
        ('[versions]\npolicy = "newest"', ["versions.policy:", "'latest' or 'all'", "'newest'"]),
        ("[versions]\nlatest = 0", ["versions.latest:", ">= 1", "0"]),
        ("[versions]\nlatest = true", ["versions.latest:", "integer", "True"]),
        ('[versions]\npolicy = "all"\nlatest = 2', ["versions.latest:", "'all'"]),
        ('[versions]\npolicy = "latest"\nspecific = [1]', ["versions.specific:", "'latest'"]),
        ('[versions]\npolicy = "specific"', ["versions.specific:", "needs it"]),
        ("[versions]\nspecific = [0]", ["versions.specific:", "positive integers", "[0]"]),
        ('[versions]\nspecific = ["3"]', ["versions.specific:", "['3']"]),
        ("[versions]\nspecific = 3", ["versions.specific:", "a list"]),
        ('labels = "stable"', ["labels:", "a table"]),
        ("[labels]\n1st = 1", ["labels.1st:", "label name", "'1st'"]),
        ('[labels]\n"a b" = 1', ["labels.a b:", "label name"]),
        ("[labels]\nstable = 0", ["labels.stable:", "positive integer", "0"]),
        ("[labels]\nstable = true", ["labels.stable:", "True"]),
        ('[labels]\nstable = "3"', ["labels.stable:", "'3'"]),
        ("[warmup]\nruns = -1", ["warmup.runs:", "from 0 to 1000", "-1"]),
        ("[warmup]\nruns = 1.5", ["warmup.runs:", "integer", "1.5"]),
        ("[warmup]\nruns = 1000000000", ["warmup.runs:", "0 to 1000", "1000000000"]),
        ('[warmup]\nsamples = "../w.npz"', ["warmup.samples:", "relative path"]),
        ('[warmup]\nsamples = "/tmp/w.npz"', ["warmup.samples:", "relative path"]),
        ('[warmup]\nsamples = "w.txt"', ["warmup.samples:", ".json or .npz", "'w.txt'"]),
        ('options = "fast"', ["options:", "a table"]),
        ("[options]\nallow_unsafe = true", ["options.allow_unsafe:", "server setting"]),
        ('[options]\nclass = "m:Model"', ["options.class:", "server setting", "run code"]),
        ("[batching]\nmax_batch_size = 0", ["batching.max_batch_size:", "from 1 to 65536", "0"]),
        ("[batching]\nmax_batch_size = 65537", ["batching.max_batch_size:", "65536", "65537"]),
        ("[batching]\nmax_delay_ms = -1", ["batching.max_delay_ms:", ">= 0", "-1"]),
        ("[batching]\nmax_delay_ms = nan", ["batching.max_delay_ms:", ">= 0", "nan"]),
        ('[batching]\nmax_delay_ms = "2"', ["batching.max_delay_ms:", "'2'"]),
        ("[batching]\nmax_queue = 0", ["batching.max_queue:", ">= 1"]),
        ("[batching]\nrun_alone = 0", ["batching.run_alone:", ">= 1"]),
        ('[batching]\nrun_alone = "4"', ["batching.run_alone:", "'4'"]),
        ("batching = 3", ["batching:", "a table"]),
        ("[batching]\npad_axes = [0]", ["batching.pad_axes:", "axes >= 1", "[0]"]),
        ("[batching]\npad_axes = 1", ["batching.pad_axes:", "a list of axes", "1"]),
        ("[batching]\npad_axes = [true]", ["batching.pad_axes:", "[True]"]),
        ('[batching]\npad_axes = ["1"]', ["batching.pad_axes:", "['1']"]),
        ("[batching]\npad_axes = {tokens = 2}", ["batching.pad_axes.tokens:", "2"]),
        ("[batching]\npad_axes = {tokens = [-1]}", ["batching.pad_axes.tokens:", "[-1]"]),
        ("runtime = ", ["not valid TOML"]),
    ],
)
def test_errors_name_the_file_the_key_and_what_was_given(text: str, expected: list[str]) -> None:
    with pytest.raises(InvalidConfigError) as info:
        parse_model_config(text, source="models/m/model.toml")
    message = str(info.value)
    assert message.startswith("models/m/model.toml: ")
    for part in expected:
        assert part in message


def test_pad_axes_for_every_input_or_per_input() -> None:
    every = parse_model_config("[batching]\npad_axes = [2, 1, 2]", source="x").batching
    assert every is not None and dict(every.pad_axes) == {"*": (1, 2)}
    per = parse_model_config("[batching]\npad_axes = {tokens = [1], mask = []}", source="x")
    assert per.batching is not None and dict(per.batching.pad_axes) == {"tokens": (1,)}
    none = parse_model_config("[batching]\nmax_queue = 2", source="x").batching
    assert none is not None and not none.pad_axes


def test_batching_keys_left_out_follow_the_settings() -> None:
    from keepwarm.config import batching_config
    from keepwarm.settings import BatchingSettings

    config = parse_model_config("[batching]\nmax_queue = 8", source="x").batching
    assert config is not None
    server = BatchingSettings(max_batch_size=4, max_delay_ms=0.5, max_queue=99)
    filled = config.with_defaults(server)
    assert (filled.max_batch_size, filled.max_delay_ms, filled.max_queue) == (4, 0.5, 8)
    given = batching_config({"max_batch_size": 2, "pad_axes": [1]}, source="batching=")
    assert given.max_batch_size == 2 and dict(given.pad_axes) == {"*": (1,)}
    assert given.with_defaults(server).max_batch_size == 2
    with pytest.raises(InvalidConfigError, match=r"batching=: unknown key 'batching.size'"):
        batching_config({"size": 2}, source="batching=")
    with pytest.raises(InvalidConfigError, match="batching=: expected a table"):
        batching_config([1], source="batching=")  # type: ignore[arg-type]


def test_load_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "model.toml"
    path.write_text("[versions]\nlatest = -2\n")
    with pytest.raises(InvalidConfigError, match=r"model\.toml: versions\.latest"):
        load_model_config(path)
    path.write_bytes(b"runtime = '\xff'")
    with pytest.raises(InvalidConfigError, match="not UTF-8"):
        load_model_config(path)
    path.unlink()
    path.mkdir()
    with pytest.raises(InvalidConfigError, match="cannot be read"):
        load_model_config(path)


def test_optimize_table() -> None:
    config = parse_model_config(
        '[optimize]\nto = "onnx"\nquantize = "float16"\nmin_agreement = 0.98\n',
        source="m.toml",
    )
    assert config.optimize == OptimizeConfig(to="onnx", quantize="float16", min_agreement=0.98)
    assert config.optimize.to_plain() == {
        "to": "onnx",
        "quantize": "float16",
        "max_abs_diff": None,
        "min_agreement": 0.98,
        "max_accuracy_drop": None,
    }
    assert parse_model_config("", source="m.toml").optimize is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('quantize = "dynamic"', "optimize.to: missing; expected 'onnx'"),
        ('to = "tflite"', "optimize.to: expected 'onnx', got 'tflite'"),
        ('to = "onnx"\nquantize = "int4"', "optimize.quantize: expected 'dynamic' or"),
        ('to = "onnx"\nmin_agreement = 1.5', "optimize.min_agreement: expected a number >= 0"),
        ('to = "onnx"\nmax_abs_diff = nan', "optimize.max_abs_diff: expected a number >= 0"),
        ('to = "onnx"\nmax_abs_diff = -1', "optimize.max_abs_diff: expected a number >= 0"),
        ('to = "onnx"\nmax_accuracy_drop = true', "optimize.max_accuracy_drop: expected"),
        # it failed every load's gate (warmup samples have no labels): refused up front
        ('to = "onnx"\nmax_accuracy_drop = 1', "optimize.max_accuracy_drop: cannot be checked"),
        ('to = "onnx"\ntimeout = 5', "unknown key 'optimize.timeout'"),
    ],
)
def test_optimize_mistakes_are_named(text: str, expected: str) -> None:
    with pytest.raises(InvalidConfigError, match=r"^m\.toml: ") as caught:
        parse_model_config(f"[optimize]\n{text}\n", source="m.toml")
    assert expected in caught.value.message


def test_a_model_toml_that_is_not_a_regular_file_is_refused_without_waiting(
    tmp_path: Path,
) -> None:
    """A FIFO held the scan's read (the whole repository's updates) until a writer came;
    a link to /dev/zero read until memory ran out."""
    fifo = tmp_path / "model.toml"
    os.mkfifo(fifo)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            load_model_config(fifo)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    try:
        assert not reader.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], InvalidConfigError)
        assert "cannot be read: not a regular file" in str(errors[0])
    finally:
        with contextlib.suppress(OSError):  # a reader still blocked in open() is let go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    link = tmp_path / "zero.toml"
    link.symlink_to("/dev/zero")
    with pytest.raises(InvalidConfigError, match="not a regular file"):
        load_model_config(link)


def test_a_model_toml_past_a_mebibyte_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.toml"
    with path.open("wb") as file:
        file.truncate(2 << 20)  # sparse: nothing written
    with pytest.raises(InvalidConfigError, match=r"model\.toml: larger than 1048576 bytes"):
        load_model_config(path)
