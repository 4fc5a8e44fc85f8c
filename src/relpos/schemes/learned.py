"""Learned absolute positions (Gehring et al. 2017; BERT, GPT-2): one trained vector per position.

A table of ``max_len`` rows is added to the token embeddings. A position ``>= max_len`` has no
vector at all, and one never reached in training has an untrained vector — the sharpest form of
the seed's question "why not just feed 0, 1, 2, …?" (its literal form is the ``integer`` scheme).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from .base import PositionScheme, register_scheme

__all__ = ["LearnedPositionEmbedding", "LearnedScheme"]


class LearnedPositionEmbedding(nn.Module):
    """Adds ``table[offset + r]`` to row ``r`` of ``x (B, L, d_model)``."""

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        for value, name in ((max_len, "max_len"), (d_model, "d_model")):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.max_len = max_len
        self.table = nn.Parameter(torch.empty(max_len, d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.table, std=0.02)  # GPT-2's initialisation

    def forward(self, x: Tensor, offset: int = 0, padding: Tensor | None = None) -> Tensor:
        # padding is not read: right-padding moves no real token's position.
        d_model = self.table.shape[1]
        if x.dim() != 3 or x.shape[-1] != d_model:
            raise ValueError(f"x must have shape (B, L, {d_model}), got {tuple(x.shape)}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be a non-negative int (a position), got {offset!r}")
        last = offset + x.shape[1] - 1
        if last >= self.max_len:
            raise ValueError(
                f"position {last} is beyond this learned absolute table (max_len={self.max_len}: "
                f"positions 0..{self.max_len - 1} have vectors). Build the model with a larger "
                "max_len, or use a relative scheme (shaw, t5, alibi, rope), which has no such limit"
            )
        return x + self.table[offset : last + 1].to(x.dtype)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.table.shape[1]}"


@register_scheme
@dataclasses.dataclass
class LearnedScheme(PositionScheme):
    """``learned``: a trained vector per absolute position, added to the input."""

    name = "learned"
    paper = "Gehring et al. 2017, Convolutional Sequence to Sequence Learning"
    absolute = True

    max_len: int | None = None  # None: the model's max_len

    def __post_init__(self) -> None:
        if self.max_len is None:
            return
        if isinstance(self.max_len, bool) or not isinstance(self.max_len, int):
            raise TypeError(
                "max_len must be None (the model's max_len) or an int >= 1, got "
                f"{type(self.max_len).__name__} {self.max_len!r}"
            )
        if self.max_len < 1:
            raise ValueError(
                f"max_len must be None (the model's max_len) or an int >= 1, got {self.max_len}"
            )

    def input_encoding(self, d_model: int, max_len: int) -> nn.Module:
        return LearnedPositionEmbedding(max_len if self.max_len is None else self.max_len, d_model)
