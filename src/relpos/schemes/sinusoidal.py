"""Sinusoidal absolute positions (Vaswani et al. 2017, "Attention Is All You Need", Sec. 3.5).

``PE(p, 2t) = sin(p / base^(2t/d))``, ``PE(p, 2t+1) = cos(p / base^(2t/d))``, ``base = 10000``,
added to the token embeddings before the first layer. The paper *interleaves* sines and cosines
(channel ``2t`` is a sine, ``2t+1`` its cosine). ``layout="concat"`` puts all the sines first,
then all the cosines, with the same frequencies ``base^(-2t/d)``: the layout of Hugging Face's
Marian (``MarianSinusoidalPositionalEmbedding``). It is *not* tensor2tensor's
``get_timing_signal_1d`` or fairseq's ``SinusoidalPositionalEmbedding``, which also put sines
before cosines but space their timescales as ``base^(-t/(d/2 - 1))``. Both layouts carry the same
information; checkpoints are not interchangeable between them.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from .base import PositionScheme, check_base, register_scheme

__all__ = ["sinusoidal_encoding", "SinusoidalEncoding", "SinusoidalScheme", "LAYOUTS"]

LAYOUTS = ("interleaved", "concat")


def _check_options(base: float, layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    check_base(base)


def sinusoidal_encoding(
    positions: Tensor, dim: int, *, base: float = 10000.0, layout: str = "interleaved"
) -> Tensor:
    """``positions (L,)`` → ``(L, dim)`` float32 encodings. An odd ``dim`` drops the last cosine."""
    _check_options(base, layout)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if not isinstance(positions, Tensor) or positions.dim() != 1:
        got = tuple(positions.shape) if isinstance(positions, Tensor) else type(positions).__name__
        raise ValueError(f"positions must be a 1-D tensor (L,), got {got}")
    pairs = (dim + 1) // 2
    inv_freq = base ** (-torch.arange(pairs, dtype=torch.float64) * 2.0 / dim)  # (pairs,)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # (L, pairs)
    sin, cos = angles.sin(), angles.cos()
    if layout == "interleaved":
        encoding = torch.stack((sin, cos), dim=-1).flatten(-2)  # (L, 2·pairs): sin, cos, sin, …
    else:
        # (L, dim): all sines, then all cosines; an odd dim has one sine more than cosines.
        encoding = torch.cat((sin, cos[:, : dim - pairs]), dim=-1)
    return encoding[:, :dim].to(torch.float32)


class SinusoidalEncoding(nn.Module):
    """Adds ``PE(offset + r)`` to row ``r`` of ``x (B, L, d_model)``; no parameters, no limit."""

    def __init__(self, d_model: int, *, base: float = 10000.0, layout: str = "interleaved"):
        super().__init__()
        _check_options(base, layout)
        if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"d_model must be a positive int, got {d_model!r}")
        self.d_model, self.base, self.layout = d_model, base, layout

    def forward(self, x: Tensor, offset: int = 0, padding: Tensor | None = None) -> Tensor:
        # padding is not read: right-padding moves no real token's position.
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, L, {self.d_model}), got {tuple(x.shape)}")
        positions = torch.arange(x.shape[1], device=x.device) + offset
        encoding = sinusoidal_encoding(positions, self.d_model, base=self.base, layout=self.layout)
        return x + encoding.to(x.dtype)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, base={self.base}, layout={self.layout!r}"


@register_scheme
@dataclasses.dataclass
class SinusoidalScheme(PositionScheme):
    """``sinusoidal``: fixed absolute encodings added to the input."""

    name = "sinusoidal"
    paper = "Vaswani et al. 2017, Attention Is All You Need"
    absolute = True

    base: float = 10000.0
    layout: str = "interleaved"  # the paper's; "concat" is Marian's sin-block/cos-block variant

    def __post_init__(self) -> None:
        _check_options(self.base, self.layout)

    def input_encoding(self, d_model: int, max_len: int) -> nn.Module:
        return SinusoidalEncoding(d_model, base=self.base, layout=self.layout)
