"""Transformer-XL's relative attention (Dai, Yang, Yang, Carbonell, Le & Salakhutdinov, ACL 2019,
"Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context", Sec. 3.3).

The paper expands the absolute-position logit and replaces every absolute term by a relative
one, giving four terms for query ``i`` and key ``j``::

    e_ij = q_i·k_j  +  q_i·W_R R_{i-j}  +  u·k_j  +  v·W_R R_{i-j}        (a) (b) (c) (d)
         = (q_i + u)·k_j  +  (q_i + v)·r_{i-j},   r_n = W_R R_n

all scaled by ``1/sqrt(d)``. ``R_n`` is the sinusoid of the distance ``n = i - j`` (query minus
key: keys in the past have ``n > 0``) with all sines before all cosines and frequencies
``10000^(-2t/d_model)``, as in the official code (``layout="concat"`` of
:func:`~relpos.schemes.sinusoidal.sinusoidal_encoding`), ``d_model = H·D``. ``W_R`` is a learned
``d_model → H·D`` projection without bias, ``u`` and ``v`` learned vectors per head: (c) is a
bias for each key's content, (d) one for each distance.

Nothing is clipped: every distance has its own sinusoid, so the scheme runs on any length (which
is what let Transformer-XL attend into a memory of earlier segments). Here each layer learns its
own ``W_R``, ``u`` and ``v``; the official code can also share ``u`` and ``v`` by all layers
(its ``untie_r`` switch). The segment-level memory itself is a model feature, not a position
scheme, and is not part of this file; cached decoding (:class:`~relpos.KVCache`) gives the same
positions to the same tokens.

``content_bias=False`` drops (c), ``position_bias=False`` drops (d); without both the scheme is
a Shaw-like key term with unclipped, sinusoid-generated vectors.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..attention.flex_bias import distance_columns, gather_pair_scores, relative_distances
from .base import PairBias, PositionScheme, check_base, check_bool, register_scheme
from .sinusoidal import sinusoidal_encoding

__all__ = ["TransformerXLPosition", "TransformerXLScheme"]


class TransformerXLPosition(PairBias):
    """Terms (b)-(d) of one attention layer.

    Args:
        num_heads, head_dim: ``H`` and ``D``; the sinusoids are ``H·D`` wide.
        content_bias: learn ``u`` (term (c)).
        position_bias: learn ``v`` (term (d)).
        base: the sinusoid's frequency base.

    Parameters: ``position_proj`` (``W_R``, ``H·D → H·D``), ``content_bias`` / ``position_bias``
    ``(H, D)`` (``u`` / ``v``).
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        *,
        content_bias: bool = True,
        position_bias: bool = True,
        base: float = 10000.0,
    ) -> None:
        super().__init__()
        check_bool(content_bias, "content_bias")
        check_bool(position_bias, "position_bias")
        check_base(base)
        self.num_heads, self.head_dim, self.base = num_heads, head_dim, base
        self.model_dim = num_heads * head_dim
        self.position_proj = nn.Linear(self.model_dim, self.model_dim, bias=False)
        shape = (num_heads, head_dim)
        self.content_bias = nn.Parameter(torch.empty(shape)) if content_bias else None
        self.position_bias = nn.Parameter(torch.empty(shape)) if position_bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The official code draws every one of these from N(0, 0.02).
        for param in (self.position_proj.weight, self.content_bias, self.position_bias):
            if param is not None:
                nn.init.normal_(param, std=0.02)

    def relative_vectors(self, distances: Tensor, dtype: torch.dtype) -> Tensor:
        """``r_n = W_R R_n`` for ``distances (N,)`` (values of ``n = i - j``) → ``(H, N, D)``."""
        sinusoids = sinusoidal_encoding(distances, self.model_dim, base=self.base, layout="concat")
        projected = self.position_proj(sinusoids.to(dtype))  # (N, H·D)
        return projected.view(-1, self.num_heads, self.head_dim).transpose(0, 1)  # (H, N, D)

    def pair_bias(
        self, query: Tensor, key: Tensor, *, query_offset: int = 0, key_offset: int = 0
    ) -> Tensor:
        q_len, k_len = query.shape[-2], key.shape[-2]
        scale = self.logit_scale(query.shape[-1])
        # The block's Lq + Lk - 1 distances j - i, smallest first; pair (r, c) uses column
        # c - r + Lq - 1. R is indexed by i - j, the negated distance.
        key_minus_query = relative_distances(
            q_len, k_len, query_offset=query_offset, key_offset=key_offset, device=query.device
        )
        vectors = self.relative_vectors(-key_minus_query, query.dtype)  # (H, Lq + Lk - 1, D)
        position_query = query
        if self.position_bias is not None:
            position_query = query + self.position_bias.to(query.dtype)[:, None]  # q_i + v
        position_scores = position_query @ vectors.transpose(-1, -2)  # (B, H, Lq, Lq + Lk - 1)
        column = distance_columns(q_len, k_len, query.device)  # (Lq, Lk)
        bias = gather_pair_scores(position_scores, column, per="query")  # (b) + (d)
        if self.content_bias is not None:
            # (c): u·k_j, the same for every query.
            key_scores = key @ self.content_bias.to(key.dtype)[..., None]  # (B, H, Lk, 1)
            bias = bias + key_scores.transpose(-1, -2)
        return bias * scale

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, "
            f"content_bias={self.content_bias is not None}, "
            f"position_bias={self.position_bias is not None}, base={self.base}"
        )


@register_scheme
@dataclasses.dataclass
class TransformerXLScheme(PositionScheme):
    """``transformer-xl``: unclipped sinusoidal relative vectors, learned biases ``u`` and ``v``."""

    name = "transformer-xl"
    paper = (
        "Dai et al. 2019, Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context"
    )

    content_bias: bool = True  # term (c), u·k_j
    position_bias: bool = True  # term (d), v·W_R R_{i-j}
    base: float = 10000.0

    def __post_init__(self) -> None:
        check_bool(self.content_bias, "content_bias")
        check_bool(self.position_bias, "position_bias")
        check_base(self.base)

    def attention_position(self, num_heads: int, head_dim: int, *, causal: bool):
        return TransformerXLPosition(
            num_heads,
            head_dim,
            content_bias=self.content_bias,
            position_bias=self.position_bias,
            base=self.base,
        )
