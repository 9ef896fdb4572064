"""Typed errors that carry their gRPC status code.

Servicers and operations raise these; the RPC wrapper (``rpc.py``) turns them into a gRPC status
exactly once. Anything else that escapes an RPC is a bug and becomes INTERNAL with a logged traceback.
"""

from __future__ import annotations

import grpc


class CsiError(Exception):
    """An error with a gRPC status code and a message a person can act on."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidArgument(CsiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(CsiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CsiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(CsiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(CsiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(CsiError):
    code = grpc.StatusCode.UNAVAILABLE


class Aborted(CsiError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(CsiError):
    code = grpc.StatusCode.OUT_OF_RANGE


class DeadlineExceeded(CsiError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(CsiError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(CsiError):
    code = grpc.StatusCode.INTERNAL


class CommandError(CsiError):
    """A subprocess failed. The message names the command, its exit status and its stderr."""

    code = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        argv: list[str],
        returncode: int | None,
        stderr: str,
        *,
        message: str | None = None,
        code: grpc.StatusCode | None = None,
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        if message is None:
            status = "timed out" if returncode is None else f"exited with status {returncode}"
            # One line: the message becomes a Kubernetes event, and mount's stderr spans lines.
            detail = " ".join(stderr.split()) or "no output on stderr"
            message = f"command `{' '.join(argv)}` {status}: {detail}"
        super().__init__(message, code=code)
