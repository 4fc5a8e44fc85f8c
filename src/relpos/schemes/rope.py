"""Rotary position embedding, RoPE (Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary
Position Embedding", arXiv:2104.09864, Eq. 34).

Queries and keys are rotated by their absolute positions; because rotations compose,
``⟨R_p q, R_s k⟩ = ⟨q, R_{s-p} k⟩`` and the logit depends on the positions only through ``s - p``.
The ``d`` channels form ``d/2`` pairs; pair ``t`` turns by the angle ``p·θ_t`` with
``θ_t = base^(-2t/d)``, ``base = 10000``. Two pairings are in use, and checkpoints are not
interchangeable between them:

* ``interleaved``: channels ``(2t, 2t+1)`` — the paper, GPT-J;
* ``half``: channels ``(t, t + d/2)`` — GPT-NeoX, and LLaMA as Hugging Face stores it.

Scaling to contexts longer than training, with factor ``s``:

* ``linear`` position interpolation (Chen et al. 2023): positions ``p / s``;
* ``ntk`` (NTK-aware, bloc97 2023): ``base · s^(d/(d-2))``, which stretches the slowest pair by
  exactly ``s`` while leaving the fastest almost untouched;
* ``yarn`` (Peng, Quesnelle, Fan & Shippole 2023, "YaRN: Efficient Context Window Extension of
  Large Language Models", Sec. 3): per pair, by how many turns it makes over the training context
  ``L`` (``original_max_len``). Pair ``t`` turns ``L·θ_t / 2π`` times; pairs that turn more than
  ``β = 32`` times keep ``θ_t`` (they already saw every angle), pairs that turn less than
  ``α = 1`` time are interpolated to ``θ_t / s``, and in between a linear ramp over ``t``
  blends the two. The ramp runs between ``t_fast = floor(d·ln(L / 2πβ) / (2 ln base))`` and
  ``t_slow = ceil(d·ln(L / 2πα) / (2 ln base))``, clamped to ``[0, d - 1]``, and cos and sin are
  multiplied by ``0.1·ln(s) + 1`` (1 for ``s <= 1``; so logits by its square) to keep attention
  as sharp as in training. These are Hugging Face's defaults (``_compute_yarn_parameters``:
  ``beta_fast=32``, ``beta_slow=1``, ``truncate=True``, no ``mscale``).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from ..attention.flex_bias import dense_bias_attention
from .base import (
    AttentionPosition,
    PositionScheme,
    causal_mask,
    check_base,
    check_finite_above,
    register_scheme,
)

__all__ = [
    "LAYOUTS",
    "SCALINGS",
    "rope_frequencies",
    "yarn_ramp",
    "yarn_attention_factor",
    "rope_angles",
    "apply_rope",
    "RotaryPosition",
    "RoPEScheme",
]

LAYOUTS = ("interleaved", "half")
SCALINGS = ("linear", "ntk", "yarn")
#: YaRN's ramp ends, in turns over the training context (the paper's α and β for LLaMA).
YARN_BETA_FAST, YARN_BETA_SLOW = 32.0, 1.0


def _check_options(
    base: float,
    layout: str,
    scaling: str | None,
    scaling_factor: float,
    original_max_len: int | None = None,
) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown RoPE layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    check_base(base)
    if scaling is not None and scaling not in SCALINGS:
        raise ValueError(
            f"unknown RoPE scaling {scaling!r}; valid: None, {', '.join(map(repr, SCALINGS))}"
        )
    # inf would put every position at angle 0 (linear) or stop all but the fastest pair (ntk).
    check_finite_above(scaling_factor, "scaling_factor", 0)
    if scaling is None and scaling_factor != 1:
        raise ValueError(
            f"scaling_factor={scaling_factor} has no effect without scaling; pass "
            "scaling='linear', 'ntk' or 'yarn'"
        )
    if scaling == "yarn":
        if (
            isinstance(original_max_len, bool)
            or not isinstance(original_max_len, int)
            or original_max_len < 1
        ):
            raise ValueError(
                "scaling='yarn' needs original_max_len, the context length the model was trained "
                f"on (a positive int), got {original_max_len!r}"
            )
    elif original_max_len is not None:
        raise ValueError(
            f"original_max_len={original_max_len} is only used by scaling='yarn', got "
            f"scaling={scaling!r}"
        )


def _check_head_dim(head_dim: int, scaling: str | None) -> None:
    if isinstance(head_dim, bool) or not isinstance(head_dim, int):
        raise TypeError(f"head_dim must be an int, got {type(head_dim).__name__} {head_dim!r}")
    if head_dim < 2 or head_dim % 2:
        raise ValueError(
            f"RoPE rotates channels in pairs, so head_dim must be even and >= 2, got {head_dim}; "
            "choose embed_dim / num_heads even"
        )
    if scaling == "ntk" and head_dim == 2:
        raise ValueError("NTK-aware scaling needs head_dim > 2 (its exponent is d / (d - 2))")


def yarn_ramp(head_dim: int, *, base: float, original_max_len: int) -> Tensor:
    """YaRN's interpolation weight per pair, float64 ``(d/2,)``: 0 for the fast pairs, which
    keep their frequency, 1 for the slow ones, which are divided by ``s``, linear in between."""

    def pair_turning(turns: float) -> float:
        # The (fractional) pair index t at which L·θ_t / 2π = turns.
        return head_dim * math.log(original_max_len / (turns * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(pair_turning(YARN_BETA_FAST)), 0)
    high = min(math.ceil(pair_turning(YARN_BETA_SLOW)), head_dim - 1)
    if low == high:
        high += 0.001  # as Hugging Face: avoid 0/0, the ramp becomes a step
    pairs = torch.arange(head_dim // 2, dtype=torch.float64)
    return ((pairs - low) / (high - low)).clamp(0, 1)


def yarn_attention_factor(scaling_factor: float) -> float:
    """``0.1·ln(s) + 1`` (1 for ``s <= 1``): YaRN's factor on cos and sin."""
    return 0.1 * math.log(scaling_factor) + 1.0 if scaling_factor > 1 else 1.0


