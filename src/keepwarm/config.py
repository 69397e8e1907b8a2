"""A model's configuration: the optional ``<root>/<model>/model.toml``.

Every key is optional; a model without the file is served with the defaults (the latest
version, the runtime detected from its files, ``Settings.warmup.runs`` warmup runs, the
``Settings.batching`` values). The whole format::

    runtime = "savedmodel"      # detected from the files when absent
    signature = "serving_default"
    pinned = false              # true: never evicted to make room for another model
    default = "stable"          # what a request naming no version gets: a label or a version

    [versions]
    policy = "latest"           # "latest" (default) | "all" | "specific"
    latest = 2                  # with "latest": how many of the highest versions (default 1)
    specific = [3, 4]           # with "specific": exactly these (when present on disk)

    [labels]                    # name = version; labelled versions are served too
    stable = 3
    canary = 4

    [warmup]
    runs = 3                    # 0 turns warmup off, at most 1000 (default: Settings.warmup.runs)
    samples = "warmup.npz"      # sample inputs (.json or .npz), a path inside each version

    [options]                   # passed to the runtime as they are
    intra_op_num_threads = 2    # ONNX Runtime's threads (also inter_op_num_threads)
    tf_executor = "default"     # SavedModel, Keras: "single_threaded" (default) | "default":
                                # TensorFlow's executor for each call (below)

    [batching]                  # turns batching on; every key optional
    max_batch_size = 32         # rows in one batch (1 to 65536); a request's own rows count
    max_delay_ms = 2.0          # the longest a partial batch is held (only under load)
    max_queue = 1024            # requests waiting; past it, UNAVAILABLE (503) at once
    pad_axes = [1]              # non-batch axes padded (with zeros) so that requests of
                                # other sizes there share a batch: a list for every input,
                                # or a table per input: pad_axes = { tokens = [1] }
    run_alone = 4               # while nothing is queued, requests run at once, each
                                # alone, up to this many (default: the batch slots)

With ``[batching]``, concurrent requests of the same shape are run together (padded with
rows to a size of 1, 2, 4, ... ``max_batch_size``, each run once before any batch uses it:
the smallest at load, the others just after). A model is batched
only when every input's first axis is the batch (unknown size in the signature). An axis
is padded only where ``pad_axes`` lists it; outputs that carry the padded size on that
axis are cropped back to each request's own size, so list an axis only when padding it
with zeros does not change the other values (a masked or summed sequence) An input or an axis
the model's signature lacks fails the load (``InvalidConfigError``).

    [optimize]                  # serve a faster graph converted at load (see below)
    to = "onnx"                 # required in the table: the only target
    quantize = "dynamic"        # optional: "dynamic" | "float16" | "static"
    max_abs_diff = 1e-4         # optional gate limits (keepwarm optimize's flags)
    min_agreement = 0.99        # (max_accuracy_drop is refused here: no labels at load)

``[optimize]`` converts a SavedModel or Keras version to ONNX when it loads (in a child
process, bounded by the load timeout), caches the converted graph keyed by the source's
content, checks it against the source on the warmup samples (generated inputs when there
are none) and serves it when the gate passes: by default, every output within 1e-4
unquantized, the same top-1 answer on 99% of the samples quantized. When conversion
fails or the gate refuses, the source serves and the version's status says why.

    [workers]                   # run the model in worker processes (keepwarm.config_workers)
    processes = 2               # 1 to 64 (default 1); each process loads the model once
    isolate = true              # default: Settings.workers.isolate

With ``[workers]``, the model is loaded in worker processes (fresh interpreters) and its
requests are sent to them, tensors through shared memory: a Python model that holds the
GIL uses a core per process. A worker that dies is restarted and its models loaded again;
requests it held fail with UNAVAILABLE (503). ``isolate`` keeps any model (TensorFlow,
ONNX) in a worker process of its own, so that unloading it gives its memory back.

``tf_executor`` picks the TensorFlow executor that runs a SavedModel's or Keras model's
calls. ``"single_threaded"`` (the default) tries TensorFlow's single-threaded executor on
the first call (the warmup) and keeps it unless it refuses the graph (control flow:
``tf.cond``, ``tf.while_loop``, ``tf.debugging`` assertions), when TensorFlow's default
executor is kept; ``"default"`` never tries it. The single-threaded executor runs the
graph's kernels on the calling thread (each kernel keeps its intra-op threads), with no
hand-off to the inter-op threads, which sleep between calls and are woken by each call;
what it gives up is running independent branches of the graph at once (the figures are in
``keepwarm.runtimes._executor``).

``policy`` may be left out: it is ``"specific"`` when ``specific`` is given, ``"latest"``
otherwise. Unknown keys are errors, so a typo never passes silently; every error names the
file, the key, what was expected and what was given. ``allow_unsafe`` and ``class`` cannot
be set in ``[options]``: whoever can write a model directory must not be able to opt in to
code execution, nor switch a model to running a Python class.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from keepwarm.config_batching import BatchingConfig, batching_config, batching_section
from keepwarm.config_optimize import OptimizeConfig, optimize_section
from keepwarm.config_table import EMPTY, TomlTable, read_config_file
from keepwarm.config_workers import WorkersConfig, workers_section
from keepwarm.errors import InvalidConfigError
from keepwarm.runtimes._executor import CHOICES as TF_EXECUTORS
from keepwarm.runtimes._executor import OPTION as TF_EXECUTOR
from keepwarm.settings_sections import MAX_WARMUP_RUNS

# Parsed by their own modules; named here as the types of ModelConfig's fields.
__all__ = [
    "FILENAME",
    "LABEL",
    "POLICIES",
    "SAMPLE_SUFFIXES",
    "BatchingConfig",
    "ModelConfig",
    "OptimizeConfig",
    "VersionPolicy",
    "WorkersConfig",
    "batching_config",
    "load_model_config",
    "parse_model_config",
]

FILENAME = "model.toml"
POLICIES = ("latest", "all", "specific")
LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
SAMPLE_SUFFIXES = (".json", ".npz")

_TOP = (
    "runtime",
    "signature",
    "pinned",
    "default",
    "versions",
    "labels",
    "warmup",
    "options",
    "batching",
    "optimize",
    "workers",
)
_VERSIONS = ("policy", "latest", "specific")
_WARMUP = ("runs", "samples")
_SERVER_ONLY_OPTIONS = ("allow_unsafe", "class")


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk are served: ``latest`` (the ``n`` highest), ``all``, or
    ``specific`` (those of ``versions`` that are present)."""

    kind: str = "latest"
    n: int = 1
    versions: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    runtime: str | None = None
    signature: str | None = None
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=lambda: EMPTY)
    default: int | str | None = None  # a version number or a label name
    warmup_runs: int | None = None  # None: Settings.warmup.runs
    warmup_samples: str | None = None
    pinned: bool = False
    options: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    batching: BatchingConfig | None = None
    optimize: OptimizeConfig | None = None
    workers: WorkersConfig | None = None


