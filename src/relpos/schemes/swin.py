"""Swin Transformer's 2D relative position bias (Liu et al., ICCV 2021, "Swin Transformer:
Hierarchical Vision Transformer using Shifted Windows", Sec. 3.2, Eq. 4).

Attention runs inside windows of ``Wh × Ww`` patches, ``N = Wh·Ww`` tokens in row-major order:
``Attention(Q, K, V) = softmax(Q Kᵀ / sqrt(d) + B) V`` with ``B`` taken from a learned table
``B̂`` of ``(2Wh - 1)(2Ww - 1)`` rows × heads. For tokens at ``(y_i, x_i)`` and ``(y_j, x_j)``,
``dy = y_i - y_j ∈ [-(Wh - 1), Wh - 1]``, ``dx = x_i - x_j``, and the row is

    (dy + Wh - 1) · (2Ww - 1) + (dx + Ww - 1),

exactly timm's ``gen_relative_position_index``. It plays the part of Shaw's index ``r(i, j)`` in
two dimensions, feeding one scalar per head (the seed post points to it), with two differences:
the offsets are query minus key (``y_i - y_j``, ``x_i - x_j``) where Shaw's are key minus query
(``j - i``), so along one axis the rows come in the opposite order; and nothing is clipped, since
a window bounds every offset. Swin V2 replaces the table by a small MLP over log-spaced
``(dy, dx)`` (continuous position bias); that is not implemented.

Use it with :class:`relpos.MultiheadAttention` on windows already flattened to ``(B·nW, N, C)``::

    attn = MultiheadAttention(C, H, position=WindowRelativeBias((7, 7), H))
    out = attn(windows)                                    # (B·nW, 49, C)

A window has no "next token", so it is not a registered scheme for the sequence models, and
cached decoding is refused.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..attention.sdpa import reference_bias_attention, sdpa_attention
from .base import AttentionPosition

__all__ = ["swin_relative_position_index", "WindowRelativeBias"]


def _window(window_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(window_size, int):
        size = (window_size, window_size)
    elif isinstance(window_size, (tuple, list)):
        size = tuple(window_size)
    else:
        size = ()
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(
            f"window_size must be a positive int or a pair (Wh, Ww) of them, got {window_size!r}"
        )
    return size


def swin_relative_position_index(window_h: int, window_w: int) -> Tensor:
    """``LongTensor (N, N)``, ``N = Wh·Ww``: the table row each (query, key) pair of a window uses.

    Values lie in ``[0, (2Wh - 1)(2Ww - 1))``; the diagonal is the centre row
    ``(Wh - 1)(2Ww - 1) + Ww - 1`` ("myself"), and ``index[i, j] + index[j, i]`` is twice that.
    """
    window_h, window_w = _window((window_h, window_w))
    ys, xs = torch.meshgrid(torch.arange(window_h), torch.arange(window_w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()  # (N,) each: token n sits at (n // Ww, n % Ww)
    dy = ys[:, None] - ys[None, :]  # (N, N): y_i - y_j
    dx = xs[:, None] - xs[None, :]  # (N, N): x_i - x_j
    return (dy + window_h - 1) * (2 * window_w - 1) + (dx + window_w - 1)


class WindowRelativeBias(AttentionPosition):
    """Swin's learned 2D relative bias, for attention within one ``Wh × Ww`` window.

    Args:
        window_size: ``Wh`` (square) or ``(Wh, Ww)``.
        num_heads: ``H``.

    Parameters: ``bias_table ((2Wh-1)(2Ww-1), H)`` (timm's ``relative_position_bias_table``).
    Buffer: ``rel_index (N, N)``, non-persistent (it is derived, never learned).
    """

    def __init__(self, window_size: int | tuple[int, int], num_heads: int) -> None:
        super().__init__()
        self.window_h, self.window_w = _window(window_size)
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
        self.num_heads = num_heads
        rows = (2 * self.window_h - 1) * (2 * self.window_w - 1)
        self.bias_table = nn.Parameter(torch.empty(rows, num_heads))
        self.register_buffer(
            "rel_index",
            swin_relative_position_index(self.window_h, self.window_w),
            persistent=False,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.bias_table, std=0.02)  # Swin's initialisation

    @property
    def window_tokens(self) -> int:
        return self.window_h * self.window_w

    def extra_repr(self) -> str:
        return f"window_size=({self.window_h}, {self.window_w}), num_heads={self.num_heads}"

    def bias(self) -> Tensor:
        """The bias ``(H, N, N)``: ``bias_table[rel_index[i, j], h]``."""
        n = self.window_tokens
        gathered = self.bias_table[self.rel_index.view(-1)]  # (N·N, H)
        return gathered.view(n, n, self.num_heads).permute(2, 0, 1)  # (H, N, N)

    def attend(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        *,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        dropout_p: float = 0.0,
        query_offset: int = 0,
        key_offset: int = 0,
        backend: str = "auto",
    ) -> Tensor:
        """Attention over one window per batch row: ``query``, ``key``, ``value`` ``(B, H, N, ·)``.

        ``attn_mask`` (e.g. Swin's shifted-window mask, ``(B, 1, N, N)``) is added as usual.
        """
        q_len, k_len = query.shape[-2], key.shape[-2]
        n = self.window_tokens
        if q_len != n or k_len != n or query_offset or key_offset:
            raise ValueError(
                f"WindowRelativeBias is for a {self.window_h}x{self.window_w} window of N = {n} "
                f"tokens, got {q_len} queries and {k_len} keys (query_offset={query_offset}, "
                f"key_offset={key_offset}); split the input into windows of exactly {n} tokens "
                "(cached decoding does not apply to windows)"
            )
        if query.shape[1] != self.num_heads:
            raise ValueError(
                f"query has {query.shape[1]} heads, this bias table has {self.num_heads}"
            )
        if backend == "reference":
            if dropout_p > 0:
                raise ValueError(
                    f"backend='reference' has no attention dropout, got dropout_p={dropout_p}"
                )
            return reference_bias_attention(
                query, key, value, bias=self.bias(), attn_mask=attn_mask, is_causal=is_causal
            )
        return sdpa_attention(
            query,
            key,
            value,
            bias=self.bias(),
            attn_mask=attn_mask,
            is_causal=is_causal,
            dropout_p=dropout_p,
        )
