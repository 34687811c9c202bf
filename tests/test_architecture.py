"""ARCHITECTURE.md's rooms are true: every module of hgnet_kernels belongs to one room of its table,
imports (at module level or inside functions) go only to its own room or the rooms above it, no
modules import each other in a cycle, and no module reaches for another's private names
(``from x import _private``, ``module._private``) or into another package's private modules."""
import ast
import os
import re
from typing import Dict, List, Optional, Set, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "hgnet_kernels"


def _rooms() -> List[Tuple[str, List[str]]]:
    """(room, path prefixes under hgnet_kernels/) from ARCHITECTURE.md's table, top room first."""
    with open(os.path.join(ROOT, "ARCHITECTURE.md")) as f:
        text = f.read()
    rooms = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or cells[0] in ("room", "---"):
            continue
        paths = []
        for token in re.findall(r"`([^`]+)`", cells[1]):
            token = token[len(PACKAGE) + 1:] if token.startswith(PACKAGE + "/") else token
            if token.endswith((".py", "/")) and not token.startswith(("csrc/", "bench/")):
                paths.append(token)
        rooms.append((cells[0], paths))
    return rooms


ROOMS = _rooms()


def _modules() -> Dict[str, str]:
    """Dotted name → path (relative to hgnet_kernels/) of every module of the package."""
    found = {}
    for directory, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(directory, name), os.path.join(ROOT, PACKAGE)).replace(os.sep, "/")
                parts = [PACKAGE, *rel[:-3].split("/")]
                if parts[-1] == "__init__":
                    parts.pop()
                found[".".join(parts)] = rel
    return found


MODULES = _modules()


def _room_of(rel: str) -> Optional[int]:
    """The index of the room whose most specific path holds ``rel``."""
    best, length = None, -1
    for index, (_, paths) in enumerate(ROOMS):
        for path in paths:
            if (rel == path or (path.endswith("/") and rel.startswith(path))) and len(path) > length:
                best, length = index, len(path)
    return best


def _package_of(module: str) -> str:
    return module if MODULES[module].endswith("__init__.py") else module.rsplit(".", 1)[0]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imports(module: str, source: Optional[str] = None) -> Tuple[Set[str], List[str]]:
    """The package modules ``module`` (its file, or ``source`` in its place) imports anywhere in
    it, and its private reaches."""
    if source is None:
        with open(os.path.join(ROOT, PACKAGE, MODULES[module])) as f:
            source = f.read()
    tree = ast.parse(source)
    package = _package_of(module)
    targets: Set[str] = set()
    bound: Dict[str, str] = {}  # local name → module it is bound to
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE and alias.name in MODULES:
                    targets.add(alias.name)
                    if alias.asname:
                        bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    target = f"{source}.{alias.name}"
                    bound[alias.asname or alias.name] = target
                else:
                    target = source
                    if _private(alias.name):
                        problems.append(f"from {source} import {alias.name}")
                targets.add(target)
    for target in targets:
        parts = target.split(".")
        for i, part in enumerate(parts):
            owner = ".".join(parts[:i])
            if _private(part) and not (module == owner or module.startswith(owner + ".")):
                problems.append(f"imports {target}, private to {owner}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound \
                and _private(node.attr) and bound[node.value.id] != module:
            problems.append(f"{node.value.id}.{node.attr} ({bound[node.value.id]})")
    return targets - {module}, problems


GRAPH = {module: _imports(module) for module in MODULES}


def test_every_module_has_a_room():
    assert [m for m, rel in MODULES.items() if _room_of(rel) is None] == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_to_the_same_room_or_above(module):
    room = _room_of(MODULES[module])
    upward = [f"{target} (room {ROOMS[_room_of(MODULES[target])][0]!r})" for target in sorted(GRAPH[module][0])
              if _room_of(MODULES[target]) is not None and room is not None and _room_of(MODULES[target]) > room]
    assert upward == [], f"{module} (room {ROOMS[room][0]!r}) imports rooms below it"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_names_across_modules(module):
    assert GRAPH[module][1] == []


def _cycles(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """The strongly connected components of more than one module of ``graph`` (module → the modules
    it imports), found by Tarjan's algorithm."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    components: List[Set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_no_import_cycles():
    assert _cycles({module: targets for module, (targets, _) in GRAPH.items()}) == [], "modules that import each other"


def test_the_checks_can_fail():
    """The parser sees function-level and relative imports and every kind of private reach; the cycle
    search finds a cycle through a module that is also imported from outside it."""
    targets, problems = _imports("hgnet_kernels.models.layers", "def f():\n    from ..weights import load_weights\n")
    assert targets == {"hgnet_kernels.weights"} and _room_of("models/layers.py") < _room_of("weights.py")
    source = ("from .. import configs\nfrom ..configs import _load\nfrom ..kernels.triton import _common\n"
              "from ..kernels.cuda import ops as cuda_ops\nconfigs._devices()\ncuda_ops.device_arch\n")
    _, problems = _imports("hgnet_kernels.models.layers", source)
    assert problems == ["from hgnet_kernels.configs import _load",
                        "imports hgnet_kernels.kernels.triton._common, private to hgnet_kernels.kernels.triton",
                        "configs._devices (hgnet_kernels.configs)"]
    _, inside = _imports("hgnet_kernels.kernels.triton.max_pool", "from ._common import launch_target\n")
    assert inside == []
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}) == [{"a", "b", "c"}]
