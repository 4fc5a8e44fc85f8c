"""The position number itself: the seed's question, "why not just feed 0, 1, 2, …?", as a scheme.

Token ``p`` gets ``x_p + p · w``: its integer position times one learned direction ``w`` of the
embedding space, added before the first layer. It is the literal answer to the seed article's
title (see ``shared/seed``), and the naive encoding Kazemnejad (2019, "Transformer Architecture:
The Positional Encoding") starts from before arguing for sinusoids: the values grow without
bound, so a model trained on positions ``0 … 7`` meets ``8, 9, …`` as inputs of a size it has
never seen, and attention, which compares tokens, must recover every distance ``j − i`` from the
difference of two such terms. (Normalising to ``p / (L − 1)`` bounds the values but makes one step
mean a different distance at every length, and is undefined while decoding, when ``L`` is not yet
known; it is not offered.)

It is a baseline to learn from, not one to use: ``relpos compare --schemes integer,learned,shaw``
shows how it fares next to a learned table and Shaw's relative positions.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from .base import PositionScheme, register_scheme

__all__ = ["IntegerPositions", "IntegerScheme"]


class IntegerPositions(nn.Module):
    """Adds ``(offset + r) · direction`` to row ``r`` of ``x (B, L, d_model)``; no length limit."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"d_model must be a positive int, got {d_model!r}")
        self.direction = nn.Parameter(torch.empty(d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # About unit length: position 1 moves a token as far as one embedding entry's spread.
        nn.init.normal_(self.direction, std=1.0 / math.sqrt(self.direction.numel()))

    def forward(self, x: Tensor, offset: int = 0, padding: Tensor | None = None) -> Tensor:
        # padding is not read: right-padding moves no real token's position.
        d_model = self.direction.numel()
        if x.dim() != 3 or x.shape[-1] != d_model:
            raise ValueError(f"x must have shape (B, L, {d_model}), got {tuple(x.shape)}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be a non-negative int (a position), got {offset!r}")
        positions = torch.arange(offset, offset + x.shape[1], device=x.device, dtype=x.dtype)
        return x + positions[:, None] * self.direction.to(x.dtype)  # (B, L, d_model)

    def extra_repr(self) -> str:
        return f"d_model={self.direction.numel()}"


@register_scheme
@dataclasses.dataclass
class IntegerScheme(PositionScheme):
    """``integer``: the raw position number ``p`` along a learned direction, added to the input."""

    name = "integer"
    paper = "the seed's question; Kazemnejad 2019, Transformer Architecture: Positional Encoding"
    absolute = True

    def input_encoding(self, d_model: int, max_len: int) -> nn.Module:
        return IntegerPositions(d_model)
