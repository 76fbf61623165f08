"""An installed minillm works without the repository: the wheel, installed without extras into a
fresh venv (`wheel_venv.py` says how), used from a folder outside the repository.

It runs `minillm --help` and every command's `--help`, the README's package example (with
`max_steps` shortened), `minillm generate` on the shipped checkpoint, and `minillm data prepare`
+ `minillm train --data` on a small corpus of the user's written there; `minillm course run`
says it needs the `[course]` extra; with that extra's packages added, it runs chapter 09 (the
quickest, and it needs no shipped results) from a copy outside the repository.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from wheel_venv import add_requirements, build_wheel, fresh_venv, install_wheel, pip

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _data_folders() -> tuple[str, ...]:
    """setup.py's DATA_FOLDERS, read without running setup()."""
    tree = ast.parse((REPO / "setup.py").read_text())
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign)
                and [t.id for t in node.targets] == ["DATA_FOLDERS"]]
    return ast.literal_eval(value)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    start = time.perf_counter()
    wheel = build_wheel(REPO, root)
    venv = fresh_venv(root / "venv")
    install_wheel(venv, wheel)
    add_requirements(venv, wheel)
    away = root / "elsewhere"  # the user's folder: no repository above it
    away.mkdir()
    env = {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "HOME": str(root),
           "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8", "MPLBACKEND": "Agg"}
    print(f"\nwheel {wheel.stat().st_size / 1e6:.1f} MB; built and installed in "
          f"{time.perf_counter() - start:.1f} s")
    return {"wheel": wheel, "venv": venv, "cwd": away, "env": env}


def _run(installed, *command, timeout=300):
    return subprocess.run(command, cwd=installed["cwd"], env=installed["env"], text=True,
                          capture_output=True, timeout=timeout)


def test_the_wheel_ships_the_data_folders_whole(installed):
    with zipfile.ZipFile(installed["wheel"]) as z:
        names = set(z.namelist())
    for folder in _data_folders():
        source = REPO / "data" / folder
        files = {p.relative_to(source).as_posix() for p in source.rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
        assert files and {f"minillm/_data/{folder}/{f}" for f in files} <= names, folder
    assert not any(n.startswith("minillm/_data/scaling/") for n in names)  # the course's stays
    assert pip(installed["venv"], "check").returncode == 0  # every requirement is met there


def test_the_installed_package_is_the_wheel_not_the_repository(installed):
    done = _run(installed, "python", "-c", "import minillm, minillm.data as d; "
                "print(minillm.__file__); print(d.data_dir())")
    code, data = done.stdout.split()
    assert Path(code).is_relative_to(installed["venv"]) and not code.startswith(str(REPO))
    assert Path(data) == Path(code).parent / "_data"


def test_help_of_every_command_from_an_installed_wheel(installed):
    from minillm.cli import build_parser

    def commands(parser, prefix=()):
        for action in parser._actions:
            if isinstance(action.choices, dict):
                for name, sub in action.choices.items():
                    yield (*prefix, name)
                    yield from commands(sub, (*prefix, name))

    every = [(), *commands(build_parser())]
    assert {("train",), ("sft",), ("dpo",), ("generate",), ("course", "run")} <= set(every)
    for command in every:
        done = _run(installed, "minillm", *command, "--help")
        assert done.returncode == 0 and done.stdout.startswith("usage: minillm"), \
            (command, done.stderr)
        assert "Traceback" not in done.stderr


def test_the_readme_package_example_runs_from_an_installed_wheel(installed):
    readme = (REPO / "README.md").read_text()
    example = readme.split("## The package", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    short, n = re.subn(r"^max_steps = \d+$", "max_steps = 3", example, flags=re.M)
    assert n == 1, "the README example sets max_steps on a line of its own"
    short = short.replace("max_new_tokens=200", "max_new_tokens=20")
    done = _run(installed, "python", "-c", short)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ROMEO.") and len(done.stdout) > len("ROMEO.\n")
    assert (installed["cwd"] / "runs" / "demo" / "checkpoints" / "step_000003").is_dir()


def test_generate_on_the_shipped_checkpoint_from_an_installed_wheel(installed):
    done = _run(installed, "minillm", "generate", "--checkpoint", "shakespeare_byte",
                "--prompt", "ROMEO.", "--max-new-tokens", "20")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ROMEO.") and len(done.stdout) > len("ROMEO.\n")


def test_own_text_prepared_then_trained_on_from_an_installed_wheel(installed):
    corpus = installed["cwd"] / "my_text"  # the user's corpus: text files and JSON lines
    corpus.mkdir()
    for i in range(6):
        (corpus / f"note_{i}.txt").write_text(f"Note {i}: " + "a small corpus of my own. " * 20)
    (corpus / "more.jsonl").write_text("".join(f'{{"text": "line {i} of json text, long '
                                               f'enough to count"}}\n' for i in range(6)))
    done = _run(installed, "minillm", "data", "prepare", "--input", "my_text", "--output-dir",
                "my_data", "--val-fraction", "0.25")
    assert done.returncode == 0, done.stderr
    prepared = json.loads(done.stdout)
    assert prepared["train"]["documents"] + prepared["val"]["documents"] == 12
    assert prepared["val"]["documents"] >= 2 and prepared["dtype"] == "uint16"
    done = _run(installed, "minillm", "train", "--data", "my_data", "--output-dir", "my_run",
                "--d-model", "16", "--n-layer", "1", "--n-head", "2", "--context-length", "32",
                "--batch-size", "4", "--max-steps", "3", "--warmup-steps", "1",
                "--eval-steps", "3", "--final-eval", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    summary = json.loads((installed["cwd"] / "my_run" / "summary.json").read_text())
    assert summary["step"] == 3 and summary["val_bits_per_byte"] > 0
    done = _run(installed, "minillm", "generate", "--checkpoint", "my_run", "--prompt", "Note",
                "--max-new-tokens", "8")
    assert done.returncode == 0 and done.stdout.startswith("Note"), done.stderr


def test_the_course_needs_its_extra_then_runs_a_chapter(installed):
    chapter = installed["cwd"] / "09_flash_attention.ipynb"
    shutil.copy(REPO / "chapters" / chapter.name, chapter)
    done = _run(installed, "minillm", "course", "run", str(chapter), "--output-dir", "out")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert 'needs the [course] extra' in done.stderr and 'pip install "minillm[course]"' \
        in done.stderr
    add_requirements(installed["venv"], installed["wheel"], extras=("course",))
    assert pip(installed["venv"], "check").returncode == 0
    done = _run(installed, "minillm", "course", "run", str(chapter), "--output-dir", "out",
                timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^09_flash_attention\s+ok\s", done.stdout, flags=re.M), done.stdout
    assert (installed["cwd"] / "out" / chapter.name).is_file()
