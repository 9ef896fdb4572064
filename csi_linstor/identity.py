"""Identity service: plugin name/version, plugin capabilities, and a Probe that never blocks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from google.protobuf import wrappers_pb2

from csi_linstor import __version__
from csi_linstor._gen import csi_pb2, csi_pb2_grpc
from csi_linstor.deadline import Deadline
from csi_linstor.errors import CsiError
from csi_linstor.rpc import Call, Runtime, rpc

log = logging.getLogger("csi_linstor.identity")

PluginCap = csi_pb2.PluginCapability


class Readiness:
    """Cached LINSTOR reachability, refreshed by a background thread; ``ready`` never blocks."""

    def __init__(self, check: Callable[[Deadline], None], interval: float = 5.0,
                 timeout: float = 3.0) -> None:
        self._check = check
        self._interval = interval
        self._timeout = timeout
        self._ready = False
        self._reason = "LINSTOR reachability not checked yet"
        self._checked_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="linstor-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def refresh(self) -> None:
        try:
            self._check(Deadline(self._timeout))
        except CsiError as err:
            if self._ready or self._reason != err.message:
                log.warning("LINSTOR not reachable: %s", err.message)
            self._ready, self._reason = False, err.message
        else:
            if not self._ready:
                log.info("LINSTOR reachable")
            self._ready, self._reason = True, ""
        self._checked_at = time.monotonic()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self._interval)

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def reason(self) -> str:
        return self._reason


class IdentityServicer(csi_pb2_grpc.IdentityServicer):
    def __init__(self, runtime: Runtime, driver_name: str, controller: bool,
                 readiness: Readiness | None, group_controller: bool = False) -> None:
        self.runtime = runtime
        self.driver_name = driver_name
        self.controller = controller
        self.group_controller = group_controller
        self.readiness = readiness

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
        ready = True if self.readiness is None else self.readiness.ready
        if not ready:
            call.log.info("Probe: not ready: %s", self.readiness.reason if self.readiness else "")
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=ready))
