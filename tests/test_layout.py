"""The package layout holds: imports run one way down the layers, no cycle, none hidden in a function body."""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vaelab"
# layer of each top-level module or package: a module may import only from its own package or a lower layer
LAYERS = {"errors": 0, "files": 0, "config": 0, "plots": 0, "version": 0, "nn": 0, "data": 1, "engine": 2, "vae": 3, "diffusion": 3,
          "metrics": 4, "studies": 5, "handles": 6, "datasets": 6, "api": 7, "cli": 8,
          "__init__": 9}  # the root __init__ is the top: `import vaelab` is the Python API
LAZY_ALLOWED = {"ray", "torch.utils.tensorboard", "tensorboard"}  # optional extras, imported only when asked for
# the only functions that may import by name (importlib.import_module, __import__): the CLI's dispatch, which
# imports a command's implementation when it runs, and the root's PEP 562 __getattr__ (`import vaelab` is light)
DYNAMIC_ALLOWED = {("vaelab.cli.main", "dispatch"), ("vaelab", "__getattr__")}
IMPL_REF = re.compile(r"(vaelab(?:\.\w+)+):\w+")  # 'vaelab.cli.vae:cmd_train': a module named for dispatch


def module_name(path: Path) -> str:
    """'vaelab.engine.loop' for src/vaelab/engine/loop.py ('vaelab.data' for data/__init__.py)."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    return {module_name(p): p for p in SRC.rglob("*.py")}


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The vaelab module an import names ('from vaelab.vae import figures' -> 'vaelab.vae.figures')."""
    return name if name in known else None


@lru_cache(maxsize=None)
def owners(mod: str) -> tuple[ast.AST, dict[int, str]]:
    """The module's syntax tree, and for each node inside a function the innermost function's name."""
    tree = ast.parse(modules()[mod].read_text())
    owner = {}
    for f in ast.walk(tree):  # breadth first: an inner function overwrites its outer one's claim
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for n in ast.walk(f):
                owner[id(n)] = getattr(f, "name", "<lambda>")
    return tree, owner


def is_dynamic_import(node: ast.AST) -> bool:
    """importlib.import_module(...), import_module(...) or __import__(...)."""
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (isinstance(f, ast.Attribute) and f.attr == "import_module") or (
        isinstance(f, ast.Name) and f.id in ("import_module", "__import__"))


def named_modules(node: ast.AST, known: dict[str, Path]) -> list[str]:
    """The vaelab modules a node names without importing them: import_module("vaelab.x") and 'vaelab.x:func'."""
    if is_dynamic_import(node) and node.args and isinstance(node.args[0], ast.Constant):
        return [node.args[0].value] if node.args[0].value in known else []
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [m for m in IMPL_REF.findall(node.value) if m in known]
    return []


@lru_cache(maxsize=None)
def imports(mod: str) -> tuple[tuple[str, bool], ...]:
    """(imported module, whether outside every function body) for each import in `mod`; a module named for an
    import at run time (dispatch's 'vaelab.cli.vae:cmd_train') counts as imported at the top, for the layers."""
    known = modules()
    tree, owner = owners(mod)
    out = []
    for node in ast.walk(tree):
        out += [(n, True) for n in named_modules(node, known)]
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
            # importing a.b from package a runs a/__init__; the root's runs first for ANY vaelab import, so for it
            # only names that are not submodules (attributes its __init__ defines) are a dependency
            submodules_only = node.module == "vaelab" and all(n != node.module for n in names)
            if node.module in known and node.module != mod and not submodules_only:
                names.append(node.module)
        else:
            continue
        for n in names:
            out.append((n, id(node) not in owner))
    return tuple(out)


def layer(mod: str) -> tuple[int, str]:
    """(layer, top-level package) of a vaelab module."""
    top = mod.split(".")[1] if "." in mod else "__init__"
    return LAYERS[top], top


def test_every_module_has_a_layer():
    assert {layer(m)[1] for m in modules()} <= set(LAYERS)


def test_imports_run_down_the_layers():
    bad = []
    for mod in modules():
        own_layer, own_pkg = layer(mod)
        for target, _ in imports(mod):
            if not target.startswith("vaelab.") or target == "vaelab":
                continue
            if target not in modules():
                continue
            t_layer, t_pkg = layer(target)
            if t_pkg != own_pkg and (t_layer > own_layer or (t_layer == own_layer and own_layer > 0)):
                bad.append(f"{mod} -> {target}")
    assert not bad, bad


def test_no_import_inside_functions():
    hidden = [f"{mod}: {target}" for mod in modules() for target, at_top in imports(mod)
              if not at_top and not any(target == a or target.startswith(a + ".") for a in LAZY_ALLOWED)]
    assert not hidden, hidden


def test_imports_by_name_only_in_the_cli_dispatch_and_the_root_getattr():
    found = set()
    for mod in modules():
        tree, owner = owners(mod)
        found |= {(mod, owner.get(id(n), "<module>")) for n in ast.walk(tree) if is_dynamic_import(n)}
    assert found == DYNAMIC_ALLOWED, found ^ DYNAMIC_ALLOWED


def test_every_command_names_an_implementation_in_the_cli():
    refs = [m for mod in modules() if mod.startswith("vaelab.cli.args") for m, _ in imports(mod)
            if m.startswith("vaelab.cli.") and not m.startswith(("vaelab.cli.args", "vaelab.cli.common"))]
    assert len(set(refs)) >= 10 and all(m in modules() for m in refs), refs


def graph() -> dict[str, set[str]]:
    """vaelab module -> the vaelab modules it imports."""
    known = modules()
    return {m: {t for t, _ in imports(m) if t in known and t != m} for m in known}


def test_no_import_cycle():
    g, state, cycle = graph(), {}, []

    def visit(m, stack):
        state[m] = "open"
        for t in sorted(g[m]):
            if state.get(t) == "open":
                cycle.append(stack + [m, t])
            elif t not in state:
                visit(t, stack + [m])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [])
    assert not cycle, cycle[0]


def longest_chain() -> list[str]:
    """The longest chain of imports between vaelab modules (the import structure's depth)."""
    g = graph()

    @lru_cache(maxsize=None)
    def depth(m: str) -> tuple[str, ...]:
        below = [depth(t) for t in g[m] if not t.endswith("__init__")]
        return (m, *max(below, key=len, default=()))

    return list(max((depth(m) for m in g), key=len))


def test_files_read_in_one_sitting():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 360}
    assert not long, long


if __name__ == "__main__":  # python tests/test_layout.py: the longest chain, for the README
    chain = longest_chain()
    print(f"longest import chain ({len(chain)} modules): " + " -> ".join(chain))
