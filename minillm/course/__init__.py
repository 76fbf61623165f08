"""Course tooling: running the chapters headlessly, the chapters' widget, the figure style, the
lineage table and figure, and the web book. It sits above the library (nothing in `minillm`'s
other packages imports it) and needs the `[course]` extra (matplotlib, ipywidgets, papermill).

- `minillm.course` (this package): `run_chapters`, `interact`, `significant`, ... (runner.py)
- `minillm.course.plotting`: `figure`, `finish`, `COLORS`: every chapter figure goes through them
- `minillm.course.lineage`: the course's metric line (bits per byte of every chapter's model)
- `minillm.course.book`: the static web book (`python -m minillm.course.book`)
"""

from minillm.course.runner import (
    ChapterResult,
    chapter_parameters,
    chapters_dir,
    check_parameters,
    find_chapters,
    format_table,
    interact,
    parameter_defaults,
    parse_parameter,
    require_course_extra,
    run_chapters,
    significant,
)

__all__ = ["ChapterResult", "chapter_parameters", "chapters_dir", "check_parameters",
           "find_chapters", "format_table", "interact", "parameter_defaults", "parse_parameter",
           "require_course_extra", "run_chapters", "significant"]
