"""The layout's one rule: imports point down the stack, never up, and no two packages import each
other. Every module's imports are read with `ast`, at the top of the file and inside functions.

From the ground floor up (a layer may import any layer below it, never one above or beside it):
  base modules at the root (errors, limits, documents, config, paths, transcript)
  society  <-  data_gen | model  <-  train  <-  infer  <-  probes  <-  narrate  <-  explore | recovery | calibrate
  <-  the pipeline driver (pipeline.py)  <-  the command line (cli.py, then __main__.py)
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BASE = ("errors", "limits", "documents", "config", "paths", "transcript")
"""The root modules every package may use, in their own order (each imports only those before it)."""
LAYERS: tuple[tuple[str, ...], ...] = (
    ("society",),
    ("data_gen", "model"),
    ("train",),
    ("infer",),
    ("probes",),
    ("narrate",),
    ("explore", "recovery", "calibrate"),
    ("pipeline",),
    ("cli",),
    ("__main__", "__init__"),
)


def unit_of(path: Path) -> str:
    """The package (top-level folder) or root module a file belongs to."""
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def level(unit: str) -> float:
    if unit in BASE:
        return -1 + BASE.index(unit) / len(BASE)  # below every package, ordered among themselves
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"{unit}: not placed in tests/test_layout.py's LAYERS (a new package must be given its floor)")


def imports(path: Path, text: str | None = None) -> list[tuple[str, int]]:
    """(imported unit, line) for every `lsm.*` import in the file (or in `text`, as if it were
    that file), top-level or local."""
    tree = ast.parse(path.read_text(encoding="utf-8") if text is None else text)
    package = path.relative_to(ROOT).parts[:-1]
    out = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package[: len(package) - node.level + 1]
                names = [".".join(("lsm", *base, *([node.module] if node.module else [])))]
            elif node.module:
                names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "lsm" and len(parts) > 1:
                out.append((parts[1], node.lineno))
    return out


def sources() -> list[Path]:
    skip = {"tests", ".venv", "build", "dist", ".git", "out", "runs"}
    return sorted(p for p in ROOT.rglob("*.py") if not (set(p.relative_to(ROOT).parts) & skip))


def test_no_import_runs_up_the_stack_or_sideways():
    upward = []
    for path in sources():
        me = unit_of(path)
        for target, line in imports(path):
            if target != me and level(target) >= level(me):
                upward.append(f"{path.relative_to(ROOT)}:{line} ({me}) imports lsm.{target}")
    assert not upward, "imports that run up or sideways:\n" + "\n".join(upward)


def test_the_checker_sees_an_upward_import():
    """The rule above can fail: a local upward import, or a relative one, in a society module is caught."""
    fake = ROOT / "society" / "loop" / "probe.py"
    text = "from .neighbors import NeighborRule\ndef f():\n    from lsm.train import module\n    from ...infer import run\n"
    me = unit_of(fake)
    found = [t for t, _ in imports(fake, text) if t != me and level(t) >= level(me)]
    assert found == ["train", "infer"]


LAZY = ("cli.py",)
"""Files whose `lsm` imports all sit inside functions by design: each command imports its work
when it runs, so `lsm --help` and `lsm info` do not load torch and the LLM libraries."""


def test_imports_sit_at_the_top_unless_a_comment_says_why():
    """A function-local `lsm` import is allowed where it must be (an import cycle, a heavy optional
    dependency such as transformers or vLLM): the line, or the comment line above it, says so."""
    unexplained = []
    for path in sources():
        rel = path.relative_to(ROOT)
        if str(rel) in LAZY:
            continue
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        tree = ast.parse(text)
        top = {id(n) for stmt in tree.body for n in ast.walk(stmt) if isinstance(stmt, (ast.If, ast.Try))}
        top |= {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if id(node) in top or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if not any(n.startswith("lsm.") for n in names) or getattr(node, "level", 0):
                continue
            here = lines[node.lineno - 1: node.end_lineno]
            above = [ln.strip() for ln in lines[max(node.lineno - 4, 0): node.lineno - 1]]
            if not any("#" in ln for ln in here) and not any(ln.startswith("#") for ln in above):
                unexplained.append(f"{rel}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not unexplained, "local imports with no comment saying why they are not at the top:\n" + "\n".join(unexplained)
