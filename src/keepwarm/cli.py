"""The ``keepwarm`` command: turns flags into library calls, nothing else.

Exit codes: 0 success; 2 a usage error or a ``KeepwarmError`` (one ``error: ...`` line on
stderr); 130 interrupted; 143 terminated (SIGTERM). Anything else is a bug and keeps its
traceback."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keepwarm
from keepwarm.cli_progress import Progress, size_text
from keepwarm.cli_serve import add_serve_command, run_serve, serve_parser
from keepwarm.early_signals import exit_code, terminated
from keepwarm.errors import InvalidInputError, KeepwarmError
from keepwarm.logs import quiet_native_chatter
from keepwarm.settings import Settings

if TYPE_CHECKING:
    from keepwarm.signature import Inputs, Signature, TensorSpec


def _open_model(
    args: argparse.Namespace, cache: keepwarm.ModelCache
) -> tuple[keepwarm.Model, Path]:
    """Fetch (with progress), then load through the cache; return the model and its path."""
    from keepwarm.loading import select_version
    from keepwarm.sources.resolve import resolve_uri

    progress = Progress(sys.stderr, enabled=not args.quiet)
    try:
        resolved = resolve_uri(
            args.uri, downloads=cache.settings.downloads, progress=progress.download
        )
    except BaseException:
        progress.end_download(ok=False)
        raise
    progress.end_download(ok=True)
    path = select_version(resolved, args.version)
    what = args.runtime or _detect(path)
    with progress.loading(what):
        model = keepwarm.load(args.uri, cache=cache, **_which(args))
    return model, path


def _which(args: argparse.Namespace) -> dict[str, Any]:
    return {"version": args.version, "runtime": args.runtime, "signature": args.signature}


def _detect(path: Path) -> str:
    from keepwarm.runtimes.registry import detect_runtime

    try:
        return detect_runtime(path).name
    except KeepwarmError:
        return "model"  # the load itself reports why


# ---------------------------------------------------------------- inspect


def cmd_inspect(args: argparse.Namespace, cache: keepwarm.ModelCache) -> None:
    model, path = _open_model(args, cache)
    with cache.lease(args.uri, **_which(args)) as leased:
        nbytes_source = getattr(leased.raw, "nbytes_source", "unknown")
        nbytes = leased.nbytes
    info: dict[str, Any] = {
        "uri": args.uri,
        "path": str(path),
        "format": model.format,
        "signature": model.signature.to_dict(),
        "nbytes": nbytes,
        "nbytes_source": nbytes_source,
        "load_seconds": cache.stats()["load_seconds"],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return
    source = _NBYTES_SOURCES.get(nbytes_source, nbytes_source)
    sig: Signature = model.signature
    print(f"uri:        {args.uri}\npath:       {path}\nformat:     {model.format}")
    print(f"signature:  {sig.name}\n  inputs:{_tensors(sig.inputs)}")
    print(f"  outputs:{_tensors(sig.outputs)}")
    print(f"size:       {nbytes:,} bytes ({size_text(nbytes)}, {source})")
    print(f"load time:  {info['load_seconds']:.3f} s")


_NBYTES_SOURCES = {"framework": "counted by the framework", "files": "size of the files on disk"}


def _tensors(specs: Sequence[TensorSpec]) -> str:
    return "".join(f"\n    {spec.describe()}" for spec in specs)


# ---------------------------------------------------------------- predict


def read_inputs(path: Path) -> Inputs:
    """``.npy`` (one array), ``.npz`` (named arrays), or ``.json``: a nested list, an object
    of input name to nested list, or ``{"inputs": ...}`` holding either."""
    import numpy as np

    if path.is_dir():
        raise InvalidInputError(f"input file {path} is a directory; expected a file")
    if not path.exists():
        raise InvalidInputError(f"input file {path} does not exist")
    if not path.is_file():  # a FIFO would hold the command for a writer
        raise InvalidInputError(f"input file {path}: not a regular file; expected a file")
    from keepwarm.warmup import NPZ_ERRORS, read_npz

    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            # opened here: np.load leaves its own file open when the file is bad
            with path.open("rb") as file:
                return np.asarray(np.load(file, allow_pickle=False))
        if suffix == ".npz":
            return read_npz(path)
        if suffix == ".json":
            body = json.loads(path.read_text())
            if isinstance(body, dict) and set(body) == {"inputs"}:
                body = body["inputs"]
            if isinstance(body, dict):
                return {str(name): np.asarray(value) for name, value in body.items()}
            return np.asarray(body)
    except (*NPZ_ERRORS, RecursionError) as exc:
        # not an archive, truncated, not JSON, nested past the parser's depth
        raise InvalidInputError(
            f"cannot read input file {path}: {type(exc).__name__}: {exc}"
        ) from None
    raise InvalidInputError(f"input file {path}: expected a .npy, .npz or .json file")


def cmd_predict(args: argparse.Namespace, cache: keepwarm.ModelCache) -> None:
    import numpy as np

    source = Path(args.input)
    inputs = read_inputs(source)
    target = None if args.output is None else _output_file(Path(args.output))
    model, _ = _open_model(args, cache)
    if source.suffix.lower() == ".json":
        inputs = model.signature.widen_json(inputs)
    outputs = model.predict(inputs)
    text = json.dumps({"outputs": {name: value.tolist() for name, value in outputs.items()}})
    if target is None:
        print(text)
        return
    try:
        if target.suffix.lower() == ".npz":
            np.savez(target, **outputs)  # type: ignore[arg-type]
        else:
            target.write_text(text)
    except OSError as exc:
        raise InvalidInputError(f"cannot write output file {target}: {exc}") from exc
    print(f"wrote {', '.join(outputs)} to {target}", file=sys.stderr)


def _output_file(target: Path) -> Path:
    """``--output`` checked before the model loads and runs, not after."""
    if target.suffix.lower() not in (".npz", ".json") or target.is_dir():
        raise InvalidInputError(f"output file {target}: expected a .npz or .json file name")
    if not target.parent.is_dir():
        raise InvalidInputError(
            f"cannot write output file {target}: directory {target.parent} does not exist"
        )
    return target


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keepwarm", description="Load a model once, keep it warm, serve it from anywhere."
    )
    parser.add_argument("--version", action="version", version=f"keepwarm {keepwarm.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("uri", metavar="URI", help="model path, TF Hub handle or remote URL")
        sub.add_argument("--version", type=int, metavar="N", help="version (default: highest)")
        sub.add_argument("--runtime", metavar="NAME", help="runtime (default: detected)")
        sub.add_argument("--signature", metavar="NAME", help="signature (default: serving_default)")
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
        sub.add_argument("--config", metavar="FILE", help="settings file (TOML; see README)")
        sub.add_argument("--cache-dir", metavar="DIR", help="download cache directory")
        sub.add_argument(
            "--offline", action="store_true", default=None, help="use only the download cache"
        )
        return sub

    inspect = model_command("inspect", "load a model and describe it")
    inspect.add_argument("--json", action="store_true", help="print the description as JSON")
    inspect.set_defaults(func=cmd_inspect)
    predict = model_command("predict", "load a model and run it once on inputs from a file")
    inputs = '.npy, .npz or .json (nested list, {name: list} or {"inputs": ...})'
    predict.add_argument("-i", "--input", required=True, metavar="FILE", help=inputs)
    outputs = "write .npz or .json (default: JSON on stdout)"
    predict.add_argument("-o", "--output", metavar="FILE", help=outputs)
    predict.set_defaults(func=cmd_predict)
    add_serve_command(commands)
    from keepwarm.optimize.command import add_command as add_optimize_command

    add_optimize_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``keepwarm`` command; returns the exit code (argparse exits 2 by itself)."""
    given = sys.argv[1:] if argv is None else list(argv)
    parser = serve_parser() if given[:1] == ["serve"] else build_parser()
    args = parser.parse_args(given)
    if args.command == "serve":
        return run_serve(args)

    def run() -> int:
        # TensorFlow's start-up lines (oneDNN, the CUDA probe's "E... failed call to
        # cuInit" on a machine without a GPU) filtered out, as the server does: every
        # inspect or predict of a SavedModel printed three of them, -q or not
        restore = quiet_native_chatter()
        try:
            cache = keepwarm.ModelCache(settings=settings_from_args(args))
            try:
                args.func(args, cache)
            finally:
                cache.close(drain_timeout=5.0)
        finally:
            restore()
        return 0

    # SIGTERM runs the cleanups, as Ctrl-C does: a conversion child killed, its temporary
    # directory removed (the default action left both behind)
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        return exit_code(run, terminated=(128 + signal.SIGTERM, "terminated"))
    finally:
        signal.signal(signal.SIGTERM, previous)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags over ``KEEPWARM_*`` variables over the ``--config`` file over the defaults."""
    return Settings.load(
        file=args.config,
        downloads__cache_dir=args.cache_dir,
        downloads__offline=args.offline,
    )
