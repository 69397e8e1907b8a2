"""Publishing writes the next version whole (hidden directory, marker last, rename), and
refuses targets where an ONNX version could not serve."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from keepwarm.errors import InvalidConfigError, InvalidInputError
from keepwarm.optimize.publish import GRAPH, REPORT, check_target, publish
from keepwarm.sources.filesystem import MARKER


def _graph(tmp_path: Path) -> Path:
    file = tmp_path / "built.onnx"
    file.write_bytes(b"onnx bytes")
    return file


def test_next_version_with_report_and_marker(tmp_path: Path) -> None:
    model = tmp_path / "repo" / "m"
    for name in ("1", "3", "07", "x", ".hidden-9"):
        (model / name).mkdir(parents=True)
    number = publish(model, {GRAPH: _graph(tmp_path)}, '{"passed": true}\n')
    assert number == 4
    version = model / "4"
    assert sorted(p.name for p in version.iterdir()) == sorted([GRAPH, REPORT, MARKER])
    assert (version / GRAPH).read_bytes() == b"onnx bytes"
    assert not [p for p in model.iterdir() if p.name.startswith(".keepwarm-optimize")]


def test_a_new_model_directory_starts_at_version_1(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    assert publish(tmp_path / "repo" / "new", {GRAPH: _graph(tmp_path)}, "{}") == 1


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    graph = _graph(tmp_path)
    barrier = threading.Barrier(4)
    numbers: list[int] = []

    def one() -> None:
        barrier.wait(timeout=10)
        numbers.append(publish(model, {GRAPH: graph}, "{}"))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(numbers) == [1, 2, 3, 4]
    assert all((model / str(n) / MARKER).exists() for n in numbers)


def test_a_copy_that_fails_leaves_no_version(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    with pytest.raises(FileNotFoundError):
        publish(model, {GRAPH: tmp_path / "missing.onnx"}, "{}")
    assert list(model.iterdir()) == []


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('runtime = "savedmodel"\n', "runtime = 'savedmodel'"),
        ('signature = "classify"\n', "signature = 'classify'"),
        ('[warmup]\nsamples = "w.npz"\n', "warmup samples 'w.npz'"),
    ],
)
def test_targets_an_onnx_version_could_not_serve_are_refused(
    tmp_path: Path, toml: str, expected: str
) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.toml").write_text(toml)
    source = tmp_path / "src"
    source.mkdir()
    with pytest.raises(InvalidConfigError) as caught:
        check_target(model, source)
    assert expected in caught.value.message


def test_warmup_samples_travel_with_the_new_version(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.toml").write_text('runtime = "onnx"\n[warmup]\nsamples = "w/s.npz"\n')
    source = tmp_path / "src"
    (source / "w").mkdir(parents=True)
    (source / "w" / "s.npz").write_bytes(b"x")
    assert check_target(model, source) == [source / "w" / "s.npz"]


def test_target_that_is_a_file_or_has_no_repository(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="found a file"):
        check_target(tmp_path / "file", tmp_path)
    with pytest.raises(InvalidInputError, match="does not exist"):
        check_target(tmp_path / "no" / "such" / "m", tmp_path)


def test_the_file_systems_root_is_not_a_model_directory(tmp_path: Path) -> None:
    """``--publish /`` published the graph as /1 (the root's parent is itself, a
    directory, so the check that the repository exists held)."""
    with pytest.raises(InvalidInputError, match="not the file system's root"):
        check_target(Path("/"), tmp_path)
    assert not Path("/1").exists()
