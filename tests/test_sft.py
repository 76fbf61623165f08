"""SFT (minillm.alignment): template, new tokens, masked loss, padding vs packing, evaluation."""

import pytest
import torch

from minillm.alignment import ChatTemplate, SFTBatches, sft_loss_fn
from minillm.alignment.chat import CHAT_TOKENS, add_special_tokens, resize_token_embeddings
from minillm.alignment.sft import (
    block_diagonal_mask,
    decode_answers,
    exact_match_by_task,
    pack_batch,
    pad_batch,
    plain_prompt,
    tokenize_example,
)
from minillm.models import GPT, GPTConfig
from minillm.tokenizers import BPETokenizer, ByteTokenizer

EXAMPLES = [("Upper-case the line: Good morrow.", "GOOD MORROW."),
            ("What is 3 + 4?", "7"),
            ("Count the words: To be, or not to be", "6"),
            ("Continue this speech: Friends, Romans, countrymen,", "lend me your ears;"),
            ("Reverse the order of the words: all is well", "well is all")]


@pytest.fixture(scope="module")
def tok():
    return add_special_tokens(ByteTokenizer())


def small_gpt(vocab, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab, context_length=128, d_model=32, n_layer=2, n_head=2)
    return GPT(GPTConfig(**(cfg | kw))).eval()


def seqs(tok, train_on_prompt=False):
    return [tokenize_example(tok, ChatTemplate(), p, r, 128, train_on_prompt) for p, r in EXAMPLES]


# ---- template and tokens -------------------------------------------------------------------
@pytest.mark.parametrize("prompt,response", EXAMPLES + [
    ("ünïcode prompt — with <|end|> typed as text", "a response with <|user|> in it")])
def test_template_round_trips(tok, prompt, response):
    t = ChatTemplate()
    ids, n_prompt = t.encode(tok, prompt, response)
    text = tok.decode(ids)
    assert text == t.render(prompt, response)
    assert t.parse(text) == (prompt, response)
    assert tok.decode(ids[:n_prompt]) == t.render(prompt)
    # only the template's four markers are special ids: typed markers stay text
    assert sum(i >= 256 for i in ids) == 4
    assert ids[-1] == t.stop_id(tok) == tok.special_tokens["<|end|>"]


def test_new_tokens_get_new_ids_in_byte_and_bpe_tokenizers():
    byte = add_special_tokens(ByteTokenizer())
    assert [byte.special_tokens[t] for t in CHAT_TOKENS] == [257, 258, 259]
    assert byte.vocab_size == 260 and add_special_tokens(byte).special_tokens == byte.special_tokens
    assert ByteTokenizer.from_dict(byte.to_dict()).special_tokens == byte.special_tokens
    bpe = BPETokenizer.train("to be or not to be, that is the question " * 20, vocab_size=300)
    grown = add_special_tokens(bpe)
    n = bpe.vocab_size  # (training may stop before 300: the text has few pairs)
    assert [grown.special_tokens[t] for t in CHAT_TOKENS] == [n, n + 1, n + 2]
    assert grown.encode("to be") == bpe.encode("to be")
    assert BPETokenizer.from_dict(grown.to_dict()).special_tokens == grown.special_tokens
    ids, _ = ChatTemplate().encode(grown, "to be", "or not")
    assert grown.decode(ids) == "<|user|>to be<|end|><|assistant|>or not<|end|>"


@pytest.mark.parametrize("tied", [True, False])
def test_growing_the_vocabulary_leaves_old_logits_unchanged(tied):
    model = small_gpt(257, tie_embeddings=tied)
    x = torch.randint(0, 257, (3, 20))
    before = model(x).logits
    old_emb = model.tok_emb.weight.detach().clone()
    resize_token_embeddings(model, 260)
    after = model(x).logits
    assert after.shape == (3, 20, 260) and model.config.vocab_size == 260
    torch.testing.assert_close(after[..., :257], before, rtol=0, atol=0)
    new = model.tok_emb.weight[257:]
    torch.testing.assert_close(new, old_emb.mean(0).expand(3, -1))
    assert (model.lm_head.weight is model.tok_emb.weight) == tied
    # the new tokens are embeddable and trainable
    model(torch.tensor([[257, 258, 259]])).logits.sum().backward()
    assert model.tok_emb.weight.grad[257:].abs().sum() > 0


