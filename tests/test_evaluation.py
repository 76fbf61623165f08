"""minillm.evaluation's lm-eval backend: parity with lm-eval's own Hugging Face backend on the
same model exported to GPT-2, with the course's scorer and with minillm's greedy decoding; the
course's local tasks; `minillm eval`.

Offline: HF_DATASETS_OFFLINE / HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set before lm-eval is
imported (once, for the module: importing it is slow).
"""

from __future__ import annotations

import json
import math
import os
import sys

import pytest
import torch

for _name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")

lm_eval = pytest.importorskip("lm_eval")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from minillm.evaluation.lm_eval_backend import MiniLLMLM, stop_at  # noqa: E402
from minillm.evaluation.run import EvalConfig, require_lm_eval, run_eval, tasks_dir  # noqa: E402
from minillm.generation import generate  # noqa: E402
from minillm.models import GPT, GPTConfig  # noqa: E402
from minillm.tokenizers import ByteTokenizer  # noqa: E402
from minillm.training import lm_nll_bits, text_bits_per_byte  # noqa: E402

CONTEXT = 64


def _tiny_gpt(seed: int = 0, context_length: int = CONTEXT) -> GPT:
    torch.manual_seed(seed)
    # a large init makes the random model's distributions peaked, so choices differ clearly
    return GPT(GPTConfig(vocab_size=257, context_length=context_length, d_model=32, n_layer=2,
                         n_head=2, d_ff=64, init_std=0.3)).eval()


def _hf_byte_tokenizer():
    """A Hugging Face fast tokenizer that gives ByteTokenizer's ids: byte-level pre-tokenizing
    (each byte one symbol), a BPE with no merges whose vocabulary maps byte b's symbol to b,
    and <|endoftext|> = 256 as BOS/EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    # GPT-2's byte-level symbols: printable Latin-1 bytes stand for themselves, the other
    # bytes take the code points 256, 257, ... in byte order
    shown = set(range(ord("!"), ord("~") + 1)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    hidden = [b for b in range(256) if b not in shown]
    table = {chr(b) if b in shown else chr(256 + hidden.index(b)): b for b in range(256)}
    assert set(table) == set(pre_tokenizers.ByteLevel.alphabet())
    vocab = dict(table) | {"<|endoftext|>": 256}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(["<|endoftext|>"])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def pair():
    """(minillm backend, lm-eval's HF backend) over the same weights and the same token ids."""
    model = _tiny_gpt()
    hf_model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**model.hf_gpt2_config()))
    hf_model.load_state_dict(model.to_hf_gpt2_state_dict(), strict=False)
    hf_model.eval()
    hf = HFLM(pretrained=hf_model, tokenizer=_hf_byte_tokenizer(), batch_size=4,
              max_length=CONTEXT, device="cpu")
    ours = MiniLLMLM(model=model, tokenizer=ByteTokenizer(), batch_size=3, device="cpu")
    return ours, hf


@pytest.fixture(scope="module")
def manager():
    return TaskManager(include_path=str(tasks_dir()), include_defaults=False)  # (fast)


def _requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def test_hf_tokenizer_gives_byte_tokenizer_ids():
    hf, ours = _hf_byte_tokenizer(), ByteTokenizer()
    for text in ["ROMEO. What light", "  two  spaces\nand é, ü, 風", "<|endoftext|>x"]:
        assert hf.encode(text, add_special_tokens=False) == ours.encode(
            text, allowed_special="all")
        assert hf.decode(ours.encode(text, allowed_special="all")) == text


def test_loglikelihood_matches_hf_backend_and_formula(pair):
    ours, hf = pair
    long = "Now is the winter of our discontent made glorious summer " * 3  # > the context
    args = [("ROMEO. What light", " through yonder"), ("", "Juliet"), ("a", "b"),
            (long, " by this sun of York"), ("Who says it?\nAnswer:", " SIR TOBY")]
    got = ours.loglikelihood(_requests("loglikelihood", args))
    ref = hf.loglikelihood(_requests("loglikelihood", args))
    for (lp, greedy), (hlp, hgreedy) in zip(got, ref, strict=True):
        assert lp == pytest.approx(hlp, abs=1e-4)
        assert greedy == hgreedy
    # the first pair by hand: sum of log softmax at the continuation's positions
    ids = list(b"ROMEO. What light through yonder")
    logp = torch.log_softmax(ours.model(torch.tensor([ids[:-1]])).logits[0], -1)
    n = len(" through yonder")
    direct = sum(logp[len(ids) - 1 - n + i, ids[len(ids) - n + i]].item() for i in range(n))
    assert got[0][0] == pytest.approx(direct, abs=1e-4)


