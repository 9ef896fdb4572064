"""Plain-text tables and JSON for the operator commands (no colour: output is pasted into
tickets; abnormal rows are marked with a leading ``!``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from csi_linstor.ops.common import FAIL, WARN, Finding

MARK = {FAIL: "FAIL", WARN: "WARN", "info": "info", "ok": "ok"}


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, indent: str = "") -> str:
    """Left-aligned columns separated by two spaces; empty cells shown as '-'."""
    cells = [[str(h) for h in headers]] + [
        ["-" if c is None or c == "" else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        lines.append(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def findings_text(findings: Sequence[Finding], *, indent: str = "") -> str:
    """One finding per line (``FAIL  check: message``), its advice on the next (``-> ...``)."""
    lines = []
    for f in findings:
        lines.append(f"{indent}{MARK.get(f.level, f.level):<4}  {f.check}: {f.message}")
        if f.advice:
            lines.append(f"{indent}      -> {f.advice}")
    return "\n".join(lines)


def dump_json(data: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    json.dump(data, out, indent=2, sort_keys=False, default=str)
    out.write("\n")