def test_bad_inputs_give_clear_errors(tok):
    with pytest.raises(ValueError, match="without a response"):
        ChatTemplate(format="<|user|>{prompt}<|end|><|assistant|>")
    with pytest.raises(ValueError, match="stop token"):
        ChatTemplate(format="<|user|>{prompt}<|assistant|>{response}")
    with pytest.raises(ValueError, match="add_special_tokens"):
        ChatTemplate().encode(ByteTokenizer(), "hi", "there")
    with pytest.raises(ValueError, match="unknown special tokens"):
        tok.encode("<|system|>", allowed_special=["<|system|>"])
    with pytest.raises(ValueError, match="context_length"):
        tokenize_example(tok, ChatTemplate(), "a" * 200, "b", context_length=128)
    with pytest.raises(ValueError, match="empty"):
        tokenize_example(tok, ChatTemplate(), "hello", "", context_length=128)
    with pytest.raises(ValueError, match="shrinking"):
        resize_token_embeddings(small_gpt(260), 257)


# ---- the loss ------------------------------------------------------------------------------
def test_labels_mask_exactly_the_prompt(tok):
    t = ChatTemplate()
    for (prompt, response), (x, y) in zip(EXAMPLES, seqs(tok), strict=True):
        ids, n_prompt = t.encode(tok, prompt, response)
        assert x == ids[:-1] and len(y) == len(x)
        assert y[: n_prompt - 1] == [-100] * (n_prompt - 1)
        assert y[n_prompt - 1:] == ids[n_prompt:]  # the response and <|end|> are learned
        assert tok.decode(ids[n_prompt:]) == response + "<|end|>"
    x, y = tokenize_example(tok, t, *EXAMPLES[0], 128, train_on_prompt=True)
    assert -100 not in y


def test_masked_loss_equals_transformers_gpt2_loss_with_ignored_labels(tok):
    """Independent reference: Hugging Face's GPT2LMHeadModel, which shifts the labels itself."""
    transformers = pytest.importorskip("transformers")
    model = small_gpt(tok.vocab_size, seed=1)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**model.hf_gpt2_config())).eval()
    assert not any(hf.load_state_dict(model.to_hf_gpt2_state_dict(), strict=False))
    t = ChatTemplate()
    for prompt, response in EXAMPLES:
        ids, n_prompt = t.encode(tok, prompt, response)
        hf_labels = torch.tensor([[-100] * n_prompt + ids[n_prompt:]])
        with torch.no_grad():
            ref = hf(torch.tensor([ids]), labels=hf_labels).loss
            x, y = tokenize_example(tok, t, prompt, response, 128)
            ours = model(torch.tensor([x]), torch.tensor([y])).loss
        assert abs(ours.item() - ref.item()) < 1e-6


def test_padded_and_packed_batches_give_the_same_loss_and_gradients(tok):
    model = small_gpt(tok.vocab_size, seed=2)
    s = seqs(tok)
    padded, packed = pad_batch(s), pack_batch(s, 128)
    assert packed["input_ids"].size(0) < padded["input_ids"].size(0)  # packing saves rows
    assert (packed["labels"] != -100).sum() == (padded["labels"] != -100).sum()
    losses, grads = [], []
    for batch in (padded, packed):
        model.zero_grad()
        loss, metrics = sft_loss_fn(model, batch)
        loss.backward()
        losses.append(loss.item())
        grads.append(model.tok_emb.weight.grad.clone())
    assert abs(losses[0] - losses[1]) < 1e-6
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    # the padded loss is the mean of the per-example response losses, token-weighted
    total = sum(model(torch.tensor([x]), torch.tensor([y])).loss.item() * sum(v != -100 for v in y)
                for x, y in s)
    assert abs(total / sum(sum(v != -100 for v in y) for _, y in s) - losses[0]) < 1e-5


def test_packed_examples_do_not_see_each_other(tok):
    model = small_gpt(tok.vocab_size, seed=3)
    s = seqs(tok)[:2]
    batch = pack_batch(s, 128)
    assert batch["input_ids"].size(0) == 1
    other = list(s[0][0])
    other[:5] = [1, 2, 3, 4, 5]  # change the first example only
    changed = pack_batch([(other, s[0][1]), s[1]], 128)
    out = [model(b["input_ids"], attention_mask=b["attention_mask"],
                 position_ids=b["position_ids"]).logits for b in (batch, changed)]
    n0 = len(s[0][0])
    n1 = len(s[1][0])
    torch.testing.assert_close(out[0][0, n0:n0 + n1], out[1][0, n0:n0 + n1], rtol=0, atol=0)
    alone = model(torch.tensor([s[1][0]])).logits
    torch.testing.assert_close(out[0][0, n0:n0 + n1], alone[0], rtol=1e-5, atol=1e-5)
    mask = block_diagonal_mask(torch.tensor([[0, 0, 1, -1]]))[0, 0]
    assert mask.tolist() == [[True, False, False, False], [True, True, False, False],
                             [False, False, True, False], [False, False, False, True]]
    with pytest.raises(ValueError, match="4-D attention_mask"):
        model(batch["input_ids"], attention_mask=batch["attention_mask"].float())


