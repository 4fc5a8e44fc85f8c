"""Memory-lean eager relative attention: ``O(Lq·Lk)`` memory, never an ``(Lq, Lk, D)`` tensor.

Shaw et al. (2018), Sec. 3.3, split each term in two. With ``R = 2k + 1`` table rows and
``b(i, j)`` the table row of a pair:

* key term: ``q_i · a^K_ij = (Q A_Kᵀ)[i, b(i, j)]`` — one small ``(Lq, R)`` matmul, then a
  gather by the index;
* value term: ``Σ_j α_ij a^V_ij = Σ_b (Σ_{j: b(i,j)=b} α_ij) A_V[b]`` — the attention mass of each
  row summed per relative bucket ``(Lq, R)``, then a small matmul with ``A_V``.

Two implementations of the same contract live here:

* :func:`gather_scatter_attention`, the readable one: the gather and the bucket sums go through
  an ``(Lq, Lk)`` index with ``gather`` / ``scatter_add``, and autograd derives the backward.
* :class:`ShawAttentionFunction`, the fast one (what ``eager`` runs), with a hand-written
  backward. It never reads a dense index: the clipped index is constant to the left of the band
  (bucket 0) and to its right (bucket ``R - 1``), so in a block of ``T`` query rows everything
  but a ``T × (T + R)`` window is a rectangle of one bucket, and a per-bucket add or sum there is
  a single sliced in-place op. The window's index depends only on ``c - r``, so one small index
  serves every block (:class:`BandBlocks`). Both passes work on chunks of query rows whose
  ``(B, H, C, Lk)`` scores fit in cache: the forward keeps only the ``(Lq, Lk)`` weights for the
  backward (and nothing ``(Lq, Lk)``-sized when no gradient is wanted), the backward builds
  ``dS`` one row block at a time. Fresh large tensors are what this avoids: on the 2-core CPU
  of ``benchmarks/RESULTS.md`` (one thread), touching a new 64 MiB tensor took 26 ms, longer
  than the 24 ms batched matmul ``(4, 2048, 64) @ (4, 64, 2048)`` that fills it.

Backward of the fast path (``P`` weights, ``W = P ⊙ dropout``, ``Qs = scale·Q``)::

    dV   = Wᵀ dO                      dA_V = Σ_batch bucket_sum(W)ᵀ dO
    dW   = dO Vᵀ + gather(dO A_Vᵀ)    ρ    = rowsum(dO ⊙ O)          (= rowsum(dW ⊙ W))
    dS   = P ⊙ (dW ⊙ dropout − ρ)
    dQ   = scale · (dS K + bucket_sum(dS) A_K)
    dK   = dSᵀ Qs                     dA_K = Σ_batch bucket_sum(dS)ᵀ Qs

``ρ`` from the output is the FlashAttention identity (Dao et al. 2022, Alg. 2): it saves a pass
over ``(Lq, Lk)``. Huang et al. (2020)'s key-query term ``k_j · a^K_ij`` (``key_query=True``) is
the key term seen from the keys: ``KR = scale · K A_Kᵀ`` ``(Lk, R)`` is added to each column by
bucket (a row vector on each one-bucket rectangle, a gather in the window), and the backward sums
``dS`` per column and bucket into ``dKR``: ``dK += scale · dKR A_K``, ``dA_K += dKRᵀ (scale·K)``.
A float mask that needs gradients (a learned bias) gets ``dS``, summed to its shape.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .checks import backward_without_autocast, logit_mask
from .index import RelativeIndex
from .reference import masked_softmax

__all__ = [
    "eager_attention",
    "gather_scatter_attention",
    "fast_path_applies",
    "ShawAttentionFunction",
    "BandBlocks",
    "band_blocks",
    "add_by_bucket_",
    "sum_by_bucket",
    "bucket_sum",
    "gather_buckets",
    "BLOCK_ROWS",
    "CHUNK_ELEMENTS",
]

#: query rows per block of the fast path. Each block costs a few small ops, and its window
#: (``T × (T + R)`` entries) goes through gather/scatter; 128 keeps both small for L = 256–4096.
BLOCK_ROWS = 128

#: entries of the scores buffer per chunk when no gradient is wanted (4 MiB in float32): small
#: enough to stay in cache between the ops on it, large enough that short inputs take one chunk.
#: Of 2**17 … 2**22, 2**19 and 2**20 were fastest on the benchmark CPU for L = 256 … 2048.
CHUNK_ELEMENTS = 2**20


# --- the readable formulation ------------------------------------------------------------------


def gather_buckets(per_bucket: Tensor, rel_index: Tensor) -> Tensor:
    """``(…, Lq, R)`` per-bucket values → ``(…, Lq, Lk)`` by ``rel_index (Lq, Lk)``."""
    expanded = rel_index.expand(*per_bucket.shape[:-1], rel_index.shape[-1])
    return per_bucket.gather(-1, expanded)


def bucket_sum(weights: Tensor, rel_index: Tensor, num_buckets: int) -> Tensor:
    """``(…, Lq, Lk)`` weights → ``(…, Lq, R)``: the sum of each row's weights per bucket."""
    expanded = rel_index.expand_as(weights)
    masses = weights.new_zeros(*weights.shape[:-1], num_buckets)
    return masses.scatter_add(-1, expanded, weights)


