"""Builds the Python stubs of `schema/listing_status.proto` (`gateway proto [--check]`).

protoc comes from grpcio-tools and the typed `.pyi` stubs from mypy-protobuf's plugins,
both development dependencies: the running gateway imports only the generated modules.
The generated service module imports its messages as a top-level module; it is rewritten
to a relative import so the stubs live inside the package.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROTO = Path("schema/listing_status.proto")
OUT_DIR = Path("gateway/grpc/generated")
_INIT = (
    '"""Stubs generated from `schema/listing_status.proto` by `gateway proto`; do not edit."""\n'
)


class CodegenError(Exception):
    """The stubs could not be built; the message is one line for the command line."""


def _plugin(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise CodegenError(f"{name} not found: install the dev dependencies (uv sync)")
    return found


def generate(proto: Path = PROTO) -> dict[str, str]:
    """The generated files, by name, as `gateway proto --write` would write them."""
    try:
        from grpc_tools import protoc
    except ImportError:
        raise CodegenError("grpcio-tools is missing: install the dev dependencies") from None
    well_known = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as out:
        status = protoc.main(
            [
                "protoc",
                f"-I{proto.parent}",
                f"-I{well_known}",
                f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
                f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                f"--mypy_out=relative_imports:{out}",
                f"--mypy_grpc_out=relative_imports:{out}",
                str(proto),
            ]
        )
        if status != 0:
            raise CodegenError(f"protoc failed on {proto} (status {status})")
        files = {path.name: path.read_text(encoding="utf-8") for path in Path(out).iterdir()}
    module = proto.stem + "_pb2"
    for name, text in files.items():
        files[name] = re.sub(
            rf"^import {module} as", f"from . import {module} as", text, flags=re.M
        )
    files["__init__.py"] = _INIT
    return files


def stale(out_dir: Path = OUT_DIR, proto: Path = PROTO) -> list[str]:
    """Names of the files in `out_dir` that differ from what `generate` builds."""
    expected = generate(proto)
    present = {path.name for path in out_dir.glob("*.py*")} if out_dir.exists() else set()
    names = sorted(present | set(expected))
    return [
        name
        for name in names
        if name not in expected
        or not (out_dir / name).exists()
        or (out_dir / name).read_text(encoding="utf-8") != expected[name]
    ]


def write(out_dir: Path = OUT_DIR, proto: Path = PROTO) -> list[str]:
    """Write the generated files into `out_dir`, removing stale ones; returns their names."""
    files = generate(proto)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in out_dir.glob("*.py*"):
        if path.name not in files:
            path.unlink()
    for name, text in files.items():
        (out_dir / name).write_text(text, encoding="utf-8")
    return sorted(files)
