"""Identity service: plugin name/version, plugin capabilities, and a Probe that never blocks.

Probe answers ready whenever the server serves; LINSTOR reachability is watched separately by
``LinstorMonitor`` (log line on change, Prometheus gauge), never by the liveness path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from google.protobuf import wrappers_pb2

from csi_linstor import __version__
from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.deadline import Deadline
from csi_linstor.errors import CsiError
from csi_linstor.rpc import Call, Runtime, rpc

log = logging.getLogger("csi_linstor.identity")

PluginCap = csi_pb2.PluginCapability


class LinstorMonitor:
    """LINSTOR reachability, checked by a background thread; never consulted by Probe.

    Probe reports the driver's own health: a node plugin must keep running (finishing mkfs,
    fsck, resize, unmounts) while LINSTOR is down, so a LINSTOR outage must not turn into
    liveness restarts. Reachability goes to the log (once per change, with the error) and to
    the ``csi_linstor_linstor_reachable`` gauge; RPCs that need LINSTOR answer UNAVAILABLE.
    Each check (``GET /v1/controller/version``) also refreshes the client's cached versions.
    """

    def __init__(self, check: Callable[[Deadline], None], interval: float = 5.0,
                 timeout: float = 3.0,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self._check = check
        self._interval = interval
        self._timeout = timeout
        self._on_change = on_change
        self._reachable: bool | None = None
        self._reason = "LINSTOR reachability not checked yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="linstor-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def refresh(self) -> None:
        try:
            self._check(Deadline(self._timeout))
        except CsiError as err:
            if self._reachable is not False:
                log.warning("LINSTOR unreachable: %s (the driver keeps serving; RPCs that need "
                            "LINSTOR answer UNAVAILABLE until it is back)", err.message)
            self._set(False, err.message)
        else:
            if self._reachable is not True:
                log.info("LINSTOR reachable%s", " again" if self._reachable is False else "")
            self._set(True, "")

    def _set(self, reachable: bool, reason: str) -> None:
        changed = reachable != self._reachable
        self._reachable, self._reason = reachable, reason
        if changed and self._on_change is not None:
            self._on_change(reachable)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self._interval)

    @property
    def reachable(self) -> bool:
        return bool(self._reachable)

    @property
    def reason(self) -> str:
        return self._reason


class IdentityServicer(csi_pb2_grpc.IdentityServicer):
    def __init__(self, runtime: Runtime, driver_name: str, controller: bool,
                 group_controller: bool = False) -> None:
        self.runtime = runtime
        self.driver_name = driver_name
        self.controller = controller
        self.group_controller = group_controller

    @rpc()
    def GetPluginInfo(self, request: csi_pb2.GetPluginInfoRequest,
                      call: Call) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=self.driver_name, vendor_version=__version__)

    @rpc()
    def GetPluginCapabilities(self, request: csi_pb2.GetPluginCapabilitiesRequest,
                              call: Call) -> csi_pb2.GetPluginCapabilitiesResponse:
        caps = []
        if self.controller:
            for kind in (PluginCap.Service.CONTROLLER_SERVICE,
                         PluginCap.Service.VOLUME_ACCESSIBILITY_CONSTRAINTS):
                caps.append(PluginCap(service=PluginCap.Service(type=kind)))
            if self.group_controller:
                caps.append(PluginCap(service=PluginCap.Service(
                    type=PluginCap.Service.GROUP_CONTROLLER_SERVICE)))
        caps.append(PluginCap(volume_expansion=PluginCap.VolumeExpansion(
            type=PluginCap.VolumeExpansion.ONLINE)))
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=caps)

    @rpc()
    def Probe(self, request: csi_pb2.ProbeRequest, call: Call) -> csi_pb2.ProbeResponse:
        # Answering at all means the gRPC server serves: that is the driver's own health.
        # LINSTOR reachability is deliberately not part of it (see LinstorMonitor).
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=True))
