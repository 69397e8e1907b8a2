"""The filesystem source: names, symlinks, half-written versions, model.toml."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from checkpoint_index import write_checkpoint_index

from keepwarm.errors import (
    InvalidConfigError,
    InvalidInputError,
    ModelNotFoundError,
    UnavailableError,
)
from keepwarm.runtimes import registry
from keepwarm.runtimes.base import LoadedModel
from keepwarm.sources.filesystem import MARKER, FilesystemSource
from keepwarm.sources.layout import check_model_name, version_number


class FakeRuntime:
    """Recognises ``model.fake``; a file starting with ``partial`` is an incomplete model."""

    name = "fake-fs"
    priority = 1000
    unsafe = False

    def detect(self, path: Path) -> bool:
        return (path / "model.fake").is_file()

    def incomplete(self, path: Path) -> str | None:
        data = (path / "model.fake").read_bytes()
        return "the fake model is partial" if data.startswith(b"partial") else None

    def load(self, path: Path, *, signature: str | None, options: Mapping[str, Any]) -> LoadedModel:
        raise NotImplementedError


registry.register(FakeRuntime())


def fake_version(root: Path, model: str, version: int, data: bytes = b"whole") -> Path:
    path = root / model / str(version)
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.fake").write_bytes(data)
    return path


def taken(source: FilesystemSource, model: str) -> set[int]:
    return {v for v, listing in source.scan()[model].versions.items() if listing.complete}


# ------------------------------------------------------------------ tests


def test_root_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        FilesystemSource(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelNotFoundError, match="not a directory"):
        FilesystemSource(tmp_path / "file")


def test_a_version_is_taken_once_unchanged_across_two_scans(tmp_path: Path) -> None:
    path = fake_version(tmp_path, "m", 1)
    source = FilesystemSource(tmp_path)
    first = source.scan()["m"].versions[1]
    assert not first.complete and "next scan" in (first.reason or "")
    assert taken(source, "m") == {1}
    listing = source.scan()["m"].versions[1]
    assert listing.runtime == "fake-fs" and listing.reason is None and listing.path == path

    (path / "extra.bin").write_bytes(b"more")  # still being copied: waits again
    assert taken(source, "m") == set()
    assert taken(source, "m") == {1}


def test_a_marker_makes_a_version_complete_at_once(tmp_path: Path) -> None:
    path = fake_version(tmp_path, "m", 1)
    (path / MARKER).touch()
    assert taken(FilesystemSource(tmp_path), "m") == {1}


def test_a_marked_version_with_an_incomplete_format_is_refused(tmp_path: Path) -> None:
    path = fake_version(tmp_path, "m", 1, b"partial")
    (path / MARKER).touch()
    source = FilesystemSource(tmp_path)
    for _ in range(2):
        listing = source.scan()["m"].versions[1]
        assert not listing.complete
        assert listing.reason == "incomplete fake-fs model: the fake model is partial"


def test_empty_and_unrecognised_versions_are_never_complete(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "2").mkdir()
    (tmp_path / "m" / "2" / MARKER).touch()
    (tmp_path / "m" / "3").mkdir()
    (tmp_path / "m" / "3" / "notes.txt").write_text("?")
    source = FilesystemSource(tmp_path)
    for _ in range(2):
        versions = source.scan()["m"].versions
    assert "empty" in (versions[1].reason or "") and "empty" in (versions[2].reason or "")
    assert not versions[3].complete and "no runtime recognises" in (versions[3].reason or "")


def test_savedmodel_missing_a_shard_is_refused(tmp_path: Path) -> None:
    version = tmp_path / "sm" / "1"
    (version / "variables").mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"\x08\x01graph")
    write_checkpoint_index(version / "variables" / "variables.index", [8, 8])
    (version / "variables" / "variables.data-00000-of-00002").write_bytes(bytes(8))
    (version / MARKER).touch()
    source = FilesystemSource(tmp_path)
    listing = source.scan()["sm"].versions[1]
    assert not listing.complete and listing.runtime == "savedmodel"
    assert "variables.data-00001-of-00002 is missing" in (listing.reason or "")

    (version / "variables" / "variables.data-00001-of-00002").write_bytes(bytes(8))
    listing = source.scan()["sm"].versions[1]
    assert listing.complete, listing.reason


def test_the_configured_runtime_is_used(tmp_path: Path) -> None:
    path = fake_version(tmp_path, "m", 1)
    (path / MARKER).touch()
    (tmp_path / "m" / "model.toml").write_text('runtime = "nosuch"')
    listing = FilesystemSource(tmp_path).scan()["m"].versions[1]
    assert not listing.complete and "unknown runtime 'nosuch'" in (listing.reason or "")


def test_symlinks_leaving_the_root_are_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    fake_version(outside, "ext", 1)
    fake_version(root, "own", 1)
    (root / "ext").symlink_to(outside / "ext")  # a model dir
    (root / "own" / "2").symlink_to(outside / "ext" / "1")  # a version dir
    leak = fake_version(root, "own", 3)
    (leak / "weights.bin").symlink_to(outside / "ext" / "1" / "model.fake")  # a file
    (root / "alias").symlink_to(root / "own")  # inside the root: fine
    source = FilesystemSource(root)
    source.scan()
    models = source.scan()
    assert set(models) == {"alias", "own"}
    assert set(models["own"].versions) == {1, 3}
    assert models["own"].versions[1].complete
    assert "weights.bin is a symlink" in (models["own"].versions[3].reason or "")
    assert "outside the repository" in (models["own"].versions[3].reason or "")
    assert any(s.startswith("ext: a symlink") for s in source.skipped)
    assert any(s.startswith("own/2: a symlink") for s in source.skipped)


def test_bad_names_are_skipped_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("ok", "a..b", "bad name", "-dash", ".hidden"):
        fake_version(tmp_path, name, 1)
    for version in ("007", "0", "v1", "2.tmp", ".3"):
        (tmp_path / "ok" / version).mkdir()
    (tmp_path / "ok" / "4").write_text("a file")
    (tmp_path / "ok" / "README").write_text("ignored")
    (tmp_path / "notes.txt").write_text("x")
    source = FilesystemSource(tmp_path)
    with caplog.at_level(logging.WARNING, logger="keepwarm.sources.filesystem"):
        models = source.scan()
    assert set(models) == {"ok"} and set(models["ok"].versions) == {1}
    reported = {line.split(":")[0] for line in source.skipped}
    assert reported == {
        "a..b",
        "bad name",
        "-dash",
        "notes.txt",
        "ok/007",
        "ok/0",
        "ok/v1",
        "ok/2.tmp",
        "ok/4",
    }
    assert len(caplog.records) == len(reported)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keepwarm.sources.filesystem"):
        source.scan()
    assert not caplog.records  # reported once, not at every scan


def test_name_helpers() -> None:
    assert check_model_name("resnet-50_v2.1") == "resnet-50_v2.1"
    for bad in ("..", "a/b", "", "x" * 129, "a..b", "/abs"):
        with pytest.raises(InvalidInputError):
            check_model_name(bad)
    assert version_number("12") == 12
    assert [version_number(n) for n in ("0", "012", "-1", "1.0", "\u0661")] == [None] * 5


def test_a_bad_model_toml_keeps_the_last_good_one(tmp_path: Path) -> None:
    fake_version(tmp_path, "m", 1)
    config = tmp_path / "m" / "model.toml"
    config.write_text("[versions]\npolicy = 'all'\n")
    source = FilesystemSource(tmp_path)
    good = source.scan()["m"]
    assert good.config.policy.kind == "all" and good.config_error is None and not good.blocked

    config.write_text("[versions]\npolcy = 'all'\n")
    bad = source.scan()["m"]
    assert bad.config == good.config and not bad.blocked
    assert "'versions.polcy'" in (bad.config_error or "") and str(config) in (
        bad.config_error or ""
    )
    assert source.config_for("m") == good.config

    config.write_text("[versions]\nlatest = 2\n")
    fixed = source.scan()["m"]
    assert fixed.config.policy.n == 2 and fixed.config_error is None


def test_a_model_toml_that_was_never_good_blocks_the_model(tmp_path: Path) -> None:
    fake_version(tmp_path, "m", 1)
    (tmp_path / "m" / "model.toml").write_text("pinned = 'yes'")
    source = FilesystemSource(tmp_path)
    listing = source.scan()["m"]
    assert listing.blocked and "pinned" in (listing.config_error or "")
    assert set(listing.versions) == {1}  # still listed, for status
    with pytest.raises(InvalidConfigError, match="pinned"):
        source.config_for("m")


def test_config_for(tmp_path: Path) -> None:
    fake_version(tmp_path, "m", 1)
    (tmp_path / "m" / "model.toml").write_text("pinned = true")
    source = FilesystemSource(tmp_path)
    assert source.config_for("m").pinned
    with pytest.raises(ModelNotFoundError):
        source.config_for("other")
    with pytest.raises(InvalidInputError):
        source.config_for("../m")


def test_a_removed_version_is_forgotten(tmp_path: Path) -> None:
    path = fake_version(tmp_path, "m", 1)
    source = FilesystemSource(tmp_path)
    source.scan()
    assert taken(source, "m") == {1}
    (path / "model.fake").unlink()
    path.rmdir()
    assert source.scan()["m"].versions == {}
    fake_version(tmp_path, "m", 1)
    assert taken(source, "m") == set()  # new again: two scans
    assert taken(source, "m") == {1}


def test_a_symlink_loop_inside_a_version_ends(tmp_path: Path) -> None:
    path = fake_version(tmp_path, "m", 1)
    (path / "sub").mkdir()
    os.symlink(path, path / "sub" / "loop")
    source = FilesystemSource(tmp_path)
    source.scan()
    assert taken(source, "m") == {1}


def test_a_root_that_cannot_be_listed_fails_the_scan(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    fake_version(root, "m", 1)
    source = FilesystemSource(root)
    assert taken(source, "m") == set()  # seen once: settles at the next scan
    root.rename(tmp_path / "elsewhere")
    with pytest.raises(UnavailableError, match="cannot be listed"):
        source.scan()  # not an empty listing


def test_the_scan_measures_each_version_while_it_walks_it(tmp_path: Path) -> None:
    version = fake_version(tmp_path, "m", 1, b"x" * 100)
    (version / "assets").mkdir()
    (version / "assets" / "vocab.txt").write_bytes(b"y" * 23)
    (version / MARKER).touch()
    listing = FilesystemSource(tmp_path).scan()["m"].versions[1]
    assert listing.complete and listing.nbytes == 123


def test_both_sources_implement_the_source_protocol(tmp_path: Path) -> None:
    from keepwarm.sources.listing import Source, open_source
    from keepwarm.sources.remote_repository import RemoteSource

    local: Source = open_source(str(tmp_path))
    remote: Source = RemoteSource("memory://keepwarm-protocol-test")
    assert isinstance(local, FilesystemSource) and local.location == str(tmp_path)
    assert remote.watchable is False
    stop = threading.Event()
    remote.watch(stop, lambda: None)  # returns at once: nothing to watch
