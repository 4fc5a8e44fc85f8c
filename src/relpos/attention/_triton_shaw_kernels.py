"""The Triton kernels behind :mod:`relpos.attention.triton_shaw` (see its docstring for the math).

This module imports Triton at the top, so it is only imported on first use of the ``triton``
backend. Triton and its interpreter (``TRITON_INTERPRET=1``) look ``tl`` and the helper
functions up in module globals, which is why the kernels live in a module of their own.

Conventions: ``rows`` are query positions ``r`` in ``[0, Lq)``, ``cols`` key positions ``c`` in
``[0, Lk)``, ``buckets`` table rows ``b`` in ``[0, R)`` padded to ``R_PAD``; logits are kept in
base 2 (multiplied by ``log2 e``) so that ``exp2`` can be used. Only 1-D vectors and
``(BLOCK_M, BLOCK_N)``-sized tiles are carried across loop iterations; the ``(BLOCK_M, R)`` tiles
of the relative terms only exist inside the few band tiles.
"""

import triton
import triton.language as tl

# The kernels pass long argument lists (strides, shapes, compile-time flags) from one helper to
# the next; packed a few to a line they read as groups, so the formatter leaves this file alone.
# fmt: off

__all__ = [
    "forward_kernel", "grad_prepare_kernel", "grad_query_kernel", "grad_key_value_kernel",
    "dropout_mask_kernel",
]

#: exp(x) = exp2(x · log2 e).
LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)


@triton.jit
def bucket_of(rows, cols, shift, max_left, max_right):
    """Table row of each (row, col) pair; ``rows`` and ``cols`` broadcast in either orientation."""
    return tl.minimum(tl.maximum(cols - rows - shift, -max_left), max_right) + max_left


@triton.jit
def dropout_keep(seed, rows, cols, dropout_p):
    """Whether attention weight ``(r, c)`` of this program's batch·head (every kernel's second
    grid axis) survives dropout; ``rows`` and ``cols`` broadcast in either orientation.

    One Philox-4x32 draw per weight, counter ``(c, r, batch·head, 0)`` under key ``seed``: a
    pure function of its position, so every kernel (forward, both gradients, and
    ``dropout_mask_kernel`` for the tests) sees the same mask, and no counter can overflow
    however large ``B·H·Lq·Lk`` is.
    """
    zero = rows * 0 + cols * 0  # (the tile's shape)
    bits, _, _, _ = tl.philox(
        seed, (cols + zero).to(tl.uint32), (rows + zero).to(tl.uint32),
        (tl.program_id(1) + zero).to(tl.uint32), zero.to(tl.uint32),
    )
    return tl.uint_to_uniform_float(bits) >= dropout_p


@triton.jit(do_not_specialize=["seed"])
def dropout_mask_kernel(OUT, seed, q_len, k_len, dropout_p, keep_scale,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The dropout multiplier the attention kernels apply under ``seed``, written out as a
    ``(B·H, Lq, Lk)`` tensor (``keep_scale`` where kept, 0 where dropped): how the tests compare
    the kernels with the reference, which takes the mask as a tensor."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_base = tl.program_id(1).to(tl.int64) * q_len
    for k_start in range(0, k_len, BLOCK_N):
        cols = k_start + tl.arange(0, BLOCK_N)
        keep = dropout_keep(seed, rows[:, None], cols[None, :], dropout_p)
        tl.store(
            OUT + (row_base + rows[:, None]) * k_len + cols[None, :],
            tl.where(keep, keep_scale, 0.0),
            mask=(rows[:, None] < q_len) & (cols[None, :] < k_len),
        )


@triton.jit
def masked_logits(
    scores, rows, cols, mask_ptr, stride_mm, stride_mn, q_len, k_len,
    CHECK_COLS: tl.constexpr, IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr,
    MASK_ROWWISE: tl.constexpr,
):
    """``scores`` (base-2 logits) with ``-inf`` wherever a query may not see a key.

    ``CHECK_COLS``: the tile may reach past ``k_len`` (off when ``k_len`` is a multiple of the
    tile width: then no work is spent on bounds). Rows past ``q_len`` are never masked here:
    their results are not stored, and the backward's ``lse = +inf`` for them zeroes their
    probabilities. ``MASK_KIND``: 0 none, 1 boolean (nonzero = may attend), 2 float (added to
    the logits). ``MASK_ROWWISE``: the mask does not depend on the query row (key padding), so a
    vector of keys is loaded instead of a tile.
    """
    if MASK_KIND != 0:
        if MASK_ROWWISE:
            mask_values = tl.load(mask_ptr + cols * stride_mn, mask=cols < k_len, other=0)
        else:
            mask_values = tl.load(
                mask_ptr + rows * stride_mm + cols * stride_mn,
                mask=(rows < q_len) & (cols < k_len), other=0,
            )
        if MASK_KIND == 1:
            scores = tl.where(mask_values != 0, scores, float("-inf"))
        else:
            scores = scores + mask_values.to(tl.float32) * LOG2E
    if CHECK_COLS:
        scores = tl.where(cols < k_len, scores, float("-inf"))
    if IS_CAUSAL:
        scores = tl.where(cols <= rows, scores, float("-inf"))  # top-left aligned, as in SDPA
    return scores


@triton.jit
def tail_sums(values, distance, max_left, max_right):
    """Row sums of a band tile over its two tails: ``distance <= -max_left`` (bucket 0) and
    ``distance >= max_right`` (bucket R - 1)."""
    in_left = distance <= -max_left
    # With max_left = max_right = 0 both tails are bucket 0; count distance 0 once.
    in_right = (distance >= max_right) & (distance > -max_left)
    return tl.sum(tl.where(in_left, values, 0.0), 1), tl.sum(tl.where(in_right, values, 0.0), 1)


@triton.jit
def interior_slots(rows, q_len, k_len, shift, max_left, num_buckets,
                   IS_CAUSAL: tl.constexpr, R_PAD: tl.constexpr):
    """``(BLOCK_M, R_PAD)`` buckets and whether slot ``(r, b)`` is an interior bucket whose one
    key ``c = r + shift + b - max_left`` exists (and is allowed by the causal mask)."""
    buckets = tl.arange(0, R_PAD)
    cols = rows[:, None] + shift + buckets[None, :] - max_left
    valid = (
        (rows[:, None] < q_len) & (buckets[None, :] >= 1) & (buckets[None, :] < num_buckets - 1)
        & (cols >= 0) & (cols < k_len)
    )
    if IS_CAUSAL:
        valid = valid & (cols <= rows[:, None])
    return buckets, valid


@triton.jit
def load_table(table_ptr, num_buckets, DIM: tl.constexpr, R_PAD: tl.constexpr,
               DIM_PAD: tl.constexpr):
    """One head's ``(R, DIM)`` table as an ``(R_PAD, DIM_PAD)`` tile (zero padded)."""
    buckets = tl.arange(0, R_PAD)
    dims = tl.arange(0, DIM_PAD)
    return tl.load(
        table_ptr + buckets[:, None] * DIM + dims[None, :],
        mask=(buckets[:, None] < num_buckets) & (dims[None, :] < DIM), other=0.0,
    )


@triton.jit
def load_table_row(table_ptr, bucket, DIM: tl.constexpr, DIM_PAD: tl.constexpr):
    """Row ``bucket`` of one head's table, ``(DIM_PAD,)`` in float32."""
    dims = tl.arange(0, DIM_PAD)
    return tl.load(table_ptr + bucket * DIM + dims, mask=dims < DIM, other=0.0).to(tl.float32)


@triton.jit
def load_rows(
    base, desc, batch, head, start, stride_n, stride_d, length,
    DIM: tl.constexpr, DIM_PAD: tl.constexpr, BLOCK: tl.constexpr, USE_TMA: tl.constexpr,
):
    """Rows ``[start, start + BLOCK)`` of one head of a ``(B, H, L, DIM)`` tensor (keys, values,
    queries or output gradients) as ``(BLOCK, DIM_PAD)``, zero past ``length`` and ``DIM``: by
    pointers from ``base`` (that head's start), or with ``USE_TMA`` through the tensor
    descriptor ``desc`` over the whole tensor (Hopper's TMA unit computes the addresses and the
    bounds, so the threads spend no registers on them)."""
    if USE_TMA:
        rows = desc.load([batch, head, start, 0]).reshape(BLOCK, DIM_PAD)
    else:
        positions = start + tl.arange(0, BLOCK)
        dims = tl.arange(0, DIM_PAD)
        rows = tl.load(
            base + positions[:, None] * stride_n + dims[None, :] * stride_d,
            mask=(positions[:, None] < length) & (dims[None, :] < DIM), other=0.0,
        )
    return rows


# ------------------------------------------------------------------------------ forward


@triton.jit
def tail_update(
    acc, row_sum, row_max, kept_sum, scores, value, tail_bias, rows, cols, mask_base,
    stride_mm, stride_mn, q_len, k_len, qk_scale, seed, dropout_p,
    IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, MASK_ROWWISE: tl.constexpr,
    CHECK_COLS: tl.constexpr, SCALE_FIRST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    DROPOUT: tl.constexpr,
):
    """One tail tile of the online softmax, from its unscaled ``scores`` ``q_r · k_c``.

    A tail tile's key term is one number per row, ``tail_bias`` (already scaled): it moves the
    row's maximum and is subtracted with it, so each entry costs one FMA.

    ``DROPOUT``: the dropped weights are zeroed before they meet the values, and ``kept_sum``
    (at the same running maximum as ``row_sum``) sums the rest: the tails' share of the value
    term's tail masses. ``row_sum``, the softmax's normaliser, counts every weight. (The
    ``1 / (1 - p)`` of the kept ones is applied once, in the epilogue.)
    """
    if SCALE_FIRST:  # a float mask is added to scaled logits; a scale <= 0 flips max
        scores = masked_logits(
            scores * qk_scale, rows[:, None], cols[None, :], mask_base, stride_mm, stride_mn,
            q_len, k_len, CHECK_COLS, IS_CAUSAL, MASK_KIND, MASK_ROWWISE,
        )
        new_max = tl.maximum(row_max, tl.max(scores, 1) + tail_bias)
    else:  # only -inf entries: max and scale commute
        scores = masked_logits(
            scores, rows[:, None], cols[None, :], mask_base, stride_mm, stride_mn,
            q_len, k_len, CHECK_COLS, IS_CAUSAL, MASK_KIND, MASK_ROWWISE,
        )
        new_max = tl.maximum(row_max, tl.max(scores, 1) * qk_scale + tail_bias)
    # A row that has seen no allowed key yet keeps max -inf; subtract 0 instead, so that
    # exp2(-inf - (-inf)) = NaN is never formed.
    safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
    rescale = tl.exp2(row_max - safe_max)
    if SCALE_FIRST:
        probs = tl.exp2(scores - (safe_max - tail_bias)[:, None])
    else:
        probs = tl.exp2(scores * qk_scale - (safe_max - tail_bias)[:, None])
    tile_sum = tl.sum(probs, 1)
    row_sum = row_sum * rescale + tile_sum
    if DROPOUT:
        probs = tl.where(dropout_keep(seed, rows[:, None], cols[None, :], dropout_p), probs, 0.0)
        kept_sum = kept_sum * rescale + tl.sum(probs, 1)
    acc = acc * rescale[:, None] + tl.dot(
        probs.to(value.dtype), value, input_precision=DOT_PRECISION
    )
    return acc, row_sum, new_max, rescale, tile_sum, kept_sum


@triton.jit
def forward_tiles(
    acc, row_sum, row_max, kept_sum, band_left, band_right, q, tail_bias, rel_base, mass_base,
    k_base, v_base, k_desc, v_desc, batch, head, mask_base,
    stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
    rows, k_lo, k_hi, q_len, k_len, shift, max_left, max_right, num_buckets, qk_scale,
    seed, dropout_p,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, D_PAD: tl.constexpr,
    DV_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BAND: tl.constexpr,
    HAS_KEY_TABLE: tl.constexpr, HAS_VALUE_TABLE: tl.constexpr, IS_CAUSAL: tl.constexpr,
    MASK_KIND: tl.constexpr, MASK_ROWWISE: tl.constexpr, CHECK_COLS: tl.constexpr,
    SCALE_FIRST: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
    DROPOUT: tl.constexpr,
):
    """Online softmax over the key tiles ``[k_lo, k_hi)`` of one phase (a tail, or the band).

    In the band the key term is read by bucket from this block's rows of ``QA`` (``rel_base``,
    written by the kernel before its loops), the tails' share of the band is added to
    ``band_left`` / ``band_right``, and each interior bucket's logit (one key per row and bucket)
    is written to its ``(r, b)`` slot at ``mass_base`` for the epilogue. With ``DROPOUT`` the
    values and both band masses see only the kept weights (a dropped interior weight's slot gets
    ``-inf``, mass 0), and ``kept_sum`` sums the kept tail weights (see ``tail_update``).
    """
    row_ok = rows < q_len
    for k_start in range(k_lo, k_hi, BLOCK_N):
        cols = k_start + tl.arange(0, BLOCK_N)
        key = load_rows(
            k_base, k_desc, batch, head, k_start, stride_kn, stride_kd, k_len,
            HEAD_DIM, D_PAD, BLOCK_N, USE_TMA,
        )  # (BN, D_PAD)
        value = load_rows(
            v_base, v_desc, batch, head, k_start, stride_vn, stride_vd, k_len,
            VALUE_DIM, DV_PAD, BLOCK_N, USE_TMA,
        )  # (BN, DV_PAD)
        scores = tl.dot(q, tl.trans(key), input_precision=DOT_PRECISION)  # (BM, BN): q_r · k_c
        if BAND:
            bucket = bucket_of(rows[:, None], cols[None, :], shift, max_left, max_right)
            slots = rows[:, None] * num_buckets + bucket  # (r, bucket(r, c)) in an (Lq, R) table
            if HAS_KEY_TABLE:
                scores += tl.load(rel_base + slots, mask=row_ok[:, None], other=0.0)
            scores = masked_logits(
                scores * qk_scale, rows[:, None], cols[None, :], mask_base, stride_mm, stride_mn,
                q_len, k_len, CHECK_COLS, IS_CAUSAL, MASK_KIND, MASK_ROWWISE,
            )
            new_max = tl.maximum(row_max, tl.max(scores, 1))
            safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)  # as in tail_update
            rescale = tl.exp2(row_max - safe_max)
            probs = tl.exp2(scores - safe_max[:, None])  # (BM, BN), unnormalised
            row_sum = row_sum * rescale + tl.sum(probs, 1)
            if DROPOUT:
                keep = dropout_keep(seed, rows[:, None], cols[None, :], dropout_p)
                probs = tl.where(keep, probs, 0.0)
                scores = tl.where(keep, scores, float("-inf"))  # for the interior slots
            acc = acc * rescale[:, None] + tl.dot(
                probs.to(value.dtype), value, input_precision=DOT_PRECISION
            )
            if HAS_VALUE_TABLE:
                left, right = tail_sums(
                    probs, cols[None, :] - rows[:, None] - shift, max_left, max_right
                )
                band_left = band_left * rescale + left
                band_right = band_right * rescale + right
                interior = (bucket > 0) & (bucket < num_buckets - 1) & row_ok[:, None]
                tl.store(mass_base + slots, scores, mask=interior)
            row_max = new_max
        else:
            acc, row_sum, row_max, _, _, kept_sum = tail_update(
                acc, row_sum, row_max, kept_sum, scores, value, tail_bias, rows, cols,
                mask_base, stride_mm, stride_mn, q_len, k_len, qk_scale, seed, dropout_p,
                IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS, SCALE_FIRST, DOT_PRECISION,
                DROPOUT,
            )
    return acc, row_sum, row_max, kept_sum, band_left, band_right


