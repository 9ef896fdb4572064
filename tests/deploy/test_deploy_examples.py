"""The example manifests users apply (deploy/examples) stay valid and name our driver."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from deploy_helpers import ROOT

EXAMPLES = ROOT / "deploy" / "examples"
SHARED_EXAMPLES = ROOT.parent / "shared" / "examples"
DRIVER = "linstor.csi.linbit.com"
YAML_FILES = sorted(EXAMPLES.glob("*.yaml"))


def test_examples_present() -> None:
    names = {p.name for p in YAML_FILES}
    assert {
        "storageclass-r2.yaml",
        "storageclass-r3.yaml",
        "app-with-ha-storage.yaml",
        "snapshot.yaml",
        "snapshotclass.yaml",
        "pvc-restore-from-snapshot.yaml",
        "statefulset.yaml",
    } <= names
    assert (EXAMPLES / "README.md").is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.name)
def test_example_parses_and_uses_our_driver(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, f"{path.name} is empty"
    for d in docs:
        assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), d
        if d["kind"] == "StorageClass":
            assert d["provisioner"] == DRIVER
            assert all(isinstance(v, str) for v in d.get("parameters", {}).values()), (
                "StorageClass parameters must be strings"
            )
        if d["kind"] == "VolumeSnapshotClass":
            assert d["driver"] == DRIVER


def test_storage_class_parameters_kept() -> None:
    """End-to-end tests read the parameters from these copies: both spellings must stay."""
    r3 = yaml.safe_load((EXAMPLES / "storageclass-r3.yaml").read_text())
    assert r3["parameters"] == {"placementCount": "3", "storagePool": "DfltStorPool"}
    r2 = yaml.safe_load((EXAMPLES / "storageclass-r2.yaml").read_text())
    assert r2["parameters"] == {
        "linstor.csi.linbit.com/placementCount": "2",
        "linstor.csi.linbit.com/storagePool": "sp1",
        "csi.storage.k8s.io/fstype": "ext4",
    }


@pytest.mark.skipif(
    not SHARED_EXAMPLES.is_dir(), reason="shared/examples is not beside the repository"
)
def test_examples_identical_to_shared_copies() -> None:
    for src in sorted(SHARED_EXAMPLES.iterdir()):
        if src.suffix in (".yaml", ".md"):
            dst = EXAMPLES / src.name
            assert dst.is_file(), f"deploy/examples lacks {src.name}"
            assert dst.read_bytes() == src.read_bytes(), (
                f"deploy/examples/{src.name} differs from shared"
            )
