"""Memory-lean eager relative attention: ``O(Lq·Lk)`` memory, never an ``(Lq, Lk, D)`` tensor.

Shaw et al. (2018), Sec. 3.3, split each term in two. With ``R = 2k + 1`` table rows:

* key term: ``q_i · a^K_ij = (Q A_Kᵀ)[i, r(i, j)]`` — one small ``(Lq, R)`` matmul, then a gather
  by the index ``r``;
* value term: ``Σ_j α_ij a^V_ij = Σ_b (Σ_{j: r(i,j)=b} α_ij) A_V[b]`` — the attention mass of each
  row summed per relative bucket ``(Lq, R)``, then a small matmul with ``A_V``.
"""

from __future__ import annotations

from torch import Tensor

from .checks import logit_mask
from .index import RelativeIndex
from .reference import masked_softmax

__all__ = ["eager_attention", "bucket_sum", "gather_buckets"]


def gather_buckets(per_bucket: Tensor, rel_index: Tensor) -> Tensor:
    """``(…, Lq, R)`` per-bucket values → ``(…, Lq, Lk)`` by ``rel_index (Lq, Lk)``."""
    expanded = rel_index.expand(*per_bucket.shape[:-1], rel_index.shape[-1])
    return per_bucket.gather(-1, expanded)


def bucket_sum(weights: Tensor, rel_index: Tensor, num_buckets: int) -> Tensor:
    """``(…, Lq, Lk)`` weights → ``(…, Lq, R)``: the sum of each row's weights per bucket."""
    expanded = rel_index.expand_as(weights)
    masses = weights.new_zeros(*weights.shape[:-1], num_buckets)
    return masses.scatter_add(-1, expanded, weights)


def eager_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    index: RelativeIndex,
    key_table: Tensor | None,
    value_table: Tensor | None,
    attn_mask: Tensor | None,
    is_causal: bool,
    scale: float,
    dropout_mask: Tensor | None = None,
    key_query: bool = False,
) -> Tensor:
    """Same contract as :func:`relpos.attention.reference.reference_attention`."""
    rel_index = index.dense(query.device)  # (Lq, Lk)
    logits = query @ key.transpose(-1, -2)  # (B, H, Lq, Lk): q_i · k_j
    if key_table is not None:
        query_rel = query @ key_table.transpose(-1, -2)  # (B, H, Lq, R): q_i · w^K_b
        logits = logits + gather_buckets(query_rel, rel_index)
        if key_query:
            key_rel = key @ key_table.transpose(-1, -2)  # (B, H, Lk, R): k_j · w^K_b
            logits = logits + gather_buckets(key_rel, rel_index.T).transpose(-1, -2)
    logits = logits * scale
    mask = logit_mask(attn_mask, is_causal, *logits.shape[-2:], dtype=logits.dtype, device=logits.device)
    if mask is not None:
        logits = logits + mask
    weights = masked_softmax(logits)  # (B, H, Lq, Lk)
    if dropout_mask is not None:
        weights = weights * dropout_mask
    output = weights @ value  # (B, H, Lq, Dv)
    if value_table is not None:
        masses = bucket_sum(weights, rel_index, index.num_buckets)  # (B, H, Lq, R)
        output = output + masses @ value_table  # (B, H, Lq, Dv)
    return output
