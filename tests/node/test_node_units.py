"""Node helpers that need no devices: runner, mountinfo parsing, DRBD status, volume ids."""

from __future__ import annotations

import json
import sys

import pytest

from csi_linstor.deadline import Deadline
from csi_linstor.drbd import Drbd, parse_status
from csi_linstor.errors import CommandError, DeadlineExceeded, NotFound
from csi_linstor.nodeops import runner
from csi_linstor.nodeops.devices import VolumeRef
from csi_linstor.nodeops.mountinfo import MountTable, unescape


def test_runner_captures_output_and_fails_with_stderr() -> None:
    res = runner.run(["sh", "-c", "echo out; echo err >&2"], Deadline(10))
    assert res.stdout == "out\n" and res.stderr == "err\n" and res.returncode == 0
    with pytest.raises(CommandError) as ei:
        runner.run(["sh", "-c", "echo 'disk on fire' >&2; exit 3"], Deadline(10))
    assert ei.value.returncode == 3
    assert "disk on fire" in str(ei.value) and "sh -c" in str(ei.value)
    assert runner.run(["sh", "-c", "exit 2"], Deadline(10), ok=(0, 2)).returncode == 2


def test_runner_timeout_kills_and_says_timed_out() -> None:
    with pytest.raises(CommandError) as ei:
        runner.run(["sh", "-c", "sleep 30 & sleep 30"], Deadline(10), cap=0.3)
    assert ei.value.returncode is None
    assert "timed out" in str(ei.value)


def test_runner_bounded_by_deadline() -> None:
    d = Deadline(0.3)
    with pytest.raises(CommandError) as ei:
        runner.run(["sleep", "5"], d, cap=60)
    assert "timed out" in str(ei.value)
    with pytest.raises(DeadlineExceeded):
        runner.run(["true"], d)


def test_runner_missing_program_raises_file_not_found() -> None:
    with pytest.raises(FileNotFoundError):
        runner.run(["/nonexistent/tool"], Deadline(5))


MOUNTINFO = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "40 22 7:3 / /var/lib/kubelet/my\\040dir rw,relatime shared:5 - xfs /dev/loop3 rw,nouuid\n"
    "41 22 7:3 / /mnt/t1 ro,relatime - xfs /dev/loop3 rw,nouuid\n"
    "42 41 7:4 / /mnt/t1 rw - ext4 /dev/loop4 rw\n"
    "43 22 0:6 /loop9 /mnt/blk rw - devtmpfs devtmpfs rw,mode=755\n"
)


def test_mountinfo_parse_unescape_and_stacking() -> None:
    table = MountTable.parse(MOUNTINFO)
    assert unescape(r"a\040b\011c\134d") == "a b\tc\\d"
    staged = table.top("/var/lib/kubelet/my dir")
    assert staged is not None and staged.fstype == "xfs" and staged.dev == (7, 3)
    assert [e.mount_id for e in table.at("/mnt/t1")] == [41, 42]
    assert table.top("/mnt/t1").source == "/dev/loop4"
    assert {e.mount_point for e in table.of_device(7, 3)} == {"/var/lib/kubelet/my dir", "/mnt/t1"}
    assert table.at("/mnt/t1")[0].readonly and not table.at("/mnt/t1")[1].readonly
    assert table.top("/mnt/blk").root == "/loop9"
    assert table.top("/nowhere") is None
    assert len(MountTable.read().entries) > 0  # the real one parses


def test_volume_ref() -> None:
    assert VolumeRef.parse("pvc-1") == VolumeRef("pvc-1", 0)
    assert VolumeRef.parse("pvc-1/3") == VolumeRef("pvc-1", 3)
    for bad in ("", "/1", "pvc/x", "pvc/1/2", "pvc/70000"):
        with pytest.raises(NotFound):
            VolumeRef.parse(bad)


def status(
    disk: str = "UpToDate",
    quorum: bool = True,
    suspended: bool = False,
    peer_disk: str = "UpToDate",
    conn: str = "Connected",
    vol: int = 0,
) -> list:
    return [
        {
            "name": "pvc-1",
            "node-id": 0,
            "role": "Secondary",
            "suspended": suspended,
            "suspended-quorum": suspended,
            "write-ordering": "flush",
            "devices": [
                {
                    "volume": vol,
                    "minor": 1000,
                    "disk-state": disk,
                    "client": disk == "Diskless",
                    "quorum": quorum,
                    "size": 1024,
                }
            ],
            "connections": [
                {
                    "peer-node-id": 1,
                    "name": "node-b",
                    "connection-state": conn,
                    "peer-role": "Secondary",
                    "peer_devices": [
                        {
                            "volume": vol,
                            "replication-state": "Established",
                            "peer-disk-state": peer_disk,
                        }
                    ],
                }
            ],
        }
    ]


def test_drbd_problems() -> None:
    def problem(**kw: object) -> str | None:
        state = parse_status(json.dumps(status(**kw)), "pvc-1")
        assert state is not None
        return state.problem(0)

    assert problem() is None
    assert problem(disk="Diskless") is None  # diskless client, UpToDate peer
    assert problem(disk="Inconsistent") is None  # resyncing from an UpToDate peer
    assert "no quorum" in problem(quorum=False)
    assert "suspended" in problem(suspended=True)
    assert "disk Outdated" in problem(disk="Outdated", peer_disk="Outdated")
    assert "diskless" in problem(disk="Diskless", conn="Connecting", peer_disk="DUnknown")
    assert parse_status(json.dumps(status()), "other") is None
    state = parse_status(json.dumps(status(vol=1)), "pvc-1")
    assert state is not None and "no volume 0" in state.problem(0)


def test_drbd_query_through_configured_command(tmp_path, fake_drbdsetup) -> None:
    d = Drbd([fake_drbdsetup(status(quorum=False))])
    state = d.query("pvc-1", Deadline(10))
    assert state is not None and not state.device(0).quorum
    d = Drbd([fake_drbdsetup("pvc-1: No such resource\n", 10)])
    assert d.query("pvc-1", Deadline(10)) is None
    assert Drbd(["/nonexistent/drbdsetup"]).query("pvc-1", Deadline(10)) is None
    # the argv prefix is used as given, words and all (like the simulator's stand-in)
    script = tmp_path / "echo-args.py"
    script.write_text(
        "import json, sys\nprint(json.dumps([{'name': sys.argv[-1], 'x': sys.argv[1:]}]))\n"
    )
    state = Drbd([sys.executable, str(script)]).query("pvc-9", Deadline(10))
    assert state is not None and state.name == "pvc-9"