def test_is_greedy_true_exactly_for_the_argmax_continuation(pair):
    ours, _ = pair
    # a context whose 3 greedy bytes are printable ASCII (so the request can be text)
    for word in ("To be, or not", "ROMEO.", "JULIET.", "Hamlet", "a", "b", "c", "d", "e"):
        ids = generate(ours.model, torch.tensor([list(word.encode())]), 3, do_sample=False)
        greedy = ids[0, -3:].tolist()
        if all(32 <= t < 127 for t in greedy):
            break
    else:
        raise AssertionError("no context with an ASCII greedy continuation")
    greedy_text = bytes(greedy).decode("ascii")
    other = greedy_text[:-1] + ("A" if greedy_text[-1] != "A" else "B")  # last token off
    (lp, yes), (lp_other, no) = ours.loglikelihood(_requests(
        "loglikelihood", [(word, greedy_text), (word, other)]))
    assert yes is True
    assert no is False
    assert lp > lp_other  # the same prefix, then the argmax token vs another


def test_rolling_equals_the_course_scorer_with_disjoint_windows(pair):
    ours, hf = pair
    texts = ["Friends, Romans, countrymen, lend me your ears; " * 4, "short", "x" * CONTEXT]
    got = ours.loglikelihood_rolling(_requests("loglikelihood_rolling", [(t,) for t in texts]))
    ref = hf.loglikelihood_rolling(_requests("loglikelihood_rolling", [(t,) for t in texts]))
    tok = ByteTokenizer()
    for text, value, hvalue in zip(texts, got, ref, strict=True):
        assert value == pytest.approx(hvalue, abs=1e-4)
        # lm-eval's windows are lm_nll_bits's with stride = the context (consecutive windows)
        bits = lm_nll_bits(ours.model, tok.encode(text), tok.eot_id, CONTEXT, CONTEXT)
        assert value == pytest.approx(-bits * math.log(2), abs=1e-4)
        bpb = text_bits_per_byte(ours.model, text, tok, stride=CONTEXT)
        assert value == pytest.approx(-bpb * len(text.encode()) * math.log(2), abs=1e-4)
    # the course's default (half-context stride) sees more context: a different number
    long = texts[0]
    assert text_bits_per_byte(ours.model, long, tok) * len(long) * math.log(2) != \
        pytest.approx(-got[0], abs=1e-3)


def test_generate_until_is_greedy_decoding_cut_at_the_stop(pair):
    ours, hf = pair
    prompts = ["ROMEO.", "JULIET. O Romeo, Romeo", "a much longer prompt than the others, "
               "left-padded in its batch", ""]
    args = [(p, {"until": [stop], "max_gen_toks": 12, "do_sample": False})
            for p in prompts for stop in ("e", "\n\n", "zz")]
    got = ours.generate_until(_requests("generate_until", args))
    tok = ByteTokenizer()
    for (prompt, kwargs), text in zip(args, got, strict=True):
        # the context keeps its last context - max_gen_toks tokens (lm-eval's HF backend too)
        ids = torch.tensor([(tok.encode(prompt) or [tok.eot_id])[-(CONTEXT - 12):]])
        alone = generate(ours.model, ids, 12, do_sample=False, eos_token_id=tok.eot_id)
        expected = stop_at(tok.decode(alone[0, ids.size(1):].tolist()),
                           kwargs["until"] + ["<|endoftext|>"])
        assert text == expected
    hf_got = hf.generate_until(_requests("generate_until", args[:6]))
    assert got[:6] == hf_got


def test_task_scores_match_hf_backend(pair, manager):
    ours, hf = pair
    tasks = ["shakespeare_speaker_mc", "shakespeare_play_mc"]
    runs = [simple_evaluate(model=lm, tasks=tasks, limit=6, task_manager=manager,
                            log_samples=True, bootstrap_iters=0) for lm in (ours, hf)]
    for task in tasks:
        mine, theirs = (r["samples"][task] for r in runs)
        assert len(mine) == len(theirs) == 6
        for a, b in zip(mine, theirs, strict=True):
            for (lp, greedy), (hlp, hgreedy) in zip(a["filtered_resps"], b["filtered_resps"],
                                                    strict=True):
                assert float(lp) == pytest.approx(float(hlp), abs=1e-4)
                assert greedy == hgreedy
            assert a["acc"] == b["acc"]
            assert a["acc_norm"] == b["acc_norm"]
        for metric in ("acc,none", "acc_norm,none"):
            assert runs[0]["results"][task][metric] == runs[1]["results"][task][metric]


