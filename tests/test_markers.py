"""The suite's markers: the tests that download from PyPI (`network`) are left out of a plain
`pytest` run, and `-m network` selects them. Checked by collecting them in a child pytest."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NETWORK_TESTS = [
    "tests/test_data.py::test_prepare_script_regenerates_the_committed_files",
    "tests/test_generation.py::test_contrastive_search_matches_hugging_face_4x_in_a_side_folder",
]


def _collect(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", *args, *NETWORK_TESTS],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=240)
    return run.stdout + run.stderr


@pytest.mark.slow
def test_network_tests_are_deselected_by_default_and_selected_with_m_network():
    default = _collect()
    assert not any(test in default for test in NETWORK_TESTS), default[-2000:]
    assert "2 deselected" in default, default[-2000:]
    selected = _collect("-m", "network")
    assert all(test in selected for test in NETWORK_TESTS), selected[-2000:]
    assert "2 tests collected" in selected, selected[-2000:]
    # another marker expression keeps them out unless it names them
    assert not any(test in _collect("-m", "slow") for test in NETWORK_TESTS)
