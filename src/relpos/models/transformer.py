"""Small transformers that take any registered position scheme: encoder-decoder, decoder, encoder.

* :class:`EncoderDecoder` — Vaswani et al. (2017), the setting of Shaw et al. (2018) and Ontañón et
  al. (2022): a bidirectional encoder over the source, a causal decoder over ``BOS target``.
* :class:`DecoderOnly` — one causal stack over ``source SEP target EOS`` (Kazemnejad et al. 2023).
* :class:`EncoderOnly` — one bidirectional stack and a classifier per position (non-autoregressive
  tagging; only for tasks whose target has the source's length).

Where position information goes:

* an *absolute* scheme (``sinusoidal``, ``learned``) adds ``scheme.input_encoding(d_model,
  max_len)`` to the token embeddings of each stack; encoder and decoder get their own module
  (for ``learned``, their own table);
* a *relative* scheme (``shaw``, …) gives every **self**-attention layer a
  ``scheme.attention_position(...)`` — relative terms go in self-attention, as in the paper. A
  scheme with ``shared_across_layers`` (T5) builds one module per stack and reuses it in every
  layer;
* **cross-attention is content-only**: a decoder query and an encoder key sit in different
  sequences, so ``j − i`` between them measures nothing (Shaw et al. use relative positions in
  self-attention only; Ontañón et al.'s ``rel2`` variants are the exception and are not built).

Choices: pre-LayerNorm blocks with a final LayerNorm (Xiong et al. 2020: stable without a long
warmup at this size); ReLU (or GELU) feed-forward; one token embedding shared by source and target
and, by default, tied to the output projection (Press & Wolf 2017); embeddings initialised with
std ``d_model**-0.5`` and multiplied by ``sqrt(d_model)`` (Vaswani et al.), so a token vector has
entries of unit scale, like the sinusoidal encoding added to it.

Shape legend: ``B`` batch, ``L`` / ``Ls`` / ``Lt`` length (source, target), ``E`` = ``d_model``,
``V`` vocabulary size.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import KVCache, MultiheadAttention
from ..schemes import PositionScheme
from .config import ModelConfig

__all__ = [
    "FeedForward",
    "Block",
    "Stack",
    "EncoderDecoder",
    "DecoderOnly",
    "EncoderOnly",
    "greedy_decode",
]


class FeedForward(nn.Module):
    """``W2 · act(W1 x)``: the position-wise feed-forward layer."""

    def __init__(self, d_model: int, d_ff: int, activation: str) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_ff)
        self.fc_out = nn.Linear(d_ff, d_model)
        self.activation = F.relu if activation == "relu" else F.gelu

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.activation(self.fc_in(x)))


class Block(nn.Module):
    """Pre-LN block: self-attention, optional (content-only) cross-attention, feed-forward."""

    def __init__(self, config: ModelConfig, position, *, causal: bool, cross: bool) -> None:
        super().__init__()
        d_model, heads, dropout = config.d_model, config.num_heads, config.dropout
        self.causal = causal
        self.norm_self = nn.LayerNorm(d_model)
        attention_dropout = config.attention_dropout_p
        self.self_attn = MultiheadAttention(
            d_model, heads, position=position, dropout=attention_dropout
        )
        self.norm_cross = nn.LayerNorm(d_model) if cross else None
        # No ``position``: cross-attention compares contents only (see the module docstring).
        self.cross_attn = (
            MultiheadAttention(d_model, heads, dropout=attention_dropout) if cross else None
        )
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, config.d_ff, config.activation)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        *,
        padding: Tensor | None = None,
        memory: Tensor | None = None,
        memory_padding: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """``x (B, L, E)``; ``padding (B, L)``, ``memory_padding (B, Ls)``: True at padding."""
        h = self.norm_self(x)
        x = x + self.drop(
            self.self_attn(h, key_padding_mask=padding, is_causal=self.causal, cache=cache)
        )
        if self.cross_attn is not None:
            h = self.norm_cross(x)
            x = x + self.drop(self.cross_attn(h, memory, memory, key_padding_mask=memory_padding))
        return x + self.drop(self.ff(self.norm_ff(x)))


class Stack(nn.Module):
    """Input position encoding (absolute schemes), ``num_layers`` blocks, final LayerNorm."""

    def __init__(
        self, config: ModelConfig, scheme: PositionScheme, *, causal: bool, cross: bool
    ) -> None:
        super().__init__()
        self.input_encoding = scheme.input_encoding(config.d_model, config.max_len)

        def position():
            return scheme.attention_position(config.num_heads, config.head_dim, causal=causal)

        shared = position() if scheme.shared_across_layers else None
        self.blocks = nn.ModuleList(
            Block(config, shared if shared is not None else position(), causal=causal, cross=cross)
            for _ in range(config.num_layers)
        )
        self.drop = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(config.d_model)

    def embed(
        self, tokens_embedded: Tensor, offset: int = 0, padding: Tensor | None = None
    ) -> Tensor:
        """Add the absolute encoding of positions ``offset, offset + 1, …`` (if any);
        ``padding (B, L)``, True at right-padding, tells a per-sequence encoding (``randomized``)
        each row's length."""
        x = tokens_embedded
        if self.input_encoding is not None:
            x = self.input_encoding(x, offset, padding)
        return self.drop(x)

    def one_draw(self, batch: int, width: int, device: torch.device) -> AbstractContextManager:
        """A context in which this stack's positions come from one draw for ``width`` tokens,
        for an input encoding that draws them per sequence (``randomized``: its ``fixed``);
        nothing for any other. Decoding token by token runs inside it."""
        fixed = getattr(self.input_encoding, "fixed", None)
        return nullcontext() if fixed is None else fixed(batch, width, device)

    def cache_length(self, caches: list[KVCache] | None) -> int:
        """Tokens already in ``caches`` (one :class:`KVCache` per layer): the new tokens' offset."""
        if caches is None:
            return 0
        if not isinstance(caches, (list, tuple)):
            raise TypeError(f"caches must be a list of KVCache, got {type(caches).__name__}")
        if len(caches) != len(self.blocks):
            raise ValueError(
                f"caches must hold one KVCache per layer ({len(self.blocks)}), got {len(caches)}"
            )
        for cache in caches:
            if not isinstance(cache, KVCache):
                raise TypeError(f"caches must be a list of KVCache, got a {type(cache).__name__}")
        return caches[0].length

    def forward(
        self,
        x: Tensor,
        *,
        padding: Tensor | None = None,
        memory: Tensor | None = None,
        memory_padding: Tensor | None = None,
        caches: list[KVCache] | None = None,
    ) -> Tensor:
        self.cache_length(caches)  # refuses a list that does not cover every layer
        for layer, block in enumerate(self.blocks):
            x = block(
                x,
                padding=padding,
                memory=memory,
                memory_padding=memory_padding,
                cache=None if caches is None else caches[layer],
            )
        return self.norm(x)


