"""Generate the CSI gRPC stubs from proto/csi.proto into csi_linstor/_gen/.

The proto is compiled as if it lived at ``csi_linstor/_gen/csi.proto`` so that protoc writes
package-qualified imports (``from csi_linstor._gen import csi_pb2``): no sys.path tricks, no sed.
Run by the build hook (hatch_build.py) on every wheel or editable build, and by the test that
checks the installed stubs are not stale. Usable by hand: ``python tools/gen_proto.py``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto" / "csi.proto"
PACKAGE_DIR = ("csi_linstor", "_gen")
OUTPUTS = ("csi_pb2.py", "csi_pb2.pyi", "csi_pb2_grpc.py")


def generate(out_root: Path, proto: Path = PROTO) -> list[Path]:
    """Write the stubs under ``out_root/csi_linstor/_gen/`` and return their paths."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp).joinpath(*PACKAGE_DIR)
        src.mkdir(parents=True)
        shutil.copyfile(proto, src / "csi.proto")
        rel = "/".join(PACKAGE_DIR) + "/csi.proto"
        out_root.mkdir(parents=True, exist_ok=True)
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{tmp}",
                f"-I{include}",
                f"--python_out={out_root}",
                f"--pyi_out={out_root}",
                f"--grpc_python_out={out_root}",
                rel,
            ]
        )
        if rc != 0:
            raise RuntimeError(f"protoc failed with status {rc} on {proto}")
    gen_dir = out_root.joinpath(*PACKAGE_DIR)
    init = gen_dir / "__init__.py"
    init.write_text('"""Generated from proto/csi.proto at build time. Do not edit."""\n')
    return [gen_dir / name for name in OUTPUTS] + [init]


if __name__ == "__main__":
    for path in generate(ROOT):
        print(path.relative_to(ROOT))
    sys.exit(0)
