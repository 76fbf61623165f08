"""Neural language models before the Transformer: Bengio's MLP LM and the RNN/GRU/LSTM LM.

MLP LM (Bengio, Ducharme, Vincent & Jauvin 2003, JMLR 3:1137; "A Neural Probabilistic
Language Model"): the n-1 previous tokens are looked up in one shared embedding table C and
concatenated, x = [C(w_{t-n+1}); ...; C(w_{t-1})], then

    y = b + W x + U tanh(d + H x)            P(w_t | context) = softmax(y)

W x are the optional "direct connections" from the embeddings to the output.

RNN LM (Elman 1990; Mikolov et al. 2010, "Recurrent neural network based language model"):
h_t = cell(C(w_t), h_{t-1}), logits_t = V h_t, with cell = tanh RNN, GRU (Cho et al. 2014,
arXiv:1406.1078) or LSTM (Hochreiter & Schmidhuber 1997).

Both follow GPT's contract, so `minillm.training.Trainer` trains them unchanged:
`model.config.context_length`, `model(idx, targets) -> (logits (B, T, V), loss)`,
`write_files` / `load_weights` / `from_checkpoint` for checkpoints.

Departures from the papers:
- the MLP LM predicts at every position of a (B, T) window at once (the first n-2 positions
  see a learned padding embedding where the sequence has no tokens yet), so it trains on the
  same batches as the GPT; Bengio et al. trained one position per example, with SGD;
- the RNN's state is not carried across training windows (truncated BPTT of length T).

`minillm.training.evaluate.text_bits_per_byte(model, text)` scores every model of the course
the same way, these included.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from minillm.models.base import LanguageModel, LMOutput, lm_loss
from minillm.utils import config_from_dict

__all__ = ["MLPLMConfig", "MLPLM", "RNNLMConfig", "RNNLM", "CELLS", "gradient_norm_by_distance"]

CELLS = ("rnn", "gru", "lstm")


def _check_positive(config, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive integer")


class _ConfigDict:
    def to_dict(self) -> dict:
        """The fields as a JSON-able dict (what config.json holds)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Read a config back; unknown fields are an error naming them."""
        return config_from_dict(cls, d, "model config")


@dataclass
class MLPLMConfig(_ConfigDict):
    vocab_size: int = 257        # byte tokenizer: 256 bytes + <|endoftext|>
    context_length: int = 64     # training window T (predictions at each of its positions)
    n_context: int = 8           # n - 1: previous tokens the MLP sees
    d_embed: int = 32            # width of each token's feature vector C(w)
    d_hidden: int = 256          # tanh hidden units (H)
    direct: bool = False         # direct connections W x from the embeddings to the output
    dropout: float = 0.0         # on the hidden layer

    def __post_init__(self) -> None:
        _check_positive(self, ("vocab_size", "context_length", "n_context", "d_embed", "d_hidden"))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")


@dataclass
class RNNLMConfig(_ConfigDict):
    vocab_size: int = 257        # byte tokenizer: 256 bytes + <|endoftext|>
    context_length: int = 128    # training window T (truncated back-propagation length)
    cell: str = "lstm"           # "rnn" (tanh), "gru" or "lstm"
    d_embed: int = 64            # token embedding width
    d_hidden: int = 256          # recurrent state width
    n_layer: int = 1             # stacked recurrent layers
    dropout: float = 0.0         # between layers and before the output layer

    def __post_init__(self) -> None:
        _check_positive(self, ("vocab_size", "context_length", "d_embed", "d_hidden", "n_layer"))
        if self.cell not in CELLS:
            raise ValueError(f"cell={self.cell!r} is not supported; choose one of {CELLS}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")


class _LanguageModel(LanguageModel):
    """The neural LMs' shared pieces on top of the checkpoint contract of `LanguageModel`."""


    def _check_length(self, T: int) -> None:
        if T > self.config.context_length:
            raise ValueError(f"input has {T} tokens but context_length="
                             f"{self.config.context_length}; keep the last context_length tokens")

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def matmul_weights(self) -> int:
        """Weights multiplied per token (the embedding is a lookup, not a matmul)."""
        raise NotImplementedError

    def flops_per_token(self, seq_len: int | None = None, training: bool = True) -> float:
        """FLOPs per token in `GPT.flops_per_token`'s convention: 2 per weight a token is
        multiplied by (`matmul_weights`, the output layer included, the embedding lookup not);
        training is 3x the forward. Neither model attends, so `seq_len` changes nothing."""
        forward = 2 * self.matmul_weights()
        return 3 * forward if training else forward