def rope_frequencies(
    head_dim: int,
    *,
    base: float = 10000.0,
    scaling: str | None = None,
    scaling_factor: float = 1.0,
    original_max_len: int | None = None,
) -> Tensor:
    """``θ_t = base^(-2t/d)`` for ``t = 0 … d/2 - 1``: float64 ``(d/2,)``.

    ``scaling="ntk"`` raises the base to ``base · s^(d/(d-2))``; ``"yarn"`` blends ``θ_t`` and
    ``θ_t / s`` per pair (:func:`yarn_ramp`); linear scaling acts on the positions instead
    (:func:`rope_angles`).
    """
    _check_options(base, "interleaved", scaling, scaling_factor, original_max_len)
    _check_head_dim(head_dim, scaling)
    if scaling == "ntk":
        base = base * scaling_factor ** (head_dim / (head_dim - 2))
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim  # (d/2,): 2t/d
    inv_freq = base**-exponents
    if scaling == "yarn":
        interpolated = yarn_ramp(head_dim, base=base, original_max_len=original_max_len)
        inv_freq = inv_freq * (1 - interpolated) + inv_freq / scaling_factor * interpolated
    return inv_freq


def rope_angles(
    positions: Tensor,
    head_dim: int,
    *,
    base: float = 10000.0,
    scaling: str | None = None,
    scaling_factor: float = 1.0,
    original_max_len: int | None = None,
) -> Tensor:
    """``positions (L,)`` → float64 angles ``(L, d/2)``: ``p·θ_t`` (``p / s`` if linear scaling)."""
    if not isinstance(positions, Tensor) or positions.dim() != 1:
        raise ValueError(
            f"positions must be a 1-D tensor of absolute positions, got {positions!r:.80}"
        )
    inv_freq = rope_frequencies(
        head_dim,
        base=base,
        scaling=scaling,
        scaling_factor=scaling_factor,
        original_max_len=original_max_len,
    ).to(positions.device)
    # float64: at position 10^5 a float32 angle is off by ~10^-2 radians.
    positions = positions.to(torch.float64)
    if scaling == "linear":
        positions = positions / scaling_factor
    return positions[:, None] * inv_freq[None, :]  # (L, d/2)


