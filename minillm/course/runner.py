"""Running the course's chapters headlessly with papermill, and the chapters' shared widget.

`run_chapters(["03", "06"], parameters={"max_steps": 50})` executes each chapter in a fresh
kernel, writes the executed notebook to `output_dir` (or back in place), and returns one
`ChapterResult` per chapter. The command line is `minillm course run`.

`interact(fn, knob=widget, ...)` is how every chapter shows a widget: the figure and text that
`fn` draws are ordinary outputs of the cell (so the stored notebook, a code host and the web
book show the default figure, not a widget's repr), the controls come above them, and each
change of a control redraws those outputs in place.
"""

from __future__ import annotations

import ast
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChapterResult", "chapter_parameters", "chapters_dir", "check_parameters",
           "find_chapters", "interact", "parameter_defaults", "require_course_extra",
           "run_chapters", "parse_parameter", "significant"]


CONTROLS_NOTE = ("(interactive controls: run this cell in Jupyter to turn them; "
                 "the output below is drawn with their default values)")


def _rendered(fn: Callable[..., object], values: dict) -> list[dict]:
    """Run `fn(**values)` and return what it displayed, as mime bundles: its printed text
    first (one bundle), then each figure or other rich output in order (figures it drew but
    did not show included, as the inline backend shows them at the end of a cell)."""
    import matplotlib.pyplot as plt
    from IPython.display import display
    from IPython.utils.capture import capture_output

    with capture_output(display=True) as captured:
        fn(**values)
        for number in plt.get_fignums():  # drawn but not shown: as the inline backend would
            display(plt.figure(number))
        plt.close("all")
    bundles = [{"text/plain": captured.stdout}] if captured.stdout else []
    return bundles + [dict(out.data) for out in captured.outputs]


def interact(fn: Callable[..., object], /, **controls) -> dict:
    """Show `controls` (ipywidgets; other values are passed as constants) above the outputs of
    `fn(**values)`, and redraw those outputs whenever a control changes.

    Unlike `ipywidgets.interact`, the outputs are the cell's own (updated through display
    handles), not the contents of an Output widget: a notebook executed headlessly stores the
    figure drawn with the default values, which every viewer renders, and the controls' text
    form says how to bring them to life. Sliders get a wide track, room for their labels and
    update on release (each redraw may take a second on a CPU).

    Args:
        fn: draws a figure (matplotlib, shown with plt.show()) and/or prints.
        **controls: parameter name -> widget (or a constant).

    Returns:
        {"controls": the widgets by name, "redraw": a function that redraws with the current
        values} (tests and the browser walkthrough drive it).
    """
    import ipywidgets as widgets
    from IPython.display import display

    knobs = {k: v for k, v in controls.items() if isinstance(v, widgets.ValueWidget)}
    constants = {k: v.value if isinstance(v, widgets.fixed) else v
                 for k, v in controls.items() if k not in knobs}
    for name, w in knobs.items():
        if not w.description:
            w.description = name
        w.style.description_width = "initial"
        if isinstance(w, (widgets.IntSlider, widgets.FloatSlider, widgets.SelectionSlider,
                          widgets.FloatLogSlider, widgets.Textarea, widgets.Text)):
            if w.layout.width is None:
                w.layout.width = "70%"
        # update on release; a SelectionSlider keeps continuous updates (with them off, its
        # keyboard steps after the first never reach the kernel: the browser test saw the
        # readout at "none" beside a figure drawn for 1.5)
        if isinstance(w, (widgets.IntSlider, widgets.FloatSlider, widgets.FloatLogSlider,
                          widgets.Textarea, widgets.Text)):
            w.continuous_update = False

    def values() -> dict:
        return {**constants, **{k: w.value for k, w in knobs.items()}}

    box = widgets.VBox(list(knobs.values()))
    bundle = dict(box._repr_mimebundle_())
    bundle["text/plain"] = CONTROLS_NOTE
    display(bundle, raw=True)
    handles = []

    def redraw(*_):
        bundles = _rendered(fn, values())
        while len(handles) < len(bundles):
            handles.append(display({"text/plain": ""}, raw=True, display_id=True))
        for i, handle in enumerate(handles):  # outputs the new values no longer draw: emptied
            handle.update(bundles[i] if i < len(bundles) else {"text/plain": ""}, raw=True)

    for w in knobs.values():
        w.observe(redraw, names="value")
    redraw()
    return {"controls": knobs, "redraw": redraw}


@dataclass
class ChapterResult:
    chapter: str
    status: str     # "ok" or "failed"
    seconds: float
    error: str = ""


