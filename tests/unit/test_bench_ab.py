"""``bench/ab.py``'s model repositories: a side named with ``--off`` serves the model
without its ``model.toml`` (batching off), the others as given; the example is untouched."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from ab import repositories


def test_the_off_repository_has_no_model_toml(tmp_path: Path) -> None:
    example = tmp_path / "examples" / "mlp"
    (example / "1").mkdir(parents=True)
    (example / "1" / "saved_model.pb").write_bytes(b"graph")
    (example / "model.toml").write_text("[batching]\nmax_batch_size = 32\n")
    repo, plain = repositories(tmp_path / "examples", "mlp", tmp_path / "scratch")
    assert (repo / "mlp" / "model.toml").read_text().startswith("[batching]")
    assert not (plain / "mlp" / "model.toml").exists()
    for where in (repo, plain):
        assert (where / "mlp" / "1" / "saved_model.pb").read_bytes() == b"graph"
    assert (example / "model.toml").exists()


def test_a_model_without_model_toml_is_copied_as_is(tmp_path: Path) -> None:
    (tmp_path / "examples" / "plain" / "1").mkdir(parents=True)
    repo, plain = repositories(tmp_path / "examples", "plain", tmp_path / "scratch")
    assert (repo / "plain" / "1").is_dir() and (plain / "plain" / "1").is_dir()
