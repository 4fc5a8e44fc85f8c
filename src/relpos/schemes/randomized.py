"""Randomized positions (Ruoss et al. 2023, "Randomized Positional Encodings Boost Length
Generalization of Transformers", ACL; Sec. 3).

An absolute encoding fails past the training lengths because positions ``N, N+1, …`` were never
seen (the ``sinusoidal`` and ``learned`` schemes). Ruoss et al. keep the absolute encoding but
change which positions a sequence gets: pick a range ``[0, L)`` at least as long as any test
sequence, and give a sequence of ``n`` tokens ``n`` **distinct positions drawn uniformly from
``[0, L)`` and sorted**. Order survives, distances do not; every position of the range is trained,
so a longer test sequence only draws more of them. Their code draws at evaluation too (the model
never sees consecutive positions), and so does this module.

Differences from the paper's setting, stated: rows of a batch draw independently (the authors'
code draws once per batch, whose sequences share one length); a right-padded row draws for its
own length when the stack is given its ``padding`` (encoders), else for the padded width
(decoders, whose padding the causal mask hides).

A draw normally lasts one forward pass. A decoder fed token by token needs its tokens' positions
to be one draw's, as in training, where the token at step ``t`` sits at the ``t``-th smallest of
``W`` drawn positions (``W`` the width of the teacher-forced target): :meth:`RandomizedPositions.
fixed` draws once for ``W`` tokens and serves every call inside it (``offset`` reads on), and the
models' ``generate`` wraps its decoding in it with ``W`` = the decoding budget. (Drawing afresh
for each prefix instead would put step ``t``'s ``t + 1`` positions across all of ``[0, L)``, a
spread the decoder never met at that step in training.) The budget should therefore be the
output's length, as in evaluation (the reference target and its EOS); a larger one (``relpos
predict`` allows up to the model's ``max_len``) crowds the draw toward small positions, and one
above ``L`` draws all of ``[0, L)``: consecutive positions, never met in training.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .base import PositionScheme, register_scheme
from .learned import LearnedPositionEmbedding
from .sinusoidal import sinusoidal_encoding

__all__ = ["ENCODINGS", "RandomizedPositions", "RandomizedScheme", "random_ordered_positions"]

#: the absolute encodings a drawn position can index.
ENCODINGS = ("sinusoidal", "learned")


def _check_max_position(max_position: object) -> None:
    if isinstance(max_position, bool) or not isinstance(max_position, int) or max_position < 1:
        raise ValueError(f"max_position must be an int >= 1, got {max_position!r}")


def random_ordered_positions(
    lengths: Tensor, width: int, max_position: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """``(B, width)`` int64 positions: row ``b`` holds ``lengths[b]`` distinct values drawn
    uniformly from ``[0, max_position)``, increasing, then zeros (the row's padding).

    ``lengths (B,)`` int, each in ``[0, width]``; ``width <= max_position``.
    """
    _check_max_position(max_position)
    if not isinstance(lengths, Tensor) or lengths.dim() != 1 or lengths.is_floating_point():
        got = tuple(lengths.shape) if isinstance(lengths, Tensor) else type(lengths).__name__
        raise ValueError(f"lengths must be a 1-D int tensor (B,), got {got}")
    if width > max_position:
        raise ValueError(
            f"a sequence of {width} tokens needs {width} distinct positions, but max_position="
            f"{max_position} offers {max_position}; build the scheme with max_position >= the "
            "longest sequence it will see, with room to spare (Ruoss et al.'s code draws from "
            "2,048 positions for training lengths up to 40)"
        )
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > width):
        raise ValueError(f"lengths must lie in [0, {width}], got {lengths.tolist()}")
    return _draw(lengths, width, max_position, generator)


def _draw(
    lengths: Tensor, width: int, max_position: int, generator: torch.Generator | None
) -> Tensor:
    """:func:`random_ordered_positions` without its checks (which read ``lengths`` on the host:
    a device-to-host sync per forward pass on an accelerator)."""
    batch = lengths.shape[0]
    # A random permutation of [0, L) per row; its first n entries are a uniform n-subset.
    keys = torch.rand(batch, max_position, generator=generator, device=lengths.device)
    drawn = keys.argsort(dim=-1)[:, :width]  # (B, width)
    padding = torch.arange(width, device=lengths.device)[None, :] >= lengths[:, None]
    # Padding slots sort last (max_position is above every drawn value), then read 0.
    drawn = drawn.masked_fill(padding, max_position).sort(dim=-1).values
    return drawn.masked_fill(padding, 0)


class RandomizedPositions(nn.Module):
    """Adds ``E[p_r]`` to row ``r`` of ``x (B, L, d_model)``, ``p`` a fresh sorted draw per row.

    ``E`` is the sinusoidal encoding of ``[0, max_position)`` (a buffer) or a learned table of
    ``max_position`` rows.
    """

    def __init__(self, d_model: int, max_position: int, encoding: str = "sinusoidal") -> None:
        super().__init__()
        _check_max_position(max_position)
        if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"d_model must be a positive int, got {d_model!r}")
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; valid: {', '.join(ENCODINGS)}")
        self.d_model, self.max_position, self.encoding = d_model, max_position, encoding
        if encoding == "learned":
            self.learned = LearnedPositionEmbedding(max_position, d_model)
        else:
            table = sinusoidal_encoding(torch.arange(max_position), d_model)
            self.register_buffer("sinusoids", table, persistent=False)  # (max_position, d_model)
        self._fixed: Tensor | None = None  # (B, W) inside fixed(), else None

    @contextlib.contextmanager
    def fixed(self, batch: int, width: int, device: torch.device | str = "cpu") -> Iterator[Tensor]:
        """Draw ``(batch, width)`` positions once; inside the ``with`` block every call reads its
        tokens' positions from that draw (``offset`` on), so that a sequence fed in pieces, as in
        cached decoding, gets the positions one pass over all of it would."""
        if self._fixed is not None:
            raise RuntimeError("fixed() is already active on this module; they do not nest")
        # A decoding budget is an upper bound (``relpos predict``'s default is the model's
        # max_len): past max_position the draw is all of [0, L), and a sequence that really
        # grows past L tokens is refused when it gets there.
        width = min(width, self.max_position)
        lengths = torch.full((batch,), width, dtype=torch.long, device=device)
        self._fixed = random_ordered_positions(lengths, width, self.max_position)
        try:
            yield self._fixed
        finally:
            self._fixed = None

    @property
    def table(self) -> Tensor:
        """``(max_position, d_model)``: the vector of every position a draw can pick."""
        return self.learned.table if self.encoding == "learned" else self.sinusoids

    def forward(self, x: Tensor, offset: int = 0, padding: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, L, {self.d_model}), got {tuple(x.shape)}")
        batch, width, _ = x.shape
        if self._fixed is not None:
            return x + self.table[self._read_fixed(batch, width, offset)].to(x.dtype)
        if offset != 0 or isinstance(offset, bool):
            raise ValueError(
                f"offset must be 0 for randomized positions outside fixed(), got {offset!r}: a "
                "draw lasts one forward pass, so tokens fed after cached ones have no positions "
                "to continue. Decode inside `with module.fixed(batch, width):` (the models' "
                "generate does)"
            )
        if padding is None:
            lengths = torch.full((batch,), width, dtype=torch.long, device=x.device)
        else:
            if padding.shape != x.shape[:2] or padding.dtype != torch.bool:
                raise ValueError(
                    f"padding must be a bool tensor of shape {tuple(x.shape[:2])}, "
                    f"got {padding.dtype} {tuple(padding.shape)}"
                )
            lengths = (~padding).sum(dim=-1)  # right-padding: the real tokens come first
        if width > self.max_position:
            random_ordered_positions(lengths[:0], width, self.max_position)  # raises, saying why
        positions = _draw(lengths, width, self.max_position, None)  # (B, L)
        return x + self.table[positions].to(x.dtype)  # (B, L, d_model)

    def _read_fixed(self, batch: int, width: int, offset: int) -> Tensor:
        fixed = self._fixed
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be a non-negative int (a position), got {offset!r}")
        if batch != fixed.shape[0] or offset + width > fixed.shape[1]:
            raise ValueError(
                f"fixed() drew positions for {fixed.shape[0]} rows of {fixed.shape[1]} tokens; "
                f"this call asks for {batch} rows, tokens {offset}..{offset + width - 1}"
            )
        return fixed[:, offset : offset + width]  # (B, L)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, max_position={self.max_position}, encoding={self.encoding!r}"
        )


@register_scheme
@dataclasses.dataclass
class RandomizedScheme(PositionScheme):
    """``randomized``: an absolute encoding read at sorted random positions of ``[0, L)``."""

    name = "randomized"
    paper = "Ruoss et al. 2023, Randomized Positional Encodings Boost Length Generalization"
    absolute = True

    encoding: str = "sinusoidal"  # or "learned"; the paper randomizes both (and others)
    # L; None: the model's max_len. It must exceed the longest sequence; on the reverse task a
    # range just above that learned fastest (docs/experiments.md, section 1).
    max_position: int | None = None

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; valid: {', '.join(ENCODINGS)}")
        if self.max_position is not None:
            _check_max_position(self.max_position)

    def input_encoding(self, d_model: int, max_len: int) -> nn.Module:
        max_position = max_len if self.max_position is None else self.max_position
        return RandomizedPositions(d_model, max_position, self.encoding)
