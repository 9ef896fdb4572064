"""The one wrapper every RPC of every service goes through.

Servicer methods are written as ``def Method(self, request, call: Call) -> Response`` and decorated
with ``@rpc(...)``. The wrapper:

- gives each call a request id and a ``Deadline`` bounded by the caller's gRPC deadline;
- validates required top-level fields (INVALID_ARGUMENT naming the field);
- takes the per-key try-lock the method names (ABORTED at once when the key is busy, never a wait);
- logs one line per call (method, duration, code) and, at debug level, the request with every
  field marked ``csi_secret`` in csi.proto stripped;
- maps a ``CsiError`` to its status exactly once, and any other exception to INTERNAL with the
  traceback in the log;
- records Prometheus metrics per method and code when metrics are enabled.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import descriptor as _descriptor
from google.protobuf import text_format
from google.protobuf.message import Message

from csi_linstor._gen import csi_pb2
from csi_linstor.deadline import Deadline
from csi_linstor.errors import Aborted, CsiError, InvalidArgument

log = logging.getLogger("csi_linstor.rpc")

STRIPPED = "***stripped***"


# ---------------------------------------------------------------------------------------------
# Secret stripping
# ---------------------------------------------------------------------------------------------


def _is_secret(field: _descriptor.FieldDescriptor) -> bool:
    opts = field.GetOptions()
    return bool(opts.HasExtension(csi_pb2.csi_secret) and opts.Extensions[csi_pb2.csi_secret])


def strip_secrets(message: Message) -> Message:
    """A copy of ``message`` with every ``csi_secret`` field (at any depth) redacted."""
    copy = type(message)()
    copy.CopyFrom(message)
    _strip_in_place(copy)
    return copy


def _strip_in_place(message: Message) -> None:
    for field, value in message.ListFields():
        if _is_secret(field):
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                for key in list(value.keys()):
                    value[key] = STRIPPED
            elif field.type == field.TYPE_STRING:
                if field.is_repeated:
                    del value[:]
                    value.append(STRIPPED)
                else:
                    setattr(message, field.name, STRIPPED)
            else:
                message.ClearField(field.name)
            continue
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.type == value_field.TYPE_MESSAGE:
                for item in value.values():
                    _strip_in_place(item)
        elif field.is_repeated:
            for item in value:
                _strip_in_place(item)
        else:
            _strip_in_place(value)


def render(message: Message) -> str:
    """One-line text of a message with its secrets stripped, for logs."""
    return text_format.MessageToString(strip_secrets(message), as_one_line=True)


# ---------------------------------------------------------------------------------------------
# Per-key try-locks
# ---------------------------------------------------------------------------------------------


class KeyLocks:
    """Try-locks keyed by string: a busy key answers ABORTED immediately; free keys are dropped."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held: set[str] = set()

    @contextmanager
    def hold(self, keys: list[str]) -> Iterator[None]:
        with self._mutex:
            busy = [k for k in keys if k in self._held]
            if busy:
                raise Aborted(
                    f"an operation on {busy[0]} is already in progress; retry when it has finished"
                )
            self._held.update(keys)
        try:
            yield
        finally:
            with self._mutex:
                self._held.difference_update(keys)

    def held(self) -> set[str]:
        with self._mutex:
            return set(self._held)


# ---------------------------------------------------------------------------------------------
# Metrics (optional)
# ---------------------------------------------------------------------------------------------