class _TokenModel(nn.Module):
    """What the three architectures share: the token embedding and the output projection."""

    arch = ""

    def __init__(self, config: ModelConfig, vocab_size: int, scheme: PositionScheme) -> None:
        super().__init__()
        self.config, self.scheme, self.vocab_size = config, scheme, vocab_size
        self.token_embedding = nn.Embedding(vocab_size, config.d_model)
        nn.init.normal_(self.token_embedding.weight, std=config.d_model**-0.5)
        self.output = None
        if not config.tie_embeddings:
            self.output = nn.Linear(config.d_model, vocab_size, bias=False)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(
                f"tokens must be a (B, L) int64 tensor, got {tokens.dtype} {tuple(tokens.shape)}"
            )
        # On the CPU one pass over the ids is cheap next to the model, and nn.Embedding's own
        # error ("index out of range in self") names neither the id nor the vocabulary. On an
        # accelerator the check would cost a device-to-host sync in every forward pass (the
        # training loop has none per step), so it is skipped there.
        if tokens.device.type == "cpu" and tokens.numel():
            low, high = torch.aminmax(tokens)
            if low < 0 or high >= self.vocab_size:
                bad = int(low) if low < 0 else int(high)
                raise ValueError(
                    f"token ids must be in [0, {self.vocab_size}) (vocab_size={self.vocab_size}), "
                    f"got {bad}"
                )
        return self.token_embedding(tokens) * math.sqrt(self.config.d_model)  # (B, L, E)

    @staticmethod
    def _check_padding(padding: Tensor | None, tokens: Tensor, name: str) -> None:
        """``padding`` is None or a bool ``(B, L)`` like ``tokens``: checked here, so that the
        error names the model's argument rather than the attention layer's."""
        if padding is None:
            return
        if not isinstance(padding, Tensor) or padding.dtype != torch.bool:
            got = padding.dtype if isinstance(padding, Tensor) else type(padding).__name__
            raise ValueError(f"{name} must be a bool tensor, True at padding, got {got}")
        if padding.shape != tokens.shape:
            raise ValueError(
                f"{name} must have the shape of its tokens, {tuple(tokens.shape)}, "
                f"got {tuple(padding.shape)}"
            )

    def logits(self, hidden: Tensor) -> Tensor:
        if self.output is not None:
            return self.output(hidden)
        return F.linear(hidden, self.token_embedding.weight)  # (B, L, V), tied

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, scheme={self.scheme!r}, vocab_size={self.vocab_size}"

    def _check_token_id(self, value: object, name: str, *, none: bool = False) -> None:
        """A special token (``bos``, ``eos``) must be a token of the vocabulary: a float would be
        truncated, and an ``eos`` the model can never emit would never stop decoding early
        (``eos=None`` says that on purpose)."""
        if none and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int token id, got {type(value).__name__} {value!r}")
        if not 0 <= value < self.vocab_size:
            raise ValueError(
                f"{name} must be a token id in [0, {self.vocab_size}) (vocab_size="
                f"{self.vocab_size}), got {value}"
            )


