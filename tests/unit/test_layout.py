"""The project's layout: one package, keras_rest_api, and a short root of entry points.

Read from the source with `ast` (nothing here imports the package): which keras_rest_api
modules import which, where they import them, what each package's __init__.py holds, who reads
the environment and who imports the settings. What `pip install .` makes of it is checked in
tests/system/test_packaging.py.
"""
from __future__ import annotations

import ast
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.harness import PROJECT

PACKAGE = "keras_rest_api"
SOURCE = PROJECT / PACKAGE

MAX_ROOT_ENTRIES = 22
MAX_ROOT_SCRIPTS = 6

# The only modules that read the settings (keras_rest_api.settings.load()): the programs. Every
# other module takes its settings as an argument.
SETTINGS_IMPORTERS = {
    "keras_rest_api/model_server/main.py",
    "keras_rest_api/web/devserver.py",
    "keras_rest_api/stress.py",
    "keras_rest_api/queue/redis_users.py",
    "keras_rest_api/wsgi.py",
}
# Names that reach the process environment through the os module.
ENVIRONMENT = {"environ", "environb", "getenv", "getenvb"}


# --- reading the package ---------------------------------------------------------------------

def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def relative(path: Path) -> str:
    return path.relative_to(PROJECT).as_posix()


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def is_type_checking(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def is_main_guard(node: ast.AST) -> bool:
    """`if __name__ == "__main__":`: what runs only when the module is run as a program."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    sides = [node.test.left, *node.test.comparators]
    return (any(isinstance(side, ast.Name) and side.id == "__name__" for side in sides)
            and any(isinstance(side, ast.Constant) and side.value == "__main__" for side in sides))


@dataclass(frozen=True)
class Import:
    """One keras_rest_api module imported by one statement."""

    target: str  # the module, dotted
    line: int
    in_function: bool


def resolve(node: ast.Import | ast.ImportFrom, importer: str) -> list[str]:
    """The keras_rest_api modules an import statement of module `importer` imports.

    `from keras_rest_api.x import y` is the module x.y when y is a module, else x; relative
    imports are resolved against the importer's package.
    """
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
        return [nearest_module(name) for name in names if is_ours(name)]
    if node.level:
        package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    if not is_ours(base):
        return []
    targets = []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        targets.append(candidate if candidate in MODULES else nearest_module(base))
    return targets


def is_ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def nearest_module(name: str) -> str:
    """`name` if it is a module of the package, else its closest enclosing one."""
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


def imports(module: str) -> Iterator[Import]:
    """Every keras_rest_api module `module` imports, at any depth, except under `if TYPE_CHECKING:`."""

    def visit(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if is_type_checking(child):
                for other in child.orelse:  # the `else:` of a TYPE_CHECKING test runs
                    yield from visit(other, in_function)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in dict.fromkeys(resolve(child, module)):
                    if target != module:
                        yield Import(target, child.lineno, in_function)
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from visit(child, nested)

    yield from visit(parse(MODULES[module]), False)


def import_time_nodes(tree: ast.Module) -> Iterator[ast.AST]:
    """The nodes that run when the module is imported: everything but function bodies and the
    `if __name__ == "__main__":` block (decorators, default values and class bodies do run)."""

    def visit(node: ast.AST) -> Iterator[ast.AST]:
        for child in ast.iter_child_nodes(node):
            if is_main_guard(child):
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for decorator in child.decorator_list:
                    yield decorator
                    yield from visit(decorator)
                for default in (*child.args.defaults, *(d for d in child.args.kw_defaults if d is not None)):
                    yield default
                    yield from visit(default)
                continue
            if isinstance(child, ast.Lambda):
                continue
            yield child
            yield from visit(child)

    yield from visit(tree)


def cycles(graph: dict[str, set[str]]) -> list[tuple[list[str], list[str]]]:
    """Each group of modules that import one another (a strongly connected component of `graph`
    with more than one module), sorted, with one cycle through it as [a, b, ..., a]."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm; the package is small enough to recurse
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    found = []
    for component in components:
        if len(component) > 1:
            inside = {node: graph.get(node, set()) & component for node in component}
            cycle = find_cycle(inside)
            if cycle:
                found.append((sorted(component), cycle))
    return sorted(found)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
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


def test_the_package_is_where_the_tests_look():
    assert (SOURCE / "__init__.py").is_file(), SOURCE
    assert {"keras_rest_api.web", "keras_rest_api.queue", "keras_rest_api.imaging", "keras_rest_api.models",
            "keras_rest_api.model_server", "keras_rest_api.settings", "keras_rest_api.errors"} <= set(MODULES)


# --- the root --------------------------------------------------------------------------------

def test_the_root_holds_few_entries_and_few_scripts():
    if shutil.which("git") is None or not (PROJECT / ".git").exists():
        pytest.skip("not a git checkout: the root's tracked entries are unknown")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True, text=True, timeout=60,
                            check=True).stdout.split("\0")
    # A file deleted from the work tree but not yet from the index is on its way out.
    entries = sorted({path.split("/", 1)[0] for path in listed if path and (PROJECT / path).exists()})
    scripts = [name for name in entries if name.endswith(".py")]
    assert len(entries) <= MAX_ROOT_ENTRIES, (
        f"{len(entries)} tracked entries at the root (at most {MAX_ROOT_ENTRIES}): {entries}; "
        "put code in keras_rest_api/, tools in scripts/ or bench/")
    assert len(scripts) <= MAX_ROOT_SCRIPTS, (
        f"{len(scripts)} Python files at the root (at most {MAX_ROOT_SCRIPTS}): {scripts}; "
        "the root keeps only thin entry points over keras_rest_api")


