"""An S3 repository with no credentials anywhere (no variables, no files, no instance
metadata): listing it is a ``DownloadError`` naming the store and the cause, as every
other store's failure is. It was botocore's own ``NoCredentialsError``, raised raw from
``Repository("s3://...")``: no keepwarm error, so ``except keepwarm.KeepwarmError`` missed
it, and each later poll logged a whole traceback ("scanning ... failed"), not once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import s3fs  # noqa: F401  (the remote extra: missing fails the run, never skips)

from keepwarm.errors import DownloadError
from keepwarm.repository import Repository
from keepwarm.sources.remote_repository import RemoteSource


@pytest.fixture
def no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata either
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


# Port 9 on the loopback: credentials are looked for before any connection is made.
OPTIONS = {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}, "skip_instance_cache": True}


@pytest.mark.usefixtures("no_credentials")
def test_listing_without_credentials_is_a_download_error_naming_the_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = "s3://models-bucket/repo"
    with pytest.raises(DownloadError, match=r"s3://models-bucket/repo.*NoCredentialsError"):
        RemoteSource(url, storage_options=OPTIONS).scan()
    source = RemoteSource(url, storage_options=OPTIONS, cache_dir=tmp_path / "cache")
    repo = Repository(url, source=source, watch=False)
    try:
        failed = pytest.raises(DownloadError, match="NoCredentialsError")
        with caplog.at_level(logging.WARNING, logger="keepwarm"), failed:
            repo.start()  # the first scan
        assert "NoCredentialsError" in (repo.status().listing_error or "")
        # nothing was ever listed: no "last good listing" to serve on with
        assert "serving on with nothing (none listed yet)" in caplog.text
    finally:
        repo.close()