class MLPLM(_LanguageModel):
    """Bengio et al. (2003): y = b + W x + U tanh(d + H x) over a window of n-1 embeddings."""

    config_class = MLPLMConfig

    def __init__(self, config: MLPLMConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size + 1, c.d_embed)  # last row: "before the start"
        self.hidden = nn.Linear(c.n_context * c.d_embed, c.d_hidden)          # H, d
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.d_hidden, c.vocab_size)                         # U, b
        self.direct = (nn.Linear(c.n_context * c.d_embed, c.vocab_size, bias=False)  # W
                       if c.direct else None)

    def matmul_weights(self) -> int:
        c = self.config
        x = c.n_context * c.d_embed
        return x * c.d_hidden + c.d_hidden * c.vocab_size + (x * c.vocab_size if c.direct else 0)

    def features(self, idx: torch.Tensor) -> torch.Tensor:
        """x at every position: (B, T) ids -> (B, T, n_context * d_embed), oldest token first."""
        n = self.config.n_context
        padded = F.pad(idx, (n - 1, 0), value=self.config.vocab_size)   # (B, T + n - 1)
        e = self.embed(padded)                                          # (B, T + n - 1, E)
        windows = e.unfold(1, n, 1)                                     # (B, T, E, n)
        return windows.transpose(2, 3).flatten(2)                       # (B, T, n * E)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> LMOutput:
        """Args:
            idx: (B, T) token ids; targets: optional (B, T) next-token ids (-100 = ignore).

        Returns:
            an `LMOutput`: logits (B, T, V) and the mean cross-entropy in nats (or None).
        """
        self._check_length(idx.shape[1])
        x = self.features(idx)
        logits = self.out(self.drop(torch.tanh(self.hidden(x))))       # (B, T, V)
        if self.direct is not None:
            logits = logits + self.direct(x)
        return LMOutput(logits, lm_loss(logits, targets))


class RNNLM(_LanguageModel):
    """Embedding -> RNN/GRU/LSTM -> linear head, predicting the next token at every step."""

    config_class = RNNLMConfig

    def __init__(self, config: RNNLMConfig):
        super().__init__()
        self.config = config
        c = config
        rnn = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[c.cell]
        self.embed = nn.Embedding(c.vocab_size, c.d_embed)
        self.rnn = rnn(c.d_embed, c.d_hidden, num_layers=c.n_layer, batch_first=True,
                       dropout=c.dropout if c.n_layer > 1 else 0.0)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.d_hidden, c.vocab_size)

    def matmul_weights(self) -> int:
        c = self.config
        gates = {"rnn": 1, "gru": 3, "lstm": 4}[c.cell]
        inputs = [c.d_embed] + [c.d_hidden] * (c.n_layer - 1)
        return sum(gates * c.d_hidden * (i + c.d_hidden) for i in inputs) \
            + c.d_hidden * c.vocab_size

    def forward_embeddings(self, e: torch.Tensor, state=None):
        """(B, T, d_embed) embeddings -> ((B, T, V) logits, final recurrent state)."""
        h, state = self.rnn(e, state)                                   # (B, T, d_hidden)
        return self.head(self.drop(h)), state

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> LMOutput:
        """Args and returns as `MLPLM.forward`."""
        self._check_length(idx.shape[1])
        logits, _ = self.forward_embeddings(self.embed(idx))
        return LMOutput(logits, lm_loss(logits, targets))


def gradient_norm_by_distance(model: RNNLM, idx: torch.Tensor) -> torch.Tensor:
    """How much the last prediction's loss depends on each earlier input.

    Args:
        model: an `RNNLM`.
        idx: (B, T + 1) ids; the loss is -log P(idx[:, T] | idx[:, :T]).

    Returns:
        (T,) tensor: entry d is the mean over the batch of ||d loss / d e_{T-1-d}||, the
        gradient with respect to the input embedding d steps before the prediction.
    """
    x, y = idx[:, :-1], idx[:, -1]
    e = model.embed(x).detach().requires_grad_(True)                    # (B, T, E)
    logits, _ = model.forward_embeddings(e)
    F.cross_entropy(logits[:, -1].float(), y, reduction="sum").backward()
    norms = e.grad.norm(dim=-1).mean(0)                                 # (T,)
    return norms.flip(0)
