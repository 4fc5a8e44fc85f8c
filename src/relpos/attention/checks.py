"""Input checks shared by the attention entry points.

Every check raises a ``ValueError`` / ``TypeError`` that names the argument, the shape or value it
got and what was expected: a wrong call should never turn into a silent broadcast or an error from
deep inside a kernel.
"""

from __future__ import annotations

import contextlib
import functools
import math

import torch
from torch import Tensor

__all__ = [
    "causal_by_position",
    "check_qkv",
    "check_table",
    "check_attn_mask",
    "check_mask_dtype",
    "check_scale",
    "check_dropout",
    "normalize_table",
    "logit_mask",
]


def _shape(t: Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_qkv(query: Tensor, key: Tensor, value: Tensor) -> tuple[int, int, int, int, int]:
    """Check ``query (B, H, Lq, D)``, ``key (B, H, Lk, D)``, ``value (B, H, Lk, Dv)``.

    Returns ``(B, H, Lq, Lk, D)``.
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"{name} must have 4 dimensions (batch, heads, length, head_dim), "
                f"got shape {_shape(t)}"
            )
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    batch, heads, q_len, head_dim = query.shape
    _, _, k_len, _ = key.shape
    if key.shape[:2] != query.shape[:2] or key.shape[3] != head_dim:
        raise ValueError(
            f"key must have shape (B, H, Lk, D) = ({batch}, {heads}, Lk, {head_dim}) to match "
            f"query {_shape(query)}, got {_shape(key)}"
        )
    if value.shape[:3] != key.shape[:3]:
        raise ValueError(
            f"value must have shape (B, H, Lk, Dv) = ({batch}, {heads}, {k_len}, Dv) to match "
            f"key {_shape(key)}, got {_shape(value)}"
        )
    for name, t in (("key", key), ("value", value)):
        if t.dtype != query.dtype:
            raise TypeError(
                f"{name} has dtype {t.dtype} but query has {query.dtype}; cast them alike"
            )
        if t.device != query.device:
            raise ValueError(f"{name} is on {t.device} but query is on {query.device}")
    if head_dim == 0 or value.shape[3] == 0:
        raise ValueError(
            f"head_dim must be > 0, got query {_shape(query)} and value {_shape(value)}"
        )
    return batch, heads, q_len, k_len, head_dim


def check_table(
    table: Tensor | None, name: str, *, rows: int, dim: int, heads: int, like: Tensor
) -> None:
    """A relative table is ``(rows, dim)`` shared by all heads or ``(heads, rows, dim)``."""
    if table is None:
        return
    if not isinstance(table, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(table).__name__}")
    if table.dim() == 2:
        expected = f"({rows}, {dim})"
        ok = tuple(table.shape) == (rows, dim)
    elif table.dim() == 3:
        expected = f"({heads}, {rows}, {dim})"
        ok = tuple(table.shape) == (heads, rows, dim)
    else:
        ok, expected = False, f"({rows}, {dim}) or ({heads}, {rows}, {dim})"
    if not ok:
        raise ValueError(
            f"{name} must have shape (2k+1, D) = ({rows}, {dim}) shared by all heads, or "
            f"(H, 2k+1, D) = ({heads}, {rows}, {dim}) per head, got {_shape(table)} "
            f"(expected {expected}; 2k+1 = max_left + max_right + 1 = {rows})"
        )
    if table.dtype != like.dtype:
        raise TypeError(
            f"{name} has dtype {table.dtype} but query has {like.dtype}; cast them alike"
        )
    if table.device != like.device:
        raise ValueError(f"{name} is on {table.device} but query is on {like.device}")


def normalize_table(table: Tensor | None) -> Tensor | None:
    """View a table as ``(H or 1, rows, dim)`` so that it broadcasts over heads."""
    if table is None or table.dim() == 3:
        return table
    return table.unsqueeze(0)


def check_mask_dtype(attn_mask: Tensor) -> None:
    """A mask is bool or floating point: an integer 0/1 mask would be *added* to the logits and
    mask nothing (SDPA refuses it too)."""
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise TypeError(
            f"attn_mask must be bool (True = may attend) or floating point (added to the logits), "
            f"got dtype {attn_mask.dtype}"
        )


def check_attn_mask(
    attn_mask: Tensor | None, *, batch: int, heads: int, q_len: int, k_len: int, like: Tensor
) -> None:
    """``attn_mask`` must broadcast to ``(B, H, Lq, Lk)`` without growing any other dimension."""
    if attn_mask is None:
        return
    if not isinstance(attn_mask, Tensor):
        raise TypeError(f"attn_mask must be a torch.Tensor or None, got {type(attn_mask).__name__}")
    target = (batch, heads, q_len, k_len)
    # Align from the right, as broadcasting does: (Lk,), (Lq, Lk), (H, Lq, Lk), (B, H, Lq, Lk).
    fits = attn_mask.dim() <= 4 and all(
        have in (1, want)
        for have, want in zip(attn_mask.shape, target[4 - attn_mask.dim() :], strict=True)
    )
    if not fits:
        raise ValueError(
            f"attn_mask of shape {_shape(attn_mask)} does not broadcast to (B, H, Lq, Lk) = "
            f"{target}; use (Lq, Lk), (B, 1, Lq, Lk), (B, 1, 1, Lk) for key padding, "
            "or (B, H, Lq, Lk)"
        )
    check_mask_dtype(attn_mask)
    if attn_mask.device != like.device:
        raise ValueError(f"attn_mask is on {attn_mask.device} but query is on {like.device}")


def check_scale(scale: float | None, head_dim: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite float or None (1/sqrt(D)), got {scale!r}")
    return float(scale)


def check_dropout(dropout_p: float) -> float:
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)):
        raise TypeError(f"dropout_p must be a float in [0, 1), got {dropout_p!r}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    return float(dropout_p)


def logit_mask(
    attn_mask: Tensor | None, is_causal: bool, q_len: int, k_len: int, *, dtype, device
) -> Tensor | None:
    """Turn ``attn_mask`` / ``is_causal`` into one additive float mask (or ``None``).

    The meaning is that of ``scaled_dot_product_attention``: a boolean mask is True where a query
    may attend, a float mask is added to the logits, and ``is_causal`` is the top-left aligned
    lower-triangular mask (query row ``r`` sees key columns ``c <= r``). Both may be given; they
    combine. Any other mask dtype is a ``TypeError`` (see :func:`check_mask_dtype`).
    """
    mask = None
    if attn_mask is not None:
        check_mask_dtype(attn_mask)
        if attn_mask.dtype == torch.bool:
            mask = torch.zeros(attn_mask.shape, dtype=dtype, device=device)
            mask = mask.masked_fill(~attn_mask, float("-inf"))
        else:
            mask = attn_mask.to(dtype)
    if is_causal:
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril()
        causal = torch.zeros(q_len, k_len, dtype=dtype, device=device)
        causal = causal.masked_fill(~allowed, float("-inf"))
        mask = causal if mask is None else mask + causal
    return mask


def causal_by_position(
    attn_mask: Tensor | None,
    is_causal: bool,
    q_len: int,
    k_len: int,
    query_offset: int,
    key_offset: int,
    device: torch.device,
) -> tuple[Tensor | None, bool]:
    """``is_causal`` for queries and keys at absolute positions: query row ``r`` (position
    ``query_offset + r``) may see key column ``c`` (position ``key_offset + c``) iff
    ``key_offset + c <= query_offset + r``.

    With equal offsets that is SDPA's top-left mask, and the flag goes on as it came (fused
    kernels skip whole masked blocks). With unequal offsets, as in cached decoding, the top-left
    mask would be wrong (a single new query would see only the first key), so it becomes an
    explicit ``(Lq, Lk)`` mask combined with ``attn_mask``. Returns ``(attn_mask, is_causal)``
    for the backends, which know only the top-left meaning.
    """
    if not is_causal or query_offset == key_offset:
        return attn_mask, is_causal
    query_pos = torch.arange(q_len, device=device) + query_offset
    key_pos = torch.arange(k_len, device=device) + key_offset
    allowed = key_pos[None, :] <= query_pos[:, None]  # (Lq, Lk)
    if attn_mask is None:
        return allowed, False
    if attn_mask.dtype == torch.bool:
        return attn_mask & allowed, False
    return torch.where(allowed, attn_mask, attn_mask.new_tensor(float("-inf"))), False


def autocast_off(device: torch.device):
    """A context in which ``torch.autocast`` is off for ``device`` (if it was on). The backends
    pick their own compute dtype (float32 for half inputs, or a fused kernel's own), and their
    in-place ops need every tensor to keep it; autocast would turn their matmuls to half."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def backward_without_autocast(backward):
    """For an ``autograd.Function.backward`` (inside ``@staticmethod``): run it with autocast off,
    as its forward ran, also when ``.backward()`` is called inside an autocast context."""

    @functools.wraps(backward)
    def wrapped(ctx, *grads):
        with autocast_off(grads[0].device):
            return backward(ctx, *grads)

    return wrapped


def detached_without_grad(*tensors: Tensor) -> tuple[Tensor, ...]:
    """``tensors`` detached when grad mode is off, else as they are. FlexAttention refuses CPU
    inputs that require a gradient even under ``torch.no_grad()`` (it reads the flag, not the
    mode), so what :func:`refuse_cpu_backward` advises would fail without this."""
    if torch.is_grad_enabled():
        return tensors
    return tuple(t.detach() for t in tensors)


def refuse_cpu_backward(query: Tensor, tensors, *, instead: str) -> None:
    """FlexAttention has no backward on the CPU: a ``ValueError`` before the call when ``query``
    is not on CUDA and any of ``tensors`` (None allowed) would need a gradient."""
    if (
        not query.is_cuda
        and torch.is_grad_enabled()
        and any(t is not None and t.requires_grad for t in tensors)
    ):
        raise ValueError(
            "the flex backend has no backward on the CPU (FlexAttention's limit); run it under "
            f"torch.no_grad(), on CUDA, or use backend={instead!r}"
        )
