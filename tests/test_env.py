"""pyproject.toml and environment.yml must describe the same environment."""

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _all_requirements(pyproject: dict) -> set[str]:
    """The base dependencies and every extra's, by name (an extra naming minillm's own other
    extras, `minillm[course]`, is followed through them)."""
    names = {_name(r) for r in pyproject["dependencies"]}
    for group in pyproject["optional-dependencies"].values():
        names |= {_name(r) for r in group}
    return names - {"minillm"}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _all_requirements(pyproject)
    lines = (ROOT / "environment.yml").read_text().splitlines()
    lines = lines[lines.index("dependencies:") + 1 :]
    listed = set()
    for line in lines:
        m = re.match(r"\s*-\s+([A-Za-z0-9_.\-]+)", line)
        if m and m.group(1) not in ("pip", "python", "-e", "-c"):
            listed.add(_name(m.group(1)))
    assert wanted - listed == set(), f"missing from environment.yml: {sorted(wanted - listed)}"
    assert listed - wanted == set(), f"not in pyproject.toml: {sorted(listed - wanted)}"
    assert any("-e ." in line for line in lines), "environment.yml must pip-install minillm editable"
    assert any(line.split("#")[0].strip() == "- -c constraints.txt" for line in lines), \
        "environment.yml must install through the lock (- -c constraints.txt)"


def test_the_lock_pins_every_dependency_and_make_installs_through_it():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _all_requirements(pyproject)
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[_name(name)] = version
    assert wanted - set(pins) == set(), f"not pinned in constraints.txt: {sorted(wanted - set(pins))}"
    assert "+" not in pins["torch"], "pin torch without a local label, so CPU and CUDA builds match"
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.count("-c $(LOCK)") >= 2, "make venv must install torch and the extras with -c"
