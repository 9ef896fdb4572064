"""What the docs claim about the driver matches what the code does (and dead code stays gone)."""

from __future__ import annotations

import re
from pathlib import Path

from csi_linstor.linstor import client, queries
from csi_linstor.mapping import attachment_records as attachments
from csi_linstor.mapping import ids, qos, volumes
from csi_linstor.nodeops import fs

ROOT = Path(__file__).resolve().parents[2]


def _row(doc: str, key: str) -> str:
    for line in (ROOT / doc).read_text().splitlines():
        if line.startswith(f"| `{key}`"):
            return line
    raise AssertionError(f"{doc} has no row for {key}")


def test_fstype_row_offers_exactly_what_the_node_can_format_grow_and_check():
    values = _row("docs/parameters.md", "csi.storage.k8s.io/fstype").split("|")[2]
    assert re.findall(r"`([a-z0-9]+)`", values) == list(fs.SUPPORTED)
    assert volumes.FS_TYPES == fs.SUPPORTED


def test_multi_writer_block_docs_say_allow_two_primaries_is_not_set():
    row = _row("docs/parameters.md", "layerList")
    assert "MULTI_NODE_MULTI_WRITER" in row and "never sets" in row
    assert "allow-two-primaries" not in "".join(
        p.read_text() for p in (ROOT / "csi_linstor").glob("*.py"))


def test_resource_group_docs_match_per_class_placement():
    row = _row("docs/parameters.md", "resourceGroup")
    assert "own class's filter" in row and "brought in line" not in row


def test_readme_says_consistency_group_ids_are_served():
    head = (ROOT / "README.md").read_text().split("## ")[0]
    assert "consistency-group volumes (`cg-…/<n>`) included" in head
    assert (ROOT / "docs" / "consistency-groups.md").is_file()


def test_dead_helpers_stay_removed():
    assert not hasattr(volumes, "_rc_nodes")
    assert not hasattr(ids, "require_volume_id")
    assert not hasattr(queries, "controller_version")
    assert not hasattr(client.LinstorClient, "supports")


def test_qos_row_names_exactly_the_parsed_keys_and_the_rd_prefix():
    row = _row("docs/parameters.md", "qos.linbit.com/rbps")
    assert re.findall(r"`qos\.linbit\.com/(\w+)`", row)[:4] == list(qos.KEYS)
    assert f"`{qos.RD_PREFIX}qos.linbit.com/<key>`" in row and f"`{qos.DEVICE_KEY}`" in row


def test_attachment_record_key_is_the_documented_one():
    text = (ROOT / "docs/parameters.md").read_text()
    assert f"`{attachments.PROP_ATTACHED}`" in text and "RESOURCE_EXHAUSTED" in text
