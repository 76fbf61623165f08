"""Data flows one way (DESIGN.md): a lower layer never imports a higher one."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "minillm"
# each layer and the minillm subpackages/modules it must not import
FORBIDDEN = {
    "utils.py": {"data", "tokenizers", "models", "training", "distributed", "generation", "scaling"},
    "io.py": {"data", "tokenizers", "models", "training", "distributed", "generation", "scaling"},
    "data": {"tokenizers", "models", "training", "distributed", "generation", "scaling", "course", "cli"},
    "kernels": {"data", "tokenizers", "models", "training", "distributed", "generation", "scaling", "course", "cli"},
    "tokenizers": {"models", "training", "distributed", "generation", "scaling", "course", "cli"},
    "models": {"training", "distributed", "generation", "scaling", "course", "cli"},
    "training": {"generation", "scaling", "course", "cli"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minillm."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("minillm.")}
    return found


def test_lower_layers_do_not_import_higher_ones():
    problems = []
    for layer, forbidden in FORBIDDEN.items():
        target = PKG / layer
        files = [target] if target.suffix == ".py" else sorted(target.rglob("*.py"))
        assert files, f"{target} has no Python files"
        for f in files:
            bad = _imports(f) & forbidden
            if bad:
                problems.append(f"{f.relative_to(PKG)} imports {sorted(bad)}")
    assert not problems, problems