def gather_scatter_attention(
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
    """The split of Sec. 3.3 with a dense index; autograd does the backward.

    Same contract as :func:`relpos.attention.reference.reference_attention`.
    """
    rel_index = index.dense(query.device)  # (Lq, Lk)
    logits = query @ key.transpose(-1, -2)  # (B, H, Lq, Lk): q_i · k_j
    if key_table is not None:
        query_rel = query @ key_table.transpose(-1, -2)  # (B, H, Lq, R): q_i · w^K_b
        logits = logits + gather_buckets(query_rel, rel_index)
        if key_query:
            key_rel = key @ key_table.transpose(-1, -2)  # (B, H, Lk, R): k_j · w^K_b
            logits = logits + gather_buckets(key_rel, rel_index.T).transpose(-1, -2)
    logits = logits * scale
    mask = logit_mask(
        attn_mask, is_causal, *logits.shape[-2:], dtype=logits.dtype, device=logits.device
    )
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


# --- the band structure of the clipped index ---------------------------------------------------


@dataclass(frozen=True)
class BandBlocks:
    """How a clipped index splits into one-bucket rectangles and small windows, per row block.

    For rows ``r0:r1`` of block ``n``: columns ``:starts[n]`` all use bucket 0 (clipped to the
    left), columns ``ends[n]:`` all use bucket ``R - 1`` (clipped to the right), and the window
    ``starts[n]:ends[n]`` uses ``window_index[:r1 - r0, offsets[n]:offsets[n] + ends[n] -
    starts[n]]``. ``window_index (T, T + R - 2)`` is shared by all blocks.
    """

    rows: tuple[tuple[int, int], ...]
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    offsets: tuple[int, ...]
    window_index: Tensor
    num_buckets: int
    key_len: int


def _window_index(block_rows: int, max_left: int, max_right: int, device: torch.device) -> Tensor:
    # Row t, window column w of any block: c - r = w - t + (first window column - r0), and the
    # first window column sits one past the last left-clipped distance, so the bucket is
    # clip(1 + w - t, 0, R - 1) whatever the block and the offsets.
    width = block_rows + max_left + max_right - 1
    rows = torch.arange(block_rows, device=device)[:, None]
    cols = torch.arange(width, device=device)[None, :]
    return (1 + cols - rows).clamp(0, max_left + max_right)  # (T, T + R - 2)


def band_blocks(
    index: RelativeIndex, device: torch.device | str | None = None, block_rows: int = BLOCK_ROWS
) -> BandBlocks:
    """Split ``index`` into row blocks of ``block_rows`` (see :class:`BandBlocks`)."""
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    q_len, k_len = index.query_len, index.key_len
    # Column c of row r is at distance j - i = c - r - shift; it is clipped to the left when
    # c - r <= last_left and to the right when c - r >= first_right.
    shift = index.diagonal_shift
    last_left = shift - index.max_left
    first_right = shift + index.max_right
    rows, starts, ends, offsets = [], [], [], []
    for r0 in range(0, q_len, block_rows):
        r1 = min(q_len, r0 + block_rows)
        window_first = r0 + last_left + 1  # left of it: clipped left for every row of the block
        window_stop = max(r1 - 1 + first_right, window_first)  # from it: clipped right for all
        start = min(max(window_first, 0), k_len)
        end = min(max(window_stop, 0), k_len)
        rows.append((r0, r1))
        starts.append(start)
        ends.append(end)
        offsets.append(start - window_first)
    device = torch.device(device or "cpu")
    block_rows = min(block_rows, max(q_len, 1))
    window_index = _window_index(block_rows, index.max_left, index.max_right, device)
    return BandBlocks(
        tuple(rows),
        tuple(starts),
        tuple(ends),
        tuple(offsets),
        window_index,
        index.num_buckets,
        k_len,
    )


def _add_block_(block_scores: Tensor, block_buckets: Tensor, blocks: BandBlocks, n: int) -> None:
    """Block ``n`` of :func:`add_by_bucket_`.

    ``block_scores (…, T, Lk)`` and ``block_buckets (…, T, R)`` are rows ``blocks.rows[n]``.
    """
    r0, r1 = blocks.rows[n]
    start, end, offset = blocks.starts[n], blocks.ends[n], blocks.offsets[n]
    if start > 0:
        block_scores[..., :start].add_(block_buckets[..., :1])
    if end < blocks.key_len:
        block_scores[..., end:].add_(block_buckets[..., blocks.num_buckets - 1 :])
    if end > start:
        window = blocks.window_index[: r1 - r0, offset : offset + end - start]  # (T, W)
        window = window.expand(*block_buckets.shape[:-1], end - start)
        block_scores[..., start:end].add_(block_buckets.gather(-1, window))


def _sum_block_(block_masses: Tensor, block_weights: Tensor, blocks: BandBlocks, n: int) -> None:
    """Block ``n`` of :func:`sum_by_bucket`, accumulated into ``block_masses (…, T, R)``."""
    r0, r1 = blocks.rows[n]
    start, end, offset = blocks.starts[n], blocks.ends[n], blocks.offsets[n]
    if start > 0:
        block_masses[..., 0].add_(block_weights[..., :start].sum(-1))
    if end < blocks.key_len:
        block_masses[..., blocks.num_buckets - 1].add_(block_weights[..., end:].sum(-1))
    if end > start:
        window = blocks.window_index[: r1 - r0, offset : offset + end - start]  # (T, W)
        window = window.expand(*block_weights.shape[:-1], end - start)
        block_masses.scatter_add_(-1, window, block_weights[..., start:end])


def _add_key_block_(block_scores: Tensor, key_rel: Tensor, blocks: BandBlocks, n: int) -> None:
    """Block ``n`` of the key-query term: ``block_scores[…, t, c] += key_rel[…, c, b(r0 + t, c)]``
    for ``block_scores (…, T, Lk)`` (rows ``blocks.rows[n]``) and ``key_rel (…, Lk, R)``."""
    r0, r1 = blocks.rows[n]
    start, end, offset = blocks.starts[n], blocks.ends[n], blocks.offsets[n]
    if start > 0:
        block_scores[..., :start].add_(key_rel[..., None, :start, 0])
    if end < blocks.key_len:
        block_scores[..., end:].add_(key_rel[..., None, end:, blocks.num_buckets - 1])
    if end > start:
        window = blocks.window_index[: r1 - r0, offset : offset + end - start]  # (T, W)
        by_bucket = key_rel[..., start:end, :].transpose(-1, -2)  # (…, R, W)
        window = window.expand(*by_bucket.shape[:-2], *window.shape)
        block_scores[..., start:end].add_(by_bucket.gather(-2, window))


def _sum_key_block_(key_masses: Tensor, block_grads: Tensor, blocks: BandBlocks, n: int) -> None:
    """Block ``n`` of the key-query term's backward: ``key_masses[…, c, b] += Σ_t
    block_grads[…, t, c]`` over the block's rows ``t`` with ``b(r0 + t, c) = b``; ``key_masses``
    is ``(…, Lk, R)``."""
    r0, r1 = blocks.rows[n]
    start, end, offset = blocks.starts[n], blocks.ends[n], blocks.offsets[n]
    if start > 0:
        key_masses[..., :start, 0].add_(block_grads[..., :start].sum(-2))
    if end < blocks.key_len:
        key_masses[..., end:, blocks.num_buckets - 1].add_(block_grads[..., end:].sum(-2))
    if end > start:
        window = blocks.window_index[: r1 - r0, offset : offset + end - start]  # (T, W)
        by_bucket = key_masses[..., start:end, :].transpose(-1, -2)  # (…, R, W), a view
        window = window.expand(*by_bucket.shape[:-2], *window.shape)
        by_bucket.scatter_add_(-2, window, block_grads[..., start:end])


def add_by_bucket_(scores: Tensor, per_bucket: Tensor, blocks: BandBlocks) -> Tensor:
    """In place: ``scores[…, r, c] += per_bucket[…, r, b(r, c)]``; ``scores (…, Lq, Lk)``,
    ``per_bucket (…, Lq, R)``. Returns ``scores``."""
    for n, (r0, r1) in enumerate(blocks.rows):
        _add_block_(scores[..., r0:r1, :], per_bucket[..., r0:r1, :], blocks, n)
    return scores


def sum_by_bucket(weights: Tensor, blocks: BandBlocks) -> Tensor:
    """``(…, Lq, Lk)`` weights → ``(…, Lq, R)``: each row's sum per bucket.

    Equal to :func:`bucket_sum` with the dense index, without reading one.
    """
    masses = weights.new_zeros(*weights.shape[:-1], blocks.num_buckets)
    for n, (r0, r1) in enumerate(blocks.rows):
        _sum_block_(masses[..., r0:r1, :], weights[..., r0:r1, :], blocks, n)
    return masses


# --- the fast path -----------------------------------------------------------------------------


def _mask_scores_(
    scores: Tensor, attn_mask: Tensor | None, is_causal: bool, row_start: int = 0
) -> None:
    """Apply SDPA's mask semantics in place to ``scores (…, T, Lk)``, query rows ``row_start:``.

    No ``(Lq, Lk)`` float mask is built. ``attn_mask`` broadcasts to the full ``(…, Lq, Lk)``.
    """
    rows, k_len = scores.shape[-2:]
    if attn_mask is not None:
        if attn_mask.dim() >= 2 and attn_mask.shape[-2] != 1:
            attn_mask = attn_mask[..., row_start : row_start + rows, :]
        if attn_mask.dtype == torch.bool:
            scores.masked_fill_(~attn_mask, float("-inf"))
        else:
            scores.add_(attn_mask.to(scores.dtype))
    if is_causal:
        # Top-left aligned: query row r sees key columns c <= r.
        above = torch.ones(rows, k_len, dtype=torch.bool, device=scores.device)
        scores.masked_fill_(above.triu_(row_start + 1), float("-inf"))


def _softmax_(scores: Tensor, *, masked: bool) -> Tensor:
    """Softmax over the last dimension, in place on the CPU; a fully masked row gives 0.

    Same result as :func:`~relpos.attention.reference.masked_softmax`. ``masked`` says whether
    any logit may be ``-inf``; only then is a pass spent looking for rows with no allowed key.
    """
    empty = None
    if masked:
        empty = torch.isneginf(scores.amax(dim=-1, keepdim=True))  # (…, Lq, 1)
        if bool(empty.any()):
            scores.masked_fill_(empty, 0.0)  # any finite row: its weights are zeroed below
        else:
            empty = None
    if scores.device.type == "cpu":
        # The CPU kernel streams each row (max, then exp and sum, then rescale) elementwise, so
        # writing the result over its input is safe; it saves a fresh (Lq, Lk) buffer, whose page
        # faults cost as much as the softmax itself. The tests compare this against the oracle.
        torch.ops.aten._softmax.out(scores, -1, False, out=scores)
    else:
        scores = torch.softmax(scores, dim=-1)
    if empty is not None:
        scores.masked_fill_(empty, 0.0)
    return scores


def _table_grad(masses: Tensor, rows: Tensor, table: Tensor) -> Tensor:
    """``Σ_batch massesᵀ rows`` as ``(Ht, R, D)``, summed over heads too when shared."""
    grad = torch.einsum("bhqr,bhqd->hrd", masses, rows)  # (H, R, D)
    if table.shape[0] == 1:
        grad = grad.sum(0, keepdim=True)  # (1, R, D)
    return grad


class ShawAttentionFunction(torch.autograd.Function):
    """Shaw attention with a hand-written backward; see the module docstring for the algebra.

    ``apply(query, key, value, key_table, value_table, attn_mask, dropout_mask, index, is_causal,
    scale, block_rows, key_query)`` with the shapes of :func:`eager_attention`. A float
    ``attn_mask`` that needs a gradient (a learned bias, e.g. T5's) gets ``dS`` summed to its
    broadcast shape: it is added to the logits as they are.
    """

    @staticmethod
    def forward(
        ctx,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_table: Tensor | None,
        value_table: Tensor | None,
        attn_mask: Tensor | None,
        dropout_mask: Tensor | None,
        index: RelativeIndex,
        is_causal: bool,
        scale: float,
        block_rows: int,
        key_query: bool,
    ) -> Tensor:
        blocks = band_blocks(index, query.device, block_rows)
        # Scaling the (Lq, D) queries once is cheaper than scaling (Lq, Lk) logits, and the same
        # scaled queries give dK and dA_K in the backward without another multiply.
        scaled_query = query * scale  # (B, H, Lq, D)
        output, probs, weights, masses = _chunked_forward(
            scaled_query,
            key,
            value,
            key_table,
            value_table,
            attn_mask,
            dropout_mask,
            blocks,
            is_causal,
            keep=True,
            key_rel=_key_rel(key, key_table, scale, key_query),
        )
        ctx.blocks = blocks
        ctx.scale = scale
        ctx.key_query = key_query and key_table is not None
        ctx.mask_shape = None if attn_mask is None else attn_mask.shape
        ctx.mask_dtype = None if attn_mask is None else attn_mask.dtype
        ctx.save_for_backward(
            scaled_query,
            key,
            value,
            key_table,
            value_table,
            probs,
            weights,
            dropout_mask,
            masses,
            output,
        )
        return output

    @staticmethod
    @backward_without_autocast
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (
            scaled_query,
            key,
            value,
            key_table,
            value_table,
            probs,
            weights,
            dropout_mask,
            masses,
            output,
        ) = ctx.saved_tensors
        blocks: BandBlocks = ctx.blocks
        needs = ctx.needs_input_grad
        grad_query = grad_key = grad_value = grad_key_table = grad_value_table = None

        if needs[2]:
            grad_value = weights.transpose(-1, -2) @ grad_output  # (B, H, Lk, Dv)
        if value_table is not None and needs[4]:
            grad_value_table = _table_grad(masses, grad_output, value_table)

        row_dot = (grad_output * output).sum(-1, keepdim=True)  # (B, H, Lq, 1): ρ
        out_rel = None
        if value_table is not None:
            out_rel = grad_output @ value_table.transpose(-1, -2)  # (B, H, Lq, R): dO · a^V_b
        # Without dropout ρ is subtracted where dP is formed; as it is constant along a row, it
        # rides along with the per-bucket add of the value term for free.
        rho_folded = out_rel is not None and dropout_mask is None
        if rho_folded:
            out_rel.sub_(row_dot)
        with_key_table = key_table is not None and (needs[0] or needs[3])
        score_masses = grad_output.new_zeros(*probs.shape[:-1], blocks.num_buckets)  # (B,H,Lq,R)
        key_masses = None  # (B, H, Lk, R): dS summed per key column and bucket (key-query term)
        if ctx.key_query and (needs[1] or needs[3]):
            key_masses = grad_output.new_zeros(*key.shape[:-1], blocks.num_buckets)
        grad_mask = None  # dS summed to the float mask's shape, padded to 4-D
        if needs[5]:
            mask_4d = (1,) * (4 - len(ctx.mask_shape)) + tuple(ctx.mask_shape)
            grad_mask = grad_output.new_zeros(mask_4d)
        if needs[0]:
            grad_query = scaled_query.new_empty(scaled_query.shape)  # (B, H, Lq, D)
        if needs[1]:
            grad_key = key.new_zeros(key.shape)  # (B, H, Lk, D), contiguous for the view below
        batch_heads = probs.shape[0] * probs.shape[1]
        # Row blocks: dS of one block lives in a small buffer that stays in cache while it is
        # built, reduced per bucket and multiplied out, instead of one fresh (Lq, Lk) tensor.
        for n, (r0, r1) in enumerate(
            blocks.rows if needs[0] or needs[1] or needs[3] or needs[5] else ()
        ):
            rows = slice(r0, r1)
            grad_scores = grad_output[..., rows, :] @ value.transpose(-1, -2)  # (B, H, T, Lk)
            if out_rel is not None:
                _add_block_(grad_scores, out_rel[..., rows, :], blocks, n)
            if dropout_mask is not None:
                grad_scores.mul_(dropout_mask[..., rows, :])
            if not rho_folded:
                grad_scores.sub_(row_dot[..., rows, :])
            grad_scores.mul_(probs[..., rows, :])  # dS = P ⊙ (dP − ρ): 0 wherever P is
            if with_key_table:
                _sum_block_(score_masses[..., rows, :], grad_scores, blocks, n)
            if key_masses is not None:
                _sum_key_block_(key_masses, grad_scores, blocks, n)
            if grad_mask is not None:
                _add_mask_grad_(grad_mask, grad_scores, r0, r1)
            if needs[0]:
                grad_query[..., rows, :] = grad_scores @ key  # (B, H, T, D)
            if needs[1]:
                # dK += dSᵀ Qs, accumulated in place over the (B·H) batch of matrices.
                grad_key.view(batch_heads, *key.shape[2:]).baddbmm_(
                    grad_scores.reshape(batch_heads, r1 - r0, -1).transpose(1, 2),
                    scaled_query[..., rows, :].reshape(batch_heads, r1 - r0, -1),
                )
        if needs[0]:
            if key_table is not None:
                grad_query.add_(score_masses @ key_table)
            grad_query.mul_(ctx.scale)
        if key_table is not None and needs[3]:
            grad_key_table = _table_grad(score_masses, scaled_query, key_table)
        if key_masses is not None:
            if needs[1]:
                grad_key.add_(key_masses @ key_table, alpha=ctx.scale)
            if needs[3]:
                grad_key_table.add_(_table_grad(key_masses, key * ctx.scale, key_table))
        return (
            grad_query,
            grad_key,
            grad_value,
            grad_key_table,
            grad_value_table,
            None if grad_mask is None else grad_mask.view(ctx.mask_shape).to(ctx.mask_dtype),
            None,
            None,
            None,
            None,
            None,
            None,
        )


def _add_mask_grad_(grad_mask: Tensor, block_grads: Tensor, r0: int, r1: int) -> None:
    """Add ``block_grads (B, H, T, Lk)``, rows ``r0:r1``, to ``grad_mask`` (4-D, each dimension
    the full size or 1), summing over the dimensions the mask broadcasts along."""
    broadcast = [d for d in range(4) if grad_mask.shape[d] == 1 and block_grads.shape[d] != 1]
    reduced = block_grads.sum(broadcast, keepdim=True) if broadcast else block_grads
    if grad_mask.shape[2] == 1:
        grad_mask.add_(reduced)  # one row for every query: the block's rows are already summed
    else:
        grad_mask[:, :, r0:r1].add_(reduced)


def _key_rel(key: Tensor, key_table: Tensor | None, scale: float, key_query: bool):
    """``scale · K A_Kᵀ`` ``(B, H, Lk, R)`` for the key-query term, or None without one."""
    if not key_query or key_table is None:
        return None
    return (key * scale) @ key_table.transpose(-1, -2)  # k_j · w^K_b, scaled


def _chunked_forward(
    scaled_query: Tensor,
    key: Tensor,
    value: Tensor,
    key_table: Tensor | None,
    value_table: Tensor | None,
    attn_mask: Tensor | None,
    dropout_mask: Tensor | None,
    blocks: BandBlocks,
    is_causal: bool,
    *,
    keep: bool,
    key_rel: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """The fast path's forward, a chunk of query rows at a time (``key_rel``: the key-query
    term's ``scale · K A_Kᵀ``, see :func:`_key_rel`).

    Each chunk's ``(B, H, C, Lk)`` scores (about :data:`CHUNK_ELEMENTS` entries, a whole number
    of row blocks) stay in cache from the matmul to the output. With ``keep`` the weights are
    copied out for the backward; without it the ``(Lq, Lk)`` weights never exist.

    Returns ``(output (B, H, Lq, Dv), probs, weights, masses)``; ``probs`` (softmax) and
    ``weights`` (after dropout, the same tensor without it) are ``(B, H, Lq, Lk)``, ``masses``
    the weights summed per bucket ``(B, H, Lq, R)``; all three ``None`` unless ``keep``.
    """
    batch, heads, q_len, _ = scaled_query.shape
    k_len = key.shape[-2]
    per_block = batch * heads * (blocks.rows[0][1] - blocks.rows[0][0]) * k_len
    chunk_blocks = max(1, CHUNK_ELEMENTS // per_block)
    query_rel = None
    if key_table is not None:
        query_rel = scaled_query @ key_table.transpose(-1, -2)  # (B, H, Lq, R): q_i · w^K_b
    output = value.new_empty(batch, heads, q_len, value.shape[-1])  # (B, H, Lq, Dv)
    probs = weights = masses = None
    if keep:
        probs = value.new_empty(batch, heads, q_len, k_len)
        weights = probs if dropout_mask is None else torch.empty_like(probs)
    if value_table is not None:
        masses = value.new_zeros(batch, heads, q_len, blocks.num_buckets)
    masked = attn_mask is not None or is_causal
    for first in range(0, len(blocks.rows), chunk_blocks):
        numbers = range(first, min(first + chunk_blocks, len(blocks.rows)))
        c0, c1 = blocks.rows[numbers[0]][0], blocks.rows[numbers[-1]][1]
        scores = scaled_query[..., c0:c1, :] @ key.transpose(-1, -2)  # (B, H, C, Lk)
        if query_rel is not None:
            for n in numbers:
                r0, r1 = blocks.rows[n]
                _add_block_(scores[..., r0 - c0 : r1 - c0, :], query_rel[..., r0:r1, :], blocks, n)
                if key_rel is not None:
                    _add_key_block_(scores[..., r0 - c0 : r1 - c0, :], key_rel, blocks, n)
        _mask_scores_(scores, attn_mask, is_causal, row_start=c0)
        chunk_weights = _softmax_(scores, masked=masked)  # (B, H, C, Lk)
        if keep:
            probs[..., c0:c1, :] = chunk_weights
        if dropout_mask is not None:
            chunk_weights.mul_(dropout_mask[..., c0:c1, :])
            if keep:
                weights[..., c0:c1, :] = chunk_weights
        output[..., c0:c1, :] = chunk_weights @ value  # (B, H, C, Dv)
        if masses is not None:
            for n in numbers:
                r0, r1 = blocks.rows[n]
                _sum_block_(
                    masses[..., r0:r1, :], chunk_weights[..., r0 - c0 : r1 - c0, :], blocks, n
                )
    if masses is not None:
        output.add_(masses @ value_table)
    if not keep:
        masses = None
    return output, probs, weights, masses


def fast_path_applies(query: Tensor, key: Tensor) -> bool:
    """Whether :class:`ShawAttentionFunction` covers the inputs: no empty dimension (its chunk
    size divides by ``B·H·Lk``)."""
    return 0 not in (*query.shape[:3], key.shape[-2])


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
    block_rows: int = BLOCK_ROWS,
) -> Tensor:
    """Same contract as :func:`relpos.attention.reference.reference_attention`.

    Runs :class:`ShawAttentionFunction` where :func:`fast_path_applies` (or, when no input needs
    a gradient, its forward one row block at a time, never forming the ``(Lq, Lk)`` weights),
    else :func:`gather_scatter_attention`. ``block_rows`` is the fast path's row-block size.

    Under ``torch.compile`` the fast path runs as written, outside the graph (Dynamo breaks the
    graph around it): Inductor cannot compile its in-place softmax, and compiling the rest of it
    made it slower on the CPU (``benchmarks/RESULTS.md``). The gather/scatter path compiles.
    """
    if not fast_path_applies(query, key):
        return gather_scatter_attention(
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
    return _fast_path_outside_compile()(
        query,
        key,
        value,
        key_table,
        value_table,
        attn_mask,
        dropout_mask,
        index,
        is_causal,
        scale,
        block_rows,
        key_query,
    )


@functools.cache
def _fast_path_outside_compile():
    """:func:`_fast_path` behind ``torch.compiler.disable``, wrapped on first use: decorating at
    import would import ``torch._dynamo`` (and Triton) with ``relpos``, which costs a second and
    fixes Triton's settings before a program (or a test) has chosen them."""
    return torch.compiler.disable(_fast_path)


def _fast_path(
    query, key, value, key_table, value_table, attn_mask, dropout_mask, index, is_causal, scale,
    block_rows, key_query,
) -> Tensor:  # fmt: skip
    """:func:`eager_attention` where :func:`fast_path_applies` (same arguments)."""
    tensors = (query, key, value, key_table, value_table, attn_mask)
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in tensors):
        blocks = band_blocks(index, query.device, block_rows)
        output, _, _, _ = _chunked_forward(
            query * scale,
            key,
            value,
            key_table,
            value_table,
            attn_mask,
            dropout_mask,
            blocks,
            is_causal,
            keep=False,
            key_rel=_key_rel(key, key_table, scale, key_query),
        )
        return output
    return ShawAttentionFunction.apply(
        query,
        key,
        value,
        key_table,
        value_table,
        attn_mask,
        dropout_mask,
        index,
        is_causal,
        scale,
        block_rows,
        key_query,
    )
