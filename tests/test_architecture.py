"""The package's shape, read from the source with `ast` (nothing here imports TensorFlow, or any module it checks):
the import graph of modelgate/, tasks/ and flows/ has no cycle, even through imports inside functions (a module
that imports a package lazily is still tangled with it), and nothing the flow's process imports at module
level reaches a framework. tests/execution/test_parent_imports.py checks the same boundary end to end (a real flow run,
third-party imports included), in minutes; this one says in a second which import broke it, and how it is
reached.

What counts as a module-level import: what runs as the module is imported. Imports inside functions do not; those
under `if TYPE_CHECKING:` do not either; those in `try`, `with`, other `if`s and class bodies do. Importing `a.b.c`
runs the packages a and a.b first, so those count too (except a module's own packages, which are running already).
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("modelgate", "tasks", "flows")
# What the flow's process (the parent) must never import: the frameworks run only in the sandboxed children.
FRAMEWORKS = frozenset({
    "tensorflow", "keras", "tf_keras", "tf2onnx", "onnx", "onnxruntime", "openvino", "ai_edge_litert",
    "onnxconverter_common", "onnxslim",
})
PARENT_ENTRY_FILES = ("flows/validate.py", "flows/new_versions.py", "flows/serve.py", "modelgate/service/cli.py")
# The registries (modelgate.declarations.declared_in) import every public module of these packages in the parent.
REGISTRY_PACKAGES = ("modelgate.targets", "modelgate.runtimes")
DECLARATIONS = {"TARGET", "RUNTIME"}


@dataclass(frozen=True)
class Import:
    module: str  # what the importing module runs: a project module, or a third-party one by its full name
    line: int


@dataclass
class Source:
    name: str
    path: str  # relative to the root read
    imports: list[Import]  # at module level
    declares: bool  # defines TARGET or RUNTIME at module level
    lazy_imports: list[Import]  # inside functions: they run later, but tie the two modules all the same


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level(body: list[ast.stmt]):
    """The statements that run as the module is imported: into if/else, try, with, loops and class bodies;
    never into functions, nor into `if TYPE_CHECKING:` (its else branch runs)."""
    for node in body:
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.ClassDef):
            yield from _module_level(node.body)
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            yield from _module_level(node.body)
            for handler in node.handlers:
                yield from _module_level(handler.body)
            yield from _module_level(node.orelse)
            yield from _module_level(node.finalbody)
        elif isinstance(node, (ast.With, ast.AsyncWith, ast.For, ast.AsyncFor, ast.While)):
            yield from _module_level(node.body)
            yield from _module_level(getattr(node, "orelse", []))


def _lazy(body: list[ast.stmt]):
    """The statements inside functions, at any depth: what runs only once a function is called."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from (child for child in ast.walk(node) if isinstance(child, ast.stmt))
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, [])
                inner = [n for handler in inner for n in handler.body] if field == "handlers" else inner
                if not (field == "body" and isinstance(node, ast.If) and _is_type_checking(node.test)):
                    yield from _lazy(inner)


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def read_sources(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Source]:
    files = sorted(path for package in packages for path in (root / package).rglob("*.py"))
    known = {module_name(path, root) for path in files}
    sources = {}
    for path in files:
        name = module_name(path, root)
        tree = ast.parse(path.read_text(), filename=str(path))
        imports, declares = [], False
        for node in _module_level(tree.body):
            imports += _imports_of(node, name, path, known)
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                declares |= any(isinstance(t, ast.Name) and t.id in DECLARATIONS for t in targets)
        lazy = [imported for node in _lazy(tree.body) for imported in _imports_of(node, name, path, known)]
        sources[name] = Source(name, str(path.relative_to(root)), imports, declares, lazy)
    return sources


def _imports_of(node: ast.stmt, name: str, path: Path, known: set[str]) -> list[Import]:
    if isinstance(node, ast.Import):
        return [Import(alias.name, node.lineno) for alias in node.names]
    if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
        return []
    base = node.module or ""
    if node.level:
        package = _package_of(name, path).split(".")
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([base] if base else [])])
    # `from package import module` runs that module too.
    return [Import(base, node.lineno), *(Import(f"{base}.{alias.name}", node.lineno) for alias in node.names
                                         if f"{base}.{alias.name}" in known)]


def runs(importer: str, imported: str) -> list[str]:
    """What `import imported` runs, seen from importer: the module and each package above it that is not one of
    importer's own packages (those are being imported already)."""
    parts = imported.split(".")
    own = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 2)}
    return [name for name in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if name not in own]


