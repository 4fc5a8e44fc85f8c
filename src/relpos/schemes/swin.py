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
a window bounds every offset.

Swin V2 (Liu et al., CVPR 2022, "Swin Transformer V2: Scaling Up Capacity and Resolution",
Sec. 3.3) replaces the table by a *continuous* position bias: a small MLP (``2 → 512 → H``, ReLU)
maps each offset to one value per head, ``B = 16 · sigmoid(MLP(Δ̂))``, where the offsets are
first normalised by the window size (or by the window used in pre-training) to ``[-8, 8]`` and
then log-spaced, ``Δ̂ = sign(Δ) · log2(1 + |Δ|) / log2(8)``. Because the MLP takes coordinates,
not rows, a model trained on small windows runs on larger ones: the new offsets are just further
along the same log scale (:class:`ContinuousWindowBias`, ``pretrained_window_size``). Swin V2
also changes the attention itself to a scaled cosine; that is not a position scheme, and the
bias here is added to the usual ``q·k / sqrt(d)``.

Use either with :class:`relpos.MultiheadAttention` on windows flattened to ``(B·nW, N, C)``
(:func:`window_partition`, and :func:`shifted_window_mask` for Swin's shifted windows)::

    attn = MultiheadAttention(C, H, position=WindowRelativeBias((7, 7), H))
    windows = window_partition(image, 7)                   # (B, Hp, Wp, C) -> (B·nW, 49, C)
    out = window_reverse(attn(windows), 7, Hp, Wp)         # (B, Hp, Wp, C)

A window has no "next token", so it is not a registered scheme for the sequence models, and
cached decoding is refused.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..attention.flex_bias import dense_bias_attention
from .base import AttentionPosition

__all__ = [
    "shifted_window_mask",
    "swin_relative_position_index",
    "swin_v2_log_offsets",
    "WindowRelativeBias",
    "ContinuousWindowBias",
    "window_partition",
    "window_reverse",
    "window_size_pair",
]


def window_size_pair(window_size: int | tuple[int, int]) -> tuple[int, int]:
    """``(Wh, Ww)`` from a window size given as one int (a square) or a pair; anything else, or a
    side below 1, is a ``ValueError`` naming ``window_size``."""
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


def _check_grid(height: int, width: int, window_h: int, window_w: int) -> None:
    if height % window_h or width % window_w:
        raise ValueError(
            f"a {height}x{width} grid does not split into {window_h}x{window_w} windows; pad it "
            "to a multiple of the window first"
        )


def window_partition(x: Tensor, window_size: int | tuple[int, int]) -> Tensor:
    """``x (B, Hp, Wp, C)`` → ``(B·nW, Wh·Ww, C)``: the windows, row-major over the grid of
    windows, each one's tokens row-major (the order :func:`swin_relative_position_index` uses);
    ``nW = (Hp / Wh)·(Wp / Ww)``."""
    window_h, window_w = window_size_pair(window_size)
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a (B, Hp, Wp, C) tensor, got {getattr(x, 'shape', x)!r}")
    batch, height, width, channels = x.shape
    _check_grid(height, width, window_h, window_w)
    grid = x.view(batch, height // window_h, window_h, width // window_w, window_w, channels)
    windows = grid.permute(0, 1, 3, 2, 4, 5)  # (B, Hp/Wh, Wp/Ww, Wh, Ww, C)
    return windows.reshape(-1, window_h * window_w, channels)


def window_reverse(
    windows: Tensor, window_size: int | tuple[int, int], height: int, width: int
) -> Tensor:
    """The inverse of :func:`window_partition`: ``(B·nW, Wh·Ww, C)`` → ``(B, Hp, Wp, C)``."""
    window_h, window_w = window_size_pair(window_size)
    _check_grid(height, width, window_h, window_w)
    per_image = (height // window_h) * (width // window_w)
    if (
        windows.dim() != 3
        or windows.shape[1] != window_h * window_w
        or (windows.shape[0] % per_image)
    ):
        raise ValueError(
            f"windows must be (B·nW, {window_h * window_w}, C) with nW = {per_image} for a "
            f"{height}x{width} grid, got {tuple(windows.shape)}"
        )
    channels = windows.shape[-1]
    grid = windows.view(-1, height // window_h, width // window_w, window_h, window_w, channels)
    return grid.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def shifted_window_mask(
    height: int,
    width: int,
    window_size: int | tuple[int, int],
    shift: int | tuple[int, int],
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Swin's mask for shifted windows (Sec. 3.2, "efficient batch computation"): ``(nW, N, N)``
    bool, True where a query may attend to a key.

    Swin rolls the ``Hp × Wp`` grid by ``(-sh, -sw)`` (``torch.roll``) before
    :func:`window_partition`, so the windows along the bottom and right edges hold patches from
    opposite sides of the image; a patch may attend only to those from its own side. For a batch
    of ``B`` images pass ``mask.repeat(B, 1, 1)[:, None]`` (``(B·nW, 1, N, N)``) as ``attn_mask``.
    """
    window_h, window_w = window_size_pair(window_size)
    _check_grid(height, width, window_h, window_w)
    shifts = tuple(shift) if isinstance(shift, (tuple, list)) else (shift, shift)
    if len(shifts) != 2 or any(
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < side
        for value, side in zip(shifts, (window_h, window_w), strict=False)
    ):
        raise ValueError(
            "shift must be an int or a pair (sh, sw) of ints in [0, window side), got "
            f"{shift!r} for window {window_size!r}"
        )
    shift_h, shift_w = shifts

    def bands(size: int, window: int, roll: int) -> tuple[slice, slice, slice]:
        # One axis of the rolled grid: the bulk, the last window's near part, and the part the
        # roll brought round from the other edge.
        return slice(0, size - window), slice(size - window, size - roll), slice(size - roll, size)

    labels = torch.zeros(1, height, width, 1, device=device)  # each patch's region
    for n, (ys, xs) in enumerate(
        (ys, xs)
        for ys in bands(height, window_h, shift_h)
        for xs in bands(width, window_w, shift_w)
    ):
        labels[:, ys, xs, :] = n
    regions = window_partition(labels, (window_h, window_w))[..., 0]  # (nW, N)
    return regions[:, :, None] == regions[:, None, :]  # (nW, N, N)


def swin_relative_position_index(window_h: int, window_w: int) -> Tensor:
    """``LongTensor (N, N)``, ``N = Wh·Ww``: the table row each (query, key) pair of a window uses.

    Values lie in ``[0, (2Wh - 1)(2Ww - 1))``; the diagonal is the centre row
    ``(Wh - 1)(2Ww - 1) + Ww - 1`` ("myself"), and ``index[i, j] + index[j, i]`` is twice that.
    """
    window_h, window_w = window_size_pair((window_h, window_w))
    ys, xs = torch.meshgrid(torch.arange(window_h), torch.arange(window_w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()  # (N,) each: token n sits at (n // Ww, n % Ww)
    dy = ys[:, None] - ys[None, :]  # (N, N): y_i - y_j
    dx = xs[:, None] - xs[None, :]  # (N, N): x_i - x_j
    return (dy + window_h - 1) * (2 * window_w - 1) + (dx + window_w - 1)


def swin_v2_log_offsets(
    window_h: int, window_w: int, *, pretrained_window_size: tuple[int, int] | None = None
) -> Tensor:
    """``(2Wh - 1, 2Ww - 1, 2)`` float32: Swin V2's log-spaced ``(dy, dx)`` for every offset.

    Entry ``[dy + Wh - 1, dx + Ww - 1]`` (the row order of
    :func:`swin_relative_position_index`) is ``sign(t) · log2(1 + |t|) / 3`` for
    ``t = 8 · (dy, dx) / (S - 1)``, with ``S`` the pre-training window's side if given, else this
    window's: offsets of the pre-training window span ``[-1, 1]``, larger ones go beyond.
    """
    window_h, window_w = window_size_pair((window_h, window_w))
    norm_h, norm_w = window_size_pair(pretrained_window_size or (window_h, window_w))
    if norm_h < 2 or norm_w < 2:
        raise ValueError(
            "the continuous bias divides offsets by the window side minus one, so each side "
            f"must be >= 2, got {norm_h}x{norm_w}"
            + ("" if pretrained_window_size else "; pass pretrained_window_size")
        )
    dy = torch.arange(-(window_h - 1), window_h, dtype=torch.float32) / (norm_h - 1)
    dx = torch.arange(-(window_w - 1), window_w, dtype=torch.float32) / (norm_w - 1)
    offsets = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1) * 8  # to [-8, 8]
    return torch.sign(offsets) * torch.log2(offsets.abs() + 1.0) / math.log2(8)


class _WindowBias(AttentionPosition):
    """A scalar bias per head and 2D offset inside one ``Wh × Ww`` window; subclasses say where
    the ``((2Wh-1)(2Ww-1), H)`` values come from (:meth:`table`)."""

    def __init__(self, window_size: int | tuple[int, int], num_heads: int) -> None:
        super().__init__()
        self.window_h, self.window_w = window_size_pair(window_size)
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
        self.num_heads = num_heads
        self.register_buffer(
            "rel_index",
            swin_relative_position_index(self.window_h, self.window_w),
            persistent=False,
        )

    @property
    def window_tokens(self) -> int:
        return self.window_h * self.window_w

    def table(self) -> Tensor:
        """``((2Wh-1)(2Ww-1), H)``: the bias of every offset, in index order."""
        raise NotImplementedError

    def bias(self) -> Tensor:
        """The bias ``(H, N, N)``: ``table()[rel_index[i, j], h]``."""
        n = self.window_tokens
        gathered = self.table()[self.rel_index.view(-1)]  # (N·N, H)
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
                f"{type(self).__name__} is for a {self.window_h}x{self.window_w} window of "
                f"N = {n} tokens, got {q_len} queries and {k_len} keys (query_offset="
                f"{query_offset}, key_offset={key_offset}); split the input into windows of "
                f"exactly {n} tokens (cached decoding does not apply to windows)"
            )
        if query.shape[1] != self.num_heads:
            raise ValueError(
                f"query has {query.shape[1]} heads, this window bias has {self.num_heads}"
            )
        return dense_bias_attention(
            query,
            key,
            value,
            self.bias().to(query.dtype),
            attn_mask=attn_mask,
            is_causal=is_causal,
            dropout_p=dropout_p,
            backend=backend,
        )


class WindowRelativeBias(_WindowBias):
    """Swin's learned 2D relative bias, for attention within one ``Wh × Ww`` window.

    Args:
        window_size: ``Wh`` (square) or ``(Wh, Ww)``.
        num_heads: ``H``.

    Parameters: ``bias_table ((2Wh-1)(2Ww-1), H)`` (timm's ``relative_position_bias_table``).
    Buffer: ``rel_index (N, N)``, non-persistent (it is derived, never learned).
    """

    def __init__(self, window_size: int | tuple[int, int], num_heads: int) -> None:
        super().__init__(window_size, num_heads)
        rows = (2 * self.window_h - 1) * (2 * self.window_w - 1)
        self.bias_table = nn.Parameter(torch.empty(rows, num_heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.bias_table, std=0.02)  # Swin's initialisation

    def table(self) -> Tensor:
        return self.bias_table

    def resized(
        self, window_size: int | tuple[int, int], *, mode: str = "bicubic"
    ) -> WindowRelativeBias:
        """A new bias for another window size, its table made from this one's (no gradient link).

        A table has a row for every offset of its own window only, so a model moved to larger
        windows needs rows it never trained. ``mode``:

        - ``"bicubic"``: the table seen as an image over ``(dy, dx)``, ``(2Wh-1) × (2Ww-1)`` per
          head, resized bicubically to the new window's (Swin's own recipe for fine-tuning at
          another window size). It *stretches* the table: at twice the window, offset ``2``
          reads about what offset ``1`` had learned.
        - ``"clip"``: offset ``(dy, dx)`` keeps exactly the value it learned; an offset beyond
          the old window takes that of the nearest one inside it, each axis clipped to
          ``[-(W - 1), W - 1]`` — Shaw's clipping in two dimensions. Shrinking crops the centre.
        """
        if mode not in ("bicubic", "clip"):
            raise ValueError(f"mode must be 'bicubic' or 'clip', got {mode!r}")
        new = WindowRelativeBias(window_size, self.num_heads).to(self.bias_table)
        old_grid = self.bias_table.detach().view(2 * self.window_h - 1, 2 * self.window_w - 1, -1)
        new_h, new_w = 2 * new.window_h - 1, 2 * new.window_w - 1
        if mode == "bicubic":
            # (1, H, 2Wh-1, 2Ww-1); bicubic interpolation wants float32 or wider on the CPU.
            image = old_grid.permute(2, 0, 1)[None].to(
                torch.promote_types(old_grid.dtype, torch.float32)
            )
            resized = nn.functional.interpolate(image, size=(new_h, new_w), mode="bicubic")
            table = resized[0].permute(1, 2, 0)  # (2Wh'-1, 2Ww'-1, H)
        else:
            device = old_grid.device
            dy = torch.arange(new_h, device=device) - (new.window_h - 1)
            dx = torch.arange(new_w, device=device) - (new.window_w - 1)
            rows = dy.clamp(-(self.window_h - 1), self.window_h - 1) + self.window_h - 1
            cols = dx.clamp(-(self.window_w - 1), self.window_w - 1) + self.window_w - 1
            table = old_grid[rows][:, cols]  # (2Wh'-1, 2Ww'-1, H)
        with torch.no_grad():
            new.bias_table.copy_(table.reshape(new_h * new_w, -1))
        return new

    def extra_repr(self) -> str:
        return f"window_size=({self.window_h}, {self.window_w}), num_heads={self.num_heads}"


class ContinuousWindowBias(_WindowBias):
    """Swin V2's continuous position bias: ``16 · sigmoid(MLP(log-spaced offset))`` per head.

    Args:
        window_size: ``Wh`` (square) or ``(Wh, Ww)``.
        num_heads: ``H``.
        hidden_dim: the MLP's hidden width (Swin V2: 512).
        pretrained_window_size: the window the MLP was trained on, if not this one; offsets are
            normalised by it, so that a checkpoint of an ``8×8`` model loads unchanged into
            ``ContinuousWindowBias((16, 16), H, pretrained_window_size=(8, 8))``.

    Parameters: ``mlp`` (``Linear(2, hidden) → ReLU → Linear(hidden, H, bias=False)``, timm's
    ``cpb_mlp``). Buffers (non-persistent): ``rel_index (N, N)``, ``log_offsets``.
    """

    def __init__(
        self,
        window_size: int | tuple[int, int],
        num_heads: int,
        *,
        hidden_dim: int = 512,
        pretrained_window_size: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__(window_size, num_heads)
        if isinstance(hidden_dim, bool) or not isinstance(hidden_dim, int) or hidden_dim < 1:
            raise ValueError(f"hidden_dim must be a positive int, got {hidden_dim!r}")
        pretrained = (
            None if pretrained_window_size is None else window_size_pair(pretrained_window_size)
        )
        self.pretrained_window_size = pretrained
        self.mlp = nn.Sequential(
            nn.Linear(2, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_heads, bias=False)
        )
        offsets = swin_v2_log_offsets(
            self.window_h, self.window_w, pretrained_window_size=pretrained
        )
        self.register_buffer("log_offsets", offsets.view(-1, 2), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Swin V2 (timm) initialises every Linear as trunc_normal(0.02) with zero bias.
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.trunc_normal_(layer.weight, std=0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)

    def table(self) -> Tensor:
        # sigmoid bounds every bias to (0, 16), however far the offsets extrapolate.
        return 16 * torch.sigmoid(self.mlp(self.log_offsets.to(self.mlp[0].weight.dtype)))

    def resized(self, window_size: int | tuple[int, int]) -> ContinuousWindowBias:
        """A new bias for another window size with a copy of this MLP: offsets stay normalised
        by the window the MLP was trained on (``pretrained_window_size``, or this window), so
        every offset keeps its value and new, larger ones read the MLP further out."""
        new = ContinuousWindowBias(
            window_size,
            self.num_heads,
            hidden_dim=self.mlp[0].out_features,
            pretrained_window_size=self.pretrained_window_size or (self.window_h, self.window_w),
        ).to(self.mlp[0].weight)
        new.load_state_dict(self.state_dict())
        return new

    def extra_repr(self) -> str:
        return (
            f"window_size=({self.window_h}, {self.window_w}), num_heads={self.num_heads}, "
            f"pretrained_window_size={self.pretrained_window_size}"
        )
