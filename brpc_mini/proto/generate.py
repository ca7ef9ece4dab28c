"""Regenerate the *_pb2.py modules of brpc_mini.proto from the .proto files beside them.

Run it after editing a .proto file:

    python -m brpc_mini.proto.generate

It needs grpcio-tools (for its bundled protoc); users of the kit do not, because the generated
modules are checked in. protoc is run with the repository root as include path, so every file is
registered in protobuf's descriptor pool under a unique name such as
`brpc_mini/proto/options.proto` (a bare `options.proto` could collide with another library's).
protoc then writes absolute imports (`from brpc_mini.proto import options_pb2`); this script rewrites
them to package-relative ones (`from . import options_pb2`), in the .py and the .pyi files, so the
modules keep working if the package is vendored under another name.

The generated code checks at import time that the protobuf runtime is not older than the protoc that
generated it (see the `ValidateProtobufRuntimeVersion` call at the top of each module): regenerate
with a grpcio-tools whose protoc is no newer than the oldest protobuf runtime the kit supports.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PACKAGE = "brpc_mini.proto"
# The include root: the directory that contains the brpc_mini package.
INCLUDE_ROOT = PROTO_DIR.parents[1]

_ABSOLUTE_IMPORT = re.compile(
    r"^from " + re.escape(PACKAGE) + r" import (\w+_pb2) as (\w+)$", re.MULTILINE
)


def make_imports_relative(text: str) -> str:
    """Rewrite `from brpc_mini.proto import x_pb2 as y` lines into `from . import x_pb2 as y`."""
    return _ABSOLUTE_IMPORT.sub(r"from . import \1 as \2", text)


def generate(output_root: Path = INCLUDE_ROOT) -> list[Path]:
    """Run protoc on every .proto file in this directory and fix the imports it wrote.

    The modules land in output_root/brpc_mini/proto/ (by default, next to the .proto files); a test
    points output_root at a temporary directory to check that the checked-in modules are current.
    Returns the paths written. Raises RuntimeError if protoc fails, ImportError without grpcio-tools.
    """
    from grpc_tools import protoc

    protos = sorted(PROTO_DIR.glob("*.proto"))
    if not protos:
        raise RuntimeError(f"no .proto files in {PROTO_DIR}")
    output_root = Path(output_root)
    status = protoc.main([
        "grpc_tools.protoc",
        f"--proto_path={INCLUDE_ROOT}",
        f"--python_out={output_root}",
        f"--pyi_out={output_root}",
        *(str(path.relative_to(INCLUDE_ROOT)) for path in protos),
    ])
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status}")
    written = []
    out_dir = output_root / PROTO_DIR.relative_to(INCLUDE_ROOT)
    for proto in protos:
        for suffix in ("_pb2.py", "_pb2.pyi"):
            generated = out_dir / (proto.stem + suffix)
            text = generated.read_text(encoding="utf-8")
            fixed = make_imports_relative(text)
            if fixed != text:
                generated.write_text(fixed, encoding="utf-8")
            written.append(generated)
    return written


def main() -> int:
    """Command line: regenerate the modules in place and list them."""
    try:
        written = generate()
    except ImportError:
        print("generate: grpcio-tools is not installed (pip install grpcio-tools)", file=sys.stderr)
        return 1
    except RuntimeError as error:
        print(f"generate: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"generate: wrote {path.relative_to(INCLUDE_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
