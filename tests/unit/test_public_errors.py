"""keepwarm's own errors are importable from ``keepwarm``, each a ``KeepwarmError``:
``InternalError``, raised to a library caller whose Python model answers what its
signature does not declare (or whose batch ends in ``sys.exit()``), was not
(``keepwarm.InternalError``: AttributeError), so it could not be caught by its name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import keepwarm
from keepwarm import errors
from keepwarm.signature import Signature, TensorSpec

F32 = np.dtype("float32")

#: Every error the README's "Errors" section names as importable from keepwarm.
NAMED = [
    "KeepwarmError",
    "ModelNotFoundError",
    "ModelLoadError",
    "DownloadError",
    "UnsafeFormatError",
    "InvalidInputError",
    "InvalidConfigError",
    "ResourceExhaustedError",
    "UnavailableError",
    "DeadlineExceededError",
    "InternalError",
]


@pytest.mark.parametrize("name", NAMED)
def test_each_error_is_importable_from_keepwarm(name: str) -> None:
    assert getattr(keepwarm, name) is getattr(errors, name)
    assert name in keepwarm.__all__
    assert issubclass(getattr(keepwarm, name), keepwarm.KeepwarmError)


class AnswersOneColumn:
    """Declares y: float32[-1, 2], answers one column."""

    signature = Signature((TensorSpec("x", F32, (None, 2)),), (TensorSpec("y", F32, (None, 2)),))

    def load(self, path: Any) -> None:
        del path

    def predict(self, inputs: dict[str, np.ndarray]) -> Any:
        return {"y": inputs["x"][:, :1]}


def test_a_model_answering_off_its_signature_is_caught_as_keepwarm_internal_error(
    tmp_path: Path,
) -> None:
    cache = keepwarm.ModelCache(warmup=False)
    try:
        model = cache.load(tmp_path, options={"class": AnswersOneColumn})
        with pytest.raises(keepwarm.InternalError, match="output 'y'"):
            model.predict(np.ones((1, 2), F32))
    finally:
        cache.close()
