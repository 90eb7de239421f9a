"""The layering the design promises: no cycles between core modules, core free of front ends,
no front end importing another, and the package import light (no torch, no napari)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "napari_yeast_phenotypes"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Package modules that ``path`` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("napari_yeast_phenotypes"):
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("napari_yeast_phenotypes"))
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files and i != m} for m, p in files.items()}


def test_core_modules_form_no_cycle():
    graph = {m: {d for d in deps if d.startswith("napari_yeast_phenotypes.core.")}
             for m, deps in _graph().items() if m.startswith("napari_yeast_phenotypes.core.")}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in graph.get(m, ()):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, m, d]))
            if d not in state:
                visit(d, [*path, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_front_ends_stay_apart():
    graph = _graph()
    front = ("napari_yeast_phenotypes.cli", "napari_yeast_phenotypes.demo", "napari_yeast_phenotypes._napari")
    for m, deps in graph.items():
        if m.startswith("napari_yeast_phenotypes.core") or m == "napari_yeast_phenotypes.phenotypes":
            assert not [d for d in deps if d.startswith(front)], f"{m} imports a front end"
        if m.startswith("napari_yeast_phenotypes._napari"):
            assert not [d for d in deps if d.startswith(front[:2])], f"{m} imports the CLI or the demo"
        if m == "napari_yeast_phenotypes.demo":
            assert not [d for d in deps if d.startswith((front[0], front[2]))], "the demo imports another front end"


def test_core_never_imports_napari_or_qt():
    for path in (PKG / "core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and not n.level}
        assert not names & {"napari", "qtpy", "PyQt5", "PySide2", "PySide6", "magicgui", "vispy"}, path.name


def test_light_imports():
    """The package, its config objects and the CLI parser import neither torch nor napari."""
    code = ("import sys; import napari_yeast_phenotypes; from napari_yeast_phenotypes.core import config, jobs;"
            "from napari_yeast_phenotypes.core.results import schema;"
            "from napari_yeast_phenotypes.cli import build_parser; build_parser();"
            "print(sorted(m for m in ('torch', 'napari', 'qtpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(PKG.parent), "PATH": ""}).stdout.strip()
    assert out == "[]"


def test_every_public_name_of_core_resolves():
    """Each subpackage's public face names only things that exist where it says (a name moved to another
    module and left in the map would fail only when a user first asks for it)."""
    code = ("import importlib, pkgutil, napari_yeast_phenotypes.core as core\n"
            "bad = []\n"
            "for m in pkgutil.iter_modules(core.__path__):\n"
            "    if not m.ispkg: continue\n"
            "    pkg = importlib.import_module(f'napari_yeast_phenotypes.core.{m.name}')\n"
            "    for name in getattr(pkg, '__all__', ()):\n"
            "        try: getattr(pkg, name)\n"
            "        except Exception as exc: bad.append(f'{pkg.__name__}.{name}: {exc}')\n"
            "print('\\n'.join(bad)); raise SystemExit(1 if bad else 0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parents[1])
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_core_module_over_500_lines_but_the_simulator():
    long = {str(p.relative_to(PKG)): n for p in (PKG / "core").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500 and p.name != "simulate.py"}
    assert not long, f"split these by what they are about: {long}"
