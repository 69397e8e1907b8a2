"""The suite's own warning filters, as pyproject.toml sets them: an exception raised in a
test's thread, or one that Python can only report as unraisable, fails the test; so does a
deprecation that our own code triggers.

Each case runs a tiny test file in a fresh pytest process configured with this project's
``filterwarnings``; a control case (the same code without the failure) must pass, so the
check cannot pass merely because the tiny file is broken.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

THREAD = """
import threading

def test_worker() -> None:
    def work() -> None:
        assert {value} == 1, "the worker's check failed"

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
"""

UNRAISABLE = """
import weakref

class Thing:
    pass

def test_unraisable() -> None:
    def callback(_ref: object) -> None:
        assert {value} == 1, "the callback's check failed"

    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing  # the callback runs now; what it raises can only go to sys.unraisablehook
    assert ref() is None
"""

DEPRECATED = """
import warnings

def test_deprecated() -> None:
    if {value} != 1:
        warnings.warn("this call is deprecated", DeprecationWarning, stacklevel=1)
"""
CASES = {"thread": THREAD, "unraisable": UNRAISABLE, "deprecation": DEPRECATED}


def configured(pytester: pytest.Pytester) -> None:
    """The tiny run gets exactly this project's warning filters."""
    options = tomllib.loads(PYPROJECT.read_text())["tool"]["pytest"]["ini_options"]
    filters = options["filterwarnings"]
    assert "error" in filters
    # JSON strings of plain text are valid TOML strings.
    pytester.makepyprojecttoml(f"[tool.pytest.ini_options]\nfilterwarnings = {json.dumps(filters)}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_failure_outside_the_test_thread_or_a_deprecation_fails_the_test(
    pytester: pytest.Pytester, case: str
) -> None:
    configured(pytester)
    pytester.makepyfile(test_tiny=CASES[case].format(value=2))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*check failed*" if case != "deprecation" else "*deprecated*"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_same_code_without_the_failure_passes(pytester: pytest.Pytester, case: str) -> None:
    configured(pytester)
    pytester.makepyfile(test_tiny=CASES[case].format(value=1))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
