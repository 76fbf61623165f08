"""A tiny saved GPT (with or without its tokenizer) and a way to rewrite its weights, for the
tests of loading checkpoints and of the generate command.

    from saved_models import rewrite_weights, saved_model
"""

import torch


def saved_model(folder, vocab_size=257, tokenizer=None):
    from minillm.models import GPT, GPTConfig
    from minillm.tokenizers import ByteTokenizer

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, context_length=32, d_model=16, n_layer=1,
                          n_head=2))
    extra = {"tokenizer.json": (tokenizer or ByteTokenizer()).to_dict()} \
        if tokenizer is not False else None
    model.save(folder, extra_files=extra)
    return model


def rewrite_weights(folder, change):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    save_file({k: change(k, v) for k, v in tensors.items()}, str(folder / "model.safetensors"))
