"""The import graph of xlstm_engine is one-way: each subpackage imports only from layers below it (and from its own
modules), and no import, at the top of a file or inside a function, closes a cycle.

    cli  >  hf, serve  >  train, generation, testing  >  model  >  checkpoint  >  config  >  ops

checkpoint sits below model: it reads and writes folders given a model class or instance (duck-typed), so that
`xLSTMLarge.from_pretrained` can import it at the top of model/large/model.py. The package root
(`xlstm_engine/__init__.py`) only re-exports: nothing imports it.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "xlstm_engine"
LAYERS = {
    "ops": 0, "config": 1, "checkpoint": 2, "model": 3,
    "train": 4, "generation": 4, "testing": 4, "hf": 5, "serve": 5, "cli": 6,
}


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imports(name: str, path: Path, is_package: bool, known: dict) -> list[tuple[str, int]]:
    """(imported xlstm_engine module, line) for every import statement of the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.split(".")[0] == PACKAGE.name]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package of this module, `level - 1` packages up
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(base[:len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            if base.split(".")[0] != PACKAGE.name:
                continue
            # `from package import submodule` imports the submodule; `from module import name`, the module
            found += [(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base, node.lineno)
                      for alias in node.names]
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package root


def graph() -> dict[str, list[tuple[str, int]]]:
    known = modules()
    return {name: imports(name, path, is_package, known) for name, (path, is_package) in known.items()}


def test_every_module_is_in_a_layer():
    unplaced = sorted({layer(name) for name in modules()} - set(LAYERS) - {None})
    assert not unplaced, f"add {unplaced} to LAYERS in {Path(__file__).name}"


def test_imports_go_down():
    wrong = []
    for name, targets in graph().items():
        for target, line in targets:
            if layer(name) is None or layer(target) == layer(name):
                continue  # the root re-exports everything; a subpackage imports its own modules
            if layer(target) is None or LAYERS[layer(target)] >= LAYERS[layer(name)]:
                wrong.append(f"{name}:{line} imports {target}")
    assert not wrong, "imports that do not go down the layers:\n" + "\n".join(wrong)


def test_no_import_cycles():
    """Counting the imports inside functions too, so that none hides a cycle by running late."""
    edges = {name: {target for target, _ in targets} for name, targets in graph().items()}
    cycles, state = [], {}  # state: 1 on the current path, 2 done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(edges.get(name, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