def apply_rope(
    x: Tensor,
    *,
    offset: int = 0,
    positions: Tensor | None = None,
    base: float = 10000.0,
    layout: str = "interleaved",
    scaling: str | None = None,
    scaling_factor: float = 1.0,
    original_max_len: int | None = None,
) -> Tensor:
    """Rotate ``x (…, L, D)`` by the positions of its rows.

    Args:
        x: queries or keys, ``(…, L, D)`` with ``D`` even.
        offset: position of row 0 (cached decoding: the cache length); rows are at
            ``offset + r``. Ignored when ``positions`` is given.
        positions: explicit ``(L,)`` positions instead of ``offset + arange(L)``.
        base, layout, scaling, scaling_factor, original_max_len: see the module docstring
            (``original_max_len``, the training context, only for ``scaling="yarn"``).

    Returns:
        Tensor like ``x``: pair ``t`` of row ``r`` turned by ``positions[r] · θ_t`` (and, for
        YaRN, multiplied by :func:`yarn_attention_factor`).
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError(
            "x must be a floating-point tensor of shape (..., L, D), got "
            f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}"
        )
    head_dim, length = x.shape[-1], x.shape[-2]
    _check_options(base, layout, scaling, scaling_factor, original_max_len)
    _check_head_dim(head_dim, scaling)
    if positions is None:
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise TypeError(f"offset must be an int, got {type(offset).__name__} {offset!r}")
        positions = torch.arange(length, device=x.device) + offset
    elif not isinstance(positions, Tensor) or positions.shape != (length,):
        raise ValueError(
            f"positions must have shape (L,) = ({length},) to match x {tuple(x.shape)}, "
            f"got {tuple(getattr(positions, 'shape', ())) or type(positions).__name__}"
        )
    angles = rope_angles(
        positions,
        head_dim,
        base=base,
        scaling=scaling,
        scaling_factor=scaling_factor,
        original_max_len=original_max_len,
    )
    cos, sin = angles.cos(), angles.sin()  # (L, d/2) each
    if scaling == "yarn":
        factor = yarn_attention_factor(scaling_factor)
        cos, sin = cos * factor, sin * factor
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    if layout == "interleaved":
        first, second = x[..., 0::2], x[..., 1::2]  # (…, L, d/2): pair t = channels 2t, 2t+1
    else:
        first, second = x.chunk(2, dim=-1)  # (…, L, d/2): pair t = channels t, t + d/2
    rotated_first = first * cos - second * sin
    rotated_second = first * sin + second * cos
    if layout == "interleaved":
        return torch.stack((rotated_first, rotated_second), dim=-1).flatten(-2)  # (…, L, D)
    return torch.cat((rotated_first, rotated_second), dim=-1)  # (…, L, D)


class RotaryPosition(AttentionPosition):
    """Rotates queries and keys in every self-attention layer; attention itself is plain.

    Args: ``head_dim`` (even), ``base``, ``layout``, ``scaling``, ``scaling_factor``,
    ``original_max_len`` as in :func:`apply_rope`. No parameters.
    """

    def __init__(
        self,
        head_dim: int,
        *,
        base: float = 10000.0,
        layout: str = "interleaved",
        scaling: str | None = None,
        scaling_factor: float = 1.0,
        original_max_len: int | None = None,
    ) -> None:
        super().__init__()
        _check_options(base, layout, scaling, scaling_factor, original_max_len)
        _check_head_dim(head_dim, scaling)
        self.head_dim, self.base, self.layout = head_dim, base, layout
        self.scaling, self.scaling_factor = scaling, scaling_factor
        self.original_max_len = original_max_len

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, base={self.base}, layout={self.layout!r}, "
            f"scaling={self.scaling!r}, scaling_factor={self.scaling_factor}, "
            f"original_max_len={self.original_max_len}"
        )

    def _rotate(self, x: Tensor, offset: int) -> Tensor:
        if x.shape[-1] != self.head_dim:
            raise ValueError(
                f"RoPE was built for head_dim={self.head_dim}, got inputs {tuple(x.shape)}"
            )
        return apply_rope(
            x,
            offset=offset,
            base=self.base,
            layout=self.layout,
            scaling=self.scaling,
            scaling_factor=self.scaling_factor,
            original_max_len=self.original_max_len,
        )

    def rotate(
        self, query: Tensor, key: Tensor, *, query_offset: int = 0, key_offset: int = 0
    ) -> tuple[Tensor, Tensor]:
        return self._rotate(query, query_offset), self._rotate(key, key_offset)

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
        # Positions are already in the rotated q and k: attention itself has no bias.
        attn_mask, is_causal = causal_mask(
            query, key, attn_mask, is_causal, query_offset, key_offset
        )
        return dense_bias_attention(
            query,
            key,
            value,
            None,
            attn_mask=attn_mask,
            is_causal=is_causal,
            dropout_p=dropout_p,
            backend=backend,
        )


@register_scheme
@dataclasses.dataclass
class RoPEScheme(PositionScheme):
    """``rope``: rotary position embedding of queries and keys in every layer."""

    name = "rope"
    paper = "Su et al. 2021, RoFormer: Enhanced Transformer with Rotary Position Embedding"

    base: float = 10000.0
    layout: str = "interleaved"  # the paper's pairing; "half" is GPT-NeoX / HF LLaMA
    scaling: str | None = None  # "linear" (position interpolation), "ntk" or "yarn"
    scaling_factor: float = 1.0
    original_max_len: int | None = None  # YaRN only: the context length trained on

    def __post_init__(self) -> None:
        # The head size is only known in attention_position, which checks it.
        _check_options(
            self.base, self.layout, self.scaling, self.scaling_factor, self.original_max_len
        )

    def attention_position(self, num_heads: int, head_dim: int, *, causal: bool):
        return RotaryPosition(
            head_dim,
            base=self.base,
            layout=self.layout,
            scaling=self.scaling,
            scaling_factor=self.scaling_factor,
            original_max_len=self.original_max_len,
        )
