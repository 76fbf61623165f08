import math
from dataclasses import dataclass, field

import pytest
import torch

from minillm.utils import THREADS_ENV, configure_threads, field_docs


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_configure_threads_sets_the_request_and_the_environment_wins(monkeypatch, restore_threads):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert configure_threads(1) == 1 == torch.get_num_threads()
    before = torch.get_num_threads()
    assert configure_threads(None) == before  # no request: torch's count is kept
    monkeypatch.setenv(THREADS_ENV, "2")
    assert configure_threads(1) == 2 == torch.get_num_threads()


@pytest.mark.parametrize("bad", ["0", "two", "-1", "1.5"])
def test_configure_threads_rejects_a_bad_environment_value(monkeypatch, restore_threads, bad):
    monkeypatch.setenv(THREADS_ENV, bad)
    with pytest.raises(ValueError, match=THREADS_ENV):
        configure_threads(1)


def test_non_finite_config_fields_are_refused():
    from minillm.generation import GenerationConfig
    from minillm.models import GPTConfig

    with pytest.raises(ValueError, match="init_std=inf must be a finite number"):
        GPTConfig(vocab_size=8, context_length=4, d_model=8, n_layer=1, n_head=2,
                  init_std=math.inf)
    with pytest.raises(ValueError, match="temperature=nan must be a finite number"):
        GenerationConfig(temperature=math.nan)
@dataclass
class _Documented:
    width: int = 8                 # columns (C)
    mode: str = "a"                # "a" or "b";
                                   # "b" is slower   (a comment line continuing mode's)
    # a section comment at the fields' indentation belongs to no field
    plain: float = 0.5
    named: int = field(default=1, metadata={"help": "from the metadata"})  # not this
    spread: tuple = field(
        default=(1, 2))            # on the field's last line


def test_field_docs_reads_each_fields_comment_and_its_continuation():
    assert field_docs(_Documented) == {
        "width": "columns (C)",
        "mode": '"a" or "b"; "b" is slower   (a comment line continuing mode\'s)',
        "plain": "",
        "named": "from the metadata",
        "spread": "on the field's last line",
    }


def test_field_docs_of_the_configs_cover_every_field():
    from minillm.generation import GenerationConfig
    from minillm.models import GPTConfig
    from minillm.training import TrainConfig

    for cls in (GPTConfig, TrainConfig, GenerationConfig):
        docs = field_docs(cls)
        assert all(docs.values()), [name for name, text in docs.items() if not text]
    assert field_docs(TrainConfig)["dtype"] == ('autocast dtype: "auto" = bfloat16 on CUDA, else '
                                                 'float32; "float16" adds dynamic loss scaling '
                                                 '(GradScaler)')
