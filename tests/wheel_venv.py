"""A fresh virtual environment holding minillm's wheel and only what the wheel depends on.

`build_wheel(repo, folder)` builds the wheel from a copy of the working tree (committed or
not). `fresh_venv(folder)` makes a venv that sees neither the repository nor this test
environment (no system site-packages, no PYTHONPATH); `install_wheel(venv, wheel)` installs the
wheel into it with pip, without its dependencies; `add_requirements(venv, wheel, extras)` then
puts there the distributions the wheel's metadata requires (with those extras), recursively,
and nothing else.

Those dependencies are not downloaded and unpacked again (torch alone takes ~40 s of a 2-core
machine): each one's files, as its RECORD lists them, are hard-linked from the environment
running the tests, where pip installed them under the same constraints (symlinked across file
systems), compiled bytecode included. Their console scripts are left out (their first line
names the other interpreter); the wheel's own `minillm` script is pip's. `pip check` in the
venv then shows that every requirement of the wheel is met there.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

SKIP = (".git", ".venv", "build", "node_modules", "*.egg-info", "__pycache__", ".pytest_cache",
        ".ruff_cache", ".hypothesis", ".ipynb_checkpoints")


def build_wheel(repo: Path, folder: Path) -> Path:
    """Build minillm's wheel from a copy of `repo` (so the tree is left as it is); return it."""
    source = folder / "source"
    shutil.copytree(repo, source, ignore=shutil.ignore_patterns(*SKIP), symlinks=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "-w", str(folder / "dist"),
                    str(source)], check=True, capture_output=True, text=True)
    (wheel,) = (folder / "dist").glob("minillm-*.whl")
    return wheel


def fresh_venv(folder: Path) -> Path:
    """A venv without pip (the running pip installs into it) or system site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    return folder


def pip(venv: Path, *args: str) -> subprocess.CompletedProcess:
    """Run this environment's pip on `venv`'s interpreter (pip's --python)."""
    return subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                           *args], capture_output=True, text=True)


def install_wheel(venv: Path, wheel: Path) -> None:
    done = pip(venv, "install", "--quiet", "--no-deps", "--no-index", str(wheel))
    if done.returncode:
        raise RuntimeError(done.stderr)


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def wheel_requirements(wheel: Path, extras: tuple[str, ...] = ()) -> list[str]:
    """The distributions (canonical names) `wheel` needs with `extras`, recursively, as this
    environment's metadata says each one requires."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = z.read(name).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines()
                if line.startswith("Requires-Dist:")]
    needed: dict[str, None] = {}
    todo = [(Requirement(r), ("",) + extras) for r in requires]
    while todo:
        req, active = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in active):
            continue
        name = canonicalize_name(req.name)
        if name == "minillm":  # minillm[course] inside [dev]: its extras' requirements
            todo += [(Requirement(r), tuple(req.extras)) for r in requires]
            continue
        if name in needed:
            continue
        needed[name] = None
        dist = metadata.distribution(name)
        todo += [(Requirement(r), ("",) + tuple(req.extras)) for r in dist.requires or []]
    return sorted(needed)


def add_requirements(venv: Path, wheel: Path, extras: tuple[str, ...] = ()) -> list[str]:
    """Link into `venv` every distribution `wheel` needs with `extras` (see the module
    docstring); returns their names."""
    site = _site_packages(venv)
    names = wheel_requirements(wheel, extras)
    for name in names:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            source = Path(dist.locate_file(file))
            target = Path(os.path.normpath(site / file))
            inside = target.is_relative_to(venv) and not target.is_relative_to(venv / "bin")
            if not inside or not source.is_file() or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:  # another file system
                target.symlink_to(source)
    return names
