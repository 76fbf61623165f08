"""minillm.io: JSON files stay strict JSON, and nothing in the package unpickles."""

import json
import math

import pytest


def test_json_files_never_hold_nan(tmp_path):
    from minillm.io import atomic_write_json

    def strict(text):  # what jq and browsers accept: no NaN / Infinity
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON: {c}"))

    atomic_write_json(tmp_path / "x.json", {"loss": math.nan, "h": [math.inf, 1.5, (-math.inf,)]})
    assert strict((tmp_path / "x.json").read_text()) == {"loss": None, "h": [None, 1.5, [None]]}


def test_the_package_never_unpickles():
    """No module imports pickle (or its relatives), and every torch.load passes
    weights_only=True (torch's restricted loader: tensors and plain containers only).

    One exception: minillm/distributed/dcp.py reads torch.distributed.checkpoint's `.metadata`,
    a pickle torch writes, with a `pickle.Unpickler` whose `find_class` allows only DCP's own
    classes (torch's weights-only unpickler cannot read its protocol-4 frames); that it refuses
    anything else is tested in test_parallelize.py."""
    import ast
    from pathlib import Path

    import minillm
    from minillm.distributed import dcp

    unsafe_modules = {"pickle", "cPickle", "dill", "joblib", "shelve", "marshal"}
    allow_listed = Path(dcp.__file__)
    assert "find_class" in vars(dcp._AllowListUnpickler)  # its one unpickler is restricted
    loads = 0
    for path in Path(minillm.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and path != allow_listed:
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {n.split(".")[0] for n in names} & unsafe_modules, path
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                loads += 1
                assert any(k.arg == "weights_only" and ast.unparse(k.value) == "True"
                           for k in node.keywords), f"{path}: {ast.unparse(node)}"
            if isinstance(node, ast.Attribute) and node.attr in ("load", "loads") and \
                    ast.unparse(node.value) in ("numpy", "np"):
                pytest.fail(f"{path}: {ast.unparse(node)} can unpickle (allow_pickle)")
    assert loads >= 1  # the trainer state's loader was found and checked


def test_a_missing_tokenizer_folder_is_called_a_tokenizer_folder(tmp_path):
    from minillm.io import CheckpointError
    from minillm.tokenizers import load_tokenizer_folder

    with pytest.raises(CheckpointError) as missing:
        load_tokenizer_folder(tmp_path / "nope")
    assert str(missing.value) == \
        f"tokenizer folder {tmp_path / 'nope'} does not exist; check the path"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError,
                       match="is missing: a tokenizer folder needs tokenizer.json"):
        load_tokenizer_folder(tmp_path / "empty")
