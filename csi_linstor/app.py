"""Wiring: builds the LINSTOR client (or the embedded simulator), the servicers and the server."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from typing import Any

import grpc

from csi_linstor._gen import csi_pb2_grpc
from csi_linstor.config import Config
from csi_linstor.csi.identity import IdentityServicer, LinstorMonitor
from csi_linstor.deadline import Deadline
from csi_linstor.linstor.client import LinstorClient
from csi_linstor.mapping.topology import node_segments
from csi_linstor.rpc import Metrics, Runtime
from csi_linstor.server import CsiServer, prepare_unix_socket

log = logging.getLogger("csi_linstor.app")


class Driver:
    """One driver process: optional embedded simulator, LINSTOR client, gRPC server."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.sim: Any = None
        self.client: LinstorClient | None = None
        self.server: CsiServer | None = None
        self.monitor: LinstorMonitor | None = None
        self.metrics_server: Any = None

    def start(self) -> None:
        cfg = self.config
        if cfg.csi_endpoint.scheme == "unix" and cfg.csi_endpoint.path is not None:
            # Refuse a bad socket path before anything else starts (simulator, threads).
            prepare_unix_socket(cfg.csi_endpoint.path)
        if cfg.embedded:
            from csi_linstor.sim import SimConfig, Simulator

            self.sim = Simulator(SimConfig(nodes=cfg.sim_nodes, device_dir=cfg.sim_device_dir,
                                           state_dir=cfg.sim_state_dir))
            url = self.sim.start(host="127.0.0.1", port=0)
            node = cfg.node or self.sim.config.node_names()[0]
            drbdsetup = cfg.drbdsetup
            if drbdsetup == ("drbdsetup",):
                drbdsetup = (sys.executable, "-m", "csi_linstor.sim.drbdsetup",
                             "--sim-url", url, "--node", node)
            cfg = replace(cfg, linstor_endpoints=(url,), node=node, drbdsetup=drbdsetup)
            self.config = cfg
            log.info("embedded LINSTOR simulator at %s (%d nodes); this node is %s",
                     url, cfg.sim_nodes, node)
        self.client = LinstorClient(
            cfg.linstor_endpoints,
            pool_size=cfg.workers,
            connect_timeout=cfg.linstor_connect_timeout,
            read_timeout=cfg.linstor_read_timeout,
            root_ca=cfg.tls.root_ca,
            user_certificate=cfg.tls.user_certificate,
            user_key=cfg.tls.user_key,
            skip_tls_verify=cfg.tls.skip_verify,
            bearer_token_file=cfg.bearer_token_file,
        )
        metrics = None
        if cfg.metrics_address:
            metrics = Metrics()
            self.metrics_server = metrics.serve(cfg.metrics_address)
            log.info("metrics on http://%s/metrics", cfg.metrics_address)
        runtime = Runtime(metrics=metrics)
        client = self.client
        self.monitor = LinstorMonitor(lambda deadline: client.version(deadline),
                                      interval=cfg.probe_interval,
                                      on_change=metrics.set_linstor_reachable if metrics else None)
        self.monitor.start()
        self.server = CsiServer(cfg.csi_endpoint, lambda srv: self._register(srv, runtime),
                                workers=cfg.workers, grace=cfg.grace_period)
        self.server.start()

    def _register(self, server: grpc.Server, runtime: Runtime) -> None:
        cfg = self.config
        client = self.client
        assert client is not None
        group = False
        if cfg.runs_controller:
            from csi_linstor.csi.controller import ControllerServicer

            controller = ControllerServicer(runtime, cfg, client)
            csi_pb2_grpc.add_ControllerServicer_to_server(controller, server)
            group_servicer = getattr(controller, "group_controller", None)
            if group_servicer is not None:
                csi_pb2_grpc.add_GroupControllerServicer_to_server(group_servicer, server)
                group = True
        if cfg.runs_node:
            from csi_linstor.csi.node import NodeServicer

            def topology(deadline: Deadline) -> dict[str, str]:
                return node_segments(client, cfg.node, cfg.property_namespace,
                                     cfg.label_by_storage_pool, deadline)

            csi_pb2_grpc.add_NodeServicer_to_server(
                NodeServicer(runtime, cfg, client, topology), server)
        csi_pb2_grpc.add_IdentityServicer_to_server(
            IdentityServicer(runtime, cfg.driver_name, cfg.runs_controller,
                             group_controller=group),
            server,
        )

    def wait(self) -> int:
        assert self.server is not None
        try:
            return self.server.wait_for_signal()
        finally:
            self.stop()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.monitor is not None:
            self.monitor.stop()
        if self.client is not None:
            self.client.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server = None
        if self.sim is not None:
            self.sim.stop()
            self.sim = None
