"""nbval runs of the chapters: another machine's arithmetic, and a time per chapter.

The stored outputs are made by `minillm course run --in-place` with each chapter's own thread
count (torch's default of every core, or 1 where a chapter asks for it) on this machine's
widest instruction set. Under pytest every kernel instead runs with one thread and on MKL's
AVX2 kernels (MKL_ENABLE_INSTRUCTIONS: the stored runs use AVX-512 where the CPU has it, and
AVX2-only CPUs sum in another order). A checked cell that prints a digit depending on the
order of a floating-point reduction then fails here, on the developer's machine, rather than
on a learner's. For the chapters that already run on one thread (02, 07, 16) only the kernels
differ; check them at two threads with `MINILLM_NUM_THREADS=2 make test-chapters` (one thread
per kernel is what keeps two pytest workers from oversubscribing two cores in `make test`).
`MINILLM_NUM_THREADS` is read by `minillm.utils.configure_threads`, which every chapter calls;
`MINILLM_NBVAL_NATIVE=1` turns the emulation off.

At the end, a table of seconds per chapter (the sum of its cells, kernel start included).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

# (torch's own ATEN_CPU_CAPABILITY=avx2 is not used: on an AVX-512 CPU it breaks torch's bf16
# matmul packing, "pack_vnni2 is only supported when avx512 is supported")
OTHER_MACHINE = {"MKL_ENABLE_INSTRUCTIONS": "AVX2"}

_saved: dict[str, str | None] = {}
_seconds: dict[str, float] = defaultdict(float)
_failed: set[str] = set()


def _chapter(nodeid: str) -> str | None:
    path = nodeid.split("::", 1)[0]
    return Path(path).stem if path.endswith(".ipynb") else None


def _environment() -> dict[str, str]:
    if os.environ.get("MINILLM_NBVAL_NATIVE") == "1":
        return {}
    return {"MINILLM_NUM_THREADS": os.environ.get("MINILLM_NUM_THREADS", "1"), **OTHER_MACHINE}


def pytest_runtest_setup(item):
    """Runs before nbval starts a notebook's kernel (on its first cell): the kernel inherits it."""
    if _chapter(item.nodeid) is None:
        return
    for key, value in _environment().items():
        _saved.setdefault(key, os.environ.get(key))
        os.environ[key] = value


def pytest_runtest_teardown(item, nextitem):
    if _chapter(item.nodeid) is None:
        return
    for key, value in _saved.items():  # package tests in this worker see the usual environment
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _saved.clear()


def pytest_runtest_logreport(report):
    chapter = _chapter(report.nodeid)
    if chapter is not None:
        _seconds[chapter] += report.duration
        if report.failed:
            _failed.add(chapter)


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    tr = terminalreporter
    tr.section("seconds per chapter (nbval, all cells)")
    for chapter in sorted(_seconds):
        status = "FAILED" if chapter in _failed else "ok"
        tr.write_line(f"{chapter:<32} {status:<6} {_seconds[chapter]:7.1f}")
    tr.write_line(f"{'total':<32} {'':<6} {sum(_seconds.values()):7.1f}")
