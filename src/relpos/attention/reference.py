"""Paper-literal relative attention: the oracle every fast backend is tested against.

Shaw, Uszkoreit & Vaswani (2018), "Self-Attention with Relative Position Representations",
Eq. 3 and 4, for one head with head size ``d``::

    e_ij  = q_i · (k_j + a^K_ij) * scale                      (Eq. 4, scale = 1/sqrt(d))
    α_ij  = softmax_j(e_ij)
    z_i   = Σ_j α_ij (v_j + a^V_ij)                           (Eq. 3)
    a^X_ij = w^X[clip(j - i, -k, k) + k]

It gathers both tables into ``(Lq, Lk, D)`` tensors and adds them to every key and value, exactly
as the equations read. That costs ``O(B·H·Lq·Lk·D)`` memory, which is why it is only the oracle.

Huang et al. (2020)'s "key-query" variant (method 4) adds a third term ``k_j · a^K_ij``; it is
switched on with ``key_query=True``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checks import logit_mask
from .index import RelativeIndex

__all__ = ["reference_attention", "masked_softmax"]


def masked_softmax(logits: Tensor) -> Tensor:
    """Softmax over the last dimension in which a row of ``-inf`` gives zeros, not NaN.

    The row maximum is taken out for stability; a fully masked row has no finite maximum, so 0 is
    used instead and its sum of exponentials is 0, which we divide by 1. No ``inf - inf`` is ever
    formed, so gradients stay finite too.
    """
    if logits.shape[-1] == 0:
        # No keys at all (Lk = 0): every row is "fully masked"; amax would raise on the empty dim.
        row_max = logits.new_zeros(*logits.shape[:-1], 1)
    else:
        row_max = logits.detach().amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    exp = torch.exp(logits - row_max)
    total = exp.sum(dim=-1, keepdim=True)
    total = torch.where(total > 0, total, torch.ones_like(total))
    return exp / total


def reference_attention(
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
    """Relative attention, computed literally.

    Shapes: ``query (B, H, Lq, D)``, ``key (B, H, Lk, D)``, ``value (B, H, Lk, Dv)``,
    ``key_table (Ht, R, D)``, ``value_table (Ht, R, Dv)`` with ``Ht ∈ {1, H}`` and
    ``R = index.num_buckets``; ``attn_mask`` boolean or float, broadcasting to
    ``(B, H, Lq, Lk)``, with ``is_causal`` as in :func:`relpos.attention.checks.logit_mask`;
    ``dropout_mask`` the kept-and-rescaled weights multiplier ``(B, H, Lq, Lk)``.
    Returns ``(B, H, Lq, Dv)``.
    """
    rel_index = index.dense(query.device)  # (Lq, Lk)
    keys = key.unsqueeze(2)  # (B, H, 1, Lk, D): every query sees the same k_j ...
    if key_table is not None:
        a_key = key_table[:, rel_index]  # (Ht, Lq, Lk, D): a^K_ij
        keys = keys + a_key.unsqueeze(0)  # (B, H, Lq, Lk, D): ... plus its own a^K_ij
    logits = torch.einsum("bhid,bhijd->bhij", query, keys.expand(-1, -1, query.shape[2], -1, -1))
    if key_query and key_table is not None:
        logits = logits + torch.einsum(
            "bhjd,hijd->bhij", key, key_table[:, rel_index].expand(query.shape[1], -1, -1, -1)
        )
    logits = logits * scale
    mask = logit_mask(
        attn_mask, is_causal, *logits.shape[-2:], dtype=logits.dtype, device=logits.device
    )
    if mask is not None:
        logits = logits + mask
    weights = masked_softmax(logits)  # (B, H, Lq, Lk): α_ij
    if dropout_mask is not None:
        weights = weights * dropout_mask

    values = value.unsqueeze(2)  # (B, H, 1, Lk, Dv)
    if value_table is not None:
        a_value = value_table[:, rel_index]  # (Ht, Lq, Lk, Dv): a^V_ij
        values = values + a_value.unsqueeze(0)  # (B, H, Lq, Lk, Dv)
    values = values.expand(-1, -1, query.shape[2], -1, -1)
    return torch.einsum("bhij,bhijd->bhid", weights, values)  # z_i = Σ_j α_ij (v_j + a^V_ij)
