"""Data flows one way (DESIGN.md, CONTRACTS.md §4): layers, lowest first, and no import cycles.

Every top-level module and subpackage of `minillm/` must be in `LAYERS` (a new one fails until
it is placed); a module may import only from its own layer or below. Imports inside functions
count (a lazy import is still a dependency), and so do imports under `if TYPE_CHECKING:`: a
type-only import still ties the modules together for a reader and a type checker. The cycle
check works on modules (files): `from minillm.a import b` depends on `minillm/a/b.py` when that
is a module, else on `minillm/a/__init__.py`. Below the layers: the library needs no [course]
extra, and experiment drivers are scripts (only `RUNNABLE` modules have a `__main__` block).
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "minillm"

# lowest first; names not (yet) in the tree are the places later issues fill
LAYERS: list[set[str]] = [
    {"utils", "io", "optim"},
    {"data", "tokenizers", "kernels"},
    {"models"},
    {"quantization"},
    {"peft"},
    {"generation", "retrieval", "distributed"},
    {"training"},
    {"alignment", "scaling", "ngram", "evaluation"},
    {"course", "cli", "cli_options", "__init__", "__main__"},
]
LAYER_OF = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def module_name(path: Path, root: Path = PKG) -> str:
    """minillm/models/gpt.py -> "minillm.models.gpt"; a package's __init__.py -> the package."""
    parts = ("minillm", *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The layer unit of a module: the first name below `minillm` ("__init__" for the top)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(name: str, root: Path) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def imports_of(path: Path, root: Path = PKG) -> set[str]:
    """The minillm modules the file at `path` imports (resolved as the module docstring says)."""
    found: set[str] = set()
    package = module_name(path, root) if path.name == "__init__.py" else \
        module_name(path, root).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "minillm"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this file's package
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "minillm":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if _is_module(sub, root) else base)
    return found


def module_graph(root: Path = PKG) -> dict[str, set[str]]:
    """module -> the minillm modules it imports, for every file under `root`."""
    return {module_name(f, root): imports_of(f, root) for f in sorted(root.rglob("*.py"))}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """"a imports b" lines for every import of a higher layer, and every unplaced unit."""
    problems = []
    for module in sorted(graph):
        unit = unit_of(module)
        if unit not in LAYER_OF:
            problems.append(f"{module}: '{unit}' is in no layer of LAYERS: place it")
            continue
        for target in sorted(graph[module]):
            t_unit = unit_of(target)
            if t_unit in LAYER_OF and LAYER_OF[t_unit] > LAYER_OF[unit]:
                problems.append(f"{module} (layer {LAYER_OF[unit]}: {unit}) imports {target} "
                                f"(layer {LAYER_OF[t_unit]}: {t_unit})")
    return problems


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (or a self-import), each
    as a sorted list: every import cycle (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_every_module_is_in_a_layer_and_imports_only_downwards():
    graph = module_graph()
    assert len(graph) > 40, f"only {len(graph)} modules found under {PKG}"
    problems = layer_violations(graph)
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    cycles = find_cycles(module_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_guard_catches_a_planted_cycle_and_an_upward_import(tmp_path):
    """The checks are not vacuous: a models module importing generation is caught twice."""
    root = tmp_path / "minillm"
    (root / "models").mkdir(parents=True)
    (root / "generation").mkdir()
    (root / "__init__.py").write_text("")
    (root / "models" / "__init__.py").write_text("")
    (root / "models" / "kv_cache.py").write_text(
        "from minillm.generation import state\n")
    (root / "generation" / "__init__.py").write_text("")
    (root / "generation" / "state.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import minillm.utils\n"
        "def f():\n    from minillm.models.kv_cache import KVCache\n")
    graph = module_graph(root)
    assert graph["minillm.generation.state"] == {"minillm.models.kv_cache", "minillm.utils"}
    assert layer_violations(graph) == [
        "minillm.models.kv_cache (layer 2: models) imports minillm.generation.state "
        "(layer 5: generation)"]
    assert find_cycles(graph) == [["minillm.generation.state", "minillm.models.kv_cache"]]


# ---- the library below `course` needs only the base install -------------------------------
COURSE_ONLY = {"matplotlib", "ipywidgets", "IPython", "papermill", "nbformat", "jupyterlab"}


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the non-minillm packages the file imports (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names - {"minillm"}


def test_the_library_does_not_import_the_course_extra():
    """Everything outside minillm/course/ runs on `pip install minillm` without extras."""
    offenders = {str(f.relative_to(PKG)): sorted(third_party_imports(f) & COURSE_ONLY)
                 for f in sorted(PKG.rglob("*.py")) if "course" not in f.relative_to(PKG).parts}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"library modules import the [course] extra: {offenders}"


def test_import_minillm_loads_no_plotting_or_notebook_package():
    import subprocess
    import sys

    code = ("import sys, minillm, minillm.training, minillm.generation, minillm.alignment, "
            "minillm.peft, minillm.quantization, minillm.scaling, minillm.distributed; "
            f"print(sorted(set({sorted(COURSE_ONLY)!r}) & set(m.split('.')[0] for m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ---- experiments are scripts, not library modules ---------------------------------------------
# The modules that may run as `python -m`: the command line, the course's two documented recipes
# (`make book`; the lineage's --write), and dpo_run, whose old entry point only says where it
# went. Everything else that drives an experiment (the distributed workbench, the TP/PP runner,
# the expert-parallel check) lives in scripts/ and is launched by path.
RUNNABLE = {"minillm.cli", "minillm.course.book", "minillm.course.lineage",
            "minillm.alignment.dpo_run", "minillm.evaluation.lm_eval_cli"}


def has_main_block(path: Path) -> bool:
    """Whether the file has a top-level `if __name__ == "__main__":`."""
    for node in ast.parse(path.read_text(), str(path)).body:
        test = node.test if isinstance(node, ast.If) else None
        if (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
                and test.left.id == "__name__" and len(test.comparators) == 1
                and isinstance(test.comparators[0], ast.Constant)
                and test.comparators[0].value == "__main__"):
            return True
    return False


def runnable_modules(root: Path = PKG) -> set[str]:
    return {module_name(f, root) for f in sorted(root.rglob("*.py")) if has_main_block(f)}


def test_experiment_drivers_live_in_scripts_not_in_the_library():
    extra = runnable_modules() - RUNNABLE
    assert not extra, (f"library modules with a __main__ block: {sorted(extra)}; an experiment "
                       "driver belongs in scripts/ (run by path), a command in minillm.cli")


def test_the_main_block_guard_finds_a_driver(tmp_path):
    root = tmp_path / "minillm"
    (root / "distributed").mkdir(parents=True)
    (root / "distributed" / "bench.py").write_text(
        "def main():\n    pass\n\n\nif __name__ == '__main__':\n    main()\n")
    (root / "distributed" / "plain.py").write_text(
        "def f():\n    if __name__ == '__main__':\n        pass\n")  # not at the top level
    assert runnable_modules(root) == {"minillm.distributed.bench"}
    assert runnable_modules() >= {"minillm.cli"}
