"""The package's import rule, checked from source: every module sits on a floor and imports only its own floor or
lower, and no set of modules imports itself round a circle.

Every import counts: top-level, inside a function (lazy), and under `if TYPE_CHECKING:`; a lazy import hides a
circle from Python at import time but not from a reader. An import of `pkg.mod` is an edge to `pkg.mod` only (not
to the `pkg/__init__.py` Python also runs), and `from pkg import name` is an edge to `pkg.name` when that is a module.
Imports by a name computed at run time (`importlib.import_module(...)`, the CLI's subcommand table) are not seen.

    python -m tests.helpers.import_layers        # print the floors, each module's imports, and any breach

Written by hand (with `ast`) because the checkers on PyPI (import-linter, ...) want a configuration file of their
own and skip lazy imports by default; the rule here is eight lines of data and the check forty of code.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "infimm_hd"
# Top-level folders of the repository that sit outside the package: they may import it, never the reverse.
OUTSIDE = ("stages", "data_prep", "benchmarks", "tests")
MISSING = "?"  # prefix of an import target that is no module of the package (a typo, or a module not written yet)

# Floor of each module, by the longest matching dotted prefix. Lower floors never import higher ones.
FLOORS: dict[int, tuple[str, ...]] = {
    0: (  # foundation: configs, maths and kernels, no model
        "configuration",
        "byte_tokenizer",
        "hires",
        "recycled_buffers",
        "linear_cross_entropy",
        "linear_logprobs",
        "media_mask",
        "media_packing",
        "varlen_attention",
    ),
    1: (  # components and formats: the parts the model is built from, and how it is written to disk
        "image_processing",
        "processing",
        "vision_tower",
        "cross_attention_context",
        "xattn",
        "base_sources",
        "multimodal_vocab",
        "model_card",
        "trained_checkpoint",
        "pretrained_io",
    ),
    2: ("modeling",),  # the model
    3: ("presets", "auto_registration", "convert_official", "paper_card"),  # assembling and registering models
    4: ("inference", "training", "objectives", "evaluation", "planning"),  # workflows over a model
    5: ("serving", "cli", "demo", ""),  # front ends; "" is the `infimm_hd` facade (__init__.py)
}
FLOOR_NAMES = {0: "foundation", 1: "components", 2: "model", 3: "assembly", 4: "workflows", 5: "front ends"}


def module_name(path: Path, root: Path) -> str:
    """infimm_hd/training/data.py -> infimm_hd.training.data; a package's __init__.py is the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_under(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` (at `path`) imports, anywhere in its source, plus any import of an `OUTSIDE`
    folder (kept by its dotted name so the check can report it)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import sub` names a module when pkg.sub is one; otherwise it imports a name from pkg.
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] in (PACKAGE, *OUTSIDE))
    found.discard(name)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports (only modules that exist: `from x import func` resolves to x), and
    any import of a folder outside the package by its dotted name."""
    mods = modules_under(root)
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        edges = set()
        for target in imports_of(name, path, known):
            if target.split(".")[0] in OUTSIDE:
                edges.add(target)
                continue
            wanted = target
            while target not in known and "." in target:  # e.g. an attribute path: keep its module
                target = target.rsplit(".", 1)[0]
            if target == PACKAGE and wanted != PACKAGE:  # nothing of it exists: not an import of the facade
                edges.add(f"{MISSING}{wanted}")
            elif target in known and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def floor_of(module: str, floors: dict[int, tuple[str, ...]] = FLOORS) -> int | None:
    """The floor of `module` by its longest matching prefix under the package, or None when unassigned."""
    rel = module[len(PACKAGE) + 1 :] if module != PACKAGE else ""
    best: tuple[int, int] | None = None  # (prefix length, floor)
    for floor, prefixes in floors.items():
        for prefix in prefixes:
            matches = rel == prefix or (prefix and rel.startswith(prefix + "."))
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), floor)
    return None if best is None else best[1]


def upward_imports(graph: dict[str, set[str]], floors: dict[int, tuple[str, ...]] = FLOORS) -> list[str]:
    """Breaches of the floor rule (and modules no floor claims), one line each."""
    problems = [f"{m}: not assigned to a floor" for m in sorted(graph) if floor_of(m, floors) is None]
    for module in sorted(graph):
        here = floor_of(module, floors)
        for target in sorted(graph[module]):
            if target.startswith(MISSING):
                problems.append(f"{module} imports {target[1:]}, which is no module of the package")
                continue
            if target.split(".")[0] in OUTSIDE:
                problems.append(f"{module} imports {target}, which is outside the package")
                continue
            there = floor_of(target, floors)
            if here is not None and there is not None and there > here:
                problems.append(f"{module} (floor {here}) imports {target} (floor {there})")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted: every circle lies in one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def report(root: Path) -> tuple[str, bool]:
    """A printable account of the graph, and whether it keeps the rule."""
    graph = import_graph(root)
    lines = []
    for floor, label in FLOOR_NAMES.items():
        lines.append(f"floor {floor} ({label}):")
        for module in sorted(m for m in graph if floor_of(m) == floor):
            lines.append(f"  {module} -> {', '.join(sorted(graph[module])) or '-'}")
    breaches, circles = upward_imports(graph), cycles(graph)
    lines.append(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports between them")
    lines.append(f"upward imports or unassigned modules: {len(breaches)}")
    lines.extend(f"  {b}" for b in breaches)
    lines.append(f"import circles: {len(circles)}")
    lines.extend(f"  {' <-> '.join(c)}" for c in circles)
    return "\n".join(lines), not breaches and not circles


if __name__ == "__main__":
    text, ok = report(Path(__file__).resolve().parents[2] / PACKAGE)
    print(text)
    sys.exit(0 if ok else 1)