def project_graph(sources: dict[str, Source], lazy: bool = False) -> dict[str, dict[str, int]]:
    """Project module -> project modules it runs at module level (and, lazy, inside its functions), with the line
    of the import."""
    graph: dict[str, dict[str, int]] = {name: {} for name in sources}
    for source in sources.values():
        for imported in source.imports + (source.lazy_imports if lazy else []):
            for name in runs(source.name, imported.module):
                if name in sources and name != source.name:
                    graph[source.name].setdefault(name, imported.line)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == 1:
                return [*path[path.index(successor):], successor]
            if successor not in state:
                found = visit(successor)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def parent_entry_points(sources: dict[str, Source], root: Path = ROOT) -> list[str]:
    """The flows, the command line, every module the registries import and every module declaring a target
    or a runtime."""
    entries = [module_name(root / file, root) for file in PARENT_ENTRY_FILES if (root / file).is_file()]
    for package in REGISTRY_PACKAGES:
        entries += [name for name in sources if name.rpartition(".")[0] == package
                    and not name.rpartition(".")[2].startswith("_")]
    entries += [name for name, source in sources.items() if source.declares]
    return list(dict.fromkeys(entries))


def framework_chains(sources: dict[str, Source], entries: list[str],
                     frameworks: frozenset[str] = FRAMEWORKS) -> list[str]:
    """Each framework import the entry points reach at module level, as the chain of imports that reaches it
    (the shortest, breadth first)."""
    graph = project_graph(sources)
    reached_from: dict[str, str | None] = dict.fromkeys(entries)
    queue = deque(entries)
    while queue:
        node = queue.popleft()
        for successor in sorted(graph[node]):
            if successor not in reached_from:
                reached_from[successor] = node
                queue.append(successor)

    def chain(node: str) -> list[str]:
        links = []
        while node is not None:
            importer = reached_from[node]
            links.append(node if importer is None else f"{node} (line {graph[importer][node]} of {importer})")
            node = importer
        return links[::-1]

    found = []
    for name in reached_from:
        for imported in sources[name].imports:
            if imported.module.split(".")[0] in frameworks:
                steps = " -> ".join(chain(name))
                found.append(f"{steps} -> imports {imported.module} at module level "
                             f"({sources[name].path}:{imported.line})")
    return found


def test_the_import_graph_has_no_cycle_even_through_imports_inside_functions():
    graph = project_graph(read_sources(), lazy=True)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle:\n" + "\n".join(
        f"  {a} imports {b} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:]))


def test_the_flow_process_never_imports_a_framework_at_module_level():
    sources = read_sources()
    entries = parent_entry_points(sources)
    assert {"flows.validate", "modelgate.service.cli", "modelgate.targets.onnx", "modelgate.runtimes.onnxruntime"} <= set(entries)
    chains = framework_chains(sources, entries)
    assert not chains, "the flow's process would import a framework:\n" + "\n".join(f"  {chain}" for chain in chains)


def test_the_model_processes_never_import_the_flow_s_services_at_module_level():
    """The jobs run in model processes: Prefect and MLflow there would cost each child seconds of imports, and
    Prefect's plugin start-up, refused its certificate file by the OS sandbox, prints a traceback in the run."""
    sources = read_sources()
    jobs = [name for name in sources if name.startswith("modelgate.execution.") and name.endswith("jobs")]
    assert {"modelgate.execution.jobs", "modelgate.execution.target_jobs"} <= set(jobs)
    chains = framework_chains(sources, jobs, frameworks=frozenset({"prefect", "mlflow"}))
    assert not chains, "a model process would import the flow's services:\n" + "\n".join(f"  {c}" for c in chains)


# --- The checks themselves catch what they are for, on a small package written here ---

def _package(root: Path, files: dict[str, str]) -> dict[str, Source]:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return read_sources(root, ("pkg",))


def test_a_cycle_is_found_and_named(tmp_path):
    sources = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "import pkg.c as c\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.b\ndef f():\n    import pkg.a\n",
    })
    assert find_cycle(project_graph(sources)) is None  # TYPE_CHECKING and function bodies do not run at import
    assert find_cycle(project_graph(sources, lazy=True)) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]  # but tie modules
    (tmp_path / "pkg/c.py").write_text("try:\n    from .a import x\nexcept ImportError:\n    pass\n")
    assert find_cycle(project_graph(read_sources(tmp_path, ("pkg",)))) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]


def test_a_framework_reached_through_a_package_init_is_found_with_its_chain(tmp_path):
    sources = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/entry.py": "from pkg.sub.leaf import thing\n",
        "pkg/sub/__init__.py": "from . import heavy\n",
        "pkg/sub/leaf.py": "thing = 1\n",
        "pkg/sub/heavy.py": "class Lazy:\n    import onnxruntime.quantization\n",
        "pkg/lazy.py": "def f():\n    import tensorflow\n",
    })
    chains = framework_chains(sources, ["pkg.entry", "pkg.lazy"])
    assert len(chains) == 1 and chains[0].startswith(
        "pkg.entry -> pkg.sub (line 1 of pkg.entry) -> pkg.sub.heavy (line 1 of pkg.sub) -> "
        "imports onnxruntime.quantization at module level")
