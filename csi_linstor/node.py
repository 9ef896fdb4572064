"""Node service. Placeholder: every RPC answers UNIMPLEMENTED until issue 5 fills it in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.rpc import Call, Runtime, rpc, unimplemented


class NodeServicer(csi_pb2_grpc.NodeServicer):
    def __init__(self, runtime: Runtime, config: Any, linstor: Any,
                 topology: Callable[[Any], dict[str, str]]) -> None:
        self.runtime = runtime
        self.config = config
        self.linstor = linstor
        self.topology = topology

    @rpc()
    def NodeGetCapabilities(self, request: csi_pb2.NodeGetCapabilitiesRequest,
                            call: Call) -> csi_pb2.NodeGetCapabilitiesResponse:
        return csi_pb2.NodeGetCapabilitiesResponse()

    @rpc()
    def NodeGetInfo(self, request: csi_pb2.NodeGetInfoRequest,
                    call: Call) -> csi_pb2.NodeGetInfoResponse:
        return csi_pb2.NodeGetInfoResponse(
            node_id=self.config.node,
            accessible_topology=csi_pb2.Topology(segments=self.topology(call.deadline)),
        )


for _name in ("NodeStageVolume", "NodeUnstageVolume", "NodePublishVolume",
              "NodeUnpublishVolume", "NodeGetVolumeStats", "NodeExpandVolume"):
    setattr(NodeServicer, _name, unimplemented(_name))
