"""Scalar biases that depend only on the distance ``j - i``: dense (SDPA) and FlexAttention paths.

T5's bucketed bias and ALiBi's linear bias are both *Toeplitz*: ``b_h(i, j) = f_h(j - i)``. A
block of ``Lq`` queries at positions ``query_offset + r`` and ``Lk`` keys at ``key_offset + c``
meets only ``Lq + Lk - 1`` distinct distances, so a scheme hands the kernels one small table,
``distance_bias (H, Lq + Lk - 1)``, whose column ``c - r + Lq - 1`` is the bias of query row ``r``
and key column ``c``. Column 0 belongs to the smallest distance,
``key_offset - query_offset - (Lq - 1)`` (see :func:`relative_distances`).

The same table runs three ways, all computing ``softmax(scale · q kᵀ + b + mask) v``:

* ``reference``: expand to ``(H, Lq, Lk)`` and do the softmax by hand
  (:func:`relpos.attention.sdpa.reference_bias_attention`) — the oracle;
* ``sdpa``: expand and pass it to SDPA as an additive mask (``O(H·Lq·Lk)`` memory for the bias);
* ``flex``: FlexAttention reads the table inside its ``score_mod``, so the ``(Lq, Lk)`` bias is
  never formed. It is fused only under ``torch.compile``, and its backward runs only on CUDA.

A bias that reads the content as well as the distance (DeBERTa's content-to-position and
position-to-content terms) is not Toeplitz, but when its relative vectors are few it factors the
same way: :class:`RelativeScores` holds each query's and each key's score against the ``R``
relative vectors and the row each distance uses, ``O(B·H·L·R)`` numbers, and
``b(r, c) = query_scores[r, ρ] + key_scores[c, ρ]`` with ``ρ = rows[c - r + Lq - 1]``.
:meth:`RelativeScores.dense` forms the ``(B, H, Lq, Lk)`` bias (the SDPA path, and the oracle);
:func:`flex_bias_attention` reads the two gathers inside ``score_mod`` instead.

Shape legend: ``B`` batch, ``H`` heads, ``Lq`` / ``Lk`` query / key length, ``D`` head size,
``Dv`` value head size.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import torch
from torch import Tensor

from .api import available_backends
from .checks import (
    check_attn_mask,
    check_dropout,
    check_qkv,
    check_scale,
    detached_without_grad,
    logit_mask,
    refuse_cpu_backward,
)
from .sdpa import fully_masked_rows, reference_bias_attention, sdpa_attention

__all__ = [
    "BIAS_BACKENDS",
    "relative_distances",
    "expand_distance_bias",
    "distance_columns",
    "gather_pair_scores",
    "RelativeScores",
    "flex_bias_attention",
    "flex_applies",
    "distance_bias_attention",
    "dense_bias_attention",
]

#: backends that mean something for a scalar bias, with ``"eager"`` (the eager Shaw backend
#: without tables, the bias as a float mask: see :func:`dense_bias_attention`); any other
#: registered (Shaw) backend name selects the fused SDPA path, because those kernels exist for
#: relative *tables*, not biases.
BIAS_BACKENDS = ("auto", "reference", "sdpa", "flex")

#: below this many queries or keys FlexAttention's 128-wide tiles are mostly padding and its
#: per-shape compilation is not repaid; SDPA with the dense bias is used instead.
FLEX_MIN_LENGTH = 128


def relative_distances(
    query_len: int,
    key_len: int,
    *,
    query_offset: int = 0,
    key_offset: int = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """``LongTensor (Lq + Lk - 1,)``: every distance ``j - i`` in the block, in table order.

    Entry ``t`` is ``key_offset - query_offset - (Lq - 1) + t``, so query row ``r`` and key
    column ``c`` (distance ``key_offset + c - query_offset - r``) read entry ``c - r + Lq - 1``.
    """
    for value, name in (
        (query_len, "query_len"),
        (key_len, "key_len"),
        (query_offset, "query_offset"),
        (key_offset, "key_offset"),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if query_len < 1 or key_len < 1:
        raise ValueError(
            f"query_len and key_len must be >= 1, got query_len={query_len}, key_len={key_len}"
        )
    smallest = key_offset - query_offset - (query_len - 1)
    return torch.arange(query_len + key_len - 1, device=device) + smallest


def _check_distance_bias(distance_bias: Tensor, heads: int, q_len: int, k_len: int) -> None:
    if not isinstance(distance_bias, Tensor) or not distance_bias.is_floating_point():
        raise TypeError(
            "distance_bias must be a floating-point torch.Tensor, got "
            f"{getattr(distance_bias, 'dtype', type(distance_bias).__name__)}"
        )
    width = q_len + k_len - 1
    if (
        distance_bias.dim() != 2
        or distance_bias.shape[0] not in (1, heads)
        or (distance_bias.shape[1] != width)
    ):
        raise ValueError(
            f"distance_bias must have shape (H, Lq + Lk - 1) = ({heads}, {width}) (or 1 row "
            f"shared by all heads), got {tuple(distance_bias.shape)}"
        )


def distance_columns(query_len: int, key_len: int, device=None) -> Tensor:
    """``LongTensor (Lq, Lk)``: the column ``c - r + Lq - 1`` of :func:`relative_distances`'s
    order that query row ``r`` and key column ``c`` read (constant along diagonals)."""
    rows = torch.arange(query_len, device=device)
    cols = torch.arange(key_len, device=device)
    return cols[None, :] - rows[:, None] + (query_len - 1)


def expand_distance_bias(distance_bias: Tensor, query_len: int, key_len: int) -> Tensor:
    """``(H, Lq + Lk - 1)`` per-distance biases → the dense ``(H, Lq, Lk)`` bias."""
    _check_distance_bias(distance_bias, distance_bias.shape[0], query_len, key_len)
    # Window s of unfold holds columns s .. s + Lk - 1, the row of query Lq - 1 - s: flipping the
    # windows gives the rows in order. Same values as indexing by distance_columns, ~2.4x faster
    # on the CPU at L = 2048 (one contiguous copy, no (Lq, Lk) index tensor).
    # contiguous first: T5's table arrives transposed, and a bias whose rows are not contiguous
    # makes SDPA copy it again and every row-wise pass over it slow.
    return distance_bias.contiguous().unfold(-1, key_len, 1).flip(-2)  # (H, Lq, Lk)


def gather_pair_scores(scores: Tensor, rows: Tensor, *, per: str) -> Tensor:
    """Read each pair's score from per-token scores against the relative rows of a table.

    ``scores (B, H, L, R)``: the score of every query (``per="query"``, ``L = Lq``) or every key
    (``per="key"``, ``L = Lk``) against each of ``R`` relative vectors; ``rows (Lq, Lk)``: the
    row that pair ``(i, j)`` uses. Returns ``(B, H, Lq, Lk)`` with entry ``(i, j)`` equal to
    ``scores[..., i, rows[i, j]]`` (query) or ``scores[..., j, rows[i, j]]`` (key). This is what
    Transformer-XL's "relative shift" and DeBERTa's ``gather`` compute.
    """
    batch, heads = scores.shape[:2]
    if per == "query":
        return scores.gather(-1, rows.expand(batch, heads, *rows.shape))
    if per == "key":
        by_key = scores.gather(-1, rows.T.expand(batch, heads, *rows.T.shape))  # (B, H, Lk, Lq)
        return by_key.transpose(-1, -2)
    raise ValueError(f"per must be 'query' or 'key', got {per!r}")


@dataclasses.dataclass(frozen=True)
class RelativeScores:
    """A bias that reads content and distance, in factored form (see the module docstring)::

        b[·, r, c] = query_scores[·, r, ρ] + key_scores[·, c, ρ],   ρ = rows[c - r + Lq - 1]

    Attributes:
        rows: ``LongTensor (Lq + Lk - 1,)``, the relative row of each distance, in
            :func:`relative_distances`'s order (smallest ``j - i`` first).
        query_scores: ``(B, H, Lq, R)``, each query against the ``R`` relative vectors (already
            scaled), or None.
        key_scores: ``(B, H, Lk, R)``, each key against ``R`` relative vectors, or None.
    """

    rows: Tensor
    query_scores: Tensor | None = None
    key_scores: Tensor | None = None

    def check(self, batch: int, heads: int, q_len: int, k_len: int) -> None:
        """Raise a ``ValueError`` naming the field whose shape does not fit the block."""
        rows = self.rows
        if not isinstance(rows, Tensor) or rows.dtype != torch.long or rows.dim() != 1:
            raise TypeError(f"rows must be a 1-D LongTensor, got {_describe(rows)}")
        if rows.shape[0] != q_len + k_len - 1:
            raise ValueError(
                f"rows must have Lq + Lk - 1 = {q_len + k_len - 1} entries, got {rows.shape[0]}"
            )
        widths = set()
        for scores, name, length in (
            (self.query_scores, "query_scores", q_len),
            (self.key_scores, "key_scores", k_len),
        ):
            if scores is None:
                continue
            if not isinstance(scores, Tensor) or not scores.is_floating_point():
                raise TypeError(f"{name} must be a floating-point Tensor, got {_describe(scores)}")
            if scores.dim() != 4 or tuple(scores.shape[:3]) != (batch, heads, length):
                raise ValueError(
                    f"{name} must have shape (B, H, L, R) = ({batch}, {heads}, {length}, R), "
                    f"got {tuple(scores.shape)}"
                )
            widths.add(scores.shape[-1])
        if len(widths) > 1:
            raise ValueError(
                "query_scores and key_scores must score the same R relative rows, got "
                f"R = {self.query_scores.shape[-1]} and {self.key_scores.shape[-1]}"
            )
        width = widths.pop() if widths else None
        if (
            width is not None
            and rows.numel()
            and not 0 <= int(rows.min()) <= int(rows.max()) < width
        ):
            raise ValueError(
                f"rows must lie in [0, R) = [0, {width}), got [{rows.min()}, {rows.max()}]"
            )

    def dense(self, query_len: int, key_len: int) -> Tensor | None:
        """The bias ``(B, H, Lq, Lk)`` (None when neither term is present)."""
        pair_rows = self.rows[distance_columns(query_len, key_len, self.rows.device)]  # (Lq, Lk)
        bias = None
        if self.query_scores is not None:
            bias = gather_pair_scores(self.query_scores, pair_rows, per="query")
        if self.key_scores is not None:
            by_key = gather_pair_scores(self.key_scores, pair_rows, per="key")
            bias = by_key if bias is None else bias + by_key
        return bias


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dim()}-D {value.dtype} Tensor"
    return type(value).__name__


def _causal_mask_mod(batch, head, q_idx, kv_idx):
    # Top-left aligned, as SDPA's is_causal: row r sees columns c <= r.
    return kv_idx <= q_idx


@functools.cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    # Without torch.compile FlexAttention falls back to an unfused path that forms the full
    # score matrix, which would defeat its purpose here. dynamic=False: a second shape would
    # otherwise be recompiled with symbolic sizes, and on the CPU (torch 2.13) that kernel
    # indexes captured tensors out of bounds (a gather by a captured row index failed so).
    return torch.compile(flex_attention, dynamic=False)


def unfused_flex_attention(*args, **kwargs):
    """PyTorch's unfused FlexAttention (it forms the whole score matrix), for the calls that
    choose it: float64 and ``compile=False`` on the CPU, and the Shaw backend's CPU forward with
    a value table. Its warning that it was called without ``torch.compile`` is about those very
    calls, so it would only alarm the caller."""
    from torch.nn.attention.flex_attention import flex_attention

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(*args, **kwargs)


def flex_bias_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    *,
    distance_bias: Tensor | None = None,
    relative_scores: RelativeScores | None = None,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    compiled: bool = True,
) -> Tensor:
    """``softmax(scale · q kᵀ + b + mask) v`` by FlexAttention, reading ``b`` in ``score_mod``.

    Args:
        query: ``(B, H, Lq, D)``; key ``(B, H, Lk, D)``; value ``(B, H, Lk, Dv)``.
        distance_bias: ``(H, Lq + Lk - 1)`` (or one shared row), see the module docstring.
        relative_scores: a content-reading bias in factored form (:class:`RelativeScores`),
            read by two gathers per score; its scores may need gradients (on CUDA they reach
            them through FlexAttention's gradients for captured tensors).
        attn_mask: bool (True = may attend) or float, broadcasting to ``(B, H, Lq, Lk)``; it is
            read inside ``score_mod`` too, so it gives no block sparsity.
        is_causal: top-left aligned causal mask; alone it becomes a block mask, so fully masked
            tiles are skipped.
        scale: logit scale, default ``1/sqrt(D)``.
        compiled: use ``torch.compile(flex_attention)`` (the fused kernel). ``False`` runs
            FlexAttention's unfused eager path — forward only on CPU, handy for testing. Float64
            on the CPU always runs unfused: compiled CPU FlexAttention takes float32, float16
            and bfloat16 only.

    Returns:
        ``(B, H, Lq, Dv)``; a query row whose keys are all masked gives zeros, as in
        :func:`relpos.attention.sdpa.sdpa_attention`. No dropout: FlexAttention has none.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    batch, heads, q_len, k_len, _ = check_qkv(query, key, value)
    check_attn_mask(attn_mask, batch=batch, heads=heads, q_len=q_len, k_len=k_len, like=query)
    if distance_bias is not None:
        _check_distance_bias(distance_bias, heads, q_len, k_len)
        # SDPA's path casts the bias to the query dtype too; keep the two paths alike.
        distance_bias = distance_bias.to(query.dtype).expand(heads, -1)  # (H, Lq + Lk - 1)
    rows = query_scores = key_scores = None
    needs_grad = [query, key, value, distance_bias]
    if relative_scores is not None:
        needs_grad += [relative_scores.query_scores, relative_scores.key_scores]
    refuse_cpu_backward(query, needs_grad, instead="auto")
    query, key, value = detached_without_grad(query, key, value)
    if relative_scores is not None:
        relative_scores.check(batch, heads, q_len, k_len)
        rows = relative_scores.rows.to(query.device)  # (Lq + Lk - 1,)
        query_scores, key_scores = relative_scores.query_scores, relative_scores.key_scores

    block_mask, dense_mask, empty = None, None, None
    if attn_mask is not None:
        dense_mask = logit_mask(
            attn_mask, is_causal, q_len, k_len, dtype=query.dtype, device=query.device
        )
        # As in sdpa_attention: open rows with no allowed key for the kernel, zero them after.
        empty = fully_masked_rows(dense_mask)
        dense_mask = dense_mask.masked_fill(empty, 0.0).expand(batch, heads, q_len, k_len)
    elif is_causal:
        block_mask = create_block_mask(
            _causal_mask_mod, None, None, q_len, k_len, device=query.device
        )

    def score_mod(score, b, h, q_idx, kv_idx):
        if distance_bias is not None:
            score = score + distance_bias[h, kv_idx - q_idx + (q_len - 1)]
        if rows is not None:
            row = rows[kv_idx - q_idx + (q_len - 1)]
            if query_scores is not None:
                score = score + query_scores[b, h, q_idx, row]
            if key_scores is not None:
                score = score + key_scores[b, h, kv_idx, row]
        if dense_mask is not None:
            score = score + dense_mask[b, h, q_idx, kv_idx]
        return score

    compiled = compiled and (query.is_cuda or query.dtype != torch.float64)
    attend = _compiled_flex_attention() if compiled else unfused_flex_attention
    output = attend(query, key, value, score_mod=score_mod, block_mask=block_mask, scale=scale)
    if empty is not None:
        output = output.masked_fill(empty, 0.0)
    return output


def flex_applies(
    query: Tensor,
    key: Tensor,
    *,
    distance_bias: Tensor,
    attn_mask: Tensor | None,
    dropout_p: float,
) -> bool:
    """Whether ``auto`` takes FlexAttention: CUDA, long blocks, no dropout, no dense mask.

    Its CPU backward does not exist, a dense mask removes its advantage (it would be read per
    score like the SDPA bias), and a bias that needs gradients is scattered back with atomics,
    which PyTorch's authors describe as possibly slower; those cases stay on SDPA.
    """
    return (
        query.is_cuda
        and dropout_p == 0.0
        and attn_mask is None
        and not distance_bias.requires_grad
        and min(query.shape[-2], key.shape[-2]) >= FLEX_MIN_LENGTH
    )


def distance_bias_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    distance_bias: Tensor,
    *,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
    backend: str = "auto",
) -> Tensor:
    """Attention with a per-distance bias, by the path ``backend`` names.

    ``distance_bias (H, Lq + Lk - 1)`` as in the module docstring; other arguments as
    :func:`relpos.attention.sdpa.sdpa_attention`. ``backend``: ``"auto"`` (FlexAttention where
    :func:`flex_applies`, else SDPA), ``"sdpa"``, ``"flex"``, ``"reference"`` (manual, no
    dropout), ``"eager"`` (see :func:`dense_bias_attention`); the name of any other registered
    backend selects SDPA. Returns ``(B, H, Lq, Dv)``.
    """
    batch, heads, q_len, k_len, head_dim = check_qkv(query, key, value)
    _check_distance_bias(distance_bias, heads, q_len, k_len)
    check_attn_mask(attn_mask, batch=batch, heads=heads, q_len=q_len, k_len=k_len, like=query)
    dropout_p = check_dropout(dropout_p)
    scale = check_scale(scale, head_dim)
    check_bias_backend(backend, dropout_p, no_dropout=("reference", "flex"))
    if backend == "flex" or (
        backend == "auto"
        and flex_applies(
            query, key, distance_bias=distance_bias, attn_mask=attn_mask, dropout_p=dropout_p
        )
    ):
        return flex_bias_attention(
            query,
            key,
            value,
            distance_bias=distance_bias,
            attn_mask=attn_mask,
            is_causal=is_causal,
            scale=scale,
        )
    bias = expand_distance_bias(distance_bias, q_len, k_len)  # (H, Lq, Lk)
    return dense_bias_attention(
        query,
        key,
        value,
        bias,
        attn_mask=attn_mask,
        is_causal=is_causal,
        dropout_p=dropout_p,
        scale=scale,
        backend=backend,
    )


