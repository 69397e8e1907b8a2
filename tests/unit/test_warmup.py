"""Warmup: sample files, generated inputs, and what a failed warmup does to a load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import keepwarm
from keepwarm.signature import Signature, TensorSpec
from keepwarm.warmup import read_samples


def test_json_warmup_samples_with_integers_feed_a_float_model(tmp_path: Path) -> None:
    path = tmp_path / "warmup.json"
    path.write_text(json.dumps([{"x": [[1, 2]]}]))
    signature = Signature(
        inputs=(TensorSpec("x", np.dtype("float32"), (None, 2)),),
        outputs=(TensorSpec("y", np.dtype("float32"), (None, 2)),),
    )
    (request,) = read_samples(path)
    coerced = signature.coerce(signature.widen_json(request))
    assert coerced["x"].dtype == np.float32
    with pytest.raises(keepwarm.InvalidInputError, match="expected dtype float32"):
        signature.coerce(request)  # arrays built in code are not widened silently