def test_exact_match_task_answers_as_the_chat_scorer(manager):
    """shakespeare_sft_exact through lm-eval gives the answers minillm's own SFT decoding
    (`decode_answers` on `ChatTemplate.encode`'s prompt, greedy, stopping at <|end|> and, as
    lm-eval adds it, <|endoftext|>) gives, and the exact match of those answers."""
    from minillm.alignment.chat import ChatTemplate
    from minillm.alignment.recipe import prepare_chat_model
    from minillm.alignment.sft import decode_answers
    from minillm.data.sft import VERIFIABLE_TASKS, load_sft

    model, tok = prepare_chat_model(_tiny_gpt(seed=1, context_length=256),
                                    ByteTokenizer())  # (room for the prompts and 56 tokens)
    lm = MiniLLMLM(model=model, tokenizer=tok, batch_size=4, device="cpu")
    out = simple_evaluate(model=lm, tasks=["shakespeare_sft_exact"], limit=5,
                          task_manager=manager, log_samples=True, bootstrap_iters=0)
    samples = out["samples"]["shakespeare_sft_exact"]
    test = [e for e in load_sft("test", heldout=False) if e.task in VERIFIABLE_TASKS][:5]
    template = ChatTemplate()
    prompts = [template.encode(tok, e.prompt)[0] for e in test]
    answers = decode_answers(model, tok, prompts, [template.stop_id(tok), tok.eot_id], 56)
    assert [s["doc"]["prompt"] for s in samples] == [e.prompt for e in test]
    assert [s["arguments"][0][0] for s in samples] == [
        template.render(e.prompt) for e in test]
    assert [s["filtered_resps"][0].strip() for s in samples] == answers
    expected = sum(a == e.response for a, e in zip(answers, test, strict=True)) / 5
    assert out["results"]["shakespeare_sft_exact"]["exact_match,none"] == expected


