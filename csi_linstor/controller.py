"""Controller service. Placeholder: every RPC answers UNIMPLEMENTED until issue 4 fills it in."""

from __future__ import annotations

from typing import Any

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.rpc import Call, Runtime, rpc, unimplemented


class ControllerServicer(csi_pb2_grpc.ControllerServicer):
    def __init__(self, runtime: Runtime, config: Any, linstor: Any) -> None:
        self.runtime = runtime
        self.config = config
        self.linstor = linstor

    @rpc()
    def ControllerGetCapabilities(self, request: csi_pb2.ControllerGetCapabilitiesRequest,
                                  call: Call) -> csi_pb2.ControllerGetCapabilitiesResponse:
        return csi_pb2.ControllerGetCapabilitiesResponse()


for _name in ("CreateVolume", "DeleteVolume", "ControllerPublishVolume",
              "ControllerUnpublishVolume", "ValidateVolumeCapabilities", "ListVolumes",
              "GetCapacity", "CreateSnapshot", "DeleteSnapshot", "ListSnapshots",
              "ControllerExpandVolume", "ControllerGetVolume", "ControllerModifyVolume"):
    setattr(ControllerServicer, _name, unimplemented(_name))
