"""Which cells of a chapter a widget needs: the browser walk runs those and not the whole chapter.

A widget cell (`interact(show, ...)`) needs the cells that define what it reads, and what those
read, back to the parameters cell: a backward slice over the chapter's code cells, read from
their source (nothing is run). For each cell we know

- `reads`: the global names it reads before writing them, including the globals that the
  functions and lambdas it defines read when they are called (from `symtable`);
- `fresh`: the names it binds before reading them (`x = ...`, `def x`, `import x`): an earlier
  cell's `x` is no longer needed after it;
- `changes`: the names it changes in place (`x.a = ...`, `x[i] = ...`, `del x[i]`, or a method
  called for its effect, `x.append(...)`, `model.eval()`), modules aside.

Walking back from the last widget cell, a cell is kept when it binds or changes a name that a
kept later cell still needs. Mutation through a function (`train(model)`) is not seen; the
widget then draws from an untrained object, which is enough for the walk: it checks that the
controls drive the output, not the numbers (nbval checks those, running every cell).
"""

from __future__ import annotations

import ast
import symtable
from dataclasses import dataclass

__all__ = ["cells_to_run", "widget_cells"]


def _python(source: str) -> str:
    """The cell without IPython's `%magic` and `!shell` lines."""
    return "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln
                     for ln in source.splitlines())


class _FirstUse(ast.NodeVisitor):
    """Whether each name is first read or first written, in the order Python evaluates."""

    def __init__(self):
        self.first: dict[str, str] = {}

    def _note(self, name: str, use: str) -> None:
        self.first.setdefault(name, use)

    def visit_Name(self, node: ast.Name) -> None:
        self._note(node.id, "read" if isinstance(node.ctx, ast.Load) else "write")

    def visit_Assign(self, node: ast.Assign) -> None:  # the value before the targets
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self.visit(node.target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:  # x += 1 reads x
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self._note(node.target.id, "read")
        else:
            self.visit(node.target)

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for statement in node.body + node.orelse:
            self.visit(statement)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            self._note((alias.asname or alias.name).split(".")[0], "write")

    visit_ImportFrom = visit_Import

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.ClassDef) -> None:
        # the body runs when called; symtable gives the globals it reads
        heads = node.decorator_list + (node.bases if isinstance(node, ast.ClassDef) else
                                       node.args.defaults + node.args.kw_defaults)
        for head in heads:
            if head is not None:
                self.visit(head)
        self._note(node.name, "write")

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for default in node.args.defaults + node.args.kw_defaults:
            if default is not None:
                self.visit(default)


@dataclass
class _Cell:
    binds: set[str]
    reads: set[str]
    fresh: set[str]
    changes: set[str]
    imports: set[str]


def _root(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _analyse(source: str) -> _Cell:
    source = _python(source)
    top = symtable.symtable(source, "<cell>", "exec")
    binds, reads = set(), set()
    tables = [top]
    while tables:
        table = tables.pop()
        for s in table.get_symbols():
            if table is top:
                if s.is_assigned() or s.is_imported():
                    binds.add(s.get_name())
                if s.is_referenced():
                    reads.add(s.get_name())
            else:  # a function, class or comprehension: the globals it reads or sets
                if s.is_global() and s.is_referenced():
                    reads.add(s.get_name())
                if s.is_declared_global() and s.is_assigned():
                    binds.add(s.get_name())
        tables.extend(table.get_children())
    tree = ast.parse(source)
    order = _FirstUse()
    changes = set()
    for statement in tree.body:
        order.visit(statement)
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for node in ast.walk(statement):
            if isinstance(node, (ast.Attribute, ast.Subscript)) and not isinstance(node.ctx,
                                                                                   ast.Load):
                changes.add(_root(node))
            elif (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                  and isinstance(node.value.func, ast.Attribute)):
                changes.add(_root(node.value.func))
    fresh = {name for name, use in order.first.items() if use == "write"} & binds
    imports = {s.get_name() for s in top.get_symbols() if s.is_imported()}
    return _Cell(binds, reads - fresh, fresh, changes - {None}, imports)


def widget_cells(cells: list[dict]) -> list[int]:
    """Positions (in `cells`, a notebook's cell list) of the code cells that call `interact(`."""
    found = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse(_python("".join(cell["source"])))
        if any(isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
               and isinstance(s.value.func, ast.Name) and s.value.func.id == "interact"
               for s in tree.body):
            found.append(i)
    return found


def cells_to_run(cells: list[dict], targets: list[int]) -> list[int]:
    """Positions of the code cells to run, in order, so that the cells at `targets` run as in
    the whole notebook (see the module docstring)."""
    code = {i: _analyse("".join(c["source"])) for i, c in enumerate(cells)
            if c["cell_type"] == "code" and i <= max(targets)}
    modules = set().union(*(c.imports for c in code.values()))
    keep, needed = [], set()
    for i in sorted(code, reverse=True):
        cell = code[i]
        if i in targets or (cell.binds | (cell.changes - modules)) & needed:
            keep.append(i)
            needed = (needed - cell.fresh) | cell.reads
    return keep[::-1]
