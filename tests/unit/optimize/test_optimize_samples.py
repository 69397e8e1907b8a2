"""Check samples: calibration files (with labels), warmup samples, generated inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from keepwarm.errors import InvalidInputError
from keepwarm.optimize.samples import from_file, generated, warmup_samples
from keepwarm.signature import Signature, TensorSpec

F32 = np.dtype("float32")
SIG = Signature(
    inputs=(TensorSpec("image", F32, (None, 4)),), outputs=(TensorSpec("probs", F32, (None, 3)),)
)


def test_npz_rows_are_split_into_batches_with_labels(tmp_path: Path) -> None:
    file = tmp_path / "cal.npz"
    np.savez(file, image=np.ones((70, 4), np.float64), labels=np.arange(70) % 3)
    samples = from_file(file, SIG)
    assert [len(r["image"]) for r in samples.requests] == [32, 32, 6]
    assert samples.requests[0]["image"].dtype == F32  # coerced to the signature
    assert samples.rows == 70 and samples.labels is not None and len(samples.labels) == 70
    assert samples.batch(100)["image"].shape == (100, 4)


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"image": np.ones((5, 4)), "labels": np.arange(4)}, "same number of rows"),
        ({"image": np.ones((5, 4)), "labels": np.ones(5)}, "integer class indices"),
        ({"picture": np.ones((5, 4))}, "missing ['image']"),
        ({"image": np.ones((5, 3))}, "expected shape"),
        ({"image": np.float32(1.0)}, "same number of rows"),
        ({"image": np.ones((0, 4))}, "same number of rows"),
    ],
)
def test_bad_calibration_files_say_what_is_wrong(
    tmp_path: Path, arrays: dict[str, np.ndarray], expected: str
) -> None:
    file = tmp_path / "cal.npz"
    np.savez(file, **arrays)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="calibration file") as caught:
        from_file(file, SIG)
    assert expected in caught.value.message


def test_missing_wrong_suffix_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        from_file(tmp_path / "nope.npz", SIG)
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(InvalidInputError, match=r"expected a \.npz or \.json"):
        from_file(tmp_path / "x.csv", SIG)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError, match="cannot be read"):
        from_file(tmp_path / "bad.npz", SIG)


def test_json_requests(tmp_path: Path) -> None:
    file = tmp_path / "cal.json"
    file.write_text(
        json.dumps([{"image": [[0, 1, 2, 3]]}, {"image": [[1, 1, 1, 1], [2, 2, 2, 2]]}])
    )
    samples = from_file(file, SIG)
    assert samples.rows == 3 and samples.labels is None


def test_warmup_samples_named_by_model_toml(tmp_path: Path) -> None:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    assert warmup_samples(version, SIG) is None
    (tmp_path / "m" / "model.toml").write_text('[warmup]\nsamples = "w.npz"\n')
    assert warmup_samples(version, SIG) is None  # named but absent: nothing to check on
    np.savez(version / "w.npz", image=np.zeros((2, 4), np.float32))
    found = warmup_samples(version, SIG)
    assert found is not None and found.rows == 2 and "warmup samples" in found.origin


def test_generated_inputs_follow_the_signature() -> None:
    sig = Signature(
        inputs=(
            TensorSpec("image", F32, (None, 8, 8, 3)),
            TensorSpec("ids", np.dtype("int64"), (None, None)),
        ),
        outputs=(TensorSpec("probs", F32, (None, 3)),),
    )
    samples = generated(sig, rows=40)
    assert [r["image"].shape for r in samples.requests] == [(32, 8, 8, 3), (8, 8, 8, 3)]
    assert samples.requests[0]["ids"].shape == (32, 1)
    assert 0.0 <= samples.requests[0]["image"].min() < samples.requests[0]["image"].max() < 1.0
    again = generated(sig, rows=40)
    np.testing.assert_array_equal(again.requests[1]["image"], samples.requests[1]["image"])
    unknown = Signature(inputs=(TensorSpec("x", F32, None),), outputs=())
    with pytest.raises(InvalidInputError, match="no known rank"):
        generated(unknown)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.json", b"{not json", "expected JSON sample requests, but it cannot be read"),
        ("empty.json", b"", "JSONDecodeError"),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "RecursionError"),
        ("latin.json", b'{"image": "\xff"}', "cannot be read"),
        ("garbage.npz", b"PK\x03\x04garbage", "BadZipFile"),
        ("text.npz", b"hello", "expected a .npz archive of input arrays"),
    ],
)
def test_a_malformed_calibration_file_is_a_clean_error(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    """Each was a traceback (JSONDecodeError, RecursionError, BadZipFile: exit 1)."""
    file = tmp_path / name
    file.write_bytes(content)
    with pytest.raises(InvalidInputError, match=f"^calibration file {file}: ") as caught:
        from_file(file, SIG)
    assert expected in caught.value.message


def test_a_calibration_path_that_is_not_a_file_is_not_said_to_be_missing(
    tmp_path: Path,
) -> None:
    for path in (tmp_path, Path("/dev/null")):
        with pytest.raises(InvalidInputError, match="not a regular file") as caught:
            from_file(path, SIG)
        assert "does not exist" not in caught.value.message


def test_a_scalar_input_is_refused_with_its_name() -> None:
    """Generating rows for a scalar input was a TypeError (len() of unsized object)."""
    scalar = Signature(inputs=(TensorSpec("t", F32, ()),), outputs=())
    with pytest.raises(InvalidInputError, match=r"input 't' is a scalar"):
        generated(scalar)


def test_a_fixed_batch_size_is_kept_by_generated_and_file_samples(tmp_path: Path) -> None:
    """A model exported with a fixed batch size (first axis 64) was given requests of 32
    rows, and inputs with a free first axis beside one fixed at 4 were given 64 rows
    (then none): ONNX Runtime's InvalidArgument as a traceback."""
    fixed = Signature(inputs=(TensorSpec("x", F32, (64, 3)),), outputs=())
    assert [r["x"].shape for r in generated(fixed).requests] == [(64, 3)]
    mixed = Signature(
        inputs=(TensorSpec("a", F32, (None,)), TensorSpec("x", F32, (4, 3))), outputs=()
    )
    (request,) = generated(mixed).requests
    assert request["a"].shape == (4,) and request["x"].shape == (4, 3)
    np.savez(tmp_path / "128.npz", x=np.zeros((128, 3), np.float32))
    assert [len(r["x"]) for r in from_file(tmp_path / "128.npz", fixed).requests] == [64, 64]
    np.savez(tmp_path / "100.npz", x=np.zeros((100, 3), np.float32))
    with pytest.raises(InvalidInputError, match=r"exactly 64 rows per call.*has 100"):
        from_file(tmp_path / "100.npz", fixed)
    both = Signature(inputs=(TensorSpec("a", F32, (2,)), TensorSpec("x", F32, (4, 3))), outputs=())
    with pytest.raises(InvalidInputError, match=r"fix different sizes .*'a': 2, 'x': 4"):
        generated(both)
