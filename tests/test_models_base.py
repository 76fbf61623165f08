"""LanguageModel.from_checkpoint refuses weights it cannot trust, naming the file and the tensor:
integer or non-finite tensors, and a config.json that disagrees with model.safetensors."""

import json
import math

import pytest
import torch
from saved_models import rewrite_weights, saved_model


@pytest.mark.parametrize("kind", ["int32", "nan", "inf"])
def test_loading_refuses_integer_or_non_finite_weights_naming_file_and_tensor(tmp_path, kind):
    from minillm.models import GPT

    saved_model(tmp_path / "m")
    bad = "blocks.0.mlp.fc.weight" if kind != "int32" else "tok_emb.weight"
    poison = {"int32": lambda v: v.to(torch.int32), "nan": lambda v: v * math.nan,
              "inf": lambda v: v + math.inf}[kind]
    rewrite_weights(tmp_path / "m", lambda k, v: poison(v) if k == bad else v)
    message = "torch.int32" if kind == "int32" else "NaN or infinity"
    with pytest.raises(ValueError, match=message) as err:
        GPT.from_checkpoint(tmp_path / "m")
    assert str(tmp_path / "m" / "model.safetensors") in str(err.value) and bad in str(err.value)


def test_a_folder_whose_config_and_weights_disagree_names_the_file_and_says_re_save(tmp_path):
    from minillm.models import GPT

    saved_model(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**config, "d_model": 32}))
    with pytest.raises(ValueError, match="shapes") as err:
        GPT.from_checkpoint(tmp_path / "m")
    message = str(err.value)
    assert str(tmp_path / "m" / "model.safetensors") in message and "re-save" in message
    assert "from_checkpoint" not in message  # the call that just failed is no fix