def chapters_dir() -> Path:
    """`./chapters` if the working folder has one, else the repository's next to the package."""
    here = Path.cwd() / "chapters"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "chapters"


def find_chapters(names: list[str] | None = None, folder: Path | None = None) -> list[Path]:
    """Chapter notebooks by number ("03"), stem ("03_transformer") or path; all when empty."""
    folder = folder or chapters_dir()
    every = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not every and not all(Path(n).suffix == ".ipynb" for n in names or []):
        raise ValueError(f"no chapters in {folder}: run from a clone's root (it has chapters/) "
                         "or name the notebooks by path (an installed minillm has none)")
    if not names:
        return every
    found = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.is_file():
            found.append(path)
            continue
        matches = [p for p in every if p.stem == name or p.stem.split("_")[0] == name.zfill(2)]
        if not matches:
            available = ", ".join(p.stem for p in every) or "none"
            raise ValueError(f"no chapter matches {name!r}; available: {available}")
        found.extend(matches)
    return found


def parse_parameter(text: str) -> tuple[str, object]:
    """'NAME=VALUE' -> (name, value); VALUE is a Python literal if it parses as one, else a string."""
    if "=" not in text:
        raise ValueError(f"parameter {text!r} must look like NAME=VALUE")
    name, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return name.strip(), value


_NOT_A_LITERAL = object()  # a parameter whose default is computed (its type is not checked)


def parameter_defaults(path: str | Path) -> dict[str, object]:
    """The names a chapter's `parameters`-tagged cell assigns (its knobs), in order, with their
    default values (where a default is not a plain literal: a marker, and no type to check).

    Read with `ast`, so a comment holding "=" does not hide a line (papermill's own inspection
    skips such lines with "Unable to parse line ..."). A notebook without such a cell has none.
    """
    import json

    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    defaults: dict[str, object] = {}
    for cell in cells:
        if "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        for node in ast.parse(source).body:
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, ast.AnnAssign) else [])
            try:
                value = ast.literal_eval(node.value) if node.value is not None else None
            except (ValueError, SyntaxError, AttributeError, TypeError):
                value = _NOT_A_LITERAL
            for t in targets:
                if isinstance(t, ast.Name) and t.id not in defaults:
                    defaults[t.id] = value
    return defaults


def chapter_parameters(path: str | Path) -> list[str]:
    """The names of a chapter's knobs, in order (`parameter_defaults`' keys)."""
    return list(parameter_defaults(path))


# what a value given for a default of each type must be (an int is a fine float), and its name
_KINDS = {bool: ((bool,), "True or False"), int: ((int,), "a whole number"),
          float: ((int, float), "a number"), str: ((str,), "text"),
          list: ((list, tuple), "a list, e.g. [1, 2]"), tuple: ((list, tuple), "a tuple"),
          dict: ((dict,), "a dict")}


def _type_problem(name: str, value: object, default: object, stem: str) -> str | None:
    """Why `value` cannot replace the chapter's `default` for `name` (None: it can)."""
    if default is None or default is _NOT_A_LITERAL or type(default) not in _KINDS:
        return None
    kinds, what = _KINDS[type(default)]
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return None
    return (f"-p {name}={value!r} is a {type(value).__name__}, but {stem} sets {name} = "
            f"{default!r}: pass {what}")


def check_parameters(paths: list[Path], parameters: dict) -> None:
    """Refuse a parameter that none of the chapters declares (a typo would otherwise be
    injected, ignored, and the run would pass with the default), or whose value has another
    type than a chapter's default (it would fail deep in a cell, after minutes).

    Raises:
        ValueError: naming the unknown parameters and each chapter's knobs, or the parameter,
            its value and the type the chapter expects.
    """
    known = {path.stem: parameter_defaults(path) for path in paths}
    unknown = sorted(set(parameters) - {name for names in known.values() for name in names})
    if unknown:
        knobs = "; ".join(f"{stem}: {', '.join(names) or '(none)'}"
                          for stem, names in known.items())
        raise ValueError(f"unknown chapter parameter(s) {', '.join(unknown)}; the parameters "
                         f"are {knobs}")
    for name, value in parameters.items():
        for stem, defaults in known.items():
            problem = _type_problem(name, value, defaults.get(name), stem)
            if problem:
                raise ValueError(problem)


