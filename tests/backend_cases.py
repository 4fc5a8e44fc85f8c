"""Random inputs and masks shared by the fused-backend tests (Triton, FlexAttention)."""

from __future__ import annotations

import torch

from relpos.attention import RelativeIndex


def make_case(
    *,
    batch=1,
    heads=2,
    q_len=40,
    k_len=40,
    head_dim=32,
    value_dim=None,
    left=3,
    right=3,
    query_offset=0,
    key_offset=0,
    per_head=False,
    keys=True,
    values=True,
    dtype=torch.float32,
    device="cpu",
    requires_grad=False,
    seed=0,
):
    """``(index, tensors)``: query/key/value ``(B, H, L, D)``, tables ``(Ht, R, D)`` or None."""
    value_dim = head_dim if value_dim is None else value_dim
    gen = torch.Generator().manual_seed(seed)
    index = RelativeIndex(q_len, k_len, left, right, query_offset, key_offset)
    rows, table_heads = index.num_buckets, heads if per_head else 1

    def make(*shape):
        return torch.randn(*shape, generator=gen).to(device, dtype).requires_grad_(requires_grad)

    tensors = {
        "query": make(batch, heads, q_len, head_dim),
        "key": make(batch, heads, k_len, head_dim),
        "value": make(batch, heads, k_len, value_dim),
        "key_table": make(table_heads, rows, head_dim) if keys else None,
        "value_table": make(table_heads, rows, value_dim) if values else None,
    }
    return index, tensors


def make_mask(kind, index, *, batch=1, device="cpu"):
    """``padding`` (B, 1, 1, Lk) with the last 5 keys of batch 0 masked; ``dense`` (Lq, Lk) bool
    with query row 3 seeing no key; ``float`` (B, 1, Lq, Lk); anything else None."""
    gen = torch.Generator().manual_seed(2)
    if kind == "padding":
        mask = torch.ones(batch, 1, 1, index.key_len, dtype=torch.bool)
        mask[0, ..., -5:] = False
    elif kind == "dense":
        mask = torch.rand(index.query_len, index.key_len, generator=gen) > 0.3
        mask[3] = False
    elif kind == "float":
        mask = torch.randn(batch, 1, index.query_len, index.key_len, generator=gen)
    else:
        return None
    return mask.to(device)
