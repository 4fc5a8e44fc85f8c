"""Relative position representations (Shaw, Uszkoreit & Vaswani, NAACL 2018, arXiv:1803.02155).

Eq. 3-4: ``e_ij = q_i·(k_j + a^K_ij)/sqrt(d)``, ``z_i = Σ_j α_ij (v_j + a^V_ij)`` with
``a^X_ij = w^X[clip(j - i, -k, k) + k]``: ``2k + 1`` learned vectors per table. The paper's base
model used ``k = 16`` with tables per layer and per head; its big model ``k = 8`` with tables per
layer shared across heads. Nothing is shared across layers.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..attention.api import shaw_attention
from ..attention.index import relative_position_index, resolve_clipping, table_size
from .base import AttentionPosition, PositionScheme, check_bool, register_scheme

__all__ = ["ShawRelativePosition", "ShawScheme", "relative_position_index"]


class ShawRelativePosition(AttentionPosition):
    """The two learned tables of one attention layer, and attention that uses them.

    Args:
        head_dim: ``D``, the size of each relative vector.
        max_distance: clipping distance ``k``.
        num_heads: number of heads (needed for per-head tables).
        key_term / value_term: keep ``a^K`` / ``a^V`` (the paper's Table 3 ablation).
        per_head: one table per head (paper's base model) instead of one shared by all heads.
        max_left / max_right: asymmetric clipping (default ``max_distance``).
        key_query: also add ``k_j·a^K_ij`` (Huang et al. 2020, method 4).

    Parameters: ``key_table`` / ``value_table`` of shape ``(R, D)`` or ``(H, R, D)``.
    """

    def __init__(
        self,
        head_dim: int,
        max_distance: int,
        *,
        num_heads: int = 1,
        key_term: bool = True,
        value_term: bool = True,
        per_head: bool = False,
        max_left: int | None = None,
        max_right: int | None = None,
        key_query: bool = False,
    ) -> None:
        super().__init__()
        for name, flag in (
            ("key_term", key_term),
            ("value_term", value_term),
            ("per_head", per_head),
            ("key_query", key_query),
        ):
            check_bool(flag, name)
        self.max_left, self.max_right = resolve_clipping(max_distance, max_left, max_right)
        self.head_dim, self.num_heads, self.per_head = head_dim, num_heads, per_head
        self.key_query = key_query
        rows = table_size(self.max_left, self.max_right)
        shape = (num_heads, rows, head_dim) if per_head else (rows, head_dim)
        self.key_table = nn.Parameter(torch.empty(shape)) if key_term else None
        self.value_table = nn.Parameter(torch.empty(shape)) if value_term else None
        if key_query and not key_term:
            raise ValueError("key_query=True needs key_term=True (it reuses the key table)")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier-uniform over each (R, D) table, as fairseq2's Shaw attention does.
        for table in (self.key_table, self.value_table):
            if table is not None:
                for head_table in table.view(-1, *table.shape[-2:]):
                    nn.init.xavier_uniform_(head_table)

    @property
    def max_distance(self) -> int:
        return max(self.max_left, self.max_right)

    def extra_repr(self) -> str:
        return (
            f"max_left={self.max_left}, max_right={self.max_right}, head_dim={self.head_dim}, "
            f"per_head={self.per_head}, key_term={self.key_table is not None}, "
            f"value_term={self.value_table is not None}, key_query={self.key_query}"
        )

    def attend(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        *,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        dropout_p: float = 0.0,
        query_offset: int = 0,
        key_offset: int = 0,
        backend: str = "auto",
    ) -> Tensor:
        def cast(table: Tensor | None) -> Tensor | None:
            return None if table is None else table.to(query.dtype)

        return shaw_attention(
            query,
            key,
            value,
            cast(self.key_table),
            cast(self.value_table),
            max_left=self.max_left,
            max_right=self.max_right,
            attn_mask=attn_mask,
            is_causal=is_causal,
            dropout_p=dropout_p,
            query_offset=query_offset,
            key_offset=key_offset,
            key_query=self.key_query,
            backend=backend,
        )


@register_scheme
@dataclasses.dataclass
class ShawScheme(PositionScheme):
    """``shaw``: clipped relative key and value vectors in every self-attention layer."""

    name = "shaw"
    paper = "Shaw, Uszkoreit & Vaswani 2018, Self-Attention with Relative Position Representations"

    max_distance: int = 16  # the paper's base-model k
    key_term: bool = True
    value_term: bool = True
    per_head: bool = False  # the paper's big model shares tables across heads
    max_left: int | None = None
    max_right: int | None = None

    def __post_init__(self) -> None:
        resolve_clipping(self.max_distance, self.max_left, self.max_right)
        for name in ("key_term", "value_term", "per_head"):
            check_bool(getattr(self, name), name)

    def attention_position(self, num_heads: int, head_dim: int, *, causal: bool):
        return ShawRelativePosition(
            head_dim,
            self.max_distance,
            num_heads=num_heads,
            key_term=self.key_term,
            value_term=self.value_term,
            per_head=self.per_head,
            max_left=self.max_left,
            max_right=self.max_right,
        )