def greedy_decode(step, first: Tensor, *, eos: int | None, max_new_tokens: int) -> Tensor:
    """Batched greedy decoding.

    ``step(tokens (B, 1)) -> logits (B, 1, V)`` consumes one token and returns the next-token
    logits (it owns the key/value caches). ``first (B, 1)`` is fed first. Returns ``(B, T)`` with
    ``T <= max_new_tokens``; after a row emits ``eos`` it is padded with ``eos``. Stops as soon as
    every row has finished; ``eos=None`` never stops early (``T = max_new_tokens``).
    """
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 0
    ):
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    tokens, finished = first, torch.zeros(first.shape[0], dtype=torch.bool, device=first.device)
    generated = []
    for _ in range(max_new_tokens):
        next_token = step(tokens)[:, -1].argmax(dim=-1)  # (B,)
        if eos is not None:
            next_token = next_token.masked_fill(finished, eos)
            finished = finished | (next_token == eos)
        generated.append(next_token)
        if bool(finished.all()):
            break
        tokens = next_token[:, None]  # (B, 1)
    if not generated:
        return first.new_empty(first.shape[0], 0)
    return torch.stack(generated, dim=1)  # (B, T)


class EncoderDecoder(_TokenModel):
    """Bidirectional encoder + causal decoder with content-only cross-attention."""

    arch = "encoder-decoder"

    def __init__(self, config: ModelConfig, vocab_size: int, scheme: PositionScheme) -> None:
        super().__init__(config, vocab_size, scheme)
        self.encoder = Stack(config, scheme, causal=False, cross=False)
        self.decoder = Stack(config, scheme, causal=True, cross=True)

    def encode(self, source: Tensor, source_padding: Tensor | None = None) -> Tensor:
        """``source (B, Ls)`` → memory ``(B, Ls, E)``; ``source_padding``: True at padding."""
        self._check_padding(source_padding, source, "source_padding")
        x = self.encoder.embed(self.embed_tokens(source), padding=source_padding)
        return self.encoder(x, padding=source_padding)

    def decode(
        self,
        target: Tensor,
        memory: Tensor,
        source_padding: Tensor | None = None,
        *,
        caches: list[KVCache] | None = None,
    ) -> Tensor:
        """``target (B, Lt)`` (starting with BOS) → next-token logits ``(B, Lt, V)``.

        With ``caches`` (one :class:`KVCache` per layer), ``target`` holds only the new tokens and
        sits at positions ``caches[0].length, …``. Right-padding of ``target`` needs no mask: the
        causal mask already keeps real queries away from the padding after them.
        """
        offset = self.decoder.cache_length(caches)
        x = self.decoder.embed(self.embed_tokens(target), offset)
        x = self.decoder(x, memory=memory, memory_padding=source_padding, caches=caches)
        return self.logits(x)

    def forward(
        self, source: Tensor, target: Tensor, source_padding: Tensor | None = None
    ) -> Tensor:
        """Teacher-forced logits ``(B, Lt, V)`` for ``source (B, Ls)`` and ``target (B, Lt)``."""
        if source.dim() == 2 and target.dim() == 2 and source.shape[0] != target.shape[0]:
            raise ValueError(
                f"source has {source.shape[0]} rows but target has {target.shape[0]}: row b of "
                "target continues row b of source, so their batch sizes must agree"
            )
        return self.decode(target, self.encode(source, source_padding), source_padding)

    @torch.no_grad()
    def generate(
        self,
        source: Tensor,
        source_padding: Tensor | None = None,
        *,
        bos: int,
        eos: int | None,
        max_new_tokens: int,
    ) -> Tensor:
        """Greedy decoding with a key/value cache: ``(B, T)`` tokens after BOS (see
        :func:`greedy_decode`). Call ``model.eval()`` first to switch dropout off."""
        self._check_token_id(bos, "bos")
        self._check_token_id(eos, "eos", none=True)
        memory = self.encode(source, source_padding)
        first = torch.full((source.shape[0], 1), bos, dtype=torch.long, device=source.device)
        caches = [KVCache() for _ in self.decoder.blocks]

        def step(tokens: Tensor) -> Tensor:
            return self.decode(tokens, memory, source_padding, caches=caches)

        # Fed: BOS and all but the last generated token, as the teacher-forced BOS T in training.
        with self.decoder.one_draw(source.shape[0], max(max_new_tokens, 1), source.device):
            return greedy_decode(step, first, eos=eos, max_new_tokens=max_new_tokens)