def test_minillm_eval_command(tmp_path, monkeypatch, capsys):
    from minillm.cli import main

    folder = tmp_path / "tiny"
    _tiny_gpt(seed=2).save(folder, extra_files={"tokenizer.json": ByteTokenizer().to_dict()})
    out = tmp_path / "results.json"
    monkeypatch.chdir(tmp_path)  # the tasks load from any working directory
    code = main(["eval", "--checkpoint", str(folder), "--tasks", "shakespeare_speaker_mc",
                 "--limit", "4", "--batch-size", "2", "--output-path", str(out)])
    assert code == 0
    results = json.loads(out.read_text())["results"]["shakespeare_speaker_mc"]
    assert 0 <= results["acc,none"] <= 1
    # stderr of a mean of 0/1 scores, as lm-eval computes it: sqrt(p(1-p)/(n-1))
    p = results["acc,none"]
    assert results["acc_stderr,none"] == pytest.approx(math.sqrt(p * (1 - p) / 3))
    assert "shakespeare_speaker_mc" in capsys.readouterr().out
    # a task nobody knows: a clear error naming the course's tasks
    code = main(["eval", "--checkpoint", str(folder), "--tasks", "no_such_task"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no_such_task" in err
    assert "shakespeare_speaker_mc" in err


def test_checkpoint_by_folder_matches_model_object(tmp_path):
    model = _tiny_gpt(seed=3)
    model.save(tmp_path / "m")
    from_folder = MiniLLMLM(checkpoint=str(tmp_path / "m"), device="cpu")
    from_object = MiniLLMLM(model=model, tokenizer=ByteTokenizer(), device="cpu")
    req = _requests("loglikelihood", [("Good morrow", ", cousin")])
    assert from_folder.loglikelihood(req) == from_object.loglikelihood(req)
    with pytest.raises(ValueError, match="no model folder"):
        MiniLLMLM(checkpoint=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="exactly one of"):
        MiniLLMLM()
    with pytest.raises(ValueError, match="max_length"):
        MiniLLMLM(model=model, tokenizer=ByteTokenizer(), max_length=CONTEXT + 1)
    with pytest.raises(ValueError, match="no room"):
        from_object.generate_until(_requests("generate_until",
                                             [("x", {"until": ["\n"], "max_gen_toks": CONTEXT})]))


def test_registered_under_minillm_for_lm_eval():
    from lm_eval.api.registry import get_model

    assert get_model("minillm") is MiniLLMLM


def test_missing_lm_eval_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(ImportError, match="pip install lm-eval"):
        require_lm_eval()
    with pytest.raises(ImportError, match="pip install lm-eval"):
        run_eval(EvalConfig(checkpoint="x", tasks="shakespeare_speaker_mc"))


def test_eval_config_rejects_bad_values():
    with pytest.raises(ValueError, match="names no task"):
        EvalConfig(checkpoint="x", tasks=" , ")
    with pytest.raises(ValueError, match="limit=0"):
        EvalConfig(checkpoint="x", tasks="a", limit=0)
    with pytest.raises(ValueError, match="batch_size=0"):
        EvalConfig(checkpoint="x", tasks="a", batch_size=0)


def test_task_data_is_what_make_tasks_writes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_tasks", tasks_dir() / "make_tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0


def test_generation_task_scores_match_hf_backend(pair, manager):
    """shakespeare_speaker_gen (the speaker task answered by generation) gives the same answers
    and exact match through lm-eval's HF backend."""
    ours, hf = pair
    # the export's end of text is <|endoftext|> = 256 (GPT2Config's default eos is 50256):
    # both backends then stop there
    saved = hf.model.generation_config.eos_token_id
    hf.model.generation_config.eos_token_id = ByteTokenizer().eot_id
    runs = [simple_evaluate(model=lm, tasks=["shakespeare_speaker_gen"], limit=4,
                            task_manager=manager, log_samples=True, bootstrap_iters=0)
            for lm in (ours, hf)]
    hf.model.generation_config.eos_token_id = saved
    mine, theirs = (r["samples"]["shakespeare_speaker_gen"] for r in runs)
    assert [s["filtered_resps"] for s in mine] == [s["filtered_resps"] for s in theirs]
    assert [s["target"] for s in mine] == [s["doc"]["choices"][s["doc"]["gold"]] for s in mine]
    assert runs[0]["results"]["shakespeare_speaker_gen"]["exact_match,none"] == \
        runs[1]["results"]["shakespeare_speaker_gen"]["exact_match,none"]


def test_models_without_a_mask_generate_each_length_unpadded():
    """An RNN LM takes no attention mask: prompts of different lengths in one request batch
    decode as they do alone."""
    from minillm.models.neural import RNNLM, RNNLMConfig

    torch.manual_seed(0)
    rnn = RNNLM(RNNLMConfig(vocab_size=257, context_length=64, cell="lstm")).eval()
    lm = MiniLLMLM(model=rnn, tokenizer=ByteTokenizer(), batch_size=8, device="cpu")
    prompts = ["ROMEO.", "JULIET. O Romeo", "KING.", "a longer prompt here"]
    args = [(p, {"until": ["zz"], "max_gen_toks": 6, "do_sample": False}) for p in prompts]
    together = lm.generate_until(_requests("generate_until", args))
    alone = [lm.generate_until(_requests("generate_until", [a]))[0] for a in args]
    assert together == alone
    tok = ByteTokenizer()
    ids = torch.tensor([tok.encode(prompts[1])])
    direct = generate(rnn, ids, 6, do_sample=False, eos_token_id=tok.eot_id)
    assert together[1] == tok.decode(direct[0, ids.size(1):].tolist())


def test_lm_eval_cli_with_model_minillm(tmp_path, monkeypatch, capsys):
    """`python -m minillm.evaluation.lm_eval_cli --model minillm ...`: lm-eval's own CLI (its
    argument parser, task loading and result files) with the minillm model registered and the
    course's tasks found without --include_path; the scores equal `run_eval`'s."""
    from minillm.evaluation import lm_eval_cli

    folder = tmp_path / "tiny"
    _tiny_gpt(seed=4).save(folder, extra_files={"tokenizer.json": ByteTokenizer().to_dict()})
    monkeypatch.chdir(tmp_path)
    lm_eval_cli.main(["--model", "minillm", "--model_args", f"checkpoint={folder}",
                      "--tasks", "shakespeare_speaker_mc", "--limit", "4", "--batch_size", "2",
                      "--device", "cpu", "--output_path", str(tmp_path / "out")])
    assert "shakespeare_speaker_mc" in capsys.readouterr().out
    files = list((tmp_path / "out").rglob("results_*.json"))
    assert len(files) == 1
    got = json.loads(files[0].read_text())["results"]["shakespeare_speaker_mc"]
    ref = run_eval(EvalConfig(checkpoint=str(folder), tasks="shakespeare_speaker_mc", limit=4,
                              batch_size=2, device="cpu"))["results"]["shakespeare_speaker_mc"]
    for key in ("acc,none", "acc_norm,none"):
        assert got[key] == ref[key]
    assert sys.argv[0] != "lm_eval"  # restored
