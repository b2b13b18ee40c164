"""The package's layers: `import l3d` stays light, and no module imports one that imports it back."""
import ast
import subprocess
import sys
from pathlib import Path

import l3d

PACKAGE = Path(l3d.__file__).parent
HEAVY = ("matplotlib", "seaborn", "transformers", "torchvision", "sklearn", "scipy")


def test_import_l3d_loads_no_plotting_model_hub_or_experiment_library():
    code = "import sys, l3d; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.split())
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]
    assert not [m for m in loaded if m.startswith(("l3d.experiments", "l3d.report"))]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The l3d modules `path` imports (absolute or relative), by name."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "l3d"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "l3d":
                continue
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}   # `from . import checkpoint` names a module
    return found


def _graph(top_level_only: bool = False) -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: _imports(p, top_level_only) & files.keys() - {m} for m, p in files.items()}


def test_no_import_cycles():
    graph = _graph()
    cycles = []

    def visit(module, path):
        for other in graph[module]:
            if other in path:
                cycles.append(path[path.index(other):] + [other])
            elif other not in done:
                visit(other, path + [other])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_core_imports_no_experiment_or_report_module_at_import_time():
    core = {m: deps for m, deps in _graph(top_level_only=True).items()
            if not m.startswith(("l3d.experiments", "l3d.report"))}
    wrong = {m: sorted(d for d in deps if d.startswith(("l3d.experiments", "l3d.report"))) for m, deps in core.items()}
    assert not {m: d for m, d in wrong.items() if d}
