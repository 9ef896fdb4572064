"""What to do, from an error message a sidecar or the driver recorded: the advice lines doctor
prints under a provisioning, attach/mount or snapshot failure."""

from __future__ import annotations


def provisioning_advice(msg: str) -> str:
    m = msg.lower()
    if "storage pool" in m or "storagepool" in m:
        return ("the class names a storage pool LINSTOR does not have on enough nodes: fix the "
                "class or create the pool (linstor storage-pool list)")
    if "not enough" in m and ("node" in m or "free" in m or "space" in m):
        return ("LINSTOR found too few nodes with free space for the class's placementCount: "
                "add capacity or nodes, or use a class with fewer replicas")
    if "unavailable" in m or "unreachable" in m or "connection" in m:
        return "the driver cannot reach LINSTOR: check the controller and LS_CONTROLLERS"
    if "invalid" in m or "parameter" in m:
        return "fix the StorageClass parameter the message names (re-create the class)"
    return "read the message above; csi-provisioner retries with backoff"


def attach_advice(msg: str) -> str:
    m = msg.lower()
    if "offline" in m or "not connected" in m or "unreachable" in m:
        return "a LINSTOR satellite is offline: start it, the attach is retried"
    if "not found" in m and "node" in m:
        return "the Kubernetes node has no LINSTOR node of that name: register it or map names"
    if "in use" in m or "busy" in m or "primary" in m:
        return ("another node still uses the volume (ReadWriteOnce): stop the old pod, or wait "
                "for its node to detach")
    if "mount" in m or "format" in m or "fsck" in m:
        return "the node plugin could not mount it: see the node plugin's log on that node"
    return "see the controller's csi-attacher log and the node plugin's log"


def snapshot_advice(msg: str) -> str:
    m = msg.lower()
    if "not support" in m or "snapshot" in m and "pool" in m:
        return ("the volume's storage pool cannot take snapshots (thick LVM, plain files): use a "
                "thin LVM, ZFS or reflink file pool")
    if "class" in m:
        return "create the VolumeSnapshotClass (deploy/examples/snapshotclass.yaml)"
    return "delete the VolumeSnapshot and retry; read the csi-snapshotter log for details"
