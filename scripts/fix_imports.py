#!/usr/bin/env python3
"""Rewrite a flow's imports of the runtime (``from bot.text import normalize``) into imports of the flow
surface (``from flows.api import normalize``), as the import-linter contract in ``pyproject.toml`` wants.

Run it after merging a branch that added such imports, then ``lint-imports`` (or
``pytest tests/test_boundaries.py``) to confirm::

    python scripts/fix_imports.py            # rewrite in place, list what it could not rewrite
    python scripts/fix_imports.py --check    # change nothing; exit 1 if anything is to do

What it knows comes from ``[tool.importlinter]`` in ``pyproject.toml`` (the single source of truth): the
``layers`` contract names the runtime's layer (the first, ``bot``) and the flows' layer (the second,
``flows``); its ``ignore_imports`` lines ``flows.api -> bot.X`` name the surface module (``flows.api``)
and the runtime modules it hands on. A statement is rewritten only when every name it imports is in the
surface's ``__all__`` (read from its source, nothing is imported). Anything else — a name the surface
does not export, a runtime module outside the surface, ``import bot.x`` — is listed with the fix, and
the exit status is 1. Rewritten files get ``ruff check --fix --select I`` (when ruff is installed) so that
two ``from flows.api import`` lines become one.

"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Retired string keys of ``Services.extra`` and the typed field of :class:`flows.api.Services` that
#: replaced each (``qa_engine`` was policy_qa's ENGINE, ``memorial_words`` the memorial's WORDS).
SERVICE_FIELDS = {"matcher": "matcher", "qa_engine": "qa_engine", "memorial_words": "words"}
_SERVICES = r"(?:services|ctx\.services|self\.services|self\.rt\.services|runtime\.services)"
_EXTRA_RE = re.compile(_SERVICES + r"""\.extra(?:\[\s*["'](\w+)["']\s*\]|\.get\(\s*["'](\w+)["']\s*\))""")
_LEFT_RE = re.compile(_SERVICES + r"\.(?:extra\b|get\()")


@dataclass(frozen=True)
class Surface:
    """What the layers contract says: the runtime layer, the flows layer, the surface module and the
    runtime modules it may hand on."""

    runtime: str
    flows: str
    module: str
    allowed: frozenset[str]
    exports: frozenset[str]


def read_surface(root: Path = ROOT) -> Surface:
    """The surface as ``pyproject.toml``'s layers contract declares it."""
    conf = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = conf.get("tool", {}).get("importlinter", {}).get("contracts", [])
    layers = [c for c in contracts if c.get("type") == "layers"]
    if not layers:
        raise SystemExit("pyproject.toml: no [[tool.importlinter.contracts]] of type 'layers'")
    contract = layers[0]
    runtime, flows = contract["layers"][0], contract["layers"][1]
    module, allowed = "", set()
    for line in contract.get("ignore_imports", []):
        src, _, dst = (part.strip() for part in line.partition("->"))
        if src.split(".")[0] == flows and dst.split(".")[0] == runtime:
            if module and src != module:
                raise SystemExit(f"pyproject.toml: two surface modules ({module}, {src}); this script knows one")
            module = src
            allowed.add(dst)
    if not module:
        raise SystemExit(f"pyproject.toml: the layers contract has no '{flows}.… -> {runtime}.…' line")
    return Surface(runtime, flows, module, frozenset(allowed), frozenset(_exports(_path_of(root, module))))


def _path_of(root: Path, module: str) -> Path:
    path = root.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _exports(path: Path) -> set[str]:
    """The names in ``__all__`` of the module at ``path`` (a literal list or tuple of strings)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
            return {e.value for e in node.value.elts if isinstance(e, ast.Constant)}  # type: ignore[attr-defined]
    raise SystemExit(f"{path}: no __all__ to read the surface from")


@dataclass
class Result:
    changed: bool
    text: str
    problems: list[str]


def rewrite(text: str, surface: Surface, filename: str = "<flow>", *, imports: bool = True) -> Result:
    """``text`` with every rewritable runtime import (``imports``: the file is a flow) and retired
    service lookup replaced; the problems left, one line each."""
    problems: list[str] = []
    # Service lookups first: they keep every line where it was, so the line numbers below are the file's.
    text = _EXTRA_RE.sub(lambda m: _service_field(m, problems, filename), original := text)
    for n, line in enumerate(text.splitlines(), 1):
        if _LEFT_RE.search(line):
            problems.append(f"{filename}:{n}: Services has no string-keyed extras any more: use (or add) a typed "
                            "field of flows.api.Services")
    tree = ast.parse(text, filename)
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []  # (first line, last line, end column, new statement)
    for node in ast.walk(tree) if imports else ():
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == surface.runtime:
                    problems.append(f"{filename}:{node.lineno}: `import {alias.name}` — import the names you "
                                    f"need from {surface.module} instead")
            continue
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        if node.module.split(".")[0] != surface.runtime:
            continue
        if node.module not in surface.allowed:
            problems.append(f"{filename}:{node.lineno}: {node.module} is not part of {surface.module} (it hands "
                            f"on {', '.join(sorted(surface.allowed))}); a flow may not use it")
            continue
        missing = [a.name for a in node.names if a.name not in surface.exports]
        if missing:
            problems.append(f"{filename}:{node.lineno}: {', '.join(missing)} from {node.module} not exported by "
                            f"{surface.module}: add to its imports and __all__, or do without")
            continue
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        head = lines[first][: node.col_offset]
        if head.strip():  # `x = 1; from bot.text import …`: leave to a human
            problems.append(f"{filename}:{node.lineno}: import shares its line with other code; rewrite by hand")
            continue
        names = ", ".join(a.name if a.asname is None else f"{a.name} as {a.asname}" for a in node.names)
        edits.append((first, last, node.end_col_offset or 0, f"{head}from {surface.module} import {names}"))
    for first, last, end_col, new in sorted(edits, reverse=True):
        lines[first: last + 1] = [new + lines[last][end_col:]]
    out = "".join(lines)
    return Result(out != original, out, problems)


def _service_field(m: re.Match[str], problems: list[str], filename: str) -> str:
    key = m.group(1) or m.group(2)
    if key in SERVICE_FIELDS:
        return m.group(0)[: m.group(0).index(".extra")] + f".{SERVICE_FIELDS[key]}"
    return m.group(0)  # listed by _LEFT_RE


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="*", type=Path,
                    help="files or folders (default: the root packages, tests and bench; imports are rewritten "
                         "only in the flows layer's package, service lookups everywhere)")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is to do")
    args = ap.parse_args(argv)
    surface = read_surface()
    surface_file = _path_of(ROOT, surface.module).resolve()
    flows_dir = (ROOT / surface.flows).resolve()
    roots = args.paths or [ROOT / d for d in (surface.runtime, surface.flows, "storage", "tests", "bench")
                           if (ROOT / d).is_dir()]
    files = sorted({p.resolve() for r in roots for p in ([r] if r.is_file() else r.rglob("*.py"))})
    changed: list[Path] = []
    problems: list[str] = []
    for path in files:
        if path == surface_file or ".venv" in path.parts:
            continue
        text = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        result = rewrite(text, surface, rel, imports=path.is_relative_to(flows_dir))
        problems += result.problems
        if result.changed:
            changed.append(path)
            if not args.check:
                path.write_text(result.text, encoding="utf-8")
    verb = "to rewrite" if args.check else "rewritten"
    for path in changed:
        print(f"{verb}: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if changed and not args.check:
        ruff = shutil.which("ruff") or (str(Path(sys.executable).parent / "ruff")
                                       if (Path(sys.executable).parent / "ruff").exists() else None)
        if ruff:
            subprocess.run([ruff, "check", "--fix", "--quiet", "--select", "I", *map(str, changed)], check=False)
        else:
            print("ruff not found: sort the imports of the files above by hand", file=sys.stderr)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems or (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