class DecoderOnly(_TokenModel):
    """One causal stack: a language model over ``source SEP target EOS``."""

    arch = "decoder"

    def __init__(self, config: ModelConfig, vocab_size: int, scheme: PositionScheme) -> None:
        super().__init__(config, vocab_size, scheme)
        self.decoder = Stack(config, scheme, causal=True, cross=False)

    def forward(self, tokens: Tensor, *, caches: list[KVCache] | None = None) -> Tensor:
        """``tokens (B, L)`` → next-token logits ``(B, L, V)``; right-padding needs no mask
        (causal), and with ``caches`` the tokens continue the cached ones."""
        offset = self.decoder.cache_length(caches)
        x = self.decoder.embed(self.embed_tokens(tokens), offset)
        return self.logits(self.decoder(x, caches=caches))

    @torch.no_grad()
    def generate(self, prompt: Tensor, *, eos: int | None, max_new_tokens: int) -> Tensor:
        """Greedy continuation of ``prompt (B, Lp)``: ``(B, T)`` new tokens.

        Every row's prompt must have the same length (no padding): group prompts by length, so
        that a token's position is the same with or without batching. The prompt needs at least
        one token: a decoder-only model has no BOS of its own to start from (start the prompt
        with one if the task has it).
        """
        if prompt.dim() != 2 or prompt.shape[1] == 0:
            raise ValueError(
                "prompt must hold at least one token per row, shape (B, Lp) with Lp >= 1, "
                f"got {tuple(prompt.shape)}"
            )
        self._check_token_id(eos, "eos", none=True)
        caches = [KVCache() for _ in self.decoder.blocks]

        def step(tokens: Tensor) -> Tensor:
            return self(tokens, caches=caches)

        # Fed: the prompt and all but the last generated token (the final EOS is never an input).
        width = prompt.shape[1] + max(max_new_tokens - 1, 0)
        with self.decoder.one_draw(prompt.shape[0], width, prompt.device):
            if prompt.shape[1] > 1:
                self(prompt[:, :-1], caches=caches)  # fills the caches; the loop feeds the last
            return greedy_decode(step, prompt[:, -1:], eos=eos, max_new_tokens=max_new_tokens)


class EncoderOnly(_TokenModel):
    """One bidirectional stack and a classifier per position: ``target[i]`` from ``source``."""

    arch = "encoder"

    def __init__(self, config: ModelConfig, vocab_size: int, scheme: PositionScheme) -> None:
        super().__init__(config, vocab_size, scheme)
        self.encoder = Stack(config, scheme, causal=False, cross=False)

    def forward(self, tokens: Tensor, padding: Tensor | None = None) -> Tensor:
        """``tokens (B, L)`` → logits ``(B, L, V)``; ``padding (B, L)`` True at padding."""
        self._check_padding(padding, tokens, "padding")
        x = self.encoder.embed(self.embed_tokens(tokens), padding=padding)
        return self.logits(self.encoder(x, padding=padding))
