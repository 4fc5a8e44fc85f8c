"""FlexAttention backend for Shaw et al. (2018) relative attention: a portable second opinion.

FlexAttention (``torch.nn.attention.flex_attention``) fuses softmax attention with a per-score
``score_mod`` and a block-sparse ``mask_mod``. Shaw's two terms map onto it as follows.

* Key term (Eq. 4): ``score_mod`` sees only indices, not ``q_r``, so ``QA = Q A_Kᵀ``
  ``(B, H, Lq, R)`` is computed first and captured; the modification adds
  ``scale · QA[b, h, r, bucket(r, c)]``. Its gradient reaches ``QA`` (and through it ``Q`` and
  ``A_K``) via FlexAttention's gradients for captured tensors.
* Value term (Eq. 3): ``Σ_b M[r, b] A_V[b]`` needs each row's attention mass per bucket, which
  FlexAttention does not return. Two more block-sparse calls recover it exactly:

  - interior buckets (one key each, ``-max_left < j - i < max_right``): a call restricted to that
    band whose values are one-hot codes of ``c mod W`` (``W >= R - 2``, so the band keys of one
    row get distinct codes) returns the band-normalised ``p'_rc`` at code ``c mod W``; times
    ``exp(lse_band_r - lse_r)`` that is ``p_rc = M[r, bucket(r, c)]``;
  - left tail (``j - i <= -max_left``): a call restricted to it gives ``lse_left`` and
    ``M[r, 0] = exp(lse_left_r - lse_r)``;
  - right tail: the rest, ``M[r, R - 1] = 1 - M[r, 0] - Σ_interior M[r, b]`` (0 for a row
    with no allowed key).

FlexAttention runs forward and backward on CUDA, forward only on the CPU: compiled with
``torch.compile`` (a wait per new shape) when there is no value table, since compiled CPU
FlexAttention cannot return the log-sum-exp; otherwise, for float64 (compiled CPU FlexAttention
takes float32, float16 and bfloat16 only), or with ``compile=False``, as PyTorch's unfused
reference, which forms the full score matrix. The value term's bucket masses are computed in the
input's dtype (float32 for half inputs). ``auto`` never picks it: the Triton kernel is
faster on CUDA and eager is faster on the CPU.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
from torch import Tensor

from .api import register_backend
from .checks import detached_without_grad, refuse_cpu_backward
from .eager import eager_attention
from .flex_bias import unfused_flex_attention
from .index import RelativeIndex

__all__ = ["flex_shaw_attention", "flex_applies", "flex_available"]


def flex_available() -> bool:
    """Whether this torch has FlexAttention (it is not imported)."""
    return importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def flex_applies(
    *, query: Tensor, key_query: bool = False, dropout: bool = False, **_: object
) -> bool:
    """Whether FlexAttention can run these inputs well: CUDA, no dropout, no key-query term.

    (``auto`` does not consult it: the backend is registered without an ``auto`` priority.)
    """
    return query.is_cuda and not dropout and not key_query and flex_available()


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex_call(query, key, value, score_mod, block_mask, scale, compile: bool):
    """FlexAttention returning ``(output, lse)``; the lse is natural-log, ``-inf`` when empty
    (``None`` from a compiled call on the CPU, which cannot return it)."""
    from torch.nn.attention import flex_attention as flex

    fn = _compiled_flex() if compile else unfused_flex_attention
    if compile and not query.is_cuda:
        return fn(query, key, value, score_mod=score_mod, block_mask=block_mask, scale=scale), None
    if hasattr(flex, "AuxRequest"):
        out, aux = fn(
            query,
            key,
            value,
            score_mod=score_mod,
            block_mask=block_mask,
            scale=scale,
            return_aux=flex.AuxRequest(lse=True),
        )
        return out, aux.lse
    return fn(
        query, key, value, score_mod=score_mod, block_mask=block_mask, scale=scale, return_lse=True
    )  # torch < 2.9


def _read_mask(mask: Tensor):
    """``f(b, h, q, kv)`` reading a mask already expanded to ``(B, H, Lq, Lk)``."""

    def read(b, h, q_idx, kv_idx):
        return mask[b, h, q_idx, kv_idx]

    return read


def _varies(mask: Tensor, dim: int) -> bool:
    """Whether an expanded mask differs along ``dim``: a broadcast (stride-0) dimension does not,
    and then one block mask serves every batch entry or head."""
    return mask.shape[dim] > 1 and mask.stride(dim) != 0


def _region_mask_mod(index: RelativeIndex, region: str, is_causal: bool, allowed):
    """``mask_mod`` for one region of the relative index (``all``, ``band`` or ``left``), with the
    causal and boolean masks on top. ``allowed`` reads the boolean mask (or is ``None``)."""
    shift, left, right = index.diagonal_shift, index.max_left, index.max_right

    def mask_mod(b, h, q_idx, kv_idx):
        distance = kv_idx - q_idx - shift  # j - i
        if region == "band":
            keep = (distance > -left) & (distance < right)
        elif region == "left":
            keep = distance <= -left
        else:
            keep = distance == distance  # everything (a tensor, as FlexAttention wants)
        if is_causal:
            keep = keep & (kv_idx <= q_idx)  # top-left aligned, as in SDPA
        if allowed is not None:
            keep = keep & allowed(b, h, q_idx, kv_idx)
        return keep

    return mask_mod


@functools.lru_cache(maxsize=32)
def _cached_block_mask(index: RelativeIndex, region: str, is_causal: bool, device: str):
    return _make_block_mask(index, region, is_causal, None, device)


def _make_block_mask(index, region, is_causal, bool_mask, device):
    from torch.nn.attention.flex_attention import create_block_mask

    if region == "all" and not is_causal and bool_mask is None:
        return None  # dense: FlexAttention's default
    allowed = None if bool_mask is None else _read_mask(bool_mask)
    batch = bool_mask.shape[0] if bool_mask is not None and _varies(bool_mask, 0) else None
    heads = bool_mask.shape[1] if bool_mask is not None and _varies(bool_mask, 1) else None
    return create_block_mask(
        _region_mask_mod(index, region, is_causal, allowed),
        batch,
        heads,
        index.query_len,
        index.key_len,
        device=device,
    )


def _block_mask(index, region, is_causal, bool_mask, device):
    if bool_mask is None:
        return _cached_block_mask(index, region, is_causal, str(device))
    return _make_block_mask(index, region, is_causal, bool_mask, device)


def _interior_masses(
    band_out: Tensor, band_lse: Tensor, lse: Tensor, index: RelativeIndex, dtype: torch.dtype
):
    """``(B, H, Lq, R - 2)``: ``M[r, b]`` for the interior buckets, from the band call's one-hot
    outputs ``band_out (B, H, Lq, W)`` (band-normalised) and the two log-sum-exps, in ``dtype``."""
    codes = band_out.shape[-1]
    rows = torch.arange(index.query_len, device=band_out.device)
    offsets = torch.arange(1, index.num_buckets - 1, device=band_out.device) - index.max_left
    columns = rows[:, None] + index.diagonal_shift + offsets[None, :]  # (Lq, R-2): c of bucket b
    code_index = (columns % codes).expand(*band_out.shape[:2], -1, -1)
    band_weights = band_out.gather(-1, code_index).to(dtype)  # p'_rc
    return band_weights * _mass_ratio(band_lse, lse, dtype)[..., None]


def _mass_ratio(part_lse: Tensor, lse: Tensor, dtype: torch.dtype) -> Tensor:
    """``exp(part_lse - lse)`` in ``dtype``: the share of a row's mass in a region (0 for an
    empty row)."""
    # exp(x - inf) = 0 for a row with no allowed key, where lse = -inf; never inf - inf.
    safe_lse = torch.where(torch.isinf(lse), torch.full_like(lse, float("inf")), lse)
    return torch.exp(part_lse.to(dtype) - safe_lse.to(dtype))


def flex_shaw_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    index: RelativeIndex,
    key_table: Tensor | None,
    value_table: Tensor | None,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_mask: Tensor | None = None,
    key_query: bool = False,
    compile: bool = True,
) -> Tensor:
    """Shaw relative attention (keys and values) through FlexAttention.

    Same contract as :func:`relpos.attention.reference.reference_attention`: ``query (B, H, Lq,
    D)``, ``key (B, H, Lk, D)``, ``value (B, H, Lk, Dv)``, tables ``(Ht, R, D)`` / ``(Ht, R, Dv)``
    with ``Ht ∈ {1, H}``, boolean masks (as block masks) or float masks (added in the score
    modification) broadcasting to ``(B, H, Lq, Lk)``; returns ``(B, H, Lq, Dv)``. FlexAttention
    has no dropout and no key-query term, and fails on an empty dimension (with ``Lk = 0`` by a
    division by zero that kills the process), so those calls run the eager backend instead.
    ``compile=False`` uses PyTorch's unfused FlexAttention reference (no compile wait).
    """
    empty = 0 in (*query.shape[:3], key.shape[-2])
    if dropout_mask is not None or key_query or empty:
        return eager_attention(
            query,
            key,
            value,
            index=index,
            key_table=key_table,
            value_table=value_table,
            attn_mask=attn_mask,
            is_causal=is_causal,
            scale=scale,
            dropout_mask=dropout_mask,
            key_query=key_query,
        )
    if not flex_available():
        raise ValueError(
            f"the flex backend needs torch.nn.attention.flex_attention "
            f"(torch >= 2.5), this is torch {torch.__version__}"
        )
    refuse_cpu_backward(query, (query, key, value, key_table, value_table), instead="eager")
    query, key, value = detached_without_grad(query, key, value)
    scale = query.shape[-1] ** -0.5 if scale is None else float(scale)
    bool_mask = float_mask = None
    if attn_mask is not None:
        # A view with every dimension at full size, so that the mask_mod and score_mod read
        # [b, h, q_idx, kv_idx] for any broadcastable shape: a size-1 key dimension, read at
        # kv_idx, would be out of bounds (unchecked in compiled CUDA code).
        full_mask = attn_mask.expand(*query.shape[:3], key.shape[-2])  # (B, H, Lq, Lk)
        if attn_mask.dtype == torch.bool:
            bool_mask = full_mask
        else:
            float_mask = full_mask
    shift, left, right = index.diagonal_shift, index.max_left, index.max_right

    # Captured by score_mod: q_r · w^K_b, already scaled like the content scores.
    query_rel = None
    if key_table is not None:
        query_rel = (query @ key_table.transpose(-1, -2)) * scale  # (B, H, Lq, R)
    read_float_mask = None if float_mask is None else _read_mask(float_mask)

    def score_mod(score, b, h, q_idx, kv_idx):
        if query_rel is not None:
            bucket = torch.clamp(kv_idx - q_idx - shift, -left, right) + left
            score = score + query_rel[b, h, q_idx, bucket]
        if read_float_mask is not None:
            score = score + read_float_mask(b, h, q_idx, kv_idx)
        return score

    # Compiled FlexAttention on the CPU cannot return the log-sum-exp (torch 2.13), which the value
    # term needs, and takes only float32/float16/bfloat16: there, the value term and float64 run
    # PyTorch's unfused reference instead.
    compile = compile and (query.is_cuda or (value_table is None and query.dtype != torch.float64))

    def call(values, region):
        block_mask = _block_mask(index, region, is_causal, bool_mask, query.device)
        return _flex_call(query, key, values, score_mod, block_mask, scale, compile)

    if value_table is None:
        return call(value, "all")[0]
    out, lse = call(value, "all")

    # The masses are differences of exponentials of log-sum-exps: computed in the input's dtype
    # (float32 for half inputs), since in float32 a float64 call would lose half its digits.
    mass_dtype = torch.promote_types(query.dtype, torch.float32)
    rows_with_keys = torch.isfinite(lse).to(mass_dtype)
    buckets = index.num_buckets
    if buckets == 1:
        masses = rows_with_keys[..., None]  # one bucket holds everything
    else:
        _, left_lse = call(value, "left")
        left_tail = _mass_ratio(left_lse, lse, mass_dtype)
        interior = rows_with_keys.new_zeros(*lse.shape, 0)
        if buckets > 2:
            codes = max(16, 1 << (buckets - 3).bit_length())  # a power of two >= R - 2
            code_values = torch.nn.functional.one_hot(
                torch.arange(index.key_len, device=query.device) % codes, codes
            ).to(query.dtype)  # (Lk, W): key c -> one-hot code of c mod W
            code_values = code_values.expand(*query.shape[:2], -1, -1)
            band_out, band_lse = call(code_values, "band")
            interior = _interior_masses(band_out, band_lse, lse, index, mass_dtype)
        right_tail = rows_with_keys - left_tail - interior.sum(-1)
        masses = torch.cat([left_tail[..., None], interior, right_tail[..., None]], dim=-1)
    return out + masses.to(value_table.dtype) @ value_table  # + Σ_b M[r, b] w^V_b


register_backend("flex", flex_shaw_attention, applies=flex_applies)
