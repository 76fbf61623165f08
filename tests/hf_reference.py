"""Hugging Face as a reference, imported lazily: a test that touches it is skipped without
transformers, and the tests in the same file that do not need it still run.

    from hf_reference import lazy_module
    transformers = lazy_module("transformers")
    transformers.LlamaConfig(...)            # imports (or skips this test) on first use
"""

from __future__ import annotations

from typing import Any

import pytest


class lazy_module:  # noqa: N801 (reads like the module it stands for)
    """A stand-in whose attributes come from `pytest.importorskip(name)`."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # pytest's collector probes __test__, _pytestfixturefunction...
            raise AttributeError(attr)
        return getattr(pytest.importorskip(self._name), attr)
