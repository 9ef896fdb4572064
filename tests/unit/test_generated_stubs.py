"""The generated gRPC stubs are importable as a package and match proto/csi.proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import csi_linstor._gen as gen
from csi_linstor._gen import csi_pb2, csi_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "tools" / "gen_proto.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stubs_are_not_stale(tmp_path: Path) -> None:
    fresh = _generator().generate(tmp_path)
    installed = Path(gen.__file__).parent
    for path in fresh:
        current = installed / path.name
        assert current.exists(), f"{current} missing: reinstall the package (pip install -e .)"
        assert current.read_text() == path.read_text(), (
            f"{current.name} is stale against proto/csi.proto: reinstall (pip install -e .)"
        )


def test_vendored_proto_is_the_pinned_spec() -> None:
    shared = ROOT.parent / "shared" / "spec" / "csi.proto"
    if not shared.exists():
        import pytest

        pytest.skip("../shared/spec/csi.proto is not beside this checkout")
    assert (ROOT / "proto" / "csi.proto").read_bytes() == shared.read_bytes()


def test_stubs_import_as_a_package() -> None:
    assert csi_pb2_grpc.csi__linstor_dot___gen_dot_csi__pb2 is csi_pb2
    assert csi_pb2.DESCRIPTOR.package == "csi.v1"
    assert hasattr(csi_pb2_grpc, "add_GroupControllerServicer_to_server")
