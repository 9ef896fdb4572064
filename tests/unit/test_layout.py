"""The package layout stays readable (issue 16): every module says what it is, stays small, and
no two modules import each other, directly or through others.

See docs/architecture.md for the layout these checks keep honest.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.prerequisites import require

ROOT = Path(__file__).resolve().parents[2] / "csi_linstor"
MAX_LINES = 500
# Modules allowed to be longer, and why. Generated code (csi_linstor/_gen, from csi.proto) is
# not checked at all: it is not in the repository and nobody edits it.
LONGER: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        if "_gen" in rel.parts:
            continue
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The csi_linstor modules ``name`` imports at run time (``if TYPE_CHECKING:`` blocks aside)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod)
    return {m for m in found if m in MODULES and m != name}


def test_every_module_says_what_it_is() -> None:
    missing = [name for name, path in MODULES.items()
               if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing, f"modules without a docstring: {missing}"


def test_modules_stay_small() -> None:
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES and name not in LONGER}
    assert not long, f"modules over {MAX_LINES} lines (split them, or list them in LONGER " \
                     f"with the reason): {long}"


def test_no_import_cycles() -> None:
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [node, nxt] if nxt in path
                              else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", ["csi_linstor.csi.controller", "csi_linstor.sim.controller"])
def test_the_checks_see_the_imports(module: str) -> None:
    """The cycle check would pass vacuously if it found no edges: it must see real imports."""
    assert len(_imports(module, MODULES[module])) >= 5


# -- docs/architecture.md matches the code ------------------------------------------------------

DOCS = ROOT.parent / "docs"


def _defined(path: Path) -> tuple[set[str], dict[str, set[str]]]:
    """Top-level names of a module, and the methods (and class attributes) of each class."""
    names: set[str] = set()
    methods: dict[str, set[str]] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef):
            methods[node.name] = {n.name for n in node.body
                                  if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
            methods[node.name] |= {t.id for n in node.body if isinstance(n, ast.Assign)
                                   for t in n.targets if isinstance(t, ast.Name)}
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names, methods


def _table_rows(text: str, heading: str) -> list[list[str]]:
    section = text.split(heading, 1)[1]
    rows = []
    for line in section.splitlines():
        if line.startswith("## ") or line.startswith("### "):
            break
        if line.startswith("| `"):
            rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
    return rows


def test_where_things_moved_names_what_the_code_has() -> None:
    text = (DOCS / "architecture.md").read_text()
    rows = _table_rows(text, "## Where things moved")
    assert len(rows) > 30
    problems = []
    for row in rows:
        if len(row) == 2:  # whole-file move: old path gone, new one there
            old = row[0].strip("`")
            new = row[1].split("`")[1]
            if (ROOT / old).exists() or not (ROOT / new).exists():
                problems.append(f"{old} -> {new}")
            continue
        new = row[2].split("`")[1]
        cls = row[2].split("class `")[1].split("`")[0] if "class `" in row[2] else None
        names, methods = _defined(ROOT / new)
        for name in row[1].split("`")[1::2]:
            owner, _, meth = name.rpartition(".")
            if owner:
                ok = cls is not None and meth in methods.get(cls, set())
            else:
                ok = name in names
            if not ok:
                problems.append(f"{name} is not in {new}" + (f" class {cls}" if cls else ""))
    assert not problems, problems


def test_the_picture_names_files_that_exist() -> None:
    source = "\n".join(line for line in (DOCS / "architecture.dot").read_text().splitlines()
                       if not line.lstrip().startswith("//")).replace("\\n", " ")
    files = set(re.findall(r"[\w/]+\.py", source))
    assert len(files) > 40
    everywhere = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py")}
    names = {Path(p).name for p in everywhere}
    missing = [f for f in files if (f not in everywhere if "/" in f else f not in names)]
    assert not missing, missing


def test_the_committed_picture_is_rendered_from_its_source(tmp_path: Path) -> None:
    dot = shutil.which("dot")
    require(dot is not None, "Graphviz dot (scripts/install-deps.sh --test installs graphviz)")
    assert dot is not None
    out = tmp_path / "architecture.svg"
    subprocess.run([dot, "-Tsvg", str(DOCS / "architecture.dot"), "-o", str(out)], check=True,
                   timeout=60)

    def words(svg: str) -> list[str]:
        return sorted(re.findall(r"<(?:text|title)[^>]*>([^<]*)</", svg))

    assert words((DOCS / "architecture.svg").read_text()) == words(out.read_text()), \
        "docs/architecture.svg is stale: run scripts/render-architecture.sh and commit it"
