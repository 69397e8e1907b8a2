"""From a description of a load to a loaded model: resolve, pick the version, pick the
runtime, load, warm up. The version directory, the worker processes and the batcher a
load gets are ``keepwarm.loading_extras``'s.

``LoadDescription`` (``keepwarm.load_description``, named here too) is the load as plain,
picklable data: what a worker process receives, and what a restarted worker replays.
``RuntimeSpec`` wraps one for the manager (the
``LoadSpec`` it calls). A Python class crosses a process boundary by name,
``"module:qualname"``; in this process the class object the caller gave is used as is.

``keepwarm.load(..., options={"class": MyModel})`` and ``options={"allow_unsafe": True}``
keep working: ``spec_from_call`` takes those two keys out of ``options`` into the
description's ``python_class`` and ``allow_unsafe`` fields. Runtimes still receive them
as ``options["class"]`` and ``options["allow_unsafe"]`` (the ``Runtime`` protocol).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from keepwarm.batching.model import BatchedModel
from keepwarm.config_batching import BatchingConfig, batching_argument
from keepwarm.config_workers import WorkersConfig, workers_argument
from keepwarm.errors import InvalidConfigError, ModelNotFoundError, UnsafeFormatError
from keepwarm.load_description import LoadDescription, check_class_name, class_name
from keepwarm.loading_extras import (
    batched,
    batching_for,
    model_name,
    select_version,
    workers_for,
)
from keepwarm.runtimes.base import LoadedModel, Runtime, files_nbytes
from keepwarm.runtimes.registry import detect_runtime, get_runtime
from keepwarm.settings import (
    BatchingSettings,
    DownloadSettings,
    LoadingSettings,
    WarmupSettings,
    WorkerSettings,
)
from keepwarm.sources.layout import version_number
from keepwarm.sources.resolve import local_path_or_none, redact_url
from keepwarm.warmup import read_samples, warmup

# LoadDescription and select_version are public API here (``keepwarm.loading.*``).
__all__ = ["LoadDescription", "RuntimeSpec", "select_version", "spec_from_call"]


def spec_from_call(
    uri: str,
    *,
    version: int | None = None,
    runtime: str | None = None,
    signature: str | None = None,
    options: Mapping[str, Any] | None = None,
    warmup_runs: int = WarmupSettings.runs,
    downloads: DownloadSettings | None = None,
    batching: bool | Mapping[str, Any] | BatchingConfig | None = None,
    batching_defaults: BatchingSettings | None = None,
    workers: bool | Mapping[str, Any] | WorkersConfig | None = None,
    worker_settings: WorkerSettings | None = None,
) -> RuntimeSpec:
    """The spec of a ``keepwarm.load`` call: ``options["class"]`` (a class or its
    ``"module:qualname"``) and ``options["allow_unsafe"]`` become the description's fields.

    ``batching``: True (the defaults), a ``[batching]`` table, False (off), or None: on
    when a ``model.toml`` beside the versions has a ``[batching]`` table. Keys left out
    come from ``batching_defaults`` (``Settings.batching``).

    ``workers``: the same forms for ``[workers]`` (``keepwarm.config_workers``); False
    keeps the model in this process whatever model.toml or ``worker_settings.isolate``
    say. ``worker_settings``: ``Settings.workers``."""
    rest = dict(options or {})
    allow_unsafe = rest.pop("allow_unsafe", False)
    if type(allow_unsafe) is not bool:
        raise InvalidConfigError(
            f"options['allow_unsafe'] must be True or False, got {allow_unsafe!r}"
        )
    target = rest.pop("class", None)
    cls = target if isinstance(target, type) else None
    name = (
        class_name(cls)
        if cls is not None
        else (None if target is None else check_class_name(target))
    )
    description = LoadDescription(
        uri,
        version,
        runtime,
        signature,
        rest,
        allow_unsafe=allow_unsafe,
        python_class=name,
        warmup_runs=warmup_runs,
        downloads=downloads,
    )
    defaults = batching_defaults if batching_defaults is not None else BatchingSettings()
    server = worker_settings if worker_settings is not None else WorkerSettings()
    spec = RuntimeSpec(
        description,
        python_class=cls,
        batching=batching_argument(batching, defaults),
        workers=workers_argument(workers, server),
        worker_settings=None if workers is False else server,
    )
    if batching is None:
        spec.toml_batching = defaults
    spec.toml_workers = workers is None
    return spec


class RuntimeSpec:
    """A ``LoadSpec`` for the manager: a ``LoadDescription``, loaded by one runtime.

    ``python_class``: the class object itself, when the caller gave one in this process
    (the description names it; a class defined inside a function has no importable name)."""

    def __init__(
        self,
        load_description: LoadDescription,
        *,
        python_class: type | None = None,
        config: Any = None,
        batching: BatchingConfig | None = None,
        nbytes: int | None = None,
        workers: WorkersConfig | None = None,
        worker_settings: WorkerSettings | None = None,
    ) -> None:
        self.load_description = load_description
        self.python_class = python_class
        self.config = config  # the model.toml this spec was made from (repository)
        self.format: str | None = None  # the detected runtime's name, once known
        self.batching = batching  # on when given: the loaded model predicts in batches
        # Set: read a model.toml beside the versions for [batching] (keepwarm.load).
        self.toml_batching: BatchingSettings | None = None
        # Worker processes: ``workers`` (a [workers] table) or, without one, isolation
        # when ``worker_settings.isolate``; None settings: never (a worker's own loads).
        self.workers = workers
        self.worker_settings = worker_settings
        self.toml_workers = False  # read a model.toml beside the versions for [workers]
        self.nbytes = nbytes  # the size of its files, when a scan already measured it
        self.answered: int | None = None  # the version the last load took, when known
        self.load_note: str | None = None  # what the last load served, for status

    @property
    def uri(self) -> str:
        return self.load_description.uri

    @property
    def version(self) -> int | None:
        return self.load_description.version

    @property
    def description(self) -> str:
        """Words for messages (the URI without credentials)."""
        uri, version = redact_url(self.uri), self.version
        where = uri if version is None else f"{uri} (version {version})"
        return f"{self.format or 'model'} at {where}"

    def estimate_nbytes(self) -> int:
        if self.nbytes is not None:
            return self.nbytes  # measured by the scan's own walk: no second one
        local = local_path_or_none(self.uri)
        if local is None:
            return 0  # unknown until fetched; the budget is corrected after the load
        try:
            return files_nbytes(select_version(local, self.version))
        except (OSError, ModelNotFoundError):
            return 0  # the load reports the real error

    def pick_runtime(self, path: Path) -> Runtime:
        described = self.load_description
        name = described.runtime or ("python" if described.python_class else None)
        runtime = get_runtime(name) if name else detect_runtime(path)
        self.format = runtime.name
        if runtime.unsafe and not described.allow_unsafe:
            raise UnsafeFormatError(
                f"{path} is a {runtime.name} file, a format that runs code when loaded; "
                "pass options={'allow_unsafe': True} if you trust it",
                format=runtime.name,
            )
        return runtime

    def runtime_options(self) -> dict[str, Any]:
        """The options the runtime gets: the description's, plus ``class`` and
        ``allow_unsafe`` as the ``Runtime`` protocol reads them."""
        described = self.load_description
        options = copy.deepcopy(dict(described.options))
        target = self.python_class or described.python_class
        if target is not None:
            options["class"] = target
        if described.allow_unsafe:
            options["allow_unsafe"] = True
        return options

    def load(self) -> LoadedModel:
        from keepwarm.sources import held
        from keepwarm.thread_priority import lower_this_thread

        lower_this_thread("runtime")  # the runtime's pools, made now, inherit it (thread_priority)

        described = self.load_description
        # A download cache entry is held (not evicted) while its model is loaded; its
        # files are dropped from the cache when they fail to load.
        found, hold = held.open_files(self.uri, described.downloads)
        try:
            path = select_version(found, self.version)
            self.answered = version_number(path.name) if path != found else self.version
            runtime = self.pick_runtime(path)
            batching = batching_for(found, self.batching, self.toml_batching)
            options = self.runtime_options()
            workers = workers_for(found, self.workers, self.worker_settings, self.toml_workers)

            if workers is None:
                model = self._load_here(path, runtime, options)
            else:
                from keepwarm.workers import load_in_workers

                assert self.worker_settings is not None
                # The version found here, by its local path and runtime: a worker never
                # resolves, downloads or picks a version itself.
                model = load_in_workers(
                    replace(described, uri=str(path), version=None, runtime=runtime.name),
                    model_name(path),
                    version_number(path.name),
                    workers.processes,
                    self.worker_settings,
                )
        except BaseException as exc:
            held.failed(hold, exc)
            raise
        held.loaded(model, hold)
        return model if batching is None else batched(model, path, batching, options)

    def _load_here(self, path: Path, runtime: Runtime, options: dict[str, Any]) -> LoadedModel:
        """Load in this process: the source, or the graph ``[optimize]`` converts it to."""
        described = self.load_description

        def load_source() -> LoadedModel:
            return runtime.load(path, signature=described.signature, options=options)

        if described.optimize is None:
            return load_source()
        from keepwarm.optimize.auto import load_optimized
        from keepwarm.sources.download_cache import download_settings

        model, self.load_note = load_optimized(
            path,
            runtime.name,
            described.signature,
            described.optimize,
            described.warmup_file,
            load_source,
            # bounded by the load timeout (the repository puts its own in the plan)
            float(described.optimize.get("timeout", LoadingSettings.load_timeout)),
            download_settings(described.downloads).directory(),
            described.options,
        )
        return model

    def warmup(self, model: LoadedModel) -> str | None:
        """Warm ``model`` up; a note for its status when generated warmup was skipped.
        Raises when supplied samples fail (the load fails)."""
        described = self.load_description
        if described.warmup_runs <= 0:
            return self.load_note
        samples = [] if described.warmup_file is None else read_samples(described.warmup_file)
        batcher = model if isinstance(model, BatchedModel) else None
        inner = batcher.inner if batcher is not None else model
        note = warmup(inner, samples, described.warmup_runs, what=self.description)
        # Every batch size the batcher uses, run once (and timed) before the version serves.
        buckets = None if batcher is None else batcher.warm_buckets(samples)
        return "; ".join(n for n in (self.load_note, note, buckets) if n) or None
