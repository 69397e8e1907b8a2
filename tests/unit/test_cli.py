"""The ``keepwarm`` command, run in-process through ``main([...])``."""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import keepwarm
from keepwarm.cli import main
from support.http_server import serving

MODELS = ["mlp", "mlp_onnx"]


@pytest.fixture(scope="module")
def cache() -> Iterator[keepwarm.ModelCache]:
    cache = keepwarm.ModelCache()
    yield cache
    cache.close()


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).random((3, 784), dtype=np.float32)


def expected(cache: keepwarm.ModelCache, uri: Path, batch: np.ndarray) -> np.ndarray:
    return cache.load(uri).predict(batch)["probs"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", MODELS)
def test_inspect(name: str, example_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "inspect", str(example_models / name), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["path"] == str(example_models / name / "1")
    assert info["format"] in ("savedmodel", "onnx")
    assert [s["name"] for s in info["signature"]["inputs"]] == ["image"]
    assert info["signature"]["inputs"][0]["shape"] == [-1, 784]
    assert [s["name"] for s in info["signature"]["outputs"]] == ["probs"]
    assert info["nbytes"] > 0 and info["nbytes_source"] in ("framework", "files")
    assert info["load_seconds"] > 0
    assert "loaded" in err

    code, out, _ = run(capsys, "inspect", str(example_models / name), "--version", "1", "-q")
    assert code == 0
    assert "image: float32[-1, 784]" in out and "probs: float32[-1, 10]" in out
    assert "bytes (" in out and "load time:" in out


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", ["npy", "npz", "json", "json-inputs", "json-list"])
def test_predict_inputs(
    name: str,
    kind: str,
    example_models: Path,
    batch: np.ndarray,
    cache: keepwarm.ModelCache,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri = example_models / name
    if kind == "npy":
        source = tmp_path / "x.npy"
        np.save(source, batch)
    elif kind == "npz":
        source = tmp_path / "x.npz"
        np.savez(source, image=batch)
    else:
        source = tmp_path / "x.json"
        body = {"list": batch.tolist(), "json": {"image": batch.tolist()}}.get(
            kind.removeprefix("json-"), {"inputs": {"image": batch.tolist()}}
        )
        source.write_text(json.dumps(body))
    code, out, err = run(capsys, "predict", str(uri), "--input", str(source))
    assert code == 0, err
    got = np.asarray(json.loads(out)["outputs"]["probs"], dtype=np.float32)
    np.testing.assert_allclose(got, expected(cache, uri, batch), atol=1e-6, rtol=0)


@pytest.mark.parametrize("suffix", ["npz", "json"])
def test_predict_output_file(
    suffix: str,
    example_models: Path,
    batch: np.ndarray,
    cache: keepwarm.ModelCache,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri = example_models / "mlp_onnx"
    np.save(tmp_path / "x.npy", batch)
    target = tmp_path / f"y.{suffix}"
    code, out, err = run(
        capsys, "predict", str(uri), "-i", str(tmp_path / "x.npy"), "-o", str(target), "-q"
    )
    assert code == 0, err
    assert out == ""
    if suffix == "npz":
        with np.load(target) as data:
            got = data["probs"]
    else:
        got = np.asarray(json.loads(target.read_text())["outputs"]["probs"])
    np.testing.assert_allclose(got, expected(cache, uri, batch), atol=1e-6, rtol=0)


def test_integer_json_feeds_a_float_input(
    example_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "x.json"
    source.write_text(json.dumps([[0] * 784]))
    code, out, err = run(capsys, "predict", str(example_models / "mlp_onnx"), "-i", str(source))
    assert code == 0, err
    assert len(json.loads(out)["outputs"]["probs"][0]) == 10


def test_missing_path_is_a_clean_error(
    example_models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "inspect", str(example_models / "mpl"))
    assert code == 2
    assert out == ""
    assert err.startswith("error: model path ") and "mlp" in err  # names the near miss
    assert "Traceback" not in err


def test_wrong_input_shape_names_the_input(
    example_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 783), np.float32))
    code, _, err = run(
        capsys, "predict", str(example_models / "mlp"), "-i", str(tmp_path / "x.npy")
    )
    assert code == 2
    assert "error: input 'image'" in err and "784" in err
    assert "Traceback" not in err


def test_missing_or_unknown_input_file(
    example_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = str(example_models / "mlp_onnx")
    code, _, err = run(capsys, "predict", uri, "-i", str(tmp_path / "nope.npy"))
    assert code == 2 and "nope.npy does not exist" in err
    (tmp_path / "x.csv").write_text("1,2")
    code, _, err = run(capsys, "predict", uri, "-i", str(tmp_path / "x.csv"))
    assert code == 2 and ".npy, .npz or .json" in err


@pytest.mark.parametrize("suffix", ["json", "npz"])
def test_an_output_file_that_cannot_be_written_is_a_clean_error(
    suffix: str, example_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 784), np.float32))
    target = tmp_path / "missing" / f"y.{suffix}"
    code, out, err = run(
        capsys, "predict", str(example_models / "mlp_onnx"), "-i", str(tmp_path / "x.npy"),
        "-o", str(target), "-q",
    )  # fmt: skip
    assert code == 2, err
    assert err.startswith(f"error: cannot write output file {target}: "), err
    assert out == "" and "Traceback" not in err


def test_an_input_directory_is_not_said_to_be_missing(
    example_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "predict", str(example_models / "mlp_onnx"), "-i", str(tmp_path))
    assert code == 2
    assert f"error: input file {tmp_path} is a directory" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main([])
    assert raised.value.code == 2
    with pytest.raises(SystemExit) as raised:
        main(["predict", "some/model"])  # --input is required
    assert raised.value.code == 2
    assert "--input" in capsys.readouterr().err


@pytest.fixture
def hub_server(example_hub_tarball: Path) -> Iterator[str]:
    """The hub tarball's directory served over loopback HTTP; yields the tarball's URL."""
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(example_hub_tarball.parent)
    )
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    with serving(server):
        yield f"http://127.0.0.1:{server.server_port}/{example_hub_tarball.name}"


def test_inspect_hub_handle_shows_progress(
    hub_server: str, example_hub_tarball: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "inspect", hub_server, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["uri"] == hub_server and Path(info["path"]).is_dir()
    assert [s["name"] for s in info["signature"]["inputs"]] == ["image"]
    megabytes = f"{example_hub_tarball.stat().st_size / 1024 / 1024:.1f} MB"
    assert f"downloading ({megabytes}) ...\n" in err  # the size from Content-Length
    assert f"downloaded {megabytes} in " in err
    assert "loading savedmodel ..." in err and "loaded savedmodel in" in err

    code, _, err = run(capsys, "inspect", hub_server)  # now cached: no download
    assert code == 0 and "downloading" not in err


def test_version_flag_in_a_subprocess() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "keepwarm", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"keepwarm {keepwarm.__version__}"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("garbage.npz", b"PK\x03\x04garbage", "BadZipFile"),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "RecursionError"),
        ("cut.npy", b"\x93NUMPY\x01\x00v\x00{'descr'", "cannot read input file"),
    ],
)
def test_a_malformed_input_file_is_a_clean_error(
    name: str,
    content: bytes,
    expected: str,
    example_models: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bad zip and a too-deep JSON were tracebacks (exit 1)."""
    (tmp_path / name).write_bytes(content)
    code, _, err = run(
        capsys, "predict", str(example_models / "mlp_onnx"), "-i", str(tmp_path / name)
    )
    assert code == 2, err
    assert err.startswith(f"error: cannot read input file {tmp_path / name}: ") and expected in err


def test_an_input_that_is_no_regular_file_and_a_bad_output_name_before_loading(
    example_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """/dev/null was said not to exist; an output name that cannot be written was refused
    only after the model had loaded and run."""
    uri = str(example_models / "mlp_onnx")
    code, _, err = run(capsys, "predict", uri, "-i", "/dev/null")
    assert code == 2 and "input file /dev/null: not a regular file" in err
    np.save(tmp_path / "x.npy", np.zeros((1, 784), np.float32))
    for target in (tmp_path / "y.txt", tmp_path):
        code, out, err = run(
            capsys, "predict", uri, "-i", str(tmp_path / "x.npy"), "-o", str(target)
        )
        assert code == 2 and out == ""
        assert f"error: output file {target}: expected a .npz or .json file name" in err
        assert "loading" not in err  # refused before the model loaded


def test_tensorflows_start_up_lines_are_filtered_out(example_models: Path) -> None:
    # was: every inspect or predict of a SavedModel printed TensorFlow's oneDNN notice and,
    # on a machine without a GPU, "E... failed call to cuInit: INTERNAL: CUDA error", -q
    # or not (the server filtered them already)
    import os

    from keepwarm.logs import is_native_chatter

    environ = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    done = subprocess.run(
        [sys.executable, "-m", "keepwarm", "inspect", str(example_models / "mlp"), "-q"],
        capture_output=True,
        timeout=120,
        check=False,
        env=environ,
    )
    assert done.returncode == 0, done.stderr
    assert b"format:     savedmodel" in done.stdout
    chatter = [line for line in done.stderr.splitlines() if is_native_chatter(line)]
    assert chatter == [], done.stderr
