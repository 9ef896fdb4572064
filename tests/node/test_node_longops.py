"""mkfs, fsck and offline resize2fs run to completion even when the RPC's deadline passes first:
the RPC answers DEADLINE_EXCEEDED, the command keeps running, and the retry joins it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from csi_linstor.nodeops import longops
from tests.node.node_helpers import RpcFailed, mount_cap, stage_req, unstage_req


def _slow_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tool: str, seconds: float,
               fail: bool = False) -> Path:
    """Put a stand-in for ``tool`` first in PATH: it sleeps, runs the real tool (or fails), and
    leaves a marker saying it finished (a SIGKILLed one leaves none)."""
    real = shutil.which(tool)
    assert real is not None
    bin_dir = tmp_path / "slow-bin"
    bin_dir.mkdir(exist_ok=True)
    marker = tmp_path / f"{tool}.finished"
    if fail:
        body = f'touch "{marker}"\necho "{tool}: the disk is on fire" >&2\nexit 1\n'
    else:
        body = f'"{real}" "$@" || exit $?\ntouch "{marker}"\n'
    script = bin_dir / tool
    script.write_text(f"#!/bin/sh\nsleep {seconds}\n{body}")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return marker


def test_slow_mkfs_outlives_the_deadline_and_the_retry_joins_it(
    node, loops, tmp_path, monkeypatch
) -> None:
    loop = loops(64)
    staging = tmp_path / "staging"
    staging.mkdir()
    marker = _slow_tool(tmp_path, monkeypatch, "mkfs.ext4", 3.0)
    req = stage_req(loop.path, staging, mount_cap("ext4"))

    started = time.monotonic()
    with pytest.raises(RpcFailed) as ei:
        node.NodeStageVolume(req, seconds=1.0)
    assert time.monotonic() - started < 2.0, "the RPC did not answer within its deadline"
    assert ei.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "mkfs.ext4" in ei.value.message and "continues" in ei.value.message
    assert not marker.exists()
    assert [op[1] for op in longops.running()] == ["mkfs"]

    node.NodeStageVolume(req, seconds=60.0)  # joins the running mkfs, then mounts
    assert marker.exists(), "mkfs was killed"
    assert (staging / "lost+found").is_dir()
    (staging / "data").write_text("kept")
    node.NodeUnstageVolume(unstage_req(staging))
    fsck = subprocess.run(["e2fsck", "-f", "-n", loop.path], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert longops.running() == []


def test_a_failed_background_mkfs_is_the_retrys_error(node, loops, tmp_path, monkeypatch) -> None:
    loop = loops(64)
    staging = tmp_path / "staging"
    staging.mkdir()
    marker = _slow_tool(tmp_path, monkeypatch, "mkfs.ext4", 2.0, fail=True)
    req = stage_req(loop.path, staging, mount_cap("ext4"))
    with pytest.raises(RpcFailed) as ei:
        node.NodeStageVolume(req, seconds=0.5)
    assert ei.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(RpcFailed) as ei:
        node.NodeStageVolume(req, seconds=60.0)
    assert marker.exists()
    assert ei.value.code == grpc.StatusCode.INTERNAL and "the disk is on fire" in ei.value.message
    # the failure was handed over once: the next retry runs mkfs again (here: the real one)
    monkeypatch.undo()
    node.NodeStageVolume(req, seconds=60.0)
    node.NodeUnstageVolume(unstage_req(staging))


def test_slow_offline_resize_outlives_the_deadline(node, loops, tmp_path, monkeypatch) -> None:
    """The same for the offline growth at stage: `e2fsck -f` and `resize2fs` are not killed."""
    loop = loops(128)
    subprocess.run(["mkfs.ext4", "-q", loop.path, "64M"], check=True)
    staging = tmp_path / "staging"
    staging.mkdir()
    checked = _slow_tool(tmp_path, monkeypatch, "e2fsck", 2.0)
    grown = _slow_tool(tmp_path, monkeypatch, "resize2fs", 2.0)
    req = stage_req(loop.path, staging, mount_cap("ext4"))
    codes = []
    for _ in range(10):
        try:
            node.NodeStageVolume(req, seconds=1.0)
            break
        except RpcFailed as e:
            codes.append(e.code)
            assert e.code == grpc.StatusCode.DEADLINE_EXCEEDED and "continues" in e.message
    assert len(codes) >= 2 and checked.exists() and grown.exists()
    v = os.statvfs(staging)
    assert v.f_blocks * v.f_frsize > 100 * 1024 * 1024  # grown before the mount
    node.NodeUnstageVolume(unstage_req(staging))
    assert longops.running() == []
