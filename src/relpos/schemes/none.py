"""No position information at all (NoPE; Kazemnejad et al., NeurIPS 2023).

With bidirectional attention a model without positions sees a bag of tokens (Shaw et al.'s
``k = 0`` row, BLEU 12.5). A causal decoder can still infer positions from its mask, which is why
NoPE does surprisingly well on length generalisation in decoder-only models.
"""

from __future__ import annotations

import dataclasses

from .base import PositionScheme, register_scheme

__all__ = ["NoPositionScheme"]


@register_scheme
@dataclasses.dataclass
class NoPositionScheme(PositionScheme):
    """``none``: content-only attention, nothing added to the input."""

    name = "none"
    paper = "Kazemnejad et al. 2023, The Impact of Positional Encoding on Length Generalization"
