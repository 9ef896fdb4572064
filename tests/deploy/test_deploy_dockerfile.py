"""The container image recipe: entrypoint, node tools, non-root default user."""

from __future__ import annotations

import json
import re
import tomllib

import yaml
from deploy_helpers import CHART, ROOT

DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) pairs with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions(DOCKERFILE.read_text())
    starts = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    assert len(starts) >= 2, "expected a multi-stage build (builder + runtime)"
    return ins[starts[-1] :]


def test_entrypoint_runs_the_console_script_under_tini() -> None:
    entry = [a for w, a in final_stage() if w == "ENTRYPOINT"]
    assert entry, "no ENTRYPOINT in the final stage"
    argv = json.loads(entry[-1])
    assert argv[0] == "/usr/bin/tini" and "--" in argv
    assert argv[-1] == "csi-linstor"
    cmd = [json.loads(a) for w, a in final_stage() if w == "CMD"]
    assert cmd and cmd[-1] == ["serve"]


def test_pyproject_declares_the_console_script() -> None:
    # Must fail (not skip) while pyproject.toml is missing: the image cannot be built without it.
    assert PYPROJECT.is_file(), "pyproject.toml is missing at the repository root"
    data = tomllib.loads(PYPROJECT.read_text())
    scripts = data.get("project", {}).get("scripts", {})
    assert "csi-linstor" in scripts, f"[project.scripts] has no csi-linstor: {scripts}"
    assert scripts["csi-linstor"].startswith("csi_linstor"), scripts["csi-linstor"]


def test_builder_builds_a_wheel_and_runtime_installs_it() -> None:
    ins = instructions(DOCKERFILE.read_text())
    runs = " ".join(a for w, a in ins if w == "RUN")
    assert "pip wheel --no-deps -w /dist ." in runs
    final_runs = " ".join(a for w, a in final_stage() if w == "RUN")
    assert re.search(r"pip install --no-cache-dir /dist/\*\.whl"
                     r"|pip install --no-cache-dir \"\$\(ls /dist/\*\.whl\)\[operate\]\"",
                     final_runs), final_runs
    # the operator commands (csi-linstor status | report | doctor) need the kubernetes client
    assert "[operate]" in final_runs
    copies = [a for w, a in final_stage() if w == "COPY"]
    assert any(a.startswith("--from=builder") for a in copies)
    for compiler in ("gcc", "build-essential", "g++", "python3-dev"):
        assert not re.search(rf"\b{re.escape(compiler)}\b", final_runs), (
            f"{compiler} in the runtime stage"
        )


def test_node_tools_installed_without_recommends() -> None:
    runs = [a for w, a in final_stage() if w == "RUN" and "apt-get install" in a]
    assert runs, "no apt-get install in the final stage"
    cmd = runs[0]
    assert "--no-install-recommends" in cmd
    words = set(cmd.split())
    for pkg in ("tini", "e2fsprogs", "xfsprogs", "util-linux", "drbd-utils", "mount"):
        assert pkg in words, f"{pkg} is not installed"
    assert "rm -rf /var/lib/apt/lists/*" in cmd
    assert "/etc/mtab" in cmd


def test_non_root_user_matches_chart() -> None:
    users = [a for w, a in final_stage() if w == "USER"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    uid = str(values["controller"]["runAsUser"])
    assert users, "final stage has no USER"
    user = users[-1].split(":")[0]
    assert user not in ("0", "root")
    assert user == uid, f"image USER {user} != chart controller.runAsUser {uid}"


def test_dockerignore_keeps_the_build_inputs() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    for needed in ("!pyproject.toml", "!csi_linstor/", "!proto/", "!README.md"):
        assert needed in lines, needed
