"""ALiBi: attention with linear biases (Press, Smith & Lewis, ICLR 2022, "Train Short, Test Long:
Attention with Linear Biases Enables Input Length Extrapolation", Sec. 3).

No position is added anywhere else; each head ``h`` penalises its logits linearly with distance:
``e_ij = q_i·k_j / sqrt(d) - m_h · |i - j|``. A causal model only sees ``j <= i``, where the bias
is ``m_h · (j - i)`` — the paper's ``[-(i - 1), …, -1, 0]`` row; the bidirectional form
``-m_h |i - j|`` is the usual encoder extension. The slopes are fixed, not learned:

* ``H`` a power of two: the geometric sequence with first term and ratio ``2^(-8/H)``
  (``H = 8``: 1/2, 1/4, …, 1/256);
* otherwise, with ``M = 2^floor(log2 H)``: the ``M`` slopes for ``M`` heads, followed by the 1st,
  3rd, 5th, … slopes for ``2M`` heads, ``H - M`` of them (the authors' reference code).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from ..attention.flex_bias import relative_distances
from .base import DistanceBias, PositionScheme, register_scheme

__all__ = ["alibi_slopes", "ALiBiBias", "ALiBiScheme"]


def _power_of_two_slopes(num_heads: int) -> list[float]:
    # 2^(-8/H), 2^(-16/H), …: written as powers of two rather than a running product, so each
    # slope is correctly rounded (the product form can drift by an ulp).
    return [2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)]


def alibi_slopes(num_heads: int, *, dtype: torch.dtype = torch.float32) -> Tensor:
    """Press et al.'s head slopes ``m_h``: ``Tensor (H,)``, largest first."""
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    power = 2 ** math.floor(math.log2(num_heads))
    slopes = _power_of_two_slopes(power)
    if power != num_heads:
        # Interleave in the slopes of the next power of two, keeping the spread of head ranges.
        slopes += _power_of_two_slopes(2 * power)[0::2][: num_heads - power]
    return torch.tensor(slopes, dtype=torch.float64).to(dtype)


class ALiBiBias(DistanceBias):
    """The fixed linear bias ``-m_h |i - j|`` (bidirectional) or ``m_h (j - i)`` (causal).

    Args:
        num_heads: ``H``; the slopes follow :func:`alibi_slopes`.
        causal: use the causal form ``m_h (j - i)``; it equals the bidirectional one wherever a
            causal mask lets a query look.

    No parameters; ``slopes (H,)`` is a non-persistent buffer.
    """

    def __init__(self, num_heads: int, *, causal: bool = False) -> None:
        super().__init__()
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be a bool, got {causal!r}")
        self.num_heads, self.causal = num_heads, causal
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, causal={self.causal}"

    def distance_bias(
        self, query_len: int, key_len: int, *, query_offset: int = 0, key_offset: int = 0
    ) -> Tensor:
        """``(H, Lq + Lk - 1)``: the bias of every distance ``j - i`` in the block."""
        distances = relative_distances(
            query_len,
            key_len,
            query_offset=query_offset,
            key_offset=key_offset,
            device=self.slopes.device,
        ).float()
        slopes = self.slopes.float()[:, None]  # (H, 1)
        if self.causal:
            return slopes * distances[None, :]  # (H, Lq + Lk - 1): m_h (j - i)
        return -slopes * distances.abs()[None, :]  # (H, Lq + Lk - 1): -m_h |i - j|


@register_scheme
@dataclasses.dataclass
class ALiBiScheme(PositionScheme):
    """``alibi``: fixed per-head linear distance penalties on the logits; nothing learned."""

    name = "alibi"
    paper = (
        "Press, Smith & Lewis 2022, Train Short, Test Long: Attention with Linear Biases "
        "Enables Input Length Extrapolation"
    )

    def attention_position(self, num_heads: int, head_dim: int, *, causal: bool):
        return ALiBiBias(num_heads, causal=causal)
