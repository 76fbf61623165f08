"""docs/reliability.md names a test for every guarantee and probe: each named test exists."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_test_the_reliability_page_names_exists():
    text = (REPO / "docs" / "reliability.md").read_text()
    named = set(re.findall(r"(tests/\w+\.py)::(\w+)", text))
    assert len(named) >= 40
    missing = [f"{path}::{name}" for path, name in sorted(named)
               if not (REPO / path).is_file()
               or not re.search(rf"^def {name}\(", (REPO / path).read_text(), re.M)]
    assert missing == []