@triton.jit
def forward_tail_pairs(
    acc_a, sum_a, max_a, acc_b, sum_b, max_b, q_a, q_b, bias_a, bias_b, rows_a, rows_b,
    k_base, v_base, k_desc, v_desc, batch, head, mask_base,
    stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
    k_lo, k_hi, q_len, k_len, qk_scale,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, D_PAD: tl.constexpr,
    DV_PAD: tl.constexpr, BLOCK_N: tl.constexpr, IS_CAUSAL: tl.constexpr,
    MASK_KIND: tl.constexpr, MASK_ROWWISE: tl.constexpr, CHECK_COLS: tl.constexpr,
    SCALE_FIRST: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
):
    """Tail tiles ``[k_lo, k_hi)`` for two halves of the block's rows at once: both halves'
    ``Q Kᵀ`` are issued before either softmax, so the tensor cores work on one half while the
    other half's exponentials are computed (in a single-half loop each waits for the other)."""
    for k_start in range(k_lo, k_hi, BLOCK_N):
        cols = k_start + tl.arange(0, BLOCK_N)
        key = load_rows(
            k_base, k_desc, batch, head, k_start, stride_kn, stride_kd, k_len,
            HEAD_DIM, D_PAD, BLOCK_N, USE_TMA,
        )
        value = load_rows(
            v_base, v_desc, batch, head, k_start, stride_vn, stride_vd, k_len,
            VALUE_DIM, DV_PAD, BLOCK_N, USE_TMA,
        )
        scores_a = tl.dot(q_a, tl.trans(key), input_precision=DOT_PRECISION)
        scores_b = tl.dot(q_b, tl.trans(key), input_precision=DOT_PRECISION)
        acc_a, sum_a, max_a, _, _, _ = tail_update(
            acc_a, sum_a, max_a, sum_a, scores_a, value, bias_a, rows_a, cols, mask_base,
            stride_mm, stride_mn, q_len, k_len, qk_scale, 0, 0.0,
            IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS, SCALE_FIRST, DOT_PRECISION, False,
        )
        acc_b, sum_b, max_b, _, _, _ = tail_update(
            acc_b, sum_b, max_b, sum_b, scores_b, value, bias_b, rows_b, cols, mask_base,
            stride_mm, stride_mn, q_len, k_len, qk_scale, 0, 0.0,
            IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS, SCALE_FIRST, DOT_PRECISION, False,
        )
    return acc_a, sum_a, max_a, acc_b, sum_b, max_b


