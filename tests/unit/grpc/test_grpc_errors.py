"""Every keepwarm error code has its gRPC status, chosen in grpc/errors.py alone."""

from __future__ import annotations

import grpc
import pytest

from keepwarm.errors import Code, KeepwarmError, PayloadTooLargeError
from keepwarm.grpc.errors import STATUS, status_of


@pytest.mark.parametrize("code", list(Code))
def test_every_code_has_a_status(code: Code) -> None:
    assert code in STATUS
    assert STATUS[code].name == (
        "RESOURCE_EXHAUSTED" if code is Code.PAYLOAD_TOO_LARGE else code.value
    )


def test_an_error_maps_by_its_code() -> None:
    assert status_of(PayloadTooLargeError("too big")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_of(KeepwarmError("a bug")) == grpc.StatusCode.INTERNAL
