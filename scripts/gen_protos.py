"""Regenerate keepwarm's gRPC stubs from the .proto files in src/keepwarm/grpc/protos.

Run from the repository root: ``python scripts/gen_protos.py`` (``make protos``). Needs
grpcio-tools (pinned in constraints.txt). The generated modules are committed.

Two rewrites make the stubs safe to import next to TensorFlow, tensorflow-serving-api and
tritonclient, which generate the same message names:

- imports become package-qualified (``tensorflow.core.framework`` ->
  ``keepwarm.grpc.protos.tensorflow.core.framework``), so no module name is shared;
- the descriptors go into keepwarm's own pool (``keepwarm.grpc.protos.POOL``), not the
  process-wide default one, so no full name (``tensorflow.TensorProto``,
  ``inference.ModelInferRequest``) is registered twice.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "src" / "keepwarm" / "grpc" / "protos"
PACKAGE = "keepwarm.grpc.protos"
TOP_LEVEL = ("tensorflow_serving", "tensorflow", "inference")
_IMPORT = re.compile(rf"^(from|import) ({'|'.join(TOP_LEVEL)})\b", re.MULTILINE)
_DEFAULT_POOL = "_descriptor_pool.Default()"


def main() -> int:
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    for stale in PROTOS.rglob("*_pb2*.py*"):
        stale.unlink()
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={PROTOS}",
        f"--pyi_out={PROTOS}",
        f"--grpc_python_out={PROTOS}",
        *sources,
    ]
    subprocess.run(command, check=True, cwd=PROTOS)
    for path in sorted(PROTOS.rglob("*_pb2_grpc.py")):
        if "class " not in path.read_text():  # a file that declares no service
            path.unlink()
    for path in sorted(PROTOS.rglob("*_pb2*.py*")):
        text = _IMPORT.sub(rf"\1 {PACKAGE}.\2", path.read_text())
        if _DEFAULT_POOL in text:
            text = text.replace(_DEFAULT_POOL, "_keepwarm_pool")
            text = text.replace(
                "from google.protobuf import descriptor_pool as _descriptor_pool\n",
                f"from {PACKAGE} import POOL as _keepwarm_pool\n",
            )
        path.write_text(text)
    for directory in sorted({p.parent for p in PROTOS.rglob("*_pb2.py")}):
        while directory != PROTOS:
            (directory / "__init__.py").touch()
            directory = directory.parent
    print(f"generated stubs for {len(sources)} .proto files under {PROTOS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
