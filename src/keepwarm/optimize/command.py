"""``keepwarm optimize``: the command-line face of ``keepwarm.optimize.optimize``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from keepwarm.cache import ModelCache
from keepwarm.errors import GateError
from keepwarm.optimize.api import DEFAULT_RUNS, DEFAULT_TIMEOUT, TARGETS, optimize
from keepwarm.optimize.graph import QUANTIZE_MODES
from keepwarm.optimize.report import QUANTIZED_MIN_AGREEMENT, UNQUANTIZED_MAX_ABS_DIFF, Gate

HELP = "convert a model to ONNX, optionally quantize it, check it against its source"


def add_command(commands: Any) -> None:
    """Add ``optimize`` to the ``keepwarm`` command's subparsers."""
    sub = commands.add_parser("optimize", help=HELP, description=HELP)
    sub.add_argument("source", metavar="SRC", help="SavedModel, .keras, TF Hub handle or .onnx")
    sub.add_argument("--to", choices=TARGETS, default="onnx", help="target format (onnx)")
    sub.add_argument("--quantize", choices=QUANTIZE_MODES, help="int8 dynamic/static, float16")
    sub.add_argument(
        "--calibration",
        metavar="FILE",
        help="samples to check (and calibrate) on: .npz (one array per input, optional "
        "'labels') or .json; default: the model's warmup samples, else generated inputs",
    )
    sub.add_argument(
        "--publish",
        metavar="REPO/MODEL",
        help="if the gate passes, write the result as the next version of this model",
    )
    sub.add_argument("-o", "--output", metavar="FILE", help="also write the ONNX model here")
    sub.add_argument("--version", type=int, metavar="N", help="source version (default: highest)")
    sub.add_argument("--signature", metavar="NAME", help="source signature")
    sub.add_argument(
        "--max-abs-diff",
        type=float,
        metavar="X",
        help=f"gate: largest absolute change of any output (default {UNQUANTIZED_MAX_ABS_DIFF:g} "
        "unquantized)",
    )
    sub.add_argument(
        "--min-agreement",
        type=float,
        metavar="F",
        help=f"gate: share of samples keeping their top-1 answer (default "
        f"{QUANTIZED_MIN_AGREEMENT:g} quantized; 0 turns it off)",
    )
    sub.add_argument(
        "--max-accuracy-drop", type=float, metavar="POINTS", help="gate: accuracy lost (labels)"
    )
    sub.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="conversion, seconds")
    sub.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="timed calls per batch size")
    sub.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.add_argument("--config", metavar="FILE", help="settings file (TOML; see README)")
    sub.add_argument("--cache-dir", metavar="DIR", help="download cache directory")
    sub.add_argument(
        "--offline", action="store_true", default=None, help="use only the download cache"
    )
    sub.set_defaults(func=run)


def run(args: argparse.Namespace, cache: ModelCache) -> None:
    """Run the command; a failed gate prints the report, then raises ``GateError``.
    ``cache`` carries the settings the flags made (its download cache is used)."""
    # Limits given replace the default gate's (one by one); the others stay.
    limits = {
        "max_abs_diff": args.max_abs_diff,
        "min_agreement": args.min_agreement,
        "max_accuracy_drop": args.max_accuracy_drop,
    }
    given = {name: value for name, value in limits.items() if value is not None}
    gate = replace(Gate.default(args.quantize), **given)
    try:
        result = optimize(
            args.source,
            to=args.to,
            quantize=args.quantize,
            calibration=args.calibration,
            gate=gate,
            publish_to=args.publish,
            output=args.output,
            version=args.version,
            signature=args.signature,
            timeout=args.timeout,
            runs=args.runs,
            downloads=cache.settings.downloads,
        )
    except GateError as exc:
        if exc.report is not None:
            print(exc.report.to_json() if args.json else exc.report.format())
        raise
    report = result.report
    print(report.to_json() if args.json else report.format())
    if result.published is not None:
        print(f"published as version {result.published} of {args.publish}", file=sys.stderr)
    if not report.passed:
        raise GateError(f"the gate failed: {'; '.join(report.failures)}", report)