def check_bias_backend(backend: str, dropout_p: float, *, no_dropout: tuple[str, ...]) -> None:
    """A backend name for a bias (or any registered Shaw backend), and no dropout asked of the
    backends in ``no_dropout``."""
    if not isinstance(backend, str) or backend not in (*BIAS_BACKENDS, *available_backends()):
        valid = sorted({*BIAS_BACKENDS, *available_backends()})
        raise ValueError(f"unknown backend {backend!r}; valid names: {', '.join(valid)}")
    if backend in no_dropout and dropout_p > 0:
        raise ValueError(
            f"backend={backend!r} has no attention dropout, got dropout_p={dropout_p}; use "
            "backend='auto' (SDPA), or dropout_p=0.0 (evaluation)"
        )


def dense_bias_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    bias: Tensor | None,
    *,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
    backend: str = "auto",
) -> Tensor:
    """``softmax(scale · q kᵀ + bias + mask) v`` for a bias already formed densely (broadcasting
    to ``(B, H, Lq, Lk)``; None for none): by hand for ``backend="reference"`` (no dropout),
    by the eager Shaw backend without tables for ``"eager"`` (the bias as a float mask), by
    SDPA for any other valid name. Returns ``(B, H, Lq, Dv)``."""
    check_bias_backend(backend, check_dropout(dropout_p), no_dropout=("reference",))
    if backend == "reference":
        return reference_bias_attention(
            query, key, value, bias=bias, attn_mask=attn_mask, is_causal=is_causal, scale=scale
        )
    if backend == "eager" and bias is not None:
        # The eager Shaw backend without tables: the bias becomes a float mask, which gets dS
        # as its gradient. On the CPU that spares a learned bias SDPA's math path (CPU SDPA's
        # fused kernel gives a bias no gradient): T5 2.35x instead of 2.83x SDPA at L = 2048,
        # but slower at short lengths (5.1x instead of 4.0x at L = 16), so "auto" keeps SDPA
        # (benchmarks/RESULTS.md, "What each scheme's attention costs").
        from .api import shaw_attention

        mask = bias
        if attn_mask is not None:
            mask = bias + logit_mask(
                attn_mask, False, query.shape[-2], key.shape[-2], dtype=bias.dtype,
                device=bias.device,
            )  # fmt: skip
        return shaw_attention(
            query,
            key,
            value,
            None,
            None,
            max_distance=0,
            attn_mask=mask.to(query.dtype),
            is_causal=is_causal,
            dropout_p=dropout_p,
            scale=scale,
            backend="eager",
        )
    return sdpa_attention(
        query,
        key,
        value,
        bias=bias,
        attn_mask=attn_mask,
        is_causal=is_causal,
        dropout_p=dropout_p,
        scale=scale,
    )
