"""Typed LINSTOR errors: each carries the ApiCallRc list and the gRPC code a CSI caller should see."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc

from csi_linstor.errors import CsiError
from csi_linstor.linstor import consts


@dataclass(frozen=True)
class ApiCallRc:
    ret_code: int
    message: str = ""
    cause: str | None = None
    details: str | None = None
    correction: str | None = None
    error_report_ids: tuple[str, ...] = ()
    obj_refs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any) -> ApiCallRc:
        if not isinstance(data, dict):
            return cls(ret_code=consts.FAIL_UNKNOWN_ERROR, message=f"unexpected reply entry {data!r}")
        return cls(
            ret_code=int(data.get("ret_code", 0)),
            message=str(data.get("message", "")),
            cause=data.get("cause"),
            details=data.get("details"),
            correction=data.get("correction"),
            error_report_ids=tuple(data.get("error_report_ids") or ()),
            obj_refs=dict(data.get("obj_refs") or {}),
        )

    def is_(self, code: int) -> bool:
        return consts.rc_is(self.ret_code, code)

    @property
    def is_error(self) -> bool:
        return consts.is_error(self.ret_code)

    @property
    def is_warning(self) -> bool:
        return consts.is_warning(self.ret_code)

    def describe(self) -> str:
        parts = [f"{consts.rc_name(self.ret_code)}: {self.message}"]
        if self.cause:
            parts.append(f"cause: {self.cause}")
        if self.correction:
            parts.append(f"correction: {self.correction}")
        if self.error_report_ids:
            parts.append(f"error reports: {', '.join(self.error_report_ids)}")
        return "; ".join(parts)


def parse_rc_list(data: Any) -> list[ApiCallRc]:
    if isinstance(data, list):
        return [ApiCallRc.from_json(item) for item in data]
    if isinstance(data, dict) and "ret_code" in data:
        return [ApiCallRc.from_json(data)]
    if isinstance(data, dict) and isinstance(data.get("messages"), list):  # clone's reply object
        return [ApiCallRc.from_json(item) for item in data["messages"]]
    return []


# Which gRPC code a LINSTOR failure maps to, by ApiCallRc code (type + code compared).
_CODE_MAP: list[tuple[int, grpc.StatusCode]] = [
    (consts.FAIL_NOT_FOUND_CRYPT_KEY, grpc.StatusCode.FAILED_PRECONDITION),
    (consts.FAIL_NOT_ENOUGH_NODES, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (consts.FAIL_NOT_ENOUGH_FREE_SPACE, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (consts.FAIL_IN_USE, grpc.StatusCode.FAILED_PRECONDITION),
    (consts.FAIL_NOT_ALL_UPTODATE, grpc.StatusCode.FAILED_PRECONDITION),
    (consts.FAIL_SNAPSHOTS_NOT_SUPPORTED, grpc.StatusCode.FAILED_PRECONDITION),
    # the pool kind cannot do what was asked (e.g. clone a FILE_THIN volume): not transient
    (consts.FAIL_INVLD_PROVIDER, grpc.StatusCode.FAILED_PRECONDITION),
    (consts.FAIL_EXISTS_SNAPSHOT_DFN, grpc.StatusCode.ALREADY_EXISTS),
    (consts.FAIL_EXISTS_RSC_DFN, grpc.StatusCode.ALREADY_EXISTS),
    (consts.FAIL_EXISTS_RSC, grpc.StatusCode.ALREADY_EXISTS),
    (consts.FAIL_EXISTS_VLM_DFN, grpc.StatusCode.ALREADY_EXISTS),
    (consts.FAIL_EXISTS_RSC_GRP, grpc.StatusCode.ALREADY_EXISTS),
    (consts.FAIL_INVLD_RSC_NAME, grpc.StatusCode.INVALID_ARGUMENT),
    (consts.FAIL_INVLD_SNAPSHOT_NAME, grpc.StatusCode.INVALID_ARGUMENT),
    (consts.FAIL_INVLD_PROP, grpc.StatusCode.INVALID_ARGUMENT),
    (consts.FAIL_INVLD_LAYER_STACK, grpc.StatusCode.INVALID_ARGUMENT),
    (consts.FAIL_INVLD_VLM_SIZE, grpc.StatusCode.OUT_OF_RANGE),
    (consts.FAIL_NOT_CONNECTED, grpc.StatusCode.UNAVAILABLE),
    (consts.FAIL_SIGN_IN, grpc.StatusCode.PERMISSION_DENIED),
    (consts.FAIL_SIGN_IN_MISSING_CREDENTIALS, grpc.StatusCode.UNAUTHENTICATED),
    (consts.FAIL_ACC_DENIED_COMMAND, grpc.StatusCode.PERMISSION_DENIED),
    # the controller could not parse a body the driver sent (a field too new for its REST
    # version): a driver bug, never fixed by retrying
    (consts.API_CALL_PARSE_ERROR, grpc.StatusCode.INTERNAL),
]


class LinstorError(CsiError):
    """LINSTOR answered with an error. ``rcs`` holds every entry; ``first`` the first error."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, method: str, path: str, status: int, rcs: list[ApiCallRc],
                 body: str = "") -> None:
        self.method = method
        self.path = path
        self.status = status
        self.rcs = rcs
        errors = [rc for rc in rcs if rc.is_error]
        self.first = errors[0] if errors else (rcs[0] if rcs else None)
        if self.first is not None:
            detail = self.first.describe()
        else:
            detail = f"HTTP {status}: {body[:300] or 'no body'}"
        if status == 401:
            detail += ("; LINSTOR wants credentials: check the bearer token file (--bearer-token /"
                       " LS_BEARER_TOKEN_FILE) holds a valid, unexpired token")
        elif status == 403:
            detail += "; the credentials were refused for this command: check LINSTOR's access rules"
        if self.has(consts.FAIL_NOT_FOUND_CRYPT_KEY):
            detail += ("; the luks layer (StorageClass encryption: \"true\") needs LINSTOR's master"
                       " passphrase: create it once with `linstor encryption create-passphrase`"
                       " (after a LINSTOR controller restart: `linstor encryption"
                       " enter-passphrase`), then retry")
        code = self._grpc_code(status)
        if status >= 500 and code is grpc.StatusCode.UNAVAILABLE:
            detail += _server_side_hint(self.first)
        super().__init__(f"LINSTOR {method} {path} failed: {detail}", code=code)

    def _grpc_code(self, status: int) -> grpc.StatusCode:
        if status == 401:  # token auth answers FAIL_ACC_DENIED_COMMAND with 401: not signed in
            return grpc.StatusCode.UNAUTHENTICATED
        if self.first is not None:
            if self.is_not_found():
                return grpc.StatusCode.NOT_FOUND
            for rc_code, grpc_code in _CODE_MAP:
                if self.first.is_(rc_code):
                    return grpc_code
        if status in (401,):
            return grpc.StatusCode.UNAUTHENTICATED
        if status in (403,):
            return grpc.StatusCode.PERMISSION_DENIED
        if status in (502, 503, 504):
            return grpc.StatusCode.UNAVAILABLE
        if self.first is not None and self.first.is_(consts.FAIL_UNKNOWN_ERROR) and status == 404:
            # "Path ... not found on server": this controller lacks the endpoint (too old).
            return grpc.StatusCode.UNIMPLEMENTED
        if status >= 500:
            # A 5xx without a code we know: LINSTOR (or a satellite) failed on its side. The
            # sidecars retry UNAVAILABLE and treat the operation as possibly still in progress.
            return grpc.StatusCode.UNAVAILABLE
        return grpc.StatusCode.INTERNAL

    def has(self, code: int) -> bool:
        return any(rc.is_(code) for rc in self.rcs)

    def is_not_found(self) -> bool:
        """An object is missing (FAIL_NOT_FOUND_*, codes 300-399): not a missing endpoint."""
        return any(
            rc.is_error and 300 <= (rc.ret_code & consts.MASK_BITS_CODE) <= 399
            and not rc.is_(consts.FAIL_NOT_FOUND_CRYPT_KEY)  # a missing master key, no object
            for rc in self.rcs
        )


def _server_side_hint(first: ApiCallRc | None) -> str:
    """What to do about a 5xx LINSTOR gives no known code for: it failed on its side."""
    reports = first.error_report_ids if first is not None else ()
    if reports:
        return (f"; LINSTOR failed on its side: `linstor error-reports show {reports[0]}` on the "
                "controller says why; the request is retried")
    return ("; LINSTOR (or a proxy in front of it) failed on its side: see the controller's log "
            "and `linstor error-reports list`; the request is retried")


class LinstorUnavailable(CsiError):
    """No controller could be reached (connection refused, TLS failure, timeout)."""

    code = grpc.StatusCode.UNAVAILABLE
