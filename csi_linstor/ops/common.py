"""What every operator command shares: exit codes, findings, and the two "cannot reach" errors.

Exit codes (the same for every command, so a script can tell them apart):

- 0 ``OK``: nothing abnormal found;
- 1 ``ABNORMAL``: something is wrong (the output says what and what to do);
- 2 ``USAGE``: bad flags or arguments;
- 3 ``LINSTOR_UNREACHABLE``: no LINSTOR controller answered (or it refused our credentials);
- 4 ``KUBE_UNREACHABLE``: no Kubernetes API configuration, or the API server did not answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

OK = 0
ABNORMAL = 1
USAGE = 2
LINSTOR_UNREACHABLE = 3
KUBE_UNREACHABLE = 4

# Finding levels, from least to most severe.
PASS = "ok"
INFO = "info"
WARN = "warn"
FAIL = "fail"
LEVELS = (PASS, INFO, WARN, FAIL)


class OpsError(Exception):
    """A command cannot run at all; ``exit_code`` says why."""

    exit_code = ABNORMAL


class LinstorUnreachable(OpsError):
    exit_code = LINSTOR_UNREACHABLE


class KubeUnreachable(OpsError):
    exit_code = KUBE_UNREACHABLE


@dataclass(frozen=True)
class Finding:
    """One line an operator reads: what was checked, what was found, and what to do."""

    level: str
    check: str
    message: str
    advice: str = ""
    subject: str = ""  # the object it is about, e.g. "node/node-2" or "resource/pvc-1@node-1"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def abnormal(self) -> bool:
        return self.level in (WARN, FAIL)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        if not out["details"]:
            del out["details"]
        return out


def worst(findings: list[Finding]) -> str:
    levels = [f.level for f in findings] or [PASS]
    return max(levels, key=LEVELS.index)


def exit_code(findings: list[Finding]) -> int:
    return ABNORMAL if any(f.abnormal for f in findings) else OK


def human_kib(kib: int | None) -> str:
    """1048576 -> '1.0 GiB'; None -> '-'."""
    if kib is None:
        return "-"
    value = float(kib)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "KiB" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"
