"""Runtimes: one module per model format, found through the ``keepwarm.runtimes`` entry points."""

from keepwarm.runtimes.base import LoadedModel, Runtime
from keepwarm.runtimes.registry import detect_runtime, get_runtime, runtime_names

__all__ = ["LoadedModel", "Runtime", "detect_runtime", "get_runtime", "runtime_names"]