def require_course_extra() -> None:
    """Refuse to run chapters without the `[course]` extra's packages, naming the extra.

    Raises:
        ImportError: one line: what is missing and `pip install "minillm[course]"`.
    """
    import importlib.metadata
    import importlib.util
    import re

    try:
        requires = importlib.metadata.requires("minillm") or []
    except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
        requires = []
    names = [re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0] for r in requires
             if re.search(r"""extra\s*==\s*["']course["']""", r)]
    modules = {"ipykernel", "nbformat", "papermill"} | {n.lower().replace("-", "_")
                                                          for n in names if n != "jupyterlab"}
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    if missing:
        raise ImportError(f"running chapters needs the [course] extra ({', '.join(missing)} "
                          f"not installed): pip install \"minillm[course]\"")


def run_chapters(
    names: list[str] | None = None, parameters: dict | None = None,
    output_dir: str | Path = "build/course", in_place: bool = False,
    kernel_name: str | None = None, log_output: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[ChapterResult]:
    """Execute chapters with papermill; a failure is recorded, and the next chapter still runs.

    Args:
        parameters: injected into every chapter; each must be declared by at least one of the
            chapters run (`check_parameters`, before anything runs).
        progress: called with one line when a chapter starts (its number of code cells) and one
            when it ends (status and seconds), e.g. `print`; None is silent.
    """
    import os

    require_course_extra()
    import nbformat
    import papermill as pm

    if output_dir is None and not in_place:
        raise ValueError("give output_dir (where executed notebooks go) or in_place=True")
    # Figures must reach the notebook: a kernel that inherits MPLBACKEND=Agg would draw nothing.
    # Kernels inherit this process's environment: set the inline backend for them, then restore.
    paths = find_chapters(names)
    check_parameters(paths, parameters or {})
    saved_backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    results = []
    try:
        for number, path in enumerate(paths, 1):
            if progress is not None:
                cells = sum(c.cell_type == "code" for c in nbformat.read(path, as_version=4).cells)
                progress(f"[{number}/{len(paths)}] {path.stem}: {cells} code cells ...")
            out = path if in_place else Path(output_dir) / path.name
            out.parent.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            try:
                pm.execute_notebook(
                    str(path), str(out), parameters=parameters or {}, cwd=str(path.parent),
                    kernel_name=kernel_name, progress_bar=False, log_output=log_output,
                    # the kernel's own start-up notices (e.g. "running over TCP without
                    # encryption" on this local, single-user run) are not the chapter's output
                    extra_arguments=["--IPKernelApp.log_level=ERROR"],
                )
                _strip_local_paths(out)
                results.append(ChapterResult(path.stem, "ok", time.perf_counter() - start))
            except Exception as e:  # papermill's PapermillExecutionError carries the cell's error
                results.append(ChapterResult(path.stem, "failed", time.perf_counter() - start,
                                             _describe_failure(e)))
            if progress is not None:
                r = results[-1]
                progress(f"[{number}/{len(paths)}] {r.chapter}: {r.status} in {r.seconds:.1f} s"
                         + (f" - {r.error}" if r.error else ""))
    finally:
        if saved_backend is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = saved_backend
    return results


def _describe_failure(error: Exception) -> str:
    """One line: which cell failed and with what (papermill's error knows the cell)."""
    ename, evalue = getattr(error, "ename", None), getattr(error, "evalue", None)
    if ename is not None:
        count = getattr(error, "exec_count", None)
        where = f"cell In[{count}]" if count is not None else "a cell"
        return f"{where}: {ename}: {evalue}"
    lines = str(error).strip().splitlines()
    return lines[-1] if lines else type(error).__name__


def _strip_local_paths(path: Path) -> None:
    """papermill records absolute input/output paths in the notebook; keep only the names."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = Path(meta[key]).name
    nbformat.write(nb, path)


def format_table(results: list[ChapterResult]) -> str:
    width = max([len("chapter")] + [len(r.chapter) for r in results])
    lines = [f"{'chapter':<{width}}  status  seconds", f"{'-' * width}  ------  -------"]
    for r in results:
        lines.append(f"{r.chapter:<{width}}  {r.status:<6}  {r.seconds:7.1f}"
                     + (f"  {r.error}" if r.error else ""))
    return "\n".join(lines)


def significant(x: float, digits: int = 3, zero_below: float = 1e-3) -> str:
    """`x` to `digits` significant figures, and "0" when |x| < `zero_below`.

    For the checked cells of a chapter: a fitted value is printed only to the precision the fit
    really has, and a parameter driven to its bound (1e-8 on one machine, 3e-8 on another)
    prints the same everywhere.
    """
    if abs(x) < zero_below:
        return "0"
    return f"{x:.{digits}g}"
