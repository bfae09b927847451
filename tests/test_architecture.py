"""The package's import graph runs one way: each stage package imports only the stages below it in
LAYERS (docs/design.md), and no module needs, even inside a function, a module that needs it. Built from the source with `ast`, every import
statement counted: top-level and function-local, `import harness.x` and `from harness.x import y`,
relative ones resolved."""

from __future__ import annotations

import ast
from pathlib import Path

import harness

PACKAGE = Path(harness.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["harness", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load (a `from` import's names may be modules)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the module's package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its source."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for name in _imported(node, module, path.name == "__init__.py"):
                while name and name not in modules:  # harness.x.func -> harness.x
                    name = name.rpartition(".")[0]
                if name and name != module:
                    graph[module].add(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) per strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_within(graph, group) for group in groups]


def _path_within(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest cycle through the group's first module, staying inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return sorted(group)


def test_the_graph_sees_function_local_and_relative_imports(tmp_path):
    graph = import_graph()
    assert "harness.training.run" in graph["harness.cli.train"]  # imported inside main()
    assert "harness.report" in graph["harness.cli.report"]
    assert "harness.report.cells" in graph["harness.report"]
    relative = ast.parse("from .cells import x\nfrom . import noise\nfrom .. import errors\n")
    found = [n for node in relative.body for n in _imported(node, "harness.report.tables", False)]
    assert "harness.report.cells" in found and "harness.report.noise" in found and "harness.errors" in found


def test_cycles_are_found_and_named():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# The stages, bottom to top. A module may import its own package and any package listed before it.
# The report sits below the study because the study decides what to measure next (top-up,
# refinement) from the report's statistics; calibration simulates studies with those statistics.
LAYERS = ("errors", "settings", "store", "data", "training", "tuning", "report", "study", "calibration", "cli")


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a lower stage of a higher one, as "a -> b"."""
    out = []
    for module, targets in sorted(graph.items()):
        here = _layer(module)
        for target in sorted(targets):
            there = _layer(target)
            if here is not None and there is not None and there > here:
                out.append(f"{module} -> {target}")
    return out


def test_the_layout_shows_the_stages_and_nothing_else():
    packages = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert set(packages) | set(modules) == set(LAYERS), (packages, modules)


def test_upward_imports_are_found():
    assert upward_imports({"harness.settings.x": {"harness.data.y", "harness.errors"},
                           "harness.report.z": {"harness.tuning.w"}}) == ["harness.settings.x -> harness.data.y"]


def test_imports_run_only_downward_through_the_stages():
    found = upward_imports(import_graph())
    assert not found, "upward imports: " + "; ".join(found)


def test_the_package_has_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


# ---------------------------------------------------------------- Optuna's private attributes

# The modules allowed to reach into Optuna: the owner of the stored schema and the storage under it.
OPTUNA_INTERNALS_ALLOWED = {"harness.store.records", "harness.store.storage"}


def _optuna_private_names() -> set[str]:
    """Private attribute and method names Optuna's classes define (`self._x = ...`, `def _x`)."""
    import optuna

    names: set[str] = set()
    for path in Path(optuna.__file__).resolve().parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ClassDef):
                names |= {f.name for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def optuna_private_uses(tree: ast.AST, private: set[str]) -> list[str]:
    """`obj._x` for an Optuna private name (except on self/cls), `optuna._x...`, and imports of
    private Optuna modules or names, as "line: text"."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if (node.attr in private and owner not in ("self", "cls")) or owner == "optuna":
                found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            names = [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
            for module in modules:
                if module.split(".")[0] == "optuna" and (any(p.startswith("_") for p in module.split("."))
                                                        or any(n.startswith("_") for n in names)):
                    found.append(f"{node.lineno}: import from {module}")
    return found


def test_the_private_use_check_finds_what_it_should():
    private = {"_storage", "_backend"}
    tree = ast.parse("s = study._storage\nb = rdb._backend\nself._storage = 1\nfrom optuna.storages._rdb import x\n"
                     "import optuna._imports\nx = optuna._experimental\nfrom optuna.trial import _x\n")
    assert sorted(int(u.split(":")[0]) for u in optuna_private_uses(tree, private)) == [1, 2, 4, 5, 6, 7]


def test_only_records_and_storage_touch_optuna_privates():
    private = _optuna_private_names()
    assert {"_storage", "_backend", "_trial_id"} <= private  # the names the check exists for
    offenders = {}
    for module, path in _modules().items():
        if module in OPTUNA_INTERNALS_ALLOWED:
            continue
        uses = optuna_private_uses(ast.parse(path.read_text(), filename=str(path)), private)
        if uses:
            offenders[module] = uses
    assert not offenders, f"Optuna private attributes outside {sorted(OPTUNA_INTERNALS_ALLOWED)}: {offenders}"


def test_only_the_entry_points_and_the_config_module_see_the_composed_config():
    """Hydra's DictConfig stops at the door: harness.settings.config checks it once and builds the typed
    settings (harness.settings.schema) every other module takes; harness.settings.nodes hands the
    typed defaults to Hydra's config store."""
    allowed = {"harness.settings.config", "harness.settings.nodes"}
    offenders = []
    for module, path in _modules().items():
        if module in allowed or module.startswith("harness.cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = _imported(node, module, path.name == "__init__.py")
            hydra_shell = module == "harness.errors"  # hydra_app: the console scripts' shell around Hydra
            if any(n.split(".")[0] == "omegaconf" or (n.split(".")[0] == "hydra" and not hydra_shell) for n in names):
                offenders.append(f"{module}:{node.lineno}")
    assert not offenders, f"omegaconf/hydra imported below the entry points: {offenders}"
