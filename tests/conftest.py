"""Session-wide contract check: every reply any in-process LINSTOR simulator sent during the test
session is validated strictly against LINSTOR's OpenAPI response schemas when the session ends
(the simulators run as separate processes are checked by their own suites: tests/e2e,
tests/conformance). A violation fails the run with one line per distinct problem."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from csi_linstor.sim import simulator as sim_module

_RECORDED: dict[tuple[str, str, int, bytes], None] = {}  # distinct replies, in order


@pytest.fixture(autouse=True, scope="session")
def _runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Lock files of long node operations (nodeops/oplock) in a temp dir, not the host's
    /run/csi-linstor: for in-process node servicers and for driver processes (the env var)."""
    from csi_linstor.nodeops import oplock

    path = tmp_path_factory.mktemp("runtime")
    old_dir, old_env = oplock.runtime_dir(), os.environ.get(oplock.ENV_RUNTIME_DIR)
    oplock.set_runtime_dir(path)
    os.environ[oplock.ENV_RUNTIME_DIR] = str(path)
    yield
    oplock.set_runtime_dir(old_dir)
    if old_env is None:
        os.environ.pop(oplock.ENV_RUNTIME_DIR, None)
    else:
        os.environ[oplock.ENV_RUNTIME_DIR] = old_env


@pytest.fixture(autouse=True, scope="session")
def _harvest_simulator_replies() -> Iterator[None]:
    original = sim_module.Simulator.stop

    def stop(self: sim_module.Simulator) -> None:
        with self.app.counts_lock:
            for record in self.app.replies:
                _RECORDED[record] = None
        original(self)

    patch = pytest.MonkeyPatch()
    patch.setattr(sim_module.Simulator, "stop", stop)
    yield
    patch.undo()


# ---------------------------------------------------------------------------------------------
# The real LINSTOR backend: one instance for the whole session, started by the first test that
# asks for it (never when no such test runs), stopped at session end with everything deleted.


@pytest.fixture(scope="session")
def real_linstor_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.real_linstor import RealLinstor, require_real_linstor

    require_real_linstor()
    real = RealLinstor(tmp_path_factory.mktemp("reallinstor")).start()
    try:
        yield real
    finally:
        real.stop()


@pytest.fixture
def real_linstor(real_linstor_session: Any) -> Iterator[Any]:
    """The session's real LINSTOR, empty; the test must leave it empty (no resource definition,
    no snapshot): what it leaves is an error of that test, then deleted for the next one."""
    real = real_linstor_session
    real.reset()
    yield real
    left = real.leftovers()
    real.reset()
    assert not left, f"the test left in real LINSTOR: {left}"


_REPORT: list[str] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import json

    from tests.contract.replies import reply_violations
    from tests.contract.schema import SPEC_PATH, spec_available

    if not _RECORDED:
        return
    if not spec_available():
        _REPORT.append(f"{len(_RECORDED)} simulator replies NOT validated: no LINSTOR OpenAPI "
                       f"spec at {SPEC_PATH}")
        if os.environ.get("CI"):  # as tests/prerequisites.py: no silent pass under CI
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    records = [(m, r, st, json.loads(d) if d else None) for m, r, st, d in _RECORDED]
    checked, problems = reply_violations(records)
    _REPORT.append(f"{checked} distinct simulator replies validated strictly against the "
                   f"LINSTOR OpenAPI spec: {len(problems)} problem(s)")
    _REPORT.extend(problems[:50])
    if problems:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _REPORT:
        terminalreporter.section("LINSTOR REST contract")
        for line in _REPORT:
            terminalreporter.write_line(line)
