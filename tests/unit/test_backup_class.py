"""VolumeSnapshotClass settings for S3 and LINSTOR-to-LINSTOR snapshots (csi_linstor/mapping/backups.py),
spelled as LINBIT's driver spells them (linstor-csi-facts §e)."""

from __future__ import annotations

import pytest

from csi_linstor.errors import InvalidArgument
from csi_linstor.mapping.backups import backup_class, parse_duration
from csi_linstor.mapping.snapshot_params import parse_snapshot_parameters

NS = "snap.linstor.csi.linbit.com/"


def cls(**kw: str):
    p = parse_snapshot_parameters({NS + k.replace("_", "-"): v for k, v in kw.items()})
    return backup_class(p.type, dict(p.settings))


def test_s3_class() -> None:
    c = cls(type="S3", remote_name="bk", s3_endpoint="s3.example.com", s3_bucket="b",
            s3_signing_region="eu-1", s3_use_path_style="true", allow_incremental="true",
            max_increments="5", full_snapshot_after="168h", delete_local="true")
    assert (c.type, c.remote, c.s3_endpoint, c.s3_bucket, c.s3_region) == (
        "S3", "bk", "s3.example.com", "b", "eu-1")
    assert c.s3_path_style and c.allow_incremental and c.delete_local
    assert (c.max_increments, c.full_after_s) == (5, 168 * 3600)


def test_linstor_class() -> None:
    c = cls(type="linstor", remote_name="dr", linstor_target_url="http://dr:3370",
            linstor_target_cluster_id="abc", linstor_target_storage_pool="pool")
    assert (c.type, c.target_url, c.target_cluster_id, c.target_pool) == (
        "Linstor", "http://dr:3370", "abc", "pool")


@pytest.mark.parametrize("kw,text", [
    ({"type": "S3"}, "remote-name"),
    ({"type": "S3", "remote_name": "bad name"}, "remote-name"),
    ({"type": "S3", "remote_name": "r1", "max_increments": "-1"}, "max-increments"),
    ({"type": "S3", "remote_name": "r1", "max_increments": "x"}, "max-increments"),
    ({"type": "S3", "remote_name": "r1", "full_snapshot_after": "7 days"}, "full-snapshot-after"),
    ({"type": "S3", "remote_name": "r1", "allow_incremental": "maybe"}, "allow-incremental"),
])
def test_bad_classes(kw: dict, text: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        cls(**kw)
    assert text in err.value.message


@pytest.mark.parametrize("text,seconds", [("168h", 604800.0), ("1h30m", 5400.0),
                                          ("90s", 90.0), ("1.5h", 5400.0), ("250ms", 0.25)])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7d", "h", "1h 2m", "-1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_deploy_examples_are_classes_the_driver_accepts() -> None:
    """The classes in deploy/examples (docs/backups.md) parse as documented."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2] / "deploy" / "examples"
    docs = [d for f in ("snapshotclass-s3.yaml", "snapshotclass-linstor.yaml")
            for d in yaml.safe_load_all((root / f).read_text()) if d]
    classes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "VolumeSnapshotClass"}
    secret = next(d for d in docs if d["kind"] == "Secret")
    s3 = classes["linstor-s3-backups"]["parameters"]
    p = parse_snapshot_parameters(s3)
    c = backup_class(p.type, dict(p.settings))
    assert (c.type, c.remote, c.max_increments, c.full_after_s) == ("S3", "backup-s3", 6,
                                                                      168 * 3600)
    assert s3["csi.storage.k8s.io/snapshotter-secret-name"] == secret["metadata"]["name"]
    assert set(secret["stringData"]) == {"access-key", "secret-key"}
    p = parse_snapshot_parameters(classes["linstor-dr-site"]["parameters"])
    c = backup_class(p.type, dict(p.settings))
    assert (c.type, c.remote, c.target_pool) == ("Linstor", "dr-site", "DfltStorPool")
