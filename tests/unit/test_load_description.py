"""LoadDescription: a load as plain, picklable data, loaded in a real spawned process."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Iterator
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import keepwarm
from keepwarm.errors import InvalidConfigError, ModelLoadError, UnsafeFormatError
from keepwarm.loading import LoadDescription, RuntimeSpec, spec_from_call
from keepwarm.repository import Repository
from support.description_worker import Doubler, load_and_predict
from support.onnx_graphs import identity

CHILD_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def worker() -> Iterator[Pool]:
    """One spawned process (a fresh interpreter, nothing inherited) for every call."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        yield pool


def in_worker(pool: Pool, description: LoadDescription, inputs: dict[str, Any]) -> Any:
    blob = pickle.dumps(description)
    return pool.apply_async(load_and_predict, (blob, inputs)).get(CHILD_TIMEOUT_S)


def test_a_description_is_plain_data_that_survives_pickle(tmp_path: Path) -> None:
    described = LoadDescription(
        str(tmp_path / "m"),
        version="2",  # type: ignore[arg-type]
        runtime="onnx",
        options={
            "intra_op_num_threads": np.int64(1),
            "tags": ["serve"],
            "nested": {"a": [1.5]},
        },
        allow_unsafe=True,
        python_class="pkg.module:Outer.Inner",
        warmup_runs=0,
        warmup_file=tmp_path / "warmup.json",  # type: ignore[arg-type]
    )
    assert described.version == 2
    again = pickle.loads(pickle.dumps(described))
    assert again == described and hash(again) == hash(described)
    assert type(again.options["intra_op_num_threads"]) is int
    assert again.options == {
        "intra_op_num_threads": 1,
        "tags": ["serve"],
        "nested": {"a": [1.5]},
    }


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"options": {"class": Doubler}}, "python_class field"),
        ({"options": {"allow_unsafe": True}}, "allow_unsafe field"),
        ({"options": {"level": object()}}, r"options\['level'\] must be plain data"),
        ({"options": {"deep": [{"x": {1, 2}}]}}, r"options\['deep'\]\[0\]\['x'\]"),
        ({"allow_unsafe": 1}, "allow_unsafe must be True or False"),
        ({"python_class": "no_colon"}, "'module:qualname'"),
        ({"python_class": Doubler}, "'module:qualname'"),
        ({"warmup_runs": -1}, "warmup_runs"),
    ],
)
def test_a_description_refuses_what_a_worker_could_not_receive(
    fields: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidConfigError, match=match):
        LoadDescription("m", **fields)


def test_a_description_loads_in_a_spawned_process(worker: Pool, tmp_path: Path) -> None:
    assert worker.apply(os.getpid) != os.getpid()  # a real process of its own
    path = identity(tmp_path / "int32.onnx")
    status, outputs, note = in_worker(worker, LoadDescription(str(path)), {"x": [1, -2]})
    assert status == "ok" and outputs == {"y": [1, -2]} and note is None


def test_a_class_crosses_the_process_boundary_by_name(worker: Pool, tmp_path: Path) -> None:
    model = keepwarm.load(tmp_path, options={"class": Doubler}, cache=keepwarm.ModelCache())
    assert model.predict(np.ones((1, 2), np.float32))["y"].tolist() == [[2.0, 2.0]]  # here
    described = spec_from_call(str(tmp_path), options={"class": Doubler}).load_description
    assert described.python_class == "support.description_worker:Doubler"
    assert described.options == {} and not described.allow_unsafe
    status, outputs, _ = in_worker(worker, described, {"x": [[1.0, 3.0]]})
    assert (status, outputs) == ("ok", {"y": [[2.0, 6.0]]})


def test_a_class_that_cannot_be_imported_there_is_a_clear_load_error(
    worker: Pool, tmp_path: Path
) -> None:
    class Local(Doubler):
        """Defined inside a function: usable in this process, not importable by name."""

    model = keepwarm.load(tmp_path, options={"class": Local}, cache=keepwarm.ModelCache())
    assert model.predict(np.ones((1, 2), np.float32))["y"].tolist() == [[2.0, 2.0]]
    described = spec_from_call(str(tmp_path), options={"class": Local}).load_description
    assert described.python_class is not None and "<locals>.Local" in described.python_class
    status, kind, message = in_worker(worker, described, {"x": [[1.0, 3.0]]})
    assert (status, kind) == ("error", "ModelLoadError"), message
    assert described.python_class in message and "module level" in message, message
    gone = LoadDescription(str(tmp_path), python_class="kw_module_only_here:Model")
    status, kind, message = in_worker(worker, gone, {"x": [[1.0]]})
    assert (status, kind) == ("error", "ModelLoadError") and "kw_module_only_here" in message
    with pytest.raises(ModelLoadError, match="module level"):  # the same error in this process
        RuntimeSpec(described).load()


def test_a_class_under_a_mistyped_key_is_told_where_a_class_goes(tmp_path: Path) -> None:
    """options={"clas": Model} said only that a type is not plain data."""
    with pytest.raises(InvalidConfigError, match=r"options\['clas'\].*given as options\['class'\]"):
        keepwarm.load(tmp_path, options={"clas": Doubler}, cache=keepwarm.ModelCache())


def test_a_class_of_the_script_run_as_main_is_named_as_such(tmp_path: Path) -> None:
    """A script's own class travels as '__main__:Name', which a worker's __main__ lacks:
    the error said only "'__main__' has no attribute", of a class the user could see."""
    described = LoadDescription(str(tmp_path), python_class="__main__:ScriptsOwnModel")
    with pytest.raises(ModelLoadError, match="defined in the script being run") as caught:
        RuntimeSpec(described).load()
    assert "'__main__:ScriptsOwnModel'" in str(caught.value)


def test_options_class_and_allow_unsafe_still_work_through_keepwarm_load(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(Doubler()))
    cache = keepwarm.ModelCache(warmup=False)
    with pytest.raises(UnsafeFormatError, match=r"options=\{'allow_unsafe': True\}"):
        cache.load(tmp_path)
    model = cache.load(tmp_path, options={"allow_unsafe": True})
    assert model.predict(np.ones((1, 2), np.float32))["y"].tolist() == [[2.0, 2.0]]
    with pytest.raises(
        InvalidConfigError, match=r"options\['allow_unsafe'\] must be True or False"
    ):
        cache.load(tmp_path, options={"allow_unsafe": "yes"})
    (tmp_path / "m").mkdir()
    named = cache.load(tmp_path / "m", options={"class": "support.description_worker:Doubler"})
    assert named.format == "python"


def test_a_repository_with_a_truthy_allow_unsafe_is_refused_at_once(tmp_path: Path) -> None:
    # It made every version refused, silently; now Settings says what it wants at once.
    identity(tmp_path / "m" / "1" / "model.onnx")
    with pytest.raises(InvalidConfigError, match="allow_unsafe=1: expected true or false"):
        Repository(tmp_path, poll_seconds=0.05, allow_unsafe=1)  # type: ignore[arg-type]
    with Repository(tmp_path, poll_seconds=0.05, allow_unsafe=False) as repo:
        assert repo.wait_ready("m", timeout=30) == 1
