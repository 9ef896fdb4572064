"""Names and paths from requests never reach a shell: no subprocess call in the driver runs one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent.parent / "csi_linstor"
SHELLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
          ("subprocess", "getstatusoutput")}


def test_no_shell_anywhere_in_the_driver() -> None:
    found = []
    files = [f for f in PACKAGE.rglob("*.py") if "_gen" not in f.parts]
    assert len(files) > 20, files
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant)
                                              and kw.value.value is False):
                    found.append(f"{f.relative_to(PACKAGE)}:{node.lineno} shell=")
            fn = node.func
            if isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) \
                    and (fn.value.id, fn.attr) in SHELLS:
                found.append(f"{f.relative_to(PACKAGE)}:{node.lineno} {fn.value.id}.{fn.attr}")
    assert not found, found
