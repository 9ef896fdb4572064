"""Test prerequisites: a missing one skips a test locally, but fails it under CI.

CI installs everything the suite needs (scripts/install-deps.sh); a prerequisite missing there is
a broken install step, and a silent skip would hide it (the suite would pass having tested less).
"""

from __future__ import annotations

import os

import pytest


def require(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"prerequisite missing under CI: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
