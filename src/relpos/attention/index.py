"""The clipped relative-position index of Shaw et al. (2018), Sec. 3.2.

Every query ``i`` sees every key ``j`` at the relative distance ``j - i``; the distance is clipped
to ``[-k, k]`` and shifted by ``k`` so that it selects one of the ``2k + 1`` rows of a learned
table (row ``k`` is "myself"). This is the one piece of position information the attention
backends receive: an index into tables, never a scheme.

Asymmetric clipping (fairseq2's Shaw attention) clips distances to the left at ``-max_left`` and
to the right at ``+max_right``; the table then has ``max_left + max_right + 1`` rows and the
entry is ``clip(j - i, -max_left, max_right) + max_left`` (row ``max_left`` is "myself").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["RelativeIndex", "relative_position_index", "resolve_clipping", "table_size"]


def _check_nonneg_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a non-negative int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def resolve_clipping(
    max_distance: int | None, max_left: int | None = None, max_right: int | None = None
) -> tuple[int, int]:
    """Return ``(max_left, max_right)``: the clipping distances to the left and to the right.

    ``max_left`` / ``max_right`` default to ``max_distance``; at least one source must be given.
    """
    if max_distance is not None:
        _check_nonneg_int(max_distance, "max_distance")
    left = max_distance if max_left is None else max_left
    right = max_distance if max_right is None else max_right
    if left is None or right is None:
        raise ValueError(
            "give max_distance, or both max_left and max_right "
            f"(got max_distance={max_distance}, max_left={max_left}, max_right={max_right})"
        )
    return _check_nonneg_int(left, "max_left"), _check_nonneg_int(right, "max_right")


def table_size(max_left: int, max_right: int) -> int:
    """Rows of a relative table: ``k`` to the left, ``k`` to the right, one for the token itself."""
    return max_left + max_right + 1


def relative_position_index(
    query_len: int,
    key_len: int,
    max_distance: int | None = None,
    *,
    query_offset: int = 0,
    key_offset: int = 0,
    max_left: int | None = None,
    max_right: int | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Index of the relative table row used by each (query, key) pair.

    Entry ``(r, c)`` is ``clip(j - i, -max_left, max_right) + max_left`` with
    ``i = query_offset + r`` and ``j = key_offset + c``. With the symmetric default
    (``max_left = max_right = max_distance = k``) this is Shaw et al.'s ``clip(j - i, k) + k``,
    a value in ``[0, 2k]``.

    Args:
        query_len: number of query positions ``Lq``.
        key_len: number of key positions ``Lk``.
        max_distance: the clipping distance ``k``.
        query_offset: absolute position of the first query (cached decoding: the cache length).
        key_offset: absolute position of the first key.
        max_left: clip distances to the left (``j < i``) at ``-max_left`` (default ``k``).
        max_right: clip distances to the right (``j > i``) at ``+max_right`` (default ``k``).

    Returns:
        ``LongTensor`` of shape ``(Lq, Lk)`` with values in ``[0, max_left + max_right]``.

    Example (the seed's "I think therefore I am", ``k = 4``): row 0 ("I"), column 2
    ("therefore") is ``2 + 4 = 6``; row 3 (the second "I") is ``-1 + 4 = 3``.
    """
    _check_nonneg_int(query_len, "query_len")
    _check_nonneg_int(key_len, "key_len")
    for value, name in ((query_offset, "query_offset"), (key_offset, "key_offset")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    left, right = resolve_clipping(max_distance, max_left, max_right)
    query_pos = torch.arange(query_len, device=device) + query_offset  # (Lq,)
    key_pos = torch.arange(key_len, device=device) + key_offset  # (Lk,)
    distance = key_pos[None, :] - query_pos[:, None]  # (Lq, Lk): j - i
    return distance.clamp(-left, right) + left


@dataclass(frozen=True)
class RelativeIndex:
    """The clipped index in compact form: what a backend needs to know about positions.

    ``dense()`` is the ``(Lq, Lk)`` matrix of :func:`relative_position_index`; fast backends use
    the fields directly (the index is constant along diagonals, and beyond the clipping distance
    it is constant along rows), so they never need to read an ``Lq x Lk`` index.
    """

    query_len: int
    key_len: int
    max_left: int
    max_right: int
    query_offset: int = 0
    key_offset: int = 0

    @property
    def num_buckets(self) -> int:
        return table_size(self.max_left, self.max_right)

    @property
    def diagonal_shift(self) -> int:
        """``j - i = c - r - diagonal_shift`` for row ``r``, column ``c``."""
        return self.query_offset - self.key_offset

    def dense(self, device: torch.device | str | None = None) -> Tensor:
        """``LongTensor (Lq, Lk)`` of table rows."""
        return relative_position_index(
            self.query_len,
            self.key_len,
            query_offset=self.query_offset,
            key_offset=self.key_offset,
            max_left=self.max_left,
            max_right=self.max_right,
            device=device,
        )
