"""T5 relative position buckets and bias (Raffel et al., JMLR 2020, "Exploring the Limits of
Transfer Learning with a Unified Text-to-Text Transformer", Sec. 2.1).

Each head adds one learned scalar per *bucket* of the relative distance ``n = j - i`` to its
logits: ``e_ij = q_i·k_j / sqrt(d) + w[bucket(j - i), h]``. With ``N`` buckets:

* bidirectional (encoder): keys after the query (``n > 0``) use buckets ``[N/2, N)``, the others
  ``[0, N/2)``; then ``n := |n|`` and ``N := N/2``. ``N/2`` rounds down, as in Hugging Face, so
  an odd ``N`` leaves rows unused: ``N = 5`` uses buckets 0, 1 and 3 only (rows 2 and 4 never
  train), ``N = 7`` five of its seven. Even ``N`` leaves only row ``N/2`` unused (``n > 0`` with
  ``|n| = 0`` cannot happen). Choose an even ``num_buckets``;
* causal (decoder): ``n := max(-n, 0)`` with all ``N`` buckets (later keys are masked anyway);
* ``max_exact = N/2``: ``n < max_exact`` is its own bucket; larger ``n`` get logarithmically wider
  buckets, ``max_exact + floor(log(n / max_exact) / log(max_distance / max_exact) ·
  (N - max_exact))``, capped at ``N - 1`` — every distance beyond ``max_distance`` shares the
  last bucket, which is what lets T5 run on any length.

:func:`t5_relative_bucket` computes the logarithm in float32 and truncates toward zero, exactly as
Hugging Face's ``T5Attention._relative_position_bucket``, so it gives the same bucket for every
integer. T5 computes the bias once and shares it with every layer (``shared_across_layers``).

One deliberate difference: T5 does not scale ``q·k`` by ``1/sqrt(d)`` (it folds that into its
initialisation); here logits are scaled as for every other scheme, so that schemes compared in
this library differ only in their position terms.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from ..attention.flex_bias import relative_distances
from .base import DistanceBias, PositionScheme, register_scheme

__all__ = ["t5_relative_bucket", "T5RelativeBias", "T5Scheme"]


def _check_bucket_options(bidirectional: bool, num_buckets: int, max_distance: int) -> None:
    if not isinstance(bidirectional, bool):
        raise TypeError(f"bidirectional must be a bool, got {bidirectional!r}")
    for value, name in ((num_buckets, "num_buckets"), (max_distance, "max_distance")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    # The logarithmic formula divides by max_exact and by log(max_distance / max_exact).
    smallest = 4 if bidirectional else 2
    if num_buckets < smallest:
        raise ValueError(
            f"num_buckets must be >= {smallest} for bidirectional={bidirectional} (so that at "
            f"least one distance is exact), got {num_buckets}"
        )
    max_exact = (num_buckets // 2 if bidirectional else num_buckets) // 2
    if max_distance <= max_exact:
        raise ValueError(
            f"max_distance must be > the {max_exact} exact distances "
            f"(num_buckets={num_buckets}, bidirectional={bidirectional}), got {max_distance}"
        )


def t5_relative_bucket(
    relative_position: Tensor,
    *,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> Tensor:
    """T5's bucket for each relative position ``j - i`` (key minus query).

    Args:
        relative_position: integer tensor of any shape.
        bidirectional: half the buckets for each sign (encoder); ``False`` for causal attention,
            where every ``j > i`` falls in bucket 0.
        num_buckets: ``N``.
        max_distance: distances from here on share the last bucket of their sign.

    Returns:
        ``LongTensor`` of the same shape, values in ``[0, N)``.
    """
    if not isinstance(relative_position, Tensor):
        raise TypeError(
            f"relative_position must be a torch.Tensor, got {type(relative_position).__name__}"
        )
    if (
        relative_position.is_floating_point()
        or relative_position.is_complex()
        or (relative_position.dtype == torch.bool)
    ):
        raise TypeError(
            f"relative_position must be an integer tensor (j - i), got {relative_position.dtype}"
        )
    _check_bucket_options(bidirectional, num_buckets, max_distance)
    n = relative_position.long()
    buckets = torch.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (n > 0).long() * num_buckets  # keys after the query: upper half
        n = n.abs()
    else:
        n = (-n).clamp(min=0)
    max_exact = num_buckets // 2
    is_exact = n < max_exact
    # float32 and truncation, as T5 does them; clamping keeps log() away from 0 for the exact
    # distances, whose result torch.where discards anyway.
    n_far = n.clamp(min=max_exact).float()
    log_ratio = torch.log(n_far / max_exact) / math.log(max_distance / max_exact)
    far_bucket = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    far_bucket = far_bucket.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_exact, n, far_bucket)


class T5RelativeBias(DistanceBias):
    """One learned scalar per (bucket, head), added to the logits.

    Args:
        num_heads: ``H``.
        bidirectional, num_buckets, max_distance: as :func:`t5_relative_bucket`.
        init_std: standard deviation of the normal initialisation of ``bucket_weights``.

    Parameters: ``bucket_weights (num_buckets, H)`` (the layout of T5's embedding table).
    """

    def __init__(
        self,
        num_heads: int,
        *,
        bidirectional: bool = True,
        num_buckets: int = 32,
        max_distance: int = 128,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
        _check_bucket_options(bidirectional, num_buckets, max_distance)
        self.num_heads, self.bidirectional = num_heads, bidirectional
        self.num_buckets, self.max_distance, self.init_std = num_buckets, max_distance, init_std
        self.bucket_weights = nn.Parameter(torch.empty(num_buckets, num_heads))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.bucket_weights, std=self.init_std)

    def extra_repr(self) -> str:
        return (
            f"num_heads={self.num_heads}, bidirectional={self.bidirectional}, "
            f"num_buckets={self.num_buckets}, max_distance={self.max_distance}"
        )

    def distance_bias(
        self, query_len: int, key_len: int, *, query_offset: int = 0, key_offset: int = 0
    ) -> Tensor:
        """``(H, Lq + Lk - 1)``: the bias of every distance in the block (see ``flex_bias``)."""
        distances = relative_distances(
            query_len,
            key_len,
            query_offset=query_offset,
            key_offset=key_offset,
            device=self.bucket_weights.device,
        )
        buckets = t5_relative_bucket(
            distances,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        return self.bucket_weights[buckets].T  # (H, Lq + Lk - 1)


@register_scheme
@dataclasses.dataclass
class T5Scheme(PositionScheme):
    """``t5``: a learned scalar bias per log-spaced distance bucket, shared by all layers."""

    name = "t5"
    paper = (
        "Raffel et al. 2020, Exploring the Limits of Transfer Learning with a Unified "
        "Text-to-Text Transformer"
    )
    shared_across_layers = True

    num_buckets: int = 32  # T5's default
    max_distance: int = 128  # T5's default
    bidirectional: bool | None = None  # None: bidirectional unless the attention is causal

    def __post_init__(self) -> None:
        if self.bidirectional is not None:
            _check_bucket_options(self.bidirectional, self.num_buckets, self.max_distance)
            return
        # The direction is only known when a model builds the scheme (causal stacks get causal
        # buckets), so here refuse only what neither direction accepts; attention_position
        # checks the direction it gets.
        try:
            _check_bucket_options(True, self.num_buckets, self.max_distance)
        except ValueError:
            try:
                _check_bucket_options(False, self.num_buckets, self.max_distance)
            except ValueError:
                raise ValueError(
                    f"num_buckets={self.num_buckets}, max_distance={self.max_distance} suit "
                    "neither direction: bidirectional buckets need num_buckets >= 4 and "
                    f"max_distance > num_buckets // 4 = {self.num_buckets // 4}; causal buckets "
                    "need num_buckets >= 2 and max_distance > num_buckets // 2 = "
                    f"{self.num_buckets // 2}"
                ) from None

    def attention_position(self, num_heads: int, head_dim: int, *, causal: bool):
        bidirectional = (not causal) if self.bidirectional is None else self.bidirectional
        if self.bidirectional is None:
            try:
                _check_bucket_options(bidirectional, self.num_buckets, self.max_distance)
            except ValueError as error:
                kind = "causal" if causal else "bidirectional"
                raise ValueError(
                    f"t5 with bidirectional=None uses {kind} buckets in a {kind} stack: {error}; "
                    "change num_buckets / max_distance, or set bidirectional explicitly"
                ) from None
        return T5RelativeBias(
            num_heads,
            bidirectional=bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
            # Hugging Face's T5 initialisation: std = d_model^-0.5, with d_model = H·D here.
            init_std=(num_heads * head_dim) ** -0.5,
        )
