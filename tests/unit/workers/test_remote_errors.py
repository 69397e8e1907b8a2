"""A model's exception in a worker, as the server raises it again: a builtin's type and
message as the model raised them (KeyError('k') came back as KeyError("'k'"), its text
quoted twice)."""

from __future__ import annotations

import pytest

from keepwarm.workers.process import _failed
from keepwarm.workers.remote import RemoteError, rebuilt


@pytest.mark.parametrize(
    "raised",
    [
        KeyError("mine"),
        ValueError("bad value"),
        ValueError("bad value", 3),
        LookupError(),
        OSError(2, "gone"),
    ],
)
def test_a_builtin_comes_back_with_its_own_text(raised: Exception) -> None:
    again = rebuilt(_failed(raised))
    assert type(again) is type(raised) and str(again) == str(raised)


class ModelsOwn(Exception):
    pass


def test_another_type_comes_back_as_a_remote_error_with_its_text() -> None:
    again = rebuilt(_failed(ModelsOwn("k")))
    assert isinstance(again, RemoteError) and again.type_name == "ModelsOwn" and str(again) == "k"
