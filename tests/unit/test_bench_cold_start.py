"""The cold-start benchmark (``bench/cold_start.py``) runs keepwarm as installed: from a
byte-compiled copy of the tree under test, which it leaves as it is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from cold_start import compiled_tree


def test_the_tree_is_run_from_a_byte_compiled_copy(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / "pkg" / "__init__.py").write_text("ANSWER = 42\n")
    (src / "pkg" / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"not bytecode")
    (src / "pkg.egg-info").mkdir()
    copy = compiled_tree(sys.executable, src)
    assert copy != src and copy.name == "src"
    compiled = sorted(p.name for p in (copy / "pkg" / "__pycache__").iterdir())
    assert compiled == [f"__init__.{sys.implementation.cache_tag}.pyc"]
    assert not (copy / "pkg.egg-info").exists()
    # The tree under test is untouched; the copy imports without writing anything more.
    assert sorted(p.name for p in (src / "pkg" / "__pycache__").iterdir()) == [
        "stale.cpython-311.pyc"
    ]
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    code = "import pkg; print(pkg.ANSWER, pkg.__cached__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "42" and done.stdout.split()[1].startswith(str(copy))
    assert compiled_tree(sys.executable, src) == copy  # once per tree
