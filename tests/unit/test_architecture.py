"""The tree keeps the architecture it shows: layers import only downwards, no import cycles, no
private name imported from another module, modules of a readable size, and the generated
blocking twins match their async sources."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "rjobs"
#: Layers, lowest first: a module may import its own layer and the ones below it.
LAYERS = {"base": 0, "store": 1, "client": 2, "worker": 3, "observe": 3, "dashboard": 4, "cli": 5}
#: Facades that gather the layers for users; they sit above every layer.
FACADES = {"rjobs", "rjobs.testing", "rjobs.__main__"}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Line numbers of imports made only for the type checker (``if TYPE_CHECKING:``)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                for sub in ast.walk(inner):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        lines.add(sub.lineno)
    return lines


def _imports(name: str, path: Path) -> list[tuple[str, list[str], bool]]:
    """(imported module, names imported from it, at run time) for every rjobs import of a module."""
    tree = ast.parse(path.read_text())
    typing_only = _type_checking_only(tree)
    known = _modules()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno not in typing_only) for a in node.names if a.name.startswith("rjobs")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rjobs"):
            names = [a.name for a in node.names]
            # ``from rjobs.store import codec`` imports a module: count it as that module
            subs = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in known]
            if subs:
                out += [(s, [], node.lineno not in typing_only) for s in subs]
            else:
                out.append((node.module, names, node.lineno not in typing_only))
    return [(m, n, rt) for m, n, rt in out if m != name]


def _layer(module: str) -> int | None:
    if module in FACADES:
        return None
    parts = module.split(".")
    return LAYERS.get(parts[1], LAYERS["base"]) if len(parts) > 1 else LAYERS["base"]


def test_layers_import_only_downwards() -> None:
    wrong = []
    for name, path in _modules().items():
        mine = _layer(name)
        if mine is None:
            continue
        for imported, _, _ in _imports(name, path):
            theirs = _layer(imported)
            if theirs is None or theirs > mine:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = {name: {m for m, _, runtime in _imports(name, path) if runtime} for name, path in _modules().items()}
    cycles = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            # importing a package runs its __init__, which is part of the graph too
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt in graph and nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # the package's own __init__ imports everything by design: a cycle through it alone is how
    # Python packages work (a submodule importing ``rjobs.x`` first runs ``rjobs/__init__``)
    cycles = [c for c in cycles if not c.startswith("rjobs -> ") and " -> rjobs -> " not in c]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_private_names_imported_from_other_modules() -> None:
    wrong = [
        f"{name} imports {n} from {imported}"
        for name, path in _modules().items()
        for imported, names, _ in _imports(name, path)
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_size(name: str) -> None:
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by role"


def test_generated_twins_are_fresh() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/unasync.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def _one_letter_apart(a: str, b: str) -> bool:
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = sorted((a, b), key=len)
    return len(long) - len(short) == 1 and any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def test_no_two_module_names_differ_by_one_letter() -> None:
    stems = sorted({path.stem for path in _modules().values()} - {"__init__", "__main__"})
    close = [(a, b) for i, a in enumerate(stems) for b in stems[i + 1 :] if _one_letter_apart(a, b)]
    assert not close, f"modules named one letter apart read as one another: {close}"
