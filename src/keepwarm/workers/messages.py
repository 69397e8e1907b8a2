"""The typed messages between the server and a worker process.

Every message is a frozen dataclass of plain, picklable values sent over the worker's
control connection; tensors travel in the worker's shared buffer (``TensorRef`` says where),
only arrays of Python objects (text) are pickled in the message itself. A new buffer (grown
for a large request or answer) is sent beside the message that says so, as a file
descriptor (``buffer_follows``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keepwarm.load_description import LoadDescription
from keepwarm.signature import Signature

#: What a worker hook reports around a load or an unload: event -> figure name -> value.
Figures = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class TensorRef:
    """One tensor: in the buffer at ``offset`` (``nbytes`` long), or ``inline`` (objects)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int = 0
    nbytes: int = 0
    inline: np.ndarray | None = None


# ---------------------------------------------------------------- server -> worker


@dataclass(frozen=True)
class Start:
    """The first message: the server's import path, the worker's id and its hook (a
    picklable callable ``hook(event, key) -> figures``, or None). Its buffer follows."""

    worker_id: int
    sys_path: tuple[str, ...]
    hook: Any = None
    buffer_follows: bool = True


@dataclass(frozen=True)
class Load:
    key: str
    description: LoadDescription


@dataclass(frozen=True)
class Unload:
    key: str


@dataclass(frozen=True)
class Predict:
    key: str
    inputs: tuple[TensorRef, ...]
    buffer_follows: bool = False  # the inputs did not fit: a larger buffer follows


@dataclass(frozen=True)
class Stop:
    """Unload everything and exit."""


# ---------------------------------------------------------------- worker -> server


@dataclass(frozen=True)
class Started:
    pid: int


@dataclass(frozen=True)
class Loaded:
    key: str
    signature: Signature
    nbytes: int
    nbytes_source: str
    format: str | None = None
    figures: Figures = field(default_factory=dict)


@dataclass(frozen=True)
class Unloaded:
    key: str
    figures: Figures = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    outputs: tuple[TensorRef, ...]
    buffer_follows: bool = False  # the outputs did not fit: they are in a larger buffer


@dataclass(frozen=True)
class Failed:
    """What the worker raised: its type's name, module and message, and the traceback's
    text (for logs); ``format`` for a ``ModelLoadError``."""

    type_name: str
    module: str
    message: str
    traceback: str = ""
    format: str | None = None