# --- imports between the package's modules -----------------------------------------------------

def test_no_import_cycle_among_the_packages_modules():
    graph = {module: {i.target for i in imports(module)} for module in MODULES}
    found = cycles(graph)
    assert not found, "modules that import one another:\n" + "\n".join(
        f"{', '.join(group)}\n  e.g. {' -> '.join(cycle)}" for group, cycle in found)


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert cycles(graph) == [(["a", "b", "c"], ["a", "b", "c", "a"]), (["d", "e"], ["d", "e", "d"])]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_imports_of_the_package_are_at_module_level_not_in_functions():
    """A function that imports a module of the package hides a dependency (and, often, a cycle);
    only heavy third-party libraries (keras, tensorflow, jax, torch, gevent) may be imported late."""
    late = [f"{relative(MODULES[module])}:{i.line} imports {i.target}"
            for module in MODULES for i in imports(module) if i.in_function]
    assert not late, "imports of keras_rest_api inside functions:\n" + "\n".join(late)


def test_every_init_only_re_exports():
    """An __init__.py holds a docstring, imports and __all__: nothing else runs when its package is imported."""
    def allowed(node: ast.stmt, first: bool) -> bool:
        if first and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return True
        if isinstance(node, ast.Assign):
            return all(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        if isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            return isinstance(node.target, ast.Name) and node.target.id == "__all__"
        if is_type_checking(node):
            return all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in (*node.body, *node.orelse))
        return False

    found = []
    for path in sorted(SOURCE.rglob("__init__.py")):
        for index, node in enumerate(parse(path).body):
            if not allowed(node, index == 0):
                found.append(f"{relative(path)}:{node.lineno}: {type(node).__name__}")
    assert not found, "__init__.py files that do more than re-export:\n" + "\n".join(found)


def test_no_module_reads_the_environment_when_imported():
    """Settings come from keras_rest_api.settings.load(), called by the entry points; a module that
    read os.environ at import time would fix a value before the settings are known."""
    found = []
    for module, path in MODULES.items():
        tree = parse(path)
        os_names = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names if alias.name == "os"}
        direct = {alias.asname or alias.name for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module == "os"
                  for alias in node.names if alias.name in ENVIRONMENT}
        for node in import_time_nodes(tree):
            if isinstance(node, ast.Attribute) and node.attr in ENVIRONMENT \
                    and isinstance(node.value, ast.Name) and node.value.id in os_names:
                found.append(f"{relative(path)}:{node.lineno}: {node.value.id}.{node.attr}")
            elif isinstance(node, ast.Name) and node.id in direct and isinstance(node.ctx, ast.Load):
                found.append(f"{relative(path)}:{node.lineno}: {node.id}")
    assert not found, "the environment read at import time:\n" + "\n".join(found)


def test_only_the_entry_points_import_the_settings():
    importers = sorted(f"{relative(MODULES[module])}:{i.line}" for module in MODULES for i in imports(module)
                       if i.target == "keras_rest_api.settings"
                       and relative(MODULES[module]) not in SETTINGS_IMPORTERS)
    assert not importers, ("keras_rest_api.settings imported outside the entry points "
                           f"({', '.join(sorted(SETTINGS_IMPORTERS))}); pass the settings as an argument "
                           "instead:\n" + "\n".join(importers))


def test_the_readers_see_relative_and_absolute_imports_alike():
    """The ast readers above on imports written every way they can be."""
    web = "keras_rest_api.web.app"
    lines = {
        "from keras_rest_api.web import auth": ["keras_rest_api.web.auth"],
        "from keras_rest_api.web.auth import ApiKeys": ["keras_rest_api.web.auth"],
        "import keras_rest_api.queue.jobs": ["keras_rest_api.queue.jobs"],
        "from . import auth, page": ["keras_rest_api.web.auth", "keras_rest_api.web.page"],
        "from .limits import refuse_unparsed_bodies": ["keras_rest_api.web.limits"],
        "from .. import settings": ["keras_rest_api.settings"],
        "from ..queue.records import Job": ["keras_rest_api.queue.records"],
        "from ..errors import ServiceError": ["keras_rest_api.errors"],
        "from keras_rest_api import web": ["keras_rest_api.web"],
        "import numpy": [],
    }
    for line, expected in lines.items():
        statement = ast.parse(line).body[0]
        assert isinstance(statement, (ast.Import, ast.ImportFrom))
        assert resolve(statement, web) == expected, line

    source = ("import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
              "    from keras_rest_api import settings\n"
              "HOME = os.environ.get('HOME')\n\n\ndef f(x=os.getenv('X')):\n    return os.environ['Y']\n\n\n"
              "if __name__ == '__main__':\n    print(os.environ)\n")
    tree = ast.parse(source)
    reads = [node.lineno for node in import_time_nodes(tree)
             if isinstance(node, ast.Attribute) and node.attr in ENVIRONMENT]
    assert reads == [5, 8]