# ---- the batch source ----------------------------------------------------------------------
@pytest.mark.parametrize("packing", [False, True])
def test_batches_cover_an_epoch_and_resume_exactly(tok, packing):
    s = seqs(tok) * 8
    src = SFTBatches(s, s[:5], batch_size=4, seq_len=128, packing=packing, seed=0)
    seen = 0
    while src.epoch <= 1 and seen < 10_000:
        batch = src.next_batch()
        assert batch["input_ids"].size(0) <= 4 and batch["input_ids"].size(1) <= 128
        seen += src.tokens_in(batch)
    state = src.state_dict()
    a = [src.next_batch() for _ in range(3)]
    again = SFTBatches(s, s[:5], batch_size=4, seq_len=128, packing=packing, seed=99)
    again.load_state_dict(state)
    b = [again.next_batch() for _ in range(3)]
    for x, y in zip(a, b, strict=True):
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert src.next_batch("val")["input_ids"].numel() > 0
    # one epoch serves every example exactly once (padded: count the rows)
    if not packing:
        fresh = SFTBatches(s, None, batch_size=5, seq_len=128, packing=False, seed=1)
        rows = torch.cat([fresh.next_batch()["input_ids"][:, :3] for _ in range(8)])
        assert sorted(map(tuple, rows.tolist())) == sorted(tuple(x[:3]) for x, _ in s)


def test_two_ranks_split_the_global_batch(tok):
    s = seqs(tok) * 4
    whole = SFTBatches(s, None, batch_size=4, seq_len=128, packing=False, seed=0).next_batch()
    parts = [SFTBatches(s, None, batch_size=2, seq_len=128, packing=False, seed=0, rank=r,
                        world_size=2).next_batch() for r in (0, 1)]
    assert torch.equal(torch.cat([p["input_ids"] for p in parts]), whole["input_ids"])
    with pytest.raises(ValueError, match="longer than seq_len"):
        SFTBatches(s, None, batch_size=2, seq_len=10)


# ---- evaluation ----------------------------------------------------------------------------
def test_decode_answers_is_greedy_decoding_until_the_stop_token(tok):
    model = small_gpt(tok.vocab_size, seed=4)
    t = ChatTemplate()
    stop = t.stop_id(tok)
    prompts = [t.encode(tok, p)[0] for p, _ in EXAMPLES]
    answers = decode_answers(model, tok, prompts, [stop], max_new_tokens=12, batch_size=2)
    for ids, answer in zip(prompts, answers, strict=True):  # reference: one at a time, no cache
        seq = list(ids)
        for _ in range(12):
            nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            if nxt == stop:
                break
            seq.append(nxt)
        assert answer == tok.decode(seq[len(ids):]).strip()


def test_decode_answers_cuts_a_long_prompt_to_leave_room_for_the_answer(tok):
    model = small_gpt(tok.vocab_size, seed=5)
    ctx = model.config.context_length
    stop = ChatTemplate().stop_id(tok)
    long = [tok.encode("To be, or not to be, that is the question. " * 40)]
    assert len(long[0]) > ctx
    answer = decode_answers(model, tok, long, [stop], max_new_tokens=10)[0]
    seq = long[0][-(ctx - 10):]  # reference: the prompt's last ctx - 10 tokens, no cache
    for _ in range(10):
        nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
        if nxt == stop:
            break
        seq.append(nxt)
    assert len(seq) <= ctx
    assert answer == tok.decode(seq[ctx - 10:]).strip()
    with pytest.raises(ValueError, match="leaves no room"):
        decode_answers(model, tok, long, [stop], max_new_tokens=ctx)


def test_exact_match_by_task_and_plain_prompt():
    scores = exact_match_by_task(["a", "a", "b"], ["7 ", "8", "X"], ["7", "7", "X"])
    assert scores == {"a": 0.5, "b": 1.0, "mean": 0.75}
    assert plain_prompt("Q?", [("A?", "1")]) == "A?\nAnswer: 1\n\nQ?\nAnswer: "