class Metrics:
    """Prometheus counters and latency histograms per method and code."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        self.calls = Counter(
            "csi_linstor_rpc_calls",
            "CSI RPCs handled, by method and gRPC code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "csi_linstor_rpc_duration_seconds",
            "CSI RPC latency, by method and gRPC code",
            ["method", "code"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )

        self.linstor_reachable = Gauge(
            "csi_linstor_linstor_reachable",
            "1 when the last check of the LINSTOR controller (GET /v1/controller/version) "
            "succeeded, 0 when it failed; not part of the CSI Probe",
            registry=self.registry,
        )

    def set_linstor_reachable(self, reachable: bool) -> None:
        self.linstor_reachable.set(1 if reachable else 0)

    def observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.calls.labels(method, code.name).inc()
        self.latency.labels(method, code.name).observe(seconds)

    def serve(self, address: str) -> Any:
        from prometheus_client import start_http_server

        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
        return server


# ---------------------------------------------------------------------------------------------
# The wrapper
# ---------------------------------------------------------------------------------------------


@dataclass
class Call:
    """What an operation gets to know about the RPC it serves."""

    method: str
    request_id: str
    deadline: Deadline
    log: logging.LoggerAdapter


class Runtime:
    """Per-process state shared by every servicer: locks, metrics, default deadline."""

    def __init__(self, metrics: Metrics | None = None, default_deadline: float = 120.0) -> None:
        self.locks = KeyLocks()
        self.metrics = metrics
        self.default_deadline = default_deadline

    def invoke(
        self,
        method: str,
        impl: Callable[[Any, Any, Call], Any],
        servicer: Any,
        request: Message,
        context: grpc.ServicerContext,
        required: tuple[str, ...],
        lock: Callable[[Any], str | list[str] | None] | None,
    ) -> Any:
        request_id = uuid.uuid4().hex[:12]
        call_log = logging.LoggerAdapter(log, {"request_id": request_id})
        call = Call(
            method=method,
            request_id=request_id,
            deadline=Deadline.from_context(context, self.default_deadline),
            log=call_log,
        )
        start = time.monotonic()
        code = grpc.StatusCode.OK
        message = ""
        response = None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("[%s] %s request: %s", request_id, method, render(request))
        try:
            _check_required(request, required)
            keys = _lock_keys(lock, request)
            with self.locks.hold(keys):
                response = impl(servicer, request, call)
        except CsiError as err:
            code, message = err.code, err.message
        except Exception as err:  # noqa: BLE001 - the one place unexpected errors become INTERNAL
            log.exception("[%s] %s failed with an unexpected error", request_id, method)
            code = grpc.StatusCode.INTERNAL
            message = (
                f"internal error in {method} ({type(err).__name__}: {err}); "
                f"see the driver log for request {request_id}"
            )
        elapsed = time.monotonic() - start
        if self.metrics is not None:
            self.metrics.observe(method, code, elapsed)
        if code is grpc.StatusCode.OK:
            log.info("[%s] %s OK in %.1f ms", request_id, method, elapsed * 1000)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("[%s] %s response: %s", request_id, method, render(response))
            return response
        level = logging.ERROR if code is grpc.StatusCode.INTERNAL else logging.WARNING
        log.log(level, "[%s] %s %s in %.1f ms: %s", request_id, method, code.name,
                elapsed * 1000, message)
        # Abort exactly once, outside every except block: nothing can overwrite this code.
        context.abort(code, message)
        raise AssertionError("context.abort returned")  # pragma: no cover


def _check_required(request: Message, required: tuple[str, ...]) -> None:
    for name in required:
        field = request.DESCRIPTOR.fields_by_name[name]
        if field.is_repeated:
            present = len(getattr(request, name)) > 0
        elif field.type == field.TYPE_MESSAGE:
            present = request.HasField(name)
        else:
            present = bool(getattr(request, name))
        if not present:
            raise InvalidArgument(f"{name} is required")


def _lock_keys(lock: Callable[[Any], str | list[str] | None] | None, request: Message) -> list[str]:
    if lock is None:
        return []
    keys = lock(request)
    if keys is None:
        return []
    if isinstance(keys, str):
        return [keys] if keys else []
    return [k for k in keys if k]


F = TypeVar("F", bound=Callable[..., Any])


def rpc(
    required: tuple[str, ...] = (),
    lock: Callable[[Any], str | list[str] | None] | None = None,
) -> Callable[[F], Callable[[Any, Any, grpc.ServicerContext], Any]]:
    """Decorate a servicer method ``(self, request, call) -> response`` as a gRPC handler."""

    def decorate(impl: F) -> Callable[[Any, Any, grpc.ServicerContext], Any]:
        method = impl.__name__

        @functools.wraps(impl)
        def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            return self.runtime.invoke(method, impl, self, request, context, required, lock)

        return handler

    return decorate