@triton.jit
def forward_tails_kernel(
    Q_DESC, K_DESC, V_DESC, TAIL_BIAS, KEY_TABLE, MASK, PARTIAL_ACC, PARTIAL_STATS,
    stride_mb, stride_mh, stride_mm, stride_mn, stride_akh,
    heads, q_len, k_len, shift, max_left, max_right, num_buckets, qk_scale,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, D_PAD: tl.constexpr,
    DV_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, MASK_ROWWISE: tl.constexpr,
    CHECK_COLS: tl.constexpr, SCALE_FIRST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    TAIL_BIAS_IN_KERNEL: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
):
    """The tails of a block of query rows on their own: a kernel with fewer registers than the
    fused one (``split_tails``), or one whose loop Triton can warp-specialise (it does so only
    in a kernel with no other matrix product, and only when the query block comes by TMA and
    nothing but the loop uses it).

    Left then right tail tiles in one loop, each with its row's key term from ``TAIL_BIAS``
    (``(B·H·Lq, 2)``: ``q·w^K_0`` and ``q·w^K_{R-1}``, already scaled), or with
    ``TAIL_BIAS_IN_KERNEL`` (a loop left plain may use the query block outside its products)
    computed here from ``KEY_TABLE``'s first and last rows. Writes the partial online
    softmax (``PARTIAL_ACC``, unnormalised; ``PARTIAL_STATS``: row maximum, row sum and the left
    tiles' share of it, at that maximum), which ``forward_kernel`` with ``FROM_TAILS`` continues
    through the band and finishes.
    """
    q_start = tl.program_id(0) * BLOCK_M
    batch_head = tl.program_id(1)
    batch_index = batch_head // heads
    head_index = batch_head % heads
    rows = q_start + tl.arange(0, BLOCK_M)
    row_ok = rows < q_len
    row_index = batch_head.to(tl.int64) * q_len + rows
    mask_base = MASK + batch_index.to(tl.int64) * stride_mb + head_index.to(tl.int64) * stride_mh
    q = Q_DESC.load([batch_index, head_index, q_start, 0]).reshape(BLOCK_M, D_PAD)
    if TAIL_BIAS_IN_KERNEL:
        table = KEY_TABLE + head_index * stride_akh
        q_f32 = q.to(tl.float32)
        first = load_table_row(table, 0, HEAD_DIM, D_PAD)
        last = load_table_row(table, num_buckets - 1, HEAD_DIM, D_PAD)
        left_bias = tl.sum(q_f32 * first[None, :], 1) * qk_scale
        right_bias = tl.sum(q_f32 * last[None, :], 1) * qk_scale
    else:
        left_bias = tl.load(TAIL_BIAS + row_index * 2, mask=row_ok, other=0.0)
        right_bias = tl.load(TAIL_BIAS + row_index * 2 + 1, mask=row_ok, other=0.0)
    k_stop = k_len
    if IS_CAUSAL:
        k_stop = tl.minimum(k_len, q_start + BLOCK_M)
    band_lo = (tl.maximum(q_start + shift - max_left + 1, 0) // BLOCK_N) * BLOCK_N
    band_hi = tl.cdiv(tl.maximum(q_start + BLOCK_M - 1 + shift + max_right, 0), BLOCK_N) * BLOCK_N
    band_hi = tl.maximum(band_hi, band_lo)
    left_tiles = tl.cdiv(tl.minimum(band_lo, k_stop), BLOCK_N)
    right_tiles = tl.cdiv(tl.maximum(k_stop - band_hi, 0), BLOCK_N)
    gap = band_hi - left_tiles * BLOCK_N  # columns skipped after the left tiles: the band's

    acc = tl.zeros((BLOCK_M, DV_PAD), tl.float32)
    row_sum = tl.zeros((BLOCK_M,), tl.float32)
    row_max = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    left_mass = tl.zeros((BLOCK_M,), tl.float32)
    for tile in tl.range(0, left_tiles + right_tiles, warp_specialize=WARP_SPECIALIZE):
        is_left = tile < left_tiles
        k_start = tile * BLOCK_N + tl.where(is_left, 0, gap)
        cols = k_start + tl.arange(0, BLOCK_N)
        key = K_DESC.load([batch_index, head_index, k_start, 0]).reshape(BLOCK_N, D_PAD)
        value = V_DESC.load([batch_index, head_index, k_start, 0]).reshape(BLOCK_N, DV_PAD)
        scores = tl.dot(q, tl.trans(key), input_precision=DOT_PRECISION)
        acc, row_sum, row_max, rescale, tile_sum, _ = tail_update(
            acc, row_sum, row_max, row_sum, scores, value,
            tl.where(is_left, left_bias, right_bias), rows, cols, mask_base, stride_mm,
            stride_mn, q_len, k_len, qk_scale, 0, 0.0,
            IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS, SCALE_FIRST, DOT_PRECISION, False,
        )
        left_mass = left_mass * rescale + tl.where(is_left, tile_sum, 0.0)
    value_dims = tl.arange(0, DV_PAD)
    tl.store(
        PARTIAL_ACC + row_index[:, None] * DV_PAD + value_dims[None, :], acc,
        mask=row_ok[:, None],
    )
    tl.store(PARTIAL_STATS + row_index * 3, row_max, mask=row_ok)
    tl.store(PARTIAL_STATS + row_index * 3 + 1, row_sum, mask=row_ok)
    tl.store(PARTIAL_STATS + row_index * 3 + 2, left_mass, mask=row_ok)


@triton.jit
def forward_prologue(
    q_base, key_table_ptr, QUERY_REL, rows, row_index, stride_qm, stride_qd, q_len,
    num_buckets, qk_scale,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, R_PAD: tl.constexpr,
    HAS_KEY_TABLE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """The block's queries ``(rows, D_PAD)``; with a key table also ``Q A_Kᵀ`` for these rows,
    stored in ``QUERY_REL`` (the band tiles read it back by bucket, the backward reuses it), and
    the tails' key terms ``q_r · w^K_0`` and ``q_r · w^K_{R-1}`` times the (base-2) scale."""
    dims = tl.arange(0, D_PAD)
    row_ok = rows < q_len
    q = tl.load(
        q_base + rows[:, None] * stride_qm + dims[None, :] * stride_qd,
        mask=row_ok[:, None] & (dims[None, :] < HEAD_DIM), other=0.0,
    )
    if HAS_KEY_TABLE:
        key_table = load_table(key_table_ptr, num_buckets, HEAD_DIM, R_PAD, D_PAD)
        query_rel = tl.dot(q, tl.trans(key_table), input_precision=DOT_PRECISION)  # (BM, R_PAD)
        buckets = tl.arange(0, R_PAD)
        tl.store(
            QUERY_REL + row_index[:, None] * num_buckets + buckets[None, :], query_rel,
            mask=row_ok[:, None] & (buckets[None, :] < num_buckets),
        )
        left_bias = tl.sum(tl.where(buckets[None, :] == 0, query_rel, 0.0), 1) * qk_scale
        right_bias = (
            tl.sum(tl.where(buckets[None, :] == num_buckets - 1, query_rel, 0.0), 1) * qk_scale
        )
    else:
        left_bias = tl.zeros(rows.shape, tl.float32)
        right_bias = tl.zeros(rows.shape, tl.float32)
    return q, left_bias, right_bias


@triton.jit
def forward_epilogue(
    acc, row_sum, row_max, left_sum, left_max, tails_sum, tails_max, band_left, band_right,
    rows, row_index, mass_base, value_table_ptr, out_base, LSE, TAIL_MASS,
    stride_om, stride_od, q_len, k_len, shift, max_left, num_buckets, keep_scale,
    VALUE_DIM: tl.constexpr, DV_PAD: tl.constexpr, R_PAD: tl.constexpr,
    HAS_VALUE_TABLE: tl.constexpr, IS_CAUSAL: tl.constexpr, SAVE_FOR_BACKWARD: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Normalise, add the value term ``M A_V`` (interior buckets from the logits the band tiles
    wrote, the two tails from their masses), store the output and, for the backward, the
    base-2 log-sum-exp and the tail masses. ``keep_scale``: ``1 / (1 - p)`` with dropout (the
    sums and logits given are then the kept weights'), else 1."""
    row_ok = rows < q_len
    value_dims = tl.arange(0, DV_PAD)
    # A fully masked row has row_sum 0: its output, masses and gradients are zeros.
    has_mass = row_sum > 0.0
    inv_sum = tl.where(has_mass, keep_scale / tl.where(has_mass, row_sum, 1.0), 0.0)
    out = acc * inv_sum[:, None]
    if HAS_VALUE_TABLE:
        final_max = tl.where(row_max == float("-inf"), 0.0, row_max)
        # Interior buckets: M[r, b] from the logits the band tiles wrote, then M A_V.
        tl.debug_barrier()
        buckets, valid = interior_slots(
            rows, q_len, k_len, shift, max_left, num_buckets, IS_CAUSAL, R_PAD
        )
        logits = tl.load(
            mass_base + rows[:, None] * num_buckets + buckets[None, :], mask=valid,
            other=float("-inf"),
        )  # (BM, R_PAD)
        masses = tl.exp2(logits - final_max[:, None]) * inv_sum[:, None]
        value_table = load_table(value_table_ptr, num_buckets, VALUE_DIM, R_PAD, DV_PAD)
        out += tl.dot(masses.to(value_table.dtype), value_table, input_precision=DOT_PRECISION)
        # The tail sums were noted at earlier running maxima; bring them to the final one (the
        # band, done last, already is). The right tiles' mass is what the right loop added.
        left_tiles = left_sum * tl.where(
            left_max == float("-inf"), 0.0, tl.exp2(left_max - final_max)
        )
        tail_tiles = tails_sum * tl.where(
            tails_max == float("-inf"), 0.0, tl.exp2(tails_max - final_max)
        )
        left_tail = (left_tiles + band_left) * inv_sum  # M[r, 0]
        right_tail = (tail_tiles - left_tiles + band_right) * inv_sum  # M[r, R - 1]
        out += left_tail[:, None] * load_table_row(value_table_ptr, 0, VALUE_DIM, DV_PAD)[None, :]
        out += right_tail[:, None] * load_table_row(
            value_table_ptr, num_buckets - 1, VALUE_DIM, DV_PAD
        )[None, :]
        if SAVE_FOR_BACKWARD:
            tl.store(TAIL_MASS + row_index * 2, left_tail, mask=row_ok)
            tl.store(TAIL_MASS + row_index * 2 + 1, right_tail, mask=row_ok)
    tl.store(
        out_base + rows[:, None] * stride_om + value_dims[None, :] * stride_od,
        out.to(out_base.dtype.element_ty),
        mask=row_ok[:, None] & (value_dims[None, :] < VALUE_DIM),
    )
    if SAVE_FOR_BACKWARD:
        # Base-2 log-sum-exp; +inf for a fully masked row makes every recomputed p zero.
        log_sum = tl.log2(tl.where(has_mass, row_sum, 1.0))
        lse = tl.where(has_mass, row_max + log_sum, float("inf"))
        tl.store(LSE + row_index, lse, mask=row_ok)


@triton.jit
def forward_band_and_epilogue(
    acc, row_sum, row_max, left_sum, left_max, tails_sum, tails_max, q, left_bias, rows,
    row_base, rel_base, mass_base, k_base, v_base, batch, head, mask_base, value_table_ptr,
    out_base, LSE, TAIL_MASS,
    stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn, stride_om, stride_od,
    band_lo, band_end, q_len, k_len, shift, max_left, max_right, num_buckets, qk_scale,
    seed, dropout_p, keep_scale,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, D_PAD: tl.constexpr,
    DV_PAD: tl.constexpr, R_PAD: tl.constexpr, BAND_BLOCK_N: tl.constexpr,
    HAS_KEY_TABLE: tl.constexpr, HAS_VALUE_TABLE: tl.constexpr, IS_CAUSAL: tl.constexpr,
    MASK_KIND: tl.constexpr, MASK_ROWWISE: tl.constexpr, CHECK_COLS: tl.constexpr,
    SCALE_FIRST: tl.constexpr, SAVE_FOR_BACKWARD: tl.constexpr, DOT_PRECISION: tl.constexpr,
    DROPOUT: tl.constexpr,
):
    """After the tails (whose sums were noted at ``left_*`` / ``tails_*``; with dropout, their
    kept weights' sums): the band tiles ``[band_lo, band_end)`` of these rows, then their
    epilogue."""
    zeros = tl.zeros(rows.shape, tl.float32)
    acc, row_sum, row_max, _, band_left, band_right = forward_tiles(
        acc, row_sum, row_max, zeros, zeros, zeros, q, left_bias, rel_base, mass_base,
        k_base, v_base, k_base, v_base, batch, head, mask_base,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
        rows, band_lo, band_end, q_len, k_len,
        shift, max_left, max_right, num_buckets, qk_scale, seed, dropout_p,
        HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, BAND_BLOCK_N, True,
        HAS_KEY_TABLE, HAS_VALUE_TABLE, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS,
        SCALE_FIRST, DOT_PRECISION, False, DROPOUT,
    )
    forward_epilogue(
        acc, row_sum, row_max, left_sum, left_max, tails_sum, tails_max, band_left,
        band_right, rows, row_base + rows, mass_base, value_table_ptr, out_base, LSE,
        TAIL_MASS, stride_om, stride_od, q_len, k_len, shift, max_left, num_buckets,
        keep_scale, VALUE_DIM, DV_PAD, R_PAD, HAS_VALUE_TABLE, IS_CAUSAL, SAVE_FOR_BACKWARD,
        DOT_PRECISION,
    )


@triton.jit(do_not_specialize=["seed"])
def forward_kernel(
    Q, K, V, K_DESC, V_DESC, KEY_TABLE, VALUE_TABLE, MASK, OUT, LSE, QUERY_REL, TAIL_MASS,
    BAND_LOGITS, PARTIAL_ACC, PARTIAL_STATS,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_mb, stride_mh, stride_mm, stride_mn,
    stride_akh, stride_avh,
    heads, q_len, k_len, shift, max_left, max_right, num_buckets, qk_scale,
    seed, dropout_p, keep_scale,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, D_PAD: tl.constexpr,
    DV_PAD: tl.constexpr, R_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BAND_BLOCK_N: tl.constexpr, HAS_KEY_TABLE: tl.constexpr, HAS_VALUE_TABLE: tl.constexpr,
    IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, MASK_ROWWISE: tl.constexpr,
    CHECK_COLS: tl.constexpr, SCALE_FIRST: tl.constexpr, SAVE_FOR_BACKWARD: tl.constexpr,
    DOT_PRECISION: tl.constexpr, USE_TMA: tl.constexpr, HALVES: tl.constexpr,
    FROM_TAILS: tl.constexpr, DROPOUT: tl.constexpr,
):
    """``USE_TMA``: the tail tiles load keys and values through the descriptors ``K_DESC`` /
    ``V_DESC`` (blocks of ``(1, 1, BLOCK_N, D_PAD)``); otherwise those arguments are unused.
    ``HALVES = 2``: the block's rows are two halves whose tail tiles are interleaved
    (``forward_tail_pairs``); the band and the epilogue take one half after the other.
    ``FROM_TAILS``: ``forward_tails_kernel`` has done the tails; start from its partial online
    softmax (``PARTIAL_ACC``, ``PARTIAL_STATS``) and do the band and the epilogue.
    ``DROPOUT`` (only with ``HALVES = 1`` and not ``FROM_TAILS``): weights are dropped with
    probability ``dropout_p`` by the Philox stream of ``seed`` (``dropout_keep``) and the kept
    ones scaled by ``keep_scale = 1 / (1 - dropout_p)``, in both value terms."""
    tl.static_assert(not DROPOUT or (HALVES == 1 and not FROM_TAILS),
                     "dropout runs in the plain forward only (HALVES = 1, no tails kernel)")
    q_start = tl.program_id(0) * BLOCK_M
    batch_head = tl.program_id(1)
    batch_index = batch_head // heads
    head_index = batch_head % heads
    batch = batch_index.to(tl.int64)
    head = head_index.to(tl.int64)
    HALF: tl.constexpr = BLOCK_M // HALVES
    rows = q_start + tl.arange(0, HALF)  # the first (or only) half
    # Per-row buffers (LSE, QA, tail masses, band logits) are contiguous (B·H, Lq[, ...]).
    row_base = batch_head.to(tl.int64) * q_len
    rel_base = QUERY_REL + row_base * num_buckets
    mass_base = BAND_LOGITS + row_base * num_buckets
    q_base = Q + batch * stride_qb + head * stride_qh
    k_base = K + batch * stride_kb + head * stride_kh
    v_base = V + batch * stride_vb + head * stride_vh
    out_base = OUT + batch * stride_ob + head * stride_oh
    mask_base = MASK + batch * stride_mb + head * stride_mh
    key_table_ptr = KEY_TABLE + head * stride_akh
    value_table_ptr = VALUE_TABLE + head * stride_avh

    k_stop = k_len
    if IS_CAUSAL:
        k_stop = tl.minimum(k_len, q_start + BLOCK_M)
    # Tiles before band_lo have every entry at distance <= -max_left (bucket 0); tiles from
    # band_hi on have every entry at distance >= max_right (bucket R - 1).
    band_lo = (tl.maximum(q_start + shift - max_left + 1, 0) // BLOCK_N) * BLOCK_N
    band_hi = tl.cdiv(tl.maximum(q_start + BLOCK_M - 1 + shift + max_right, 0), BLOCK_N) * BLOCK_N
    band_hi = tl.maximum(band_hi, band_lo)
    zeros = tl.zeros((HALF,), tl.float32)
    minus_inf = tl.full((HALF,), float("-inf"), tl.float32)

    q, left_bias, right_bias = forward_prologue(
        q_base, key_table_ptr, QUERY_REL, rows, row_base + rows, stride_qm, stride_qd, q_len,
        num_buckets, qk_scale, HEAD_DIM, D_PAD, R_PAD, HAS_KEY_TABLE, DOT_PRECISION,
    )
    if FROM_TAILS:
        if HAS_KEY_TABLE:
            tl.debug_barrier()  # the band tiles read QA back by bucket (other threads wrote it)
        row_ok = rows < q_len
        row_index = row_base + rows
        value_dims = tl.arange(0, DV_PAD)
        acc = tl.load(
            PARTIAL_ACC + row_index[:, None] * DV_PAD + value_dims[None, :],
            mask=row_ok[:, None], other=0.0,
        )
        tails_max = tl.load(PARTIAL_STATS + row_index * 3, mask=row_ok, other=float("-inf"))
        tails_sum = tl.load(PARTIAL_STATS + row_index * 3 + 1, mask=row_ok, other=0.0)
        left_sum = tl.load(PARTIAL_STATS + row_index * 3 + 2, mask=row_ok, other=0.0)
        forward_band_and_epilogue(
            acc, tails_sum, tails_max, left_sum, tails_max, tails_sum, tails_max, q, left_bias,
            rows, row_base, rel_base, mass_base, k_base, v_base, batch_index, head_index,
            mask_base, value_table_ptr, out_base, LSE, TAIL_MASS,
            stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn, stride_om,
            stride_od, band_lo, tl.minimum(band_hi, k_stop), q_len, k_len, shift, max_left,
            max_right, num_buckets, qk_scale, seed, dropout_p, keep_scale,
            HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, R_PAD, BAND_BLOCK_N, HAS_KEY_TABLE,
            HAS_VALUE_TABLE, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS, SCALE_FIRST,
            SAVE_FOR_BACKWARD, DOT_PRECISION, DROPOUT,
        )
    elif HALVES == 1:
        if HAS_KEY_TABLE:
            tl.debug_barrier()  # the band tiles read QA back by bucket (other threads wrote it)
        acc = tl.zeros((HALF, DV_PAD), tl.float32)
        # The online softmax does not care about the order of the tiles: both tails first
        # (noting their sums), then the band.
        # (Tail tiles leave the band's two masses alone: zeros in, zeros out.)
        acc, row_sum, row_max, kept_sum, _, _ = forward_tiles(
            acc, zeros, minus_inf, zeros, zeros, zeros, q, left_bias, rel_base, mass_base,
            k_base, v_base, K_DESC, V_DESC, batch_index, head_index, mask_base,
            stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
            rows, 0, tl.minimum(band_lo, k_stop), q_len, k_len,
            shift, max_left, max_right, num_buckets, qk_scale, seed, dropout_p,
            HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, BLOCK_N, False,
            HAS_KEY_TABLE, HAS_VALUE_TABLE, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS,
            SCALE_FIRST, DOT_PRECISION, USE_TMA, DROPOUT,
        )
        # The tails' masses come from the weights that meet the values: all, or the kept ones.
        left_sum = row_sum
        if DROPOUT:
            left_sum = kept_sum
        left_max = row_max
        acc, row_sum, row_max, kept_sum, _, _ = forward_tiles(
            acc, row_sum, row_max, kept_sum, zeros, zeros, q, right_bias, rel_base, mass_base,
            k_base, v_base, K_DESC, V_DESC, batch_index, head_index, mask_base,
            stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
            rows, band_hi, k_stop, q_len, k_len,
            shift, max_left, max_right, num_buckets, qk_scale, seed, dropout_p,
            HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, BLOCK_N, False,
            HAS_KEY_TABLE, HAS_VALUE_TABLE, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS,
            SCALE_FIRST, DOT_PRECISION, USE_TMA, DROPOUT,
        )
        tails_sum = row_sum
        if DROPOUT:
            tails_sum = kept_sum
        forward_band_and_epilogue(
            acc, row_sum, row_max, left_sum, left_max, tails_sum, row_max, q, left_bias, rows,
            row_base, rel_base, mass_base, k_base, v_base, batch_index, head_index, mask_base,
            value_table_ptr, out_base, LSE, TAIL_MASS,
            stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn, stride_om,
            stride_od, band_lo, tl.minimum(band_hi, k_stop), q_len, k_len, shift, max_left,
            max_right, num_buckets, qk_scale, seed, dropout_p, keep_scale,
            HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, R_PAD, BAND_BLOCK_N, HAS_KEY_TABLE,
            HAS_VALUE_TABLE, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS, SCALE_FIRST,
            SAVE_FOR_BACKWARD, DOT_PRECISION, DROPOUT,
        )
    else:
        rows_b = rows + HALF
        q_b, left_bias_b, right_bias_b = forward_prologue(
            q_base, key_table_ptr, QUERY_REL, rows_b, row_base + rows_b, stride_qm, stride_qd,
            q_len, num_buckets, qk_scale, HEAD_DIM, D_PAD, R_PAD, HAS_KEY_TABLE, DOT_PRECISION,
        )
        if HAS_KEY_TABLE:
            tl.debug_barrier()  # the band tiles read QA back by bucket (other threads wrote it)
        acc = tl.zeros((HALF, DV_PAD), tl.float32)
        acc_b = tl.zeros((HALF, DV_PAD), tl.float32)
        acc, row_sum, row_max, acc_b, row_sum_b, row_max_b = forward_tail_pairs(
            acc, zeros, minus_inf, acc_b, zeros, minus_inf, q, q_b, left_bias, left_bias_b,
            rows, rows_b, k_base, v_base, K_DESC, V_DESC, batch_index, head_index, mask_base,
            stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
            0, tl.minimum(band_lo, k_stop), q_len, k_len, qk_scale,
            HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, BLOCK_N, IS_CAUSAL, MASK_KIND, MASK_ROWWISE,
            CHECK_COLS, SCALE_FIRST, DOT_PRECISION, USE_TMA,
        )
        left_sum = row_sum
        left_max = row_max
        left_sum_b = row_sum_b
        left_max_b = row_max_b
        acc, row_sum, row_max, acc_b, row_sum_b, row_max_b = forward_tail_pairs(
            acc, row_sum, row_max, acc_b, row_sum_b, row_max_b, q, q_b, right_bias,
            right_bias_b, rows, rows_b, k_base, v_base, K_DESC, V_DESC, batch_index, head_index,
            mask_base, stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
            band_hi, k_stop, q_len, k_len, qk_scale,
            HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, BLOCK_N, IS_CAUSAL, MASK_KIND, MASK_ROWWISE,
            CHECK_COLS, SCALE_FIRST, DOT_PRECISION, USE_TMA,
        )
        # The band, one half after the other (the band's gathers need registers of their own).
        forward_band_and_epilogue(
            acc, row_sum, row_max, left_sum, left_max, row_sum, row_max, q, left_bias, rows,
            row_base, rel_base, mass_base, k_base, v_base, batch_index, head_index, mask_base,
            value_table_ptr, out_base, LSE, TAIL_MASS,
            stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn, stride_om,
            stride_od, band_lo, tl.minimum(band_hi, k_stop), q_len, k_len, shift, max_left,
            max_right, num_buckets, qk_scale, seed, dropout_p, keep_scale,
            HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, R_PAD, BAND_BLOCK_N, HAS_KEY_TABLE,
            HAS_VALUE_TABLE, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS, SCALE_FIRST,
            SAVE_FOR_BACKWARD, DOT_PRECISION, DROPOUT,
        )
        forward_band_and_epilogue(
            acc_b, row_sum_b, row_max_b, left_sum_b, left_max_b, row_sum_b, row_max_b, q_b,
            left_bias_b, rows_b, row_base, rel_base, mass_base, k_base, v_base, batch_index,
            head_index, mask_base, value_table_ptr, out_base, LSE, TAIL_MASS,
            stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn, stride_om,
            stride_od, band_lo, tl.minimum(band_hi, k_stop), q_len, k_len, shift, max_left,
            max_right, num_buckets, qk_scale, seed, dropout_p, keep_scale,
            HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, R_PAD, BAND_BLOCK_N, HAS_KEY_TABLE,
            HAS_VALUE_TABLE, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS, SCALE_FIRST,
            SAVE_FOR_BACKWARD, DOT_PRECISION, DROPOUT,
        )


# ------------------------------------------------------------------------ grad query


@triton.jit
def grad_prepare_kernel(
    OUT, GRAD_OUT, VALUE_TABLE, LSE, QUERY_REL, DELTA, GRAD_REL, TAIL_ROWS,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_gb, stride_gh, stride_gm, stride_gd,
    stride_avh,
    heads, q_len, num_buckets, qk_scale,
    VALUE_DIM: tl.constexpr, DV_PAD: tl.constexpr, R_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, HAS_KEY_TABLE: tl.constexpr, HAS_VALUE_TABLE: tl.constexpr,
    DOT_PRECISION: tl.constexpr, DROPOUT: tl.constexpr,
):
    """Per query row: ``δ_r = dO_r · o_r``, (with a value table) ``dO_r · w^V_b`` for every b,
    and each tail's ``lse`` and ``δ`` with its one-number-per-row key and value terms folded in.

    ``TAIL_ROWS`` is ``(4, B·H·Lq)``: ``lse - scale·QA[r, 0]``, ``lse - scale·QA[r, R-1]``,
    ``δ - (dO A_Vᵀ)[r, 0]``, ``δ - (dO A_Vᵀ)[r, R-1]``. The gradient kernels' tail tiles load
    these as contiguous vectors, like a plain FlashAttention backward, instead of gathering two
    strided table entries per row and tile.

    With ``DROPOUT`` the value term cannot be folded into ``δ``: a tail entry's
    ``dP = m (dO·v_c + (dO A_Vᵀ)[r, tail]) - δ`` multiplies it by the entry's dropout factor
    ``m``. The last two planes then hold ``(dO A_Vᵀ)[r, 0]`` and ``(dO A_Vᵀ)[r, R-1]`` as they
    are, and the tiles take the plain ``δ`` from ``DELTA``.
    """
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    batch_head = tl.program_id(1)
    batch = (batch_head // heads).to(tl.int64)
    head = (batch_head % heads).to(tl.int64)
    value_dims = tl.arange(0, DV_PAD)
    row_ok = rows < q_len
    row_index = batch_head.to(tl.int64) * q_len + rows
    v_mask = row_ok[:, None] & (value_dims[None, :] < VALUE_DIM)
    grad_out = tl.load(
        GRAD_OUT + batch * stride_gb + head * stride_gh
        + rows[:, None] * stride_gm + value_dims[None, :] * stride_gd, mask=v_mask, other=0.0,
    )
    out = tl.load(
        OUT + batch * stride_ob + head * stride_oh
        + rows[:, None] * stride_om + value_dims[None, :] * stride_od, mask=v_mask, other=0.0,
    )
    delta = tl.sum(grad_out.to(tl.float32) * out.to(tl.float32), 1)
    tl.store(DELTA + row_index, delta, mask=row_ok)
    lse = tl.load(LSE + row_index, mask=row_ok, other=float("inf"))
    plane = tl.num_programs(1).to(tl.int64) * q_len  # B·H·Lq entries per TAIL_ROWS plane
    if HAS_KEY_TABLE:
        left_key = tl.load(QUERY_REL + row_index * num_buckets, mask=row_ok, other=0.0)
        right_key = tl.load(QUERY_REL + row_index * num_buckets + num_buckets - 1, mask=row_ok,
                            other=0.0)
        tl.store(TAIL_ROWS + row_index, lse - left_key * qk_scale, mask=row_ok)
        tl.store(TAIL_ROWS + plane + row_index, lse - right_key * qk_scale, mask=row_ok)
    else:
        tl.store(TAIL_ROWS + row_index, lse, mask=row_ok)
        tl.store(TAIL_ROWS + plane + row_index, lse, mask=row_ok)
    if HAS_VALUE_TABLE:
        buckets = tl.arange(0, R_PAD)
        value_table = load_table(
            VALUE_TABLE + head * stride_avh, num_buckets, VALUE_DIM, R_PAD, DV_PAD
        )
        grad_rel = tl.dot(grad_out, tl.trans(value_table), input_precision=DOT_PRECISION)
        tl.store(GRAD_REL + row_index[:, None] * num_buckets + buckets[None, :], grad_rel,
                 mask=row_ok[:, None] & (buckets[None, :] < num_buckets))
        left_value = tl.sum(tl.where(buckets[None, :] == 0, grad_rel, 0.0), 1)
        right_value = tl.sum(tl.where(buckets[None, :] == num_buckets - 1, grad_rel, 0.0), 1)
        if DROPOUT:
            tl.store(TAIL_ROWS + 2 * plane + row_index, left_value, mask=row_ok)
            tl.store(TAIL_ROWS + 3 * plane + row_index, right_value, mask=row_ok)
        else:
            tl.store(TAIL_ROWS + 2 * plane + row_index, delta - left_value, mask=row_ok)
            tl.store(TAIL_ROWS + 3 * plane + row_index, delta - right_value, mask=row_ok)
    else:
        folded = delta  # no value term: nothing to fold in, or (with dropout) to add
        if DROPOUT:
            folded = tl.zeros_like(delta)
        tl.store(TAIL_ROWS + 2 * plane + row_index, folded, mask=row_ok)
        tl.store(TAIL_ROWS + 3 * plane + row_index, folded, mask=row_ok)


@triton.jit
def tail_gradient_scores(
    scores, grad_probs, lse, delta, rows, cols, mask_base, stride_mm, stride_mn,
    q_len, k_len, qk_scale, tail_value, seed, dropout_p, keep_scale,
    CHECK_COLS: tl.constexpr, IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr,
    MASK_ROWWISE: tl.constexpr, SCALE_FIRST: tl.constexpr, DROPOUT: tl.constexpr,
):
    """A tail tile's weights (``P``, or with ``DROPOUT`` the dropped and rescaled ``P ⊙ m``
    that met the values) and ``dS = P ⊙ (dP - δ)``, from its unscaled ``scores``.

    A tail's key and value terms are one number per row, already folded into the ``lse`` and
    ``δ`` it is given (``TAIL_ROWS``), so the tile pays no extra operation for them; with
    ``DROPOUT`` the value term is ``tail_value`` instead, added before the dropout factor (see
    ``grad_prepare_kernel``), and ``delta`` is the plain ``δ``. ``rows``, ``cols``, ``lse``,
    ``delta`` and ``tail_value`` come broadcast to the tile's orientation (queries along
    dimension 0 in the query gradient, along dimension 1 in the transposed key/value tiles).
    """
    if SCALE_FIRST:  # a float mask is added to scaled logits
        scores = masked_logits(
            scores * qk_scale, rows, cols, mask_base, stride_mm, stride_mn, q_len, k_len,
            CHECK_COLS, IS_CAUSAL, MASK_KIND, MASK_ROWWISE,
        )
        probs = tl.exp2(scores - lse)
    else:
        scores = masked_logits(
            scores, rows, cols, mask_base, stride_mm, stride_mn, q_len, k_len,
            CHECK_COLS, IS_CAUSAL, MASK_KIND, MASK_ROWWISE,
        )
        probs = tl.exp2(scores * qk_scale - lse)
    weights = probs
    if DROPOUT:
        keep = dropout_keep(seed, rows, cols, dropout_p)
        grad_probs = tl.where(keep, (grad_probs + tail_value) * keep_scale, 0.0)
        weights = tl.where(keep, probs * keep_scale, 0.0)
    return weights, probs * (grad_probs - delta)


@triton.jit
def grad_query_tiles(
    grad_q, left_sum, right_sum, q, grad_out, lse, delta, tail_value,
    rel_base, grad_rel_base, grad_scores_base,
    k_base, v_base, k_desc, v_desc, batch, head, mask_base,
    stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
    rows, k_lo, k_hi, q_len, k_len, shift, max_left, max_right, num_buckets, qk_scale,
    seed, dropout_p, keep_scale,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, D_PAD: tl.constexpr,
    DV_PAD: tl.constexpr, BLOCK_N: tl.constexpr, BAND: tl.constexpr,
    RIGHT_TAIL: tl.constexpr, HAS_KEY_TABLE: tl.constexpr, HAS_VALUE_TABLE: tl.constexpr,
    IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, MASK_ROWWISE: tl.constexpr,
    CHECK_COLS: tl.constexpr, SCALE_FIRST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    USE_TMA: tl.constexpr, DROPOUT: tl.constexpr,
):
    """``dS K`` over the key tiles ``[k_lo, k_hi)``, with ``dS`` summed per bucket.

    Tails add their row sums of ``dS`` to ``left_sum`` or ``right_sum``. Band tiles read the key
    and value terms by bucket from the ``(Lq, R)`` tables ``QA`` and ``dO A_Vᵀ``, add their tail
    entries of ``dS`` to the sums, and write each interior bucket's ``dS`` and ``p`` (one key per
    row and bucket) to its ``(r, b)`` slot: ``dS`` at ``grad_scores_base``, ``p`` over the
    ``dO A_Vᵀ`` entry it was just computed from (no other tile reads that slot). With
    ``DROPOUT`` that ``p`` is the dropped and rescaled weight, the mass the value term used, and
    ``dP`` carries the dropout factor; ``tail_value`` is a tail's value term (unused in the band).
    """
    row_ok = rows < q_len
    for k_start in range(k_lo, k_hi, BLOCK_N):
        cols = k_start + tl.arange(0, BLOCK_N)
        key = load_rows(
            k_base, k_desc, batch, head, k_start, stride_kn, stride_kd, k_len,
            HEAD_DIM, D_PAD, BLOCK_N, USE_TMA,
        )  # (BN, D_PAD)
        value = load_rows(
            v_base, v_desc, batch, head, k_start, stride_vn, stride_vd, k_len,
            VALUE_DIM, DV_PAD, BLOCK_N, USE_TMA,
        )  # (BN, DV_PAD)
        scores = tl.dot(q, tl.trans(key), input_precision=DOT_PRECISION)  # (BM, BN)
        grad_probs = tl.dot(grad_out, tl.trans(value), input_precision=DOT_PRECISION)  # dO_r · v_c
        if BAND:
            bucket = bucket_of(rows[:, None], cols[None, :], shift, max_left, max_right)
            slots = rows[:, None] * num_buckets + bucket  # (BM, BN)
            if HAS_KEY_TABLE:
                scores += tl.load(rel_base + slots, mask=row_ok[:, None], other=0.0)
            if HAS_VALUE_TABLE:  # + dO_r · a^V_rc
                grad_probs += tl.load(grad_rel_base + slots, mask=row_ok[:, None], other=0.0)
            scores = masked_logits(
                scores * qk_scale, rows[:, None], cols[None, :], mask_base, stride_mm, stride_mn,
                q_len, k_len, CHECK_COLS, IS_CAUSAL, MASK_KIND, MASK_ROWWISE,
            )
            probs = tl.exp2(scores - lse[:, None])  # (BM, BN): p_rc, recomputed
            if DROPOUT:  # dP = m ⊙ dO (v + a^V)ᵀ; the masses are p ⊙ m
                keep = dropout_keep(seed, rows[:, None], cols[None, :], dropout_p)
                grad_probs = tl.where(keep, grad_probs * keep_scale, 0.0)
                grad_scores = probs * (grad_probs - delta[:, None])
                probs = tl.where(keep, probs * keep_scale, 0.0)
            else:
                grad_scores = probs * (grad_probs - delta[:, None])  # dS = P ⊙ (dP - δ)
        else:
            probs, grad_scores = tail_gradient_scores(
                scores, grad_probs, lse[:, None], delta[:, None], rows[:, None], cols[None, :],
                mask_base, stride_mm, stride_mn, q_len, k_len, qk_scale, tail_value[:, None],
                seed, dropout_p, keep_scale,
                CHECK_COLS, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, SCALE_FIRST, DROPOUT,
            )
        grad_q += tl.dot(grad_scores.to(key.dtype), key, input_precision=DOT_PRECISION)
        if BAND:
            interior = (bucket > 0) & (bucket < num_buckets - 1) & row_ok[:, None]
            if HAS_VALUE_TABLE:
                tl.store(grad_rel_base + slots, probs, mask=interior)  # M[r, b]
            if HAS_KEY_TABLE:
                left, right = tail_sums(
                    grad_scores, cols[None, :] - rows[:, None] - shift, max_left, max_right
                )
                left_sum += left
                right_sum += right
                tl.store(grad_scores_base + slots, grad_scores, mask=interior)
        else:
            if HAS_KEY_TABLE:
                if RIGHT_TAIL:
                    right_sum += tl.sum(grad_scores, 1)
                else:
                    left_sum += tl.sum(grad_scores, 1)
    return grad_q, left_sum, right_sum


@triton.jit
def grad_query_block(
    Q, K, V, K_DESC, V_DESC, GRAD_OUT, KEY_TABLE, MASK, LSE, DELTA, TAIL_ROWS, QUERY_REL,
    GRAD_REL, TAIL_MASS, GRAD_SCORES_REL, GRAD_Q, PARTIAL_KEY_TABLE, PARTIAL_VALUE_TABLE,
    TAIL_SUMS,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_gb, stride_gh, stride_gm, stride_gd,
    stride_mb, stride_mh, stride_mm, stride_mn,
    stride_akh,
    heads, q_len, k_len, shift, max_left, max_right, num_buckets, qk_scale, scale,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, D_PAD: tl.constexpr,
    DV_PAD: tl.constexpr, R_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BAND_BLOCK_N: tl.constexpr, HAS_KEY_TABLE: tl.constexpr, HAS_VALUE_TABLE: tl.constexpr,
    IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, MASK_ROWWISE: tl.constexpr,
    CHECK_COLS: tl.constexpr, SCALE_FIRST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    USE_TMA: tl.constexpr, FROM_TAILS: tl.constexpr,
    block, group, ACCUMULATE: tl.constexpr, seed, dropout_p, keep_scale, DROPOUT: tl.constexpr,
):
    """One query block of :func:`grad_query_kernel`; ``ACCUMULATE``: add the table-gradient
    partials to those an earlier block of the same group stored.

    A function of its own, called under a guard, rather than the body written inline in the
    kernel's loop: inline (blocks past the end walking no tile instead of being skipped), the
    sm_90 compile of two 64-row blocks per program spilled 608 bytes instead of 64."""
    q_start = block * BLOCK_M
    batch_head = tl.program_id(1)
    batch_index = batch_head // heads
    head_index = batch_head % heads
    batch = batch_index.to(tl.int64)
    head = head_index.to(tl.int64)
    rows = q_start + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, D_PAD)
    value_dims = tl.arange(0, DV_PAD)
    row_ok = rows < q_len
    row_base = batch_head.to(tl.int64) * q_len
    row_index = row_base + rows
    rel_base = QUERY_REL + row_base * num_buckets
    grad_rel_base = GRAD_REL + row_base * num_buckets
    grad_scores_base = GRAD_SCORES_REL + row_base * num_buckets

    q_mask = row_ok[:, None] & (dims[None, :] < HEAD_DIM)
    q = tl.load(
        Q + batch * stride_qb + head * stride_qh
        + rows[:, None] * stride_qm + dims[None, :] * stride_qd, mask=q_mask, other=0.0,
    )
    grad_out = tl.load(
        GRAD_OUT + batch * stride_gb + head * stride_gh
        + rows[:, None] * stride_gm + value_dims[None, :] * stride_gd,
        mask=row_ok[:, None] & (value_dims[None, :] < VALUE_DIM), other=0.0,
    )
    delta = tl.load(DELTA + row_index, mask=row_ok, other=0.0)
    lse = tl.load(LSE + row_index, mask=row_ok, other=float("inf"))
    key_table_ptr = KEY_TABLE + head * stride_akh

    # Each tail's lse and δ with its key and value terms folded in (the prepare kernel's).
    plane = tl.num_programs(1).to(tl.int64) * q_len
    left_lse = tl.load(TAIL_ROWS + row_index, mask=row_ok, other=float("inf"))
    right_lse = tl.load(TAIL_ROWS + plane + row_index, mask=row_ok, other=float("inf"))
    left_delta = tl.load(TAIL_ROWS + 2 * plane + row_index, mask=row_ok, other=0.0)
    right_delta = tl.load(TAIL_ROWS + 3 * plane + row_index, mask=row_ok, other=0.0)
    left_value = left_delta  # unused without dropout
    right_value = right_delta
    if DROPOUT:  # those planes hold each tail's value term; δ is the plain one
        left_delta = delta
        right_delta = delta

    k_base = K + batch * stride_kb + head * stride_kh
    v_base = V + batch * stride_vb + head * stride_vh
    mask_base = MASK + batch * stride_mb + head * stride_mh
    grad_q_ptrs = (
        GRAD_Q + batch * stride_qb + head * stride_qh
        + rows[:, None] * stride_qm + dims[None, :] * stride_qd
    )
    if FROM_TAILS:  # grad_query_tails_kernel's share: dQ (times the scale) and the dS sums
        grad_q = tl.load(grad_q_ptrs, mask=q_mask, other=0.0).to(tl.float32) / scale
        left_sum = tl.load(TAIL_SUMS + row_index * 2, mask=row_ok, other=0.0)
        right_sum = tl.load(TAIL_SUMS + row_index * 2 + 1, mask=row_ok, other=0.0)
    else:
        grad_q = tl.zeros((BLOCK_M, D_PAD), tl.float32)
        left_sum = tl.zeros((BLOCK_M,), tl.float32)  # dS summed over the left tail: dS_b[r, 0]
        right_sum = tl.zeros((BLOCK_M,), tl.float32)  # ... over the right tail: dS_b[r, R - 1]

    k_stop = k_len
    if IS_CAUSAL:
        k_stop = tl.minimum(k_len, q_start + BLOCK_M)
    band_lo = (tl.maximum(q_start + shift - max_left + 1, 0) // BLOCK_N) * BLOCK_N
    band_hi = tl.cdiv(tl.maximum(q_start + BLOCK_M - 1 + shift + max_right, 0), BLOCK_N)
    band_hi = tl.maximum(band_hi * BLOCK_N, band_lo)

    if not FROM_TAILS:
        grad_q, left_sum, right_sum = grad_query_tiles(
            grad_q, left_sum, right_sum, q, grad_out, left_lse, left_delta, left_value,
            rel_base, grad_rel_base, grad_scores_base,
            k_base, v_base, K_DESC, V_DESC, batch_index, head_index, mask_base,
            stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
            rows, 0, tl.minimum(band_lo, k_stop), q_len, k_len,
            shift, max_left, max_right, num_buckets, qk_scale, seed, dropout_p, keep_scale,
            HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, BLOCK_N, False, False,
            HAS_KEY_TABLE, HAS_VALUE_TABLE, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS,
            SCALE_FIRST, DOT_PRECISION, USE_TMA, DROPOUT,
        )
        grad_q, left_sum, right_sum = grad_query_tiles(
            grad_q, left_sum, right_sum, q, grad_out, right_lse, right_delta, right_value,
            rel_base, grad_rel_base, grad_scores_base,
            k_base, v_base, K_DESC, V_DESC, batch_index, head_index, mask_base,
            stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
            rows, band_hi, k_stop, q_len, k_len,
            shift, max_left, max_right, num_buckets, qk_scale, seed, dropout_p, keep_scale,
            HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, BLOCK_N, False, True,
            HAS_KEY_TABLE, HAS_VALUE_TABLE, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS,
            SCALE_FIRST, DOT_PRECISION, USE_TMA, DROPOUT,
        )
    grad_q, left_sum, right_sum = grad_query_tiles(
        grad_q, left_sum, right_sum, q, grad_out, lse, delta, delta,
        rel_base, grad_rel_base, grad_scores_base,
        k_base, v_base, K_DESC, V_DESC, batch_index, head_index, mask_base,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_mm, stride_mn,
        rows, band_lo, tl.minimum(band_hi, k_stop), q_len, k_len,
        shift, max_left, max_right, num_buckets, qk_scale, seed, dropout_p, keep_scale,
        HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, BAND_BLOCK_N, True, False,
        HAS_KEY_TABLE, HAS_VALUE_TABLE, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS,
        SCALE_FIRST, DOT_PRECISION, False, DROPOUT,
    )

    # Interior buckets, from the slots the band tiles wrote (other threads wrote them).
    tl.debug_barrier()
    buckets, valid = interior_slots(
        rows, q_len, k_len, shift, max_left, num_buckets, IS_CAUSAL, R_PAD
    )
    slots = rows[:, None] * num_buckets + buckets[None, :]
    # This group's share of the table gradients, (R, D) each, summed over groups by the
    # caller. A later block of the group adds to what the earlier ones stored (the barrier
    # above makes their stores visible to every thread of the program).
    partial_index = (batch_head.to(tl.int64) * tl.num_programs(0) + group) * num_buckets
    if HAS_KEY_TABLE:
        grad_scores_rel = tl.load(grad_scores_base + slots, mask=valid, other=0.0)  # dS_b
        grad_scores_rel = grad_scores_rel.to(q.dtype)  # (stored in q's dtype already)
        key_table = load_table(key_table_ptr, num_buckets, HEAD_DIM, R_PAD, D_PAD)
        grad_q += tl.dot(grad_scores_rel, key_table, input_precision=DOT_PRECISION)
        partial_key = tl.dot(tl.trans(grad_scores_rel), q, input_precision=DOT_PRECISION)
        # The two tail buckets: dq += dS_b[r, 0] w^K_0 + dS_b[r, R-1] w^K_{R-1}, and those table
        # rows get Σ_r dS_b[r, ·] q_r.
        key_left = load_table_row(key_table_ptr, 0, HEAD_DIM, D_PAD)
        key_right = load_table_row(key_table_ptr, num_buckets - 1, HEAD_DIM, D_PAD)
        grad_q += (
            left_sum[:, None] * key_left[None, :] + right_sum[:, None] * key_right[None, :]
        )
        q32 = q.to(tl.float32)
        partial_key += tl.where(
            buckets[:, None] == 0, tl.sum(left_sum[:, None] * q32, 0)[None, :], 0.0
        )
        partial_key += tl.where(
            buckets[:, None] == num_buckets - 1,
            tl.sum(right_sum[:, None] * q32, 0)[None, :], 0.0,
        )
        partial_key = partial_key * scale
        key_partials = (
            PARTIAL_KEY_TABLE + (partial_index + buckets[:, None]) * HEAD_DIM + dims[None, :]
        )
        key_partial_mask = (buckets[:, None] < num_buckets) & (dims[None, :] < HEAD_DIM)
        if ACCUMULATE:
            partial_key += tl.load(key_partials, mask=key_partial_mask, other=0.0)
        tl.store(key_partials, partial_key, mask=key_partial_mask)
    if HAS_VALUE_TABLE:
        masses = tl.load(grad_rel_base + slots, mask=valid, other=0.0)  # M[r, b], interior
        partial_value = tl.dot(
            tl.trans(masses.to(grad_out.dtype)), grad_out, input_precision=DOT_PRECISION
        )  # (R_PAD, DV_PAD): Σ_r M[r, b] dO_r
        left_tail = tl.load(TAIL_MASS + row_index * 2, mask=row_ok, other=0.0)  # M[r, 0]
        right_tail = tl.load(TAIL_MASS + row_index * 2 + 1, mask=row_ok, other=0.0)
        grad_out32 = grad_out.to(tl.float32)
        partial_value += tl.where(
            buckets[:, None] == 0, tl.sum(left_tail[:, None] * grad_out32, 0)[None, :], 0.0
        )
        partial_value += tl.where(
            buckets[:, None] == num_buckets - 1,
            tl.sum(right_tail[:, None] * grad_out32, 0)[None, :], 0.0,
        )
        value_partials = (
            PARTIAL_VALUE_TABLE + (partial_index + buckets[:, None]) * VALUE_DIM
            + value_dims[None, :]
        )
        value_partial_mask = (buckets[:, None] < num_buckets) & (value_dims[None, :] < VALUE_DIM)
        if ACCUMULATE:
            partial_value += tl.load(value_partials, mask=value_partial_mask, other=0.0)
        tl.store(value_partials, partial_value, mask=value_partial_mask)
    tl.store(grad_q_ptrs, (grad_q * scale).to(GRAD_Q.dtype.element_ty), mask=q_mask)


@triton.jit
def grad_query_tails_kernel(
    Q_DESC, K_DESC, V_DESC, G_DESC, MASK, TAIL_ROWS, GRAD_Q, TAIL_SUMS,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_mb, stride_mh, stride_mm, stride_mn,
    heads, q_len, k_len, shift, max_left, max_right, qk_scale, scale,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, D_PAD: tl.constexpr,
    DV_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_KEY_TABLE: tl.constexpr, IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr,
    MASK_ROWWISE: tl.constexpr, CHECK_COLS: tl.constexpr, SCALE_FIRST: tl.constexpr,
    DOT_PRECISION: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
):
    """The tails' share of ``dQ`` for one block of query rows, in a kernel of its own so that
    Triton can warp-specialise its loop (see ``forward_tails_kernel``): left then right tail
    tiles in one loop, each with its tail's folded ``lse`` / ``δ`` (``TAIL_ROWS``). Stores
    ``scale dS K`` to ``GRAD_Q`` and each row's ``dS`` summed over either tail to ``TAIL_SUMS``
    ``(B·H·Lq, 2)``; ``grad_query_kernel`` with ``FROM_TAILS`` completes them with the band."""
    q_start = tl.program_id(0) * BLOCK_M
    batch_head = tl.program_id(1)
    batch_index = batch_head // heads
    head_index = batch_head % heads
    batch = batch_index.to(tl.int64)
    head = head_index.to(tl.int64)
    rows = q_start + tl.arange(0, BLOCK_M)
    row_ok = rows < q_len
    row_index = batch_head.to(tl.int64) * q_len + rows
    plane = tl.num_programs(1).to(tl.int64) * q_len
    q = Q_DESC.load([batch_index, head_index, q_start, 0]).reshape(BLOCK_M, D_PAD)
    grad_out = G_DESC.load([batch_index, head_index, q_start, 0]).reshape(BLOCK_M, DV_PAD)
    left_lse = tl.load(TAIL_ROWS + row_index, mask=row_ok, other=float("inf"))
    right_lse = tl.load(TAIL_ROWS + plane + row_index, mask=row_ok, other=float("inf"))
    left_delta = tl.load(TAIL_ROWS + 2 * plane + row_index, mask=row_ok, other=0.0)
    right_delta = tl.load(TAIL_ROWS + 3 * plane + row_index, mask=row_ok, other=0.0)
    mask_base = MASK + batch * stride_mb + head * stride_mh
    k_stop = k_len
    if IS_CAUSAL:
        k_stop = tl.minimum(k_len, q_start + BLOCK_M)
    band_lo = (tl.maximum(q_start + shift - max_left + 1, 0) // BLOCK_N) * BLOCK_N
    band_hi = tl.cdiv(tl.maximum(q_start + BLOCK_M - 1 + shift + max_right, 0), BLOCK_N)
    band_hi = tl.maximum(band_hi * BLOCK_N, band_lo)
    left_tiles = tl.cdiv(tl.minimum(band_lo, k_stop), BLOCK_N)
    right_tiles = tl.cdiv(tl.maximum(k_stop - band_hi, 0), BLOCK_N)
    gap = band_hi - left_tiles * BLOCK_N

    grad_q = tl.zeros((BLOCK_M, D_PAD), tl.float32)
    left_sum = tl.zeros((BLOCK_M,), tl.float32)
    right_sum = tl.zeros((BLOCK_M,), tl.float32)
    for tile in tl.range(0, left_tiles + right_tiles, warp_specialize=WARP_SPECIALIZE):
        is_left = tile < left_tiles
        k_start = tile * BLOCK_N + tl.where(is_left, 0, gap)
        cols = k_start + tl.arange(0, BLOCK_N)
        key = K_DESC.load([batch_index, head_index, k_start, 0]).reshape(BLOCK_N, D_PAD)
        value = V_DESC.load([batch_index, head_index, k_start, 0]).reshape(BLOCK_N, DV_PAD)
        lse = tl.where(is_left, left_lse, right_lse)
        delta = tl.where(is_left, left_delta, right_delta)
        scores = tl.dot(q, tl.trans(key), input_precision=DOT_PRECISION)
        grad_probs = tl.dot(grad_out, tl.trans(value), input_precision=DOT_PRECISION)
        _, grad_scores = tail_gradient_scores(
            scores, grad_probs, lse[:, None], delta[:, None], rows[:, None], cols[None, :],
            mask_base, stride_mm, stride_mn, q_len, k_len, qk_scale, 0.0, 0, 0.0, 1.0,
            CHECK_COLS, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, SCALE_FIRST, False,
        )
        grad_q += tl.dot(grad_scores.to(key.dtype), key, input_precision=DOT_PRECISION)
        if HAS_KEY_TABLE:
            row_sums = tl.sum(grad_scores, 1)
            left_sum += tl.where(is_left, row_sums, 0.0)
            right_sum += tl.where(is_left, 0.0, row_sums)
    dims = tl.arange(0, D_PAD)
    tl.store(
        GRAD_Q + batch * stride_qb + head * stride_qh
        + rows[:, None] * stride_qm + dims[None, :] * stride_qd,
        (grad_q * scale).to(GRAD_Q.dtype.element_ty),
        mask=row_ok[:, None] & (dims[None, :] < HEAD_DIM),
    )
    tl.store(TAIL_SUMS + row_index * 2, left_sum, mask=row_ok)
    tl.store(TAIL_SUMS + row_index * 2 + 1, right_sum, mask=row_ok)


@triton.jit(do_not_specialize=["seed"])
def grad_query_kernel(
    Q, K, V, K_DESC, V_DESC, GRAD_OUT, KEY_TABLE, MASK, LSE, DELTA, TAIL_ROWS, QUERY_REL,
    GRAD_REL, TAIL_MASS, GRAD_SCORES_REL, GRAD_Q, PARTIAL_KEY_TABLE, PARTIAL_VALUE_TABLE,
    TAIL_SUMS,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_gb, stride_gh, stride_gm, stride_gd,
    stride_mb, stride_mh, stride_mm, stride_mn,
    stride_akh,
    heads, q_len, k_len, shift, max_left, max_right, num_buckets, qk_scale, scale,
    seed, dropout_p, keep_scale,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, D_PAD: tl.constexpr,
    DV_PAD: tl.constexpr, R_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BAND_BLOCK_N: tl.constexpr, HAS_KEY_TABLE: tl.constexpr, HAS_VALUE_TABLE: tl.constexpr,
    IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, MASK_ROWWISE: tl.constexpr,
    CHECK_COLS: tl.constexpr, SCALE_FIRST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    USE_TMA: tl.constexpr, GROUP: tl.constexpr, FROM_TAILS: tl.constexpr,
    DROPOUT: tl.constexpr,
):
    """Runs after the key/value kernel: it overwrites the interior slots of ``dO A_Vᵀ``.

    Each program does ``GROUP`` query blocks one after the other and sums their table-gradient
    partials in place, so that small blocks do not multiply the partials' memory. ``USE_TMA``:
    the tail tiles load keys and values through ``K_DESC`` / ``V_DESC``. ``DROPOUT`` (not with
    ``FROM_TAILS``): the forward's dropout (``seed``, ``dropout_p``, ``keep_scale``)."""
    tl.static_assert(not (DROPOUT and FROM_TAILS), "dropout runs without a tails kernel")
    group = tl.program_id(0)
    first_block = group * GROUP
    for step in tl.static_range(GROUP):  # unrolled: GROUP = 1 compiles to the block alone
        block = first_block + step
        if (GROUP == 1) or (block * BLOCK_M < q_len):  # a short last group skips the rest
            grad_query_block(
                Q, K, V, K_DESC, V_DESC, GRAD_OUT, KEY_TABLE, MASK, LSE, DELTA, TAIL_ROWS,
                QUERY_REL, GRAD_REL, TAIL_MASS, GRAD_SCORES_REL, GRAD_Q, PARTIAL_KEY_TABLE,
                PARTIAL_VALUE_TABLE, TAIL_SUMS,
                stride_qb, stride_qh, stride_qm, stride_qd,
                stride_kb, stride_kh, stride_kn, stride_kd,
                stride_vb, stride_vh, stride_vn, stride_vd,
                stride_gb, stride_gh, stride_gm, stride_gd,
                stride_mb, stride_mh, stride_mm, stride_mn,
                stride_akh,
                heads, q_len, k_len, shift, max_left, max_right, num_buckets, qk_scale, scale,
                HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, R_PAD, BLOCK_M, BLOCK_N, BAND_BLOCK_N,
                HAS_KEY_TABLE, HAS_VALUE_TABLE, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, CHECK_COLS,
                SCALE_FIRST, DOT_PRECISION, USE_TMA, FROM_TAILS,
                block, group, step > 0, seed, dropout_p, keep_scale, DROPOUT,
            )


# -------------------------------------------------------------------- grad key/value


@triton.jit
def grad_key_value_tiles(
    grad_k, grad_v, key, value, q_base, g_base, q_desc, g_desc, batch, head,
    query_rel_base, grad_rel_base, lse_base, delta_base, tail_value_base, mask_base,
    stride_qm, stride_qd, stride_gm, stride_gd, stride_mm, stride_mn,
    cols, q_lo, q_hi, q_len, k_len, shift, max_left, max_right,
    num_buckets, qk_scale, seed, dropout_p, keep_scale,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, D_PAD: tl.constexpr,
    DV_PAD: tl.constexpr, R_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BAND: tl.constexpr,
    HAS_KEY_TABLE: tl.constexpr, HAS_VALUE_TABLE: tl.constexpr, IS_CAUSAL: tl.constexpr,
    MASK_KIND: tl.constexpr, MASK_ROWWISE: tl.constexpr, SCALE_FIRST: tl.constexpr,
    DOT_PRECISION: tl.constexpr, USE_TMA: tl.constexpr, DROPOUT: tl.constexpr,
):
    """``dSᵀ Q`` and ``Pᵀ dO`` over the query tiles ``[q_lo, q_hi)``, in transposed tiles.

    In the band ``lse_base`` / ``delta_base`` point at the rows' plain ``lse`` and ``δ``; in a
    tail, at that tail's planes of ``TAIL_ROWS``, which fold its key and value terms in. With
    ``DROPOUT`` a tail's ``delta_base`` is the plain ``δ`` and ``tail_value_base`` its value
    term's plane (see ``grad_prepare_kernel``); ``P`` becomes the dropped and rescaled weights.
    """
    for q_start in range(q_lo, q_hi, BLOCK_M):
        rows = q_start + tl.arange(0, BLOCK_M)
        row_ok = rows < q_len
        q = load_rows(
            q_base, q_desc, batch, head, q_start, stride_qm, stride_qd, q_len,
            HEAD_DIM, D_PAD, BLOCK_M, USE_TMA,
        )  # (BM, D_PAD)
        grad_out = load_rows(
            g_base, g_desc, batch, head, q_start, stride_gm, stride_gd, q_len,
            VALUE_DIM, DV_PAD, BLOCK_M, USE_TMA,
        )  # (BM, DV_PAD)
        lse = tl.load(lse_base + rows, mask=row_ok, other=float("inf"))
        delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
        scores_t = tl.dot(key, tl.trans(q), input_precision=DOT_PRECISION)  # (BN, BM)
        grad_probs_t = tl.dot(value, tl.trans(grad_out), input_precision=DOT_PRECISION)
        if BAND:
            rel_offsets_t = rows[None, :] * num_buckets + bucket_of(
                rows[None, :], cols[:, None], shift, max_left, max_right
            )  # (BN, BM)
            if HAS_KEY_TABLE:
                scores_t += tl.load(query_rel_base + rel_offsets_t, mask=row_ok[None, :], other=0.0)
            scores_t = scores_t * qk_scale
            if HAS_VALUE_TABLE:
                grad_probs_t += tl.load(
                    grad_rel_base + rel_offsets_t, mask=row_ok[None, :], other=0.0
                )
        elif SCALE_FIRST:  # (a tail: its key and value terms are already in lse and δ)
            scores_t = scores_t * qk_scale
        # No bounds: columns past k_len are this block's own (never stored), and rows past q_len
        # have lse = +inf.
        scores_t = masked_logits(
            scores_t, rows[None, :], cols[:, None], mask_base, stride_mm, stride_mn,
            q_len, k_len, False, IS_CAUSAL, MASK_KIND, MASK_ROWWISE,
        )
        if BAND or SCALE_FIRST:
            probs_t = tl.exp2(scores_t - lse[None, :])  # (BN, BM): Pᵀ
        else:
            probs_t = tl.exp2(scores_t * qk_scale - lse[None, :])
        weights_t = probs_t
        if DROPOUT:  # dV = (P ⊙ m)ᵀ dO, dP = m ⊙ dO (v + a^V)ᵀ
            keep_t = dropout_keep(seed, rows[None, :], cols[:, None], dropout_p)
            if not BAND:
                grad_probs_t += tl.load(tail_value_base + rows, mask=row_ok, other=0.0)[None, :]
            grad_probs_t = tl.where(keep_t, grad_probs_t * keep_scale, 0.0)
            weights_t = tl.where(keep_t, probs_t * keep_scale, 0.0)
        grad_v += tl.dot(weights_t.to(grad_out.dtype), grad_out, input_precision=DOT_PRECISION)
        grad_scores_t = probs_t * (grad_probs_t - delta[None, :])
        grad_k += tl.dot(grad_scores_t.to(q.dtype), q, input_precision=DOT_PRECISION)
    return grad_k, grad_v


@triton.jit(do_not_specialize=["seed"])
def grad_key_value_kernel(
    Q, K, V, GRAD_OUT, Q_DESC, G_DESC, MASK, LSE, DELTA, TAIL_ROWS, QUERY_REL, GRAD_REL,
    GRAD_K, GRAD_V,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_gb, stride_gh, stride_gm, stride_gd,
    stride_mb, stride_mh, stride_mm, stride_mn,
    heads, q_len, k_len, shift, max_left, max_right, num_buckets, qk_scale, scale,
    seed, dropout_p, keep_scale,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, D_PAD: tl.constexpr,
    DV_PAD: tl.constexpr, R_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BAND_BLOCK_M: tl.constexpr, HAS_KEY_TABLE: tl.constexpr, HAS_VALUE_TABLE: tl.constexpr,
    IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, MASK_ROWWISE: tl.constexpr,
    SCALE_FIRST: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_TMA: tl.constexpr,
    FROM_TAILS: tl.constexpr, DROPOUT: tl.constexpr,
):
    """``USE_TMA``: the tail tiles load queries and output gradients through ``Q_DESC`` /
    ``G_DESC``. ``FROM_TAILS``: ``grad_key_value_tails_kernel`` has written the tails' share to
    ``GRAD_K`` / ``GRAD_V``; add the band's. ``DROPOUT`` (not with ``FROM_TAILS``): the
    forward's dropout (``seed``, ``dropout_p``, ``keep_scale``)."""
    tl.static_assert(not (DROPOUT and FROM_TAILS), "dropout runs without a tails kernel")
    k_start = tl.program_id(0) * BLOCK_N
    batch_head = tl.program_id(1)
    batch_index = batch_head // heads
    head_index = batch_head % heads
    batch = batch_index.to(tl.int64)
    head = head_index.to(tl.int64)
    cols = k_start + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, D_PAD)
    value_dims = tl.arange(0, DV_PAD)
    col_ok = cols < k_len
    k_mask = col_ok[:, None] & (dims[None, :] < HEAD_DIM)
    v_mask = col_ok[:, None] & (value_dims[None, :] < VALUE_DIM)
    key = tl.load(
        K + batch * stride_kb + head * stride_kh
        + cols[:, None] * stride_kn + dims[None, :] * stride_kd, mask=k_mask, other=0.0,
    )  # (BN, D_PAD)
    value = tl.load(
        V + batch * stride_vb + head * stride_vh
        + cols[:, None] * stride_vn + value_dims[None, :] * stride_vd, mask=v_mask, other=0.0,
    )  # (BN, DV_PAD)
    q_base = Q + batch * stride_qb + head * stride_qh
    g_base = GRAD_OUT + batch * stride_gb + head * stride_gh
    mask_base = MASK + batch * stride_mb + head * stride_mh
    row_base = batch_head.to(tl.int64) * q_len
    query_rel_base = QUERY_REL + row_base * num_buckets
    grad_rel_base = GRAD_REL + row_base * num_buckets
    plane = tl.num_programs(1).to(tl.int64) * q_len  # one TAIL_ROWS plane: B·H·Lq rows
    grad_k_ptrs = (
        GRAD_K + batch * stride_kb + head * stride_kh
        + cols[:, None] * stride_kn + dims[None, :] * stride_kd
    )
    grad_v_ptrs = (
        GRAD_V + batch * stride_vb + head * stride_vh
        + cols[:, None] * stride_vn + value_dims[None, :] * stride_vd
    )
    if FROM_TAILS:  # dK was stored times the scale, which the store below applies again
        grad_k = tl.load(grad_k_ptrs, mask=k_mask, other=0.0).to(tl.float32) / scale
        grad_v = tl.load(grad_v_ptrs, mask=v_mask, other=0.0).to(tl.float32)
    else:
        grad_k = tl.zeros((BLOCK_N, D_PAD), tl.float32)
        grad_v = tl.zeros((BLOCK_N, DV_PAD), tl.float32)

    q_first = 0
    if IS_CAUSAL:
        q_first = (k_start // BLOCK_M) * BLOCK_M  # earlier query rows see none of these keys
    # Query tiles before band_lo see this key tile in their right tail (bucket R - 1); tiles
    # from band_hi on see it in their left tail (bucket 0).
    band_lo = (tl.maximum(k_start + 1 - shift - max_right, 0) // BLOCK_M) * BLOCK_M
    band_hi = tl.cdiv(tl.maximum(k_start + BLOCK_N - 1 - shift + max_left, 0), BLOCK_M) * BLOCK_M
    band_hi = tl.maximum(band_hi, band_lo)

    # The tails' lse and δ planes (with dropout: plain δ, plus each tail's value term).
    right_delta = TAIL_ROWS + 3 * plane + row_base
    left_delta = TAIL_ROWS + 2 * plane + row_base
    if DROPOUT:
        right_delta = DELTA + row_base
        left_delta = DELTA + row_base
    if not FROM_TAILS:
        grad_k, grad_v = grad_key_value_tiles(
            grad_k, grad_v, key, value, q_base, g_base, Q_DESC, G_DESC, batch_index,
            head_index, query_rel_base, grad_rel_base,
            TAIL_ROWS + plane + row_base, right_delta, TAIL_ROWS + 3 * plane + row_base,
            mask_base,
            stride_qm, stride_qd, stride_gm, stride_gd, stride_mm, stride_mn,
            cols, q_first, tl.minimum(band_lo, q_len), q_len, k_len,
            shift, max_left, max_right, num_buckets, qk_scale, seed, dropout_p, keep_scale,
            HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, R_PAD, BLOCK_M, False,
            HAS_KEY_TABLE, HAS_VALUE_TABLE, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, SCALE_FIRST,
            DOT_PRECISION, USE_TMA, DROPOUT,
        )
        grad_k, grad_v = grad_key_value_tiles(
            grad_k, grad_v, key, value, q_base, g_base, Q_DESC, G_DESC, batch_index,
            head_index, query_rel_base, grad_rel_base,
            TAIL_ROWS + row_base, left_delta, TAIL_ROWS + 2 * plane + row_base, mask_base,
            stride_qm, stride_qd, stride_gm, stride_gd, stride_mm, stride_mn,
            cols, tl.maximum(band_hi, q_first), q_len, q_len, k_len,
            shift, max_left, max_right, num_buckets, qk_scale, seed, dropout_p, keep_scale,
            HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, R_PAD, BLOCK_M, False,
            HAS_KEY_TABLE, HAS_VALUE_TABLE, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, SCALE_FIRST,
            DOT_PRECISION, USE_TMA, DROPOUT,
        )
    grad_k, grad_v = grad_key_value_tiles(
        grad_k, grad_v, key, value, q_base, g_base, Q_DESC, G_DESC, batch_index, head_index,
        query_rel_base, grad_rel_base,
        LSE + row_base, DELTA + row_base, DELTA + row_base, mask_base,
        stride_qm, stride_qd, stride_gm, stride_gd, stride_mm, stride_mn,
        cols, tl.maximum(band_lo, q_first), tl.minimum(band_hi, q_len), q_len, k_len,
        shift, max_left, max_right, num_buckets, qk_scale, seed, dropout_p, keep_scale,
        HEAD_DIM, VALUE_DIM, D_PAD, DV_PAD, R_PAD, BAND_BLOCK_M, True,
        HAS_KEY_TABLE, HAS_VALUE_TABLE, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, SCALE_FIRST,
        DOT_PRECISION, False, DROPOUT,
    )
    tl.store(grad_k_ptrs, (grad_k * scale).to(GRAD_K.dtype.element_ty), mask=k_mask)
    tl.store(grad_v_ptrs, grad_v.to(GRAD_V.dtype.element_ty), mask=v_mask)


@triton.jit
def grad_key_value_tails_kernel(
    Q_DESC, K_DESC, V_DESC, G_DESC, MASK, TAIL_ROWS, GRAD_K, GRAD_V,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_mb, stride_mh, stride_mm, stride_mn,
    heads, q_len, k_len, shift, max_left, max_right, qk_scale, scale,
    HEAD_DIM: tl.constexpr, VALUE_DIM: tl.constexpr, D_PAD: tl.constexpr,
    DV_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_CAUSAL: tl.constexpr, MASK_KIND: tl.constexpr, MASK_ROWWISE: tl.constexpr,
    SCALE_FIRST: tl.constexpr, DOT_PRECISION: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
):
    """The tails' share of ``dK`` and ``dV`` for one block of keys, in a kernel of its own so
    that Triton can warp-specialise its loop (see ``forward_tails_kernel``): the query tiles
    that see these keys in their right tail, then those that see them in their left tail, in
    one loop, each with its tail's folded ``lse`` / ``δ`` plane of ``TAIL_ROWS``. Stores
    ``scale dSᵀ Q`` and ``Pᵀ dO`` to ``GRAD_K`` / ``GRAD_V``, which ``grad_key_value_kernel``
    with ``FROM_TAILS`` completes with the band."""
    k_start = tl.program_id(0) * BLOCK_N
    batch_head = tl.program_id(1)
    batch_index = batch_head // heads
    head_index = batch_head % heads
    batch = batch_index.to(tl.int64)
    head = head_index.to(tl.int64)
    cols = k_start + tl.arange(0, BLOCK_N)
    key = K_DESC.load([batch_index, head_index, k_start, 0]).reshape(BLOCK_N, D_PAD)
    value = V_DESC.load([batch_index, head_index, k_start, 0]).reshape(BLOCK_N, DV_PAD)
    mask_base = MASK + batch * stride_mb + head * stride_mh
    row_base = batch_head.to(tl.int64) * q_len
    plane = tl.num_programs(1).to(tl.int64) * q_len
    q_first = 0
    if IS_CAUSAL:
        q_first = (k_start // BLOCK_M) * BLOCK_M
    band_lo = (tl.maximum(k_start + 1 - shift - max_right, 0) // BLOCK_M) * BLOCK_M
    band_hi = tl.cdiv(tl.maximum(k_start + BLOCK_N - 1 - shift + max_left, 0), BLOCK_M) * BLOCK_M
    band_hi = tl.maximum(band_hi, band_lo)
    right_end = tl.minimum(band_lo, q_len)  # these rows see the keys in their right tail
    left_start = tl.maximum(band_hi, q_first)  # and from here on in their left tail
    right_tiles = tl.cdiv(tl.maximum(right_end - q_first, 0), BLOCK_M)
    left_tiles = tl.cdiv(tl.maximum(q_len - left_start, 0), BLOCK_M)

    grad_k = tl.zeros((BLOCK_N, D_PAD), tl.float32)
    grad_v = tl.zeros((BLOCK_N, DV_PAD), tl.float32)
    for tile in tl.range(0, right_tiles + left_tiles, warp_specialize=WARP_SPECIALIZE):
        in_right = tile < right_tiles
        q_start = tl.where(
            in_right, q_first + tile * BLOCK_M, left_start + (tile - right_tiles) * BLOCK_M
        )
        rows = q_start + tl.arange(0, BLOCK_M)
        row_ok = rows < q_len
        q = Q_DESC.load([batch_index, head_index, q_start, 0]).reshape(BLOCK_M, D_PAD)
        grad_out = G_DESC.load([batch_index, head_index, q_start, 0]).reshape(BLOCK_M, DV_PAD)
        lse = tl.load(
            TAIL_ROWS + tl.where(in_right, plane, 0) + row_base + rows, mask=row_ok,
            other=float("inf"),
        )
        delta = tl.load(
            TAIL_ROWS + tl.where(in_right, 3 * plane, 2 * plane) + row_base + rows,
            mask=row_ok, other=0.0,
        )
        scores_t = tl.dot(key, tl.trans(q), input_precision=DOT_PRECISION)  # (BN, BM)
        grad_probs_t = tl.dot(value, tl.trans(grad_out), input_precision=DOT_PRECISION)
        # (No column bounds: columns past k_len are this block's own, never stored.)
        probs_t, grad_scores_t = tail_gradient_scores(
            scores_t, grad_probs_t, lse[None, :], delta[None, :], rows[None, :], cols[:, None],
            mask_base, stride_mm, stride_mn, q_len, k_len, qk_scale, 0.0, 0, 0.0, 1.0,
            False, IS_CAUSAL, MASK_KIND, MASK_ROWWISE, SCALE_FIRST, False,
        )
        grad_v += tl.dot(probs_t.to(grad_out.dtype), grad_out, input_precision=DOT_PRECISION)
        grad_k += tl.dot(grad_scores_t.to(q.dtype), q, input_precision=DOT_PRECISION)
    dims = tl.arange(0, D_PAD)
    value_dims = tl.arange(0, DV_PAD)
    col_ok = cols < k_len
    tl.store(
        GRAD_K + batch * stride_kb + head * stride_kh
        + cols[:, None] * stride_kn + dims[None, :] * stride_kd,
        (grad_k * scale).to(GRAD_K.dtype.element_ty),
        mask=col_ok[:, None] & (dims[None, :] < HEAD_DIM),
    )
    tl.store(
        GRAD_V + batch * stride_vb + head * stride_vh
        + cols[:, None] * stride_vn + value_dims[None, :] * stride_vd,
        grad_v.to(GRAD_V.dtype.element_ty),
        mask=col_ok[:, None] & (value_dims[None, :] < VALUE_DIM),
    )
