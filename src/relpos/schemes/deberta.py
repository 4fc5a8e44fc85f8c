"""DeBERTa's disentangled attention (He, Liu, Gao & Chen, ICLR 2021, "DeBERTa: Decoding-enhanced
BERT with Disentangled Attention", Sec. 3.1, Eq. 4; log buckets from DeBERTa V2/V3).

Content and relative position keep separate vectors, and the logit adds three of their four
products (position-to-position carries no information once positions are relative)::

    e_ij = ( q_i·k_j  +  q_i·K^r_δ(i,j)  +  k_j·Q^r_δ(i,j) ) / sqrt(3d)
             content-to-content  content-to-position  position-to-content

    δ(i, j) = clamp(i - j + k, 0, 2k - 1)

``K^r`` and ``Q^r`` are ``2k`` relative vectors per head (DeBERTa projects one shared embedding
of ``2k`` rows through each layer's own ``W_{k,r}`` and ``W_{q,r}``; a learned table per layer is
that product without the sharing). The index reads the query-minus-key distance: keys in the past
use rows above ``k``. Distances ``i - j <= -k`` share row 0 and ``i - j >= k - 1`` share row
``2k - 1``, so the table is asymmetric, as in the original.

The paper writes ``Q^r_δ(j,i)`` for the position-to-content term. Its code and Hugging Face's
(``DisentangledSelfAttention.disentangled_attention_bias``) compute ``k @ Q^rᵀ``, gather it at
``clamp(-(a - b) + k)`` on a key-by-key grid ``(a, b)`` and then transpose, so query ``i`` and key
``j`` read row ``clamp(i - j + k)``: the *same* row as content-to-position. This file follows the
code, whose numbers published checkpoints were trained with.

``position_buckets = b > 0`` (DeBERTa V2/V3) first maps the distance ``n = i - j`` through
logarithmic buckets: with ``mid = b // 2``, ``|n| <= mid`` stays exact, larger ``|n|`` become
``sign(n) · (mid + ceil(log(|n| / mid) / log((k - 1) / mid) · (mid - 1)))``, and the table has
``2b`` rows (``k`` is then ``max_relative_positions``, only the log range). The logarithms are
taken in float32, as in Hugging Face's ``make_log_bucket_position``, so every bucket matches.

Not part of this file: DeBERTa's absolute positions, which enter only in its "enhanced mask
decoder" before the output layer (a model feature, not an attention scheme).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from ..attention.flex_bias import RelativeScores, distance_columns, relative_distances
from .base import PairBias, PositionScheme, check_bool, register_scheme

__all__ = [
    "deberta_log_bucket",
    "deberta_distance_rows",
    "deberta_relative_rows",
    "DisentangledPosition",
    "DebertaScheme",
]


def _check_options(max_distance: int, position_buckets: int, c2p: bool, p2c: bool) -> None:
    for value, name in ((max_distance, "max_distance"), (position_buckets, "position_buckets")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    check_bool(c2p, "c2p")
    check_bool(p2c, "p2c")
    if max_distance < 1:
        raise ValueError(f"max_distance must be >= 1, got {max_distance}")
    if position_buckets < 0 or position_buckets == 1:
        raise ValueError(
            f"position_buckets must be 0 (no log buckets) or >= 2, got {position_buckets}"
        )
    # The log formula divides by log((k - 1) / mid), which must be positive.
    if position_buckets and max_distance - 1 <= position_buckets // 2:
        raise ValueError(
            f"max_distance must be > position_buckets // 2 + 1 = {position_buckets // 2 + 1} "
            f"for log buckets, got {max_distance}"
        )


def deberta_log_bucket(relative_position: Tensor, bucket_size: int, max_position: int) -> Tensor:
    """DeBERTa V2's logarithmic bucket of each distance (``LongTensor`` of the same shape).

    ``|n| <= bucket_size // 2`` is returned as is; beyond, buckets widen logarithmically and reach
    ``±(2·(bucket_size // 2) - 1)`` at ``|n| = max_position - 1`` — ``±(bucket_size - 1)`` for
    the even sizes DeBERTa uses (larger ``|n|`` go on growing; the row index clamps them).
    Computed in float32 as Hugging Face does, so the ceilings agree. Needs
    ``bucket_size >= 2`` and ``max_position - 1 > bucket_size // 2`` (the log's base).
    """
    for value, name in ((bucket_size, "bucket_size"), (max_position, "max_position")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if bucket_size < 2 or max_position - 1 <= bucket_size // 2:
        raise ValueError(
            "log buckets need bucket_size >= 2 and max_position > bucket_size // 2 + 1, got "
            f"bucket_size={bucket_size}, max_position={max_position}"
        )
    mid = bucket_size // 2
    sign = torch.sign(relative_position)
    inside = (relative_position < mid) & (relative_position > -mid)
    # The inner distances are returned exactly; mid - 1 only keeps log() away from zero there.
    magnitude = torch.where(inside, mid - 1, relative_position.abs()).to(torch.float32)
    log_ratio = torch.log(magnitude / mid) / torch.log(torch.tensor((max_position - 1) / mid))
    log_bucket = torch.ceil(log_ratio * (mid - 1)) + mid  # float32
    bucket = torch.where(magnitude <= mid, relative_position.to(torch.float32), log_bucket * sign)
    return bucket.to(torch.long)


def deberta_distance_rows(
    query_len: int,
    key_len: int,
    *,
    max_distance: int,
    position_buckets: int = 0,
    query_offset: int = 0,
    key_offset: int = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """``LongTensor (Lq + Lk - 1,)``: the table row ``δ`` of every distance in the block, in
    :func:`~relpos.attention.relative_distances`'s order (smallest ``j - i`` first)."""
    key_minus_query = relative_distances(
        query_len, key_len, query_offset=query_offset, key_offset=key_offset, device=device
    )
    query_minus_key = -key_minus_query  # δ reads i - j
    span = max_distance
    if position_buckets:
        query_minus_key = deberta_log_bucket(query_minus_key, position_buckets, max_distance)
        span = position_buckets
    return (query_minus_key + span).clamp(0, 2 * span - 1)


def deberta_relative_rows(
    query_len: int,
    key_len: int,
    *,
    max_distance: int,
    position_buckets: int = 0,
    query_offset: int = 0,
    key_offset: int = 0,
    device: torch.device | str | None = None,
) -> Tensor:
    """``LongTensor (Lq, Lk)``: the table row ``δ(i, j)`` of every pair in the block."""
    rows = deberta_distance_rows(
        query_len,
        key_len,
        max_distance=max_distance,
        position_buckets=position_buckets,
        query_offset=query_offset,
        key_offset=key_offset,
        device=device,
    )
    return rows[distance_columns(query_len, key_len, device)]


class DisentangledPosition(PairBias):
    """The content-to-position and position-to-content terms of one attention layer.

    Args:
        num_heads, head_dim: ``H`` and ``D``.
        max_distance: ``k`` (DeBERTa's ``max_relative_positions``).
        position_buckets: ``0``, or the V2 log-bucket count (the table then has ``2b`` rows).
        c2p / p2c: keep the content-to-position / position-to-content term; the logits are
            scaled by ``1/sqrt(D · (1 + c2p + p2c))``, as in DeBERTa.

    Parameters: ``key_table`` (``K^r``) and ``query_table`` (``Q^r``), each ``(H, R, D)``.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        max_distance: int,
        *,
        position_buckets: int = 0,
        c2p: bool = True,
        p2c: bool = True,
    ) -> None:
        super().__init__()
        _check_options(max_distance, position_buckets, c2p, p2c)
        self.num_heads, self.head_dim = num_heads, head_dim
        self.max_distance, self.position_buckets = max_distance, position_buckets
        rows = 2 * (position_buckets or max_distance)
        shape = (num_heads, rows, head_dim)
        self.key_table = nn.Parameter(torch.empty(shape)) if c2p else None
        self.query_table = nn.Parameter(torch.empty(shape)) if p2c else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier-uniform per head, as Shaw's tables here, so compared schemes start alike.
        for table in (self.key_table, self.query_table):
            if table is not None:
                for head_table in table:
                    nn.init.xavier_uniform_(head_table)

    def logit_scale(self, head_dim: int) -> float:
        terms = 1 + (self.key_table is not None) + (self.query_table is not None)
        return 1.0 / math.sqrt(head_dim * terms)

    def relative_scores(
        self, query: Tensor, key: Tensor, *, query_offset: int = 0, key_offset: int = 0
    ) -> RelativeScores:
        """``q_i·K^r`` and ``k_j·Q^r`` against every row (scaled), and each distance's row ``δ``:
        ``O(B·H·L·R)`` numbers from which the ``(Lq, Lk)`` bias is gathered."""
        rows = deberta_distance_rows(
            query.shape[-2],
            key.shape[-2],
            max_distance=self.max_distance,
            position_buckets=self.position_buckets,
            query_offset=query_offset,
            key_offset=key_offset,
            device=query.device,
        )  # (Lq + Lk - 1,)
        scale = self.logit_scale(query.shape[-1])
        to_positions = from_positions = None
        if self.key_table is not None:  # content-to-position, q_i·K^r_δ
            to_positions = query @ self.key_table.to(query.dtype).transpose(-1, -2) * scale
        if self.query_table is not None:  # position-to-content, k_j·Q^r_δ
            from_positions = key @ self.query_table.to(key.dtype).transpose(-1, -2) * scale
        return RelativeScores(rows, query_scores=to_positions, key_scores=from_positions)

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, "
            f"max_distance={self.max_distance}, position_buckets={self.position_buckets}, "
            f"c2p={self.key_table is not None}, p2c={self.query_table is not None}"
        )


@register_scheme
@dataclasses.dataclass
class DebertaScheme(PositionScheme):
    """``deberta``: disentangled content-to-position and position-to-content terms."""

    name = "deberta"
    paper = "He et al. 2021, DeBERTa: Decoding-enhanced BERT with Disentangled Attention"

    # DeBERTa uses k = 512 (its max length); 16 matches Shaw's default clipping here, so the two
    # schemes see the same distances exactly.
    max_distance: int = 16
    position_buckets: int = 0  # 0: V1's clamp; > 0: V2/V3's log buckets (256 in V3)
    c2p: bool = True
    p2c: bool = True

    def __post_init__(self) -> None:
        _check_options(self.max_distance, self.position_buckets, self.c2p, self.p2c)

    def attention_position(self, num_heads: int, head_dim: int, *, causal: bool):
        return DisentangledPosition(
            num_heads,
            head_dim,
            self.max_distance,
            position_buckets=self.position_buckets,
            c2p=self.c2p,
            p2c=self.p2c,
        )
