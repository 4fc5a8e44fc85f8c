"""Content-only attention (and attention with an additive scalar bias) through PyTorch's SDPA.

A scalar position bias ``b(i, j)`` — T5 buckets, ALiBi, Swin's 2D table — is just a float mask
added to the logits, so it runs through ``scaled_dot_product_attention`` unchanged. The only thing
added here is the library-wide promise that a query row with every key masked gives zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .checks import check_attn_mask, check_dropout, check_qkv, check_scale, logit_mask
from .reference import masked_softmax

__all__ = ["sdpa_attention", "reference_bias_attention", "fully_masked_rows"]


def fully_masked_rows(mask: Tensor | None) -> Tensor | None:
    """``(…, Lq, 1)`` bool: rows of an additive mask in which no key is allowed."""
    if mask is None:
        return None
    return torch.isneginf(mask).all(dim=-1, keepdim=True)


def _combined_mask(
    bias: Tensor | None, attn_mask: Tensor | None, is_causal: bool, q_len: int, k_len: int, like
) -> Tensor | None:
    mask = logit_mask(attn_mask, is_causal, q_len, k_len, dtype=like.dtype, device=like.device)
    if bias is not None:
        bias = bias.to(like.dtype)
        mask = bias if mask is None else mask + bias
    return mask


def _check_inputs(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None) -> None:
    batch, heads, q_len, k_len, _ = check_qkv(query, key, value)
    check_attn_mask(attn_mask, batch=batch, heads=heads, q_len=q_len, k_len=k_len, like=query)


def sdpa_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    bias: Tensor | None = None,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    """``softmax(scale · q kᵀ + bias + mask) v`` by SDPA; fully masked rows give zeros.

    ``query (B, H, Lq, D)``, ``key (B, H, Lk, D)``, ``value (B, H, Lk, Dv)``; ``bias`` a float
    tensor broadcasting to ``(B, H, Lq, Lk)``; masks as in SDPA. Returns ``(B, H, Lq, Dv)``.

    Inputs are checked as in :func:`relpos.attention.shaw_attention` (a key and a value of
    different lengths, which CPU SDPA silently truncates to the shorter; an integer mask, which
    it would add to the logits), so the layers built on it get the same errors.
    """
    _check_inputs(query, key, value, attn_mask)
    dropout_p = check_dropout(dropout_p)
    if scale is not None:
        scale = check_scale(scale, query.shape[-1])
    q_len, k_len = query.shape[-2], key.shape[-2]
    if bias is None and attn_mask is None:
        # Let SDPA pick its fused causal path; no row can be fully masked when Lq <= Lk.
        if not is_causal or q_len <= k_len:
            return F.scaled_dot_product_attention(
                query, key, value, is_causal=is_causal, dropout_p=dropout_p, scale=scale
            )
    mask = _combined_mask(bias, attn_mask, is_causal, q_len, k_len, query)
    empty = fully_masked_rows(mask)
    # Asking whether any row is empty would stall a GPU's queue; on the CPU it saves a copy of
    # the whole mask in the common case (a finite bias, nothing masked away).
    if empty is not None and not mask.is_cuda and not bool(empty.any()):
        empty = None
    if empty is not None:
        # Some SDPA kernels give NaN (and NaN gradients) for a row with no allowed key: open such
        # rows up for the kernel, then zero their output, so nothing non-finite is ever formed.
        mask = mask.masked_fill(empty, 0.0)
    # A 4-D view: CPU SDPA (torch 2.13) runs its fused flash kernel only for a 4-D float mask;
    # given a per-head (H, Lq, Lk) bias it falls back to the math path, which forms the
    # softmax matrices (2x the time and 17x the memory at L = 2048; benchmarks/RESULTS.md).
    mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
    output = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout_p, scale=scale
    )
    if empty is not None:
        output = output.masked_fill(empty, 0.0)
    return output


def reference_bias_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    bias: Tensor | None = None,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """The manual computation :func:`sdpa_attention` is tested against (no dropout)."""
    _check_inputs(query, key, value, attn_mask)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    logits = (query @ key.transpose(-1, -2)) * scale  # (B, H, Lq, Lk)
    mask = _combined_mask(bias, attn_mask, is_causal, query.shape[-2], key.shape[-2], query)
    if mask is not None:
        logits = logits + mask
    return masked_softmax(logits) @ value
