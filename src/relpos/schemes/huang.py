"""Key-query relative position embeddings (Huang, Liang, Xu & Xiang, Findings of EMNLP 2020,
"Improve Transformer Models with Better Relative Position Embeddings", Sec. 3, method 4).

Method 4 lets the relative vector interact with the key as well as with the query:
``e_ij = (q_i·k_j + q_i·a_ij + k_j·a_ij) / sqrt(d)`` — Shaw et al.'s key term plus ``k_j·a_ij``,
with one table ``a`` per layer shared by all heads and no value term. ``key_query=False`` keeps
only ``q_i·a_ij``: Shaw et al.'s key term without their value term. ``value_term=True`` adds
Shaw's value term ``Σ_j α_ij a^V_ij`` (a second table; not in Huang et al.), for experiments
that combine the two. That is what Hugging Face
BERT calls ``"relative_key"``, and HF attributes it to Shaw et al. 2018, not to Huang et al.;
the project's formula notes (``shared/reference/family.md``, beside this repository) list the
same formula as Huang et al.'s "method 3".

It is built on Shaw's machinery (:class:`~relpos.schemes.shaw.ShawRelativePosition` with
``key_query=True``, which every Shaw backend computes). Two differences from Hugging Face BERT's
``relative_key_query``, neither of which changes what the model can express:

* BERT indexes its table by ``i - j``, Shaw by ``j - i``: the rows are stored in reverse order;
* BERT's table has a row for every distance up to its maximum length (no clipping); here
  distances are clipped at ``max_distance`` — with ``max_distance >= L - 1`` the two coincide.
"""

from __future__ import annotations

import dataclasses

from ..attention.index import resolve_clipping
from .base import PositionScheme, check_bool, register_scheme
from .shaw import ShawRelativePosition

__all__ = ["HuangScheme"]


@register_scheme
@dataclasses.dataclass
class HuangScheme(PositionScheme):
    """``huang``: relative key vectors that meet both the query and the key (method 4)."""

    name = "huang"
    paper = "Huang et al. 2020, Improve Transformer Models with Better Relative Position Embeddings"

    # Clipping distance; generous, since the paper's tables cover the whole input length.
    max_distance: int = 128
    key_query: bool = True  # False: the query term alone (HF BERT's "relative_key")
    per_head: bool = False  # BERT shares one table across the heads of a layer
    value_term: bool = False  # Shaw's a^V as well (not part of Huang et al.)

    def __post_init__(self) -> None:
        resolve_clipping(self.max_distance)
        for name in ("key_query", "per_head", "value_term"):
            check_bool(getattr(self, name), name)

    def attention_position(self, num_heads: int, head_dim: int, *, causal: bool):
        return ShawRelativePosition(
            head_dim,
            self.max_distance,
            num_heads=num_heads,
            key_term=True,
            value_term=self.value_term,
            per_head=self.per_head,
            key_query=self.key_query,
        )