def _policy(versions: TomlTable) -> VersionPolicy:
    kind = versions.text("policy")
    latest = versions.integer("latest", 1)
    specific = versions.get("specific", list, "a list of positive integers")
    if kind is None:
        kind = "specific" if specific is not None else "latest"
    if kind not in POLICIES:
        raise versions.fail("policy", " or ".join(repr(p) for p in POLICIES), kind)
    if latest is not None and kind != "latest":
        raise versions.fail("latest", f"no 'latest' count with policy {kind!r}", latest)
    if kind == "specific":
        if not specific:
            raise versions.fail(
                "specific",
                "a non-empty list of positive integers (policy 'specific' needs it)",
                specific,
            )
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in specific):
            raise versions.fail("specific", "a list of positive integers", specific)
        return VersionPolicy("specific", versions=tuple(sorted(set(specific))))
    if specific is not None:
        raise versions.fail("specific", f"no 'specific' list with policy {kind!r}", specific)
    if kind == "all":
        return VersionPolicy("all")
    return VersionPolicy("latest", n=latest or 1)


def _labels(labels: Mapping[str, Any], source: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for name, version in labels.items():
        if not LABEL.match(name):
            raise InvalidConfigError(
                f"{source}: labels.{name}: expected a label name (a letter or '_', then "
                f"letters, digits, '_' or '-', at most 64), got {name!r}"
            )
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidConfigError(
                f"{source}: labels.{name}: expected a version (a positive integer), got {version!r}"
            )
        found[name] = version
    return found


def _default(top: TomlTable, labels: Mapping[str, int]) -> int | str | None:
    value = top.table.get("default")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str):
        if value in labels:
            return value
        known = ", ".join(sorted(labels)) or "none are defined"
        raise top.fail("default", f"a version or one of the labels ({known})", value)
    raise top.fail("default", "a version (a positive integer) or a label name", value)


def _samples(warmup: TomlTable) -> str | None:
    value = warmup.text("samples")
    if value is None:
        return None
    parts = PurePosixPath(value.replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts or value.startswith("~"):
        raise warmup.fail("samples", "a relative path inside the version directory", value)
    if parts.suffix.lower() not in SAMPLE_SUFFIXES:
        raise warmup.fail("samples", "a .json or .npz file", value)
    return parts.as_posix()


def _options(top: TomlTable) -> Mapping[str, Any]:
    options: dict[str, Any] = top.get("options", dict, "a table") or {}
    for key in _SERVER_ONLY_OPTIONS:
        if key in options:
            raise top.fail(
                f"options.{key}",
                "no such option in model.toml (it is a server setting: a model "
                "directory must not be able to make the server run code)",
                options[key],
            )
    if TF_EXECUTOR in options and options[TF_EXECUTOR] not in TF_EXECUTORS:
        expected = "one of " + ", ".join(f'"{c}"' for c in TF_EXECUTORS)
        raise top.fail(f"options.{TF_EXECUTOR}", expected, options[TF_EXECUTOR])
    return MappingProxyType(dict(options)) if options else EMPTY


def parse_model_config(text: str, *, source: str) -> ModelConfig:
    """The configuration in ``text`` (TOML); ``source`` names the file in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidConfigError(f"{source}: not valid TOML: {exc}") from exc
    top = TomlTable(source, data, "", _TOP)
    pinned = top.get("pinned", bool, "true or false")
    labels = _labels(top.get("labels", dict, "a table of name = version") or {}, source)
    warmup = top.table_at("warmup", _WARMUP)
    runs = warmup.integer("runs", 0, MAX_WARMUP_RUNS)  # 10**9 ran each load to its timeout
    return ModelConfig(
        runtime=top.text("runtime"),
        signature=top.text("signature"),
        policy=_policy(top.table_at("versions", _VERSIONS)),
        labels=MappingProxyType(labels) if labels else EMPTY,
        default=_default(top, labels),
        warmup_runs=runs,
        warmup_samples=_samples(warmup),
        pinned=bool(pinned),
        options=_options(top),
        batching=batching_section(top),
        optimize=optimize_section(top),
        workers=workers_section(top),
    )


def load_model_config(path: Path) -> ModelConfig:
    """The configuration in ``path`` (a ``model.toml``); the defaults when it does not exist."""
    try:
        raw = read_config_file(path)  # a regular file of at most 1 MiB
    except FileNotFoundError:
        return ModelConfig()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidConfigError(f"{path}: not UTF-8 text: {exc}") from exc
    return parse_model_config(text, source=str(path))
