"""The volume and publish context keys: LINBIT's driver's wire format, written by the controller
(CreateVolume, ControllerPublishVolume) and read by the node plugin. Defined once here."""

CTX_PREFIX = "linstor.csi.linbit.com/"
CTX_USES = CTX_PREFIX + "uses-volume-context"
CTX_MOUNT_OPTS = CTX_PREFIX + "mount-options"
CTX_XFS_OPTS = CTX_PREFIX + "post-mount-xfs-opts"
CTX_REMOTE = CTX_PREFIX + "remote-access-policy"
CTX_FS_OPTS = CTX_PREFIX + "fs-opts"
PUB_USES = CTX_PREFIX + "uses-publish-context"
PUB_DEVICE = CTX_PREFIX + "device-path"
PUB_FS = CTX_PREFIX + "fs-type"
# The access type the controller checked against the one the volume was created with: the node
# formats only a volume published as "mount" (or, without this key, one LINSTOR says is not block).
PUB_ACCESS = CTX_PREFIX + "access-type"
PUB_MAY_FORMAT = CTX_PREFIX + "may-format"