# ---- through the Trainer -------------------------------------------------------------------
def test_the_trainer_runs_sft_with_its_own_loop_and_resumes_exactly(tok, tmp_path):
    from minillm.training import TrainConfig, Trainer

    s = seqs(tok) * 4
    cfg = dict(max_steps=8, batch_size=2, lr=3e-3, warmup_steps=0, eval_interval=4,
               eval_batches=2, log_interval=2, device="cpu", checkpoint_interval=4)

    def trainer(out):
        model = small_gpt(tok.vocab_size, seed=5)
        batches = SFTBatches(s, s[:5], batch_size=2, seq_len=128, packing=True, seed=0)
        return Trainer(model, config=TrainConfig(**cfg, out_dir=str(out)),
                       batches=batches, loss_fn=sft_loss_fn, tokenizer=tok.to_dict())

    full = trainer(tmp_path / "a")
    full.fit()
    assert full.history[-1]["loss"] < full.history[0]["loss"]
    assert full.history[0]["response_tokens"] > 0 and len(full.eval_history) == 2
    assert 0 < full.tokens <= 8 * 2 * 128
    resumed = trainer(tmp_path / "b")  # from the full run's step-4 checkpoint
    assert resumed.resume(tmp_path / "a" / "checkpoints" / "step_000004")
    assert resumed.step == 4
    resumed.fit()
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.tokens == full.tokens


# ---- plain text mixed in -------------------------------------------------------------------
def mixed_source(tok, text_rows, seed=0):
    from minillm.alignment.mixing import MixedBatches

    text = torch.randint(0, 256, (2000,), generator=torch.Generator().manual_seed(7))
    sft = SFTBatches(seqs(tok) * 4, seqs(tok), batch_size=2, seq_len=128, packing=True, seed=0)
    return MixedBatches(sft, text, text_rows, seed=seed), text


def test_mixed_loss_is_the_sft_loss_plus_the_plain_lm_loss_of_the_text_rows(tok):
    from minillm.alignment.mixing import mixed_loss_fn

    model = small_gpt(tok.vocab_size, seed=6)
    src, text = mixed_source(tok, text_rows=2)
    batch = src.next_batch()
    assert batch["input_ids"].shape == (4, 128) and batch["text_rows"].tolist() == [0, 0, 1, 1]
    loss, metrics = mixed_loss_fn(0.5)(model, batch)
    sft_only = {k: v[:2] for k, v in batch.items()}
    sft_loss, _ = sft_loss_fn(model, sft_only)
    # the text rows are plain causal LM windows of the corpus: the model's own LM loss
    x, y = batch["input_ids"][2:], batch["labels"][2:]
    assert all(any(torch.equal(row, text[s:s + 128]) for s in range(text.numel() - 128))
               for row in x)
    text_loss = model(x, y).loss
    assert abs(metrics["lm_loss"] - sft_loss.item()) < 1e-5
    assert abs(metrics["text_loss"] - text_loss.item()) < 1e-5
    assert abs(loss.item() - (sft_loss.item() + 0.5 * text_loss.item())) < 1e-5
    # without text rows (and on validation) it is exactly sft_loss_fn
    plain, _ = mixed_source(tok, text_rows=0)
    b0 = plain.next_batch()
    torch.testing.assert_close(mixed_loss_fn()(model, b0)[0], sft_loss_fn(model, b0)[0])
    assert not src.next_batch("val")["text_rows"].any()
    assert src.tokens_in(batch) == int((batch["document_ids"] >= 0).sum())


def test_mixed_batches_resume_exactly_and_refuse_padding(tok):
    from minillm.alignment.mixing import MixedBatches

    src, text = mixed_source(tok, text_rows=2)
    src.next_batch()
    state = src.state_dict()
    a = [src.next_batch() for _ in range(2)]
    again, _ = mixed_source(tok, text_rows=2, seed=5)
    again.load_state_dict(state)
    b = [again.next_batch() for _ in range(2)]
    for x, y in zip(a, b, strict=True):
        assert all(torch.equal(x[k], y[k]) for k in x)
    padded = SFTBatches(seqs(tok), None, batch_size=2, seq_len=128, packing=False)
    with pytest.raises(ValueError, match="packed"):
        MixedBatches(padded, text, 2)


def test_sft_command_refuses_text_rows_without_packing(tmp_path, capsys):
    from minillm.cli import main

    with pytest.raises(SystemExit) as exited:  # a usage error, before any model is loaded
        main(["sft", "--checkpoint", str(tmp_path / "missing"), "--output-dir",
              str(tmp_path / "out"), "--no-packing", "--text-rows", "2"])
    assert exited.value.code == 2 and "needs --packing" in capsys.readouterr().err
