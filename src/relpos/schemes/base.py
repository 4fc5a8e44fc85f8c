"""What a position scheme is, and the registry that finds one by name.

A scheme reaches a transformer in up to four places:

1. added to the input embeddings (absolute: sinusoidal, learned) —
   :meth:`PositionScheme.input_encoding`;
2. rotating queries and keys (RoPE) — :meth:`AttentionPosition.rotate`;
3. a bias on the logits (T5, ALiBi, Swin), a key term (Shaw, Huang) or a bias that reads the
   content as well (Transformer-XL, DeBERTa) — :meth:`AttentionPosition.attend`;
4. a value term (Shaw) — also :meth:`AttentionPosition.attend`.

A :class:`PositionScheme` is a small config dataclass that builds those pieces for a model of a
given size; it is registered by name with :func:`register_scheme`. Models ask the registry, so a new
scheme touches only its own file (and one import line in ``relpos/schemes/__init__.py``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from torch import Tensor, nn

from ..attention.checks import causal_by_position, check_dropout, check_qkv
from ..attention.flex_bias import (
    RelativeScores,
    check_bias_backend,
    dense_bias_attention,
    distance_bias_attention,
    expand_distance_bias,
    flex_bias_attention,
)
from ..attention.sdpa import sdpa_attention

__all__ = [
    "AttentionPosition",
    "DistanceBias",
    "PairBias",
    "PositionScheme",
    "register_scheme",
    "get_scheme",
    "available_schemes",
    "SCHEMES",
]


def causal_mask(
    query: Tensor,
    key: Tensor,
    attn_mask: Tensor | None,
    is_causal: bool,
    query_offset: int,
    key_offset: int,
) -> tuple[Tensor | None, bool]:
    """``(attn_mask, is_causal)`` for a backend, ``is_causal`` taken by position
    (:func:`relpos.attention.checks.causal_by_position`) for ``query (B, H, Lq, D)`` at
    ``query_offset`` and ``key (B, H, Lk, D)`` at ``key_offset``."""
    return causal_by_position(
        attn_mask, is_causal, query.shape[-2], key.shape[-2], query_offset, key_offset, query.device
    )


class AttentionPosition(nn.Module):
    """The part of a scheme that lives inside one attention layer.

    The default is content-only attention (no position information). Subclasses override
    :meth:`rotate` (RoPE), :meth:`attend` (relative terms and biases), or both.
    """

    def rotate(
        self, query: Tensor, key: Tensor, *, query_offset: int = 0, key_offset: int = 0
    ) -> tuple[Tensor, Tensor]:
        """Rotate ``query (B, H, Lq, D)`` and ``key (B, H, Lk, D)`` by their absolute positions.

        Called on the *new* queries and keys before a key/value cache stores them.
        """
        return query, key

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
        """Attention output ``(B, H, Lq, Dv)`` with this scheme's position terms.

        ``query`` is at absolute positions ``query_offset + r``, ``key``/``value`` at
        ``key_offset + c``; ``attn_mask`` means what it means for SDPA, and ``is_causal`` lets
        a query see the keys at its position and before (SDPA's top-left mask when the offsets
        are equal; see :func:`relpos.attention.checks.causal_by_position`).
        """
        attn_mask, is_causal = causal_mask(
            query, key, attn_mask, is_causal, query_offset, key_offset
        )
        return sdpa_attention(
            query, key, value, attn_mask=attn_mask, is_causal=is_causal, dropout_p=dropout_p
        )


class DistanceBias(AttentionPosition):
    """A scalar bias per head that depends only on the distance ``j - i`` (T5, ALiBi).

    Subclasses implement :meth:`distance_bias`, one value per head and distance in the block;
    the kernels expand it (SDPA: a dense additive mask; FlexAttention: read inside ``score_mod``).
    """

    def distance_bias(
        self, query_len: int, key_len: int, *, query_offset: int = 0, key_offset: int = 0
    ) -> Tensor:
        """``(H, Lq + Lk - 1)``: the bias of every distance ``j - i`` in the block, smallest
        first; :func:`relpos.attention.relative_distances` gives those distances in that order
        (query row ``r`` and key column ``c`` read column ``c - r + Lq - 1``)."""
        raise NotImplementedError

    def bias(
        self, query_len: int, key_len: int, *, query_offset: int = 0, key_offset: int = 0
    ) -> Tensor:
        """The dense bias ``(H, Lq, Lk)``."""
        per_distance = self.distance_bias(
            query_len, key_len, query_offset=query_offset, key_offset=key_offset
        )
        return expand_distance_bias(per_distance, query_len, key_len)

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
        # First: a 3-D query would otherwise be reported as having Lq heads.
        _, heads, q_len, k_len, _ = check_qkv(query, key, value)
        per_distance = self.distance_bias(
            q_len, k_len, query_offset=query_offset, key_offset=key_offset
        )
        attn_mask, is_causal = causal_mask(
            query, key, attn_mask, is_causal, query_offset, key_offset
        )
        if per_distance.shape[0] != heads:
            raise ValueError(
                f"query has {heads} heads but this {type(self).__name__} was built for "
                f"{per_distance.shape[0]}; build it with num_heads={heads}"
            )
        return distance_bias_attention(
            query,
            key,
            value,
            per_distance,
            attn_mask=attn_mask,
            is_causal=is_causal,
            dropout_p=dropout_p,
            backend=backend,
        )


class PairBias(AttentionPosition):
    """A logit bias computed from the content *and* the pair's relative position (Transformer-XL,
    DeBERTa): ``b_ij`` reads ``q_i`` or ``k_j`` as well as ``j - i``, so it is a full
    ``(B, H, Lq, Lk)`` tensor rather than one value per distance.

    Subclasses implement :meth:`pair_bias` (already scaled), or, when their relative vectors are
    few (clipped, as DeBERTa's), :meth:`relative_scores`, the same bias in factored form; they may
    change :meth:`logit_scale`, the factor on ``q·k``. The bias is formed densely and added like a
    float mask (:func:`~relpos.attention.flex_bias.dense_bias_attention`: by hand for
    ``backend="reference"``, by SDPA for any other backend name), memory ``O(B·H·Lq·Lk)`` as in
    the papers' own code. ``backend="flex"`` with a factored bias never forms it: FlexAttention
    gathers each score from the ``O(B·H·L·R)`` per-token scores (forward only on the CPU; ``auto``
    does not pick it, as its speed on a GPU is not measured yet).
    """

    num_heads: int

    def logit_scale(self, head_dim: int) -> float:
        """The factor on ``q_i·k_j``; ``1/sqrt(D)`` unless the paper says otherwise."""
        return head_dim**-0.5

    def pair_bias(
        self, query: Tensor, key: Tensor, *, query_offset: int = 0, key_offset: int = 0
    ) -> Tensor:
        """``(B, H, Lq, Lk)``: what this scheme adds to the scaled logit of each pair."""
        factored = self.relative_scores(
            query, key, query_offset=query_offset, key_offset=key_offset
        )
        if factored is None:
            raise NotImplementedError(
                f"{type(self).__name__} implements neither pair_bias nor relative_scores"
            )
        bias = factored.dense(query.shape[-2], key.shape[-2])
        return query.new_zeros(*query.shape[:-1], key.shape[-2]) if bias is None else bias

    def relative_scores(
        self, query: Tensor, key: Tensor, *, query_offset: int = 0, key_offset: int = 0
    ) -> RelativeScores | None:
        """The bias in factored form (already scaled), or None when the scheme has none."""
        return None

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
        _, heads, _, _, head_dim = check_qkv(query, key, value)
        if heads != self.num_heads:
            raise ValueError(
                f"query has {heads} heads but this {type(self).__name__} was built for "
                f"{self.num_heads}; build it with num_heads={heads}"
            )
        # Its relative vectors (and u, v) are head_dim wide: another size would fail deep in a
        # matmul. A subclass whose bias does not depend on the head size sets no head_dim.
        built_dim = getattr(self, "head_dim", None)
        if built_dim is not None and head_dim != built_dim:
            raise ValueError(
                f"query has head size {head_dim} but this {type(self).__name__} was built for "
                f"head_dim={built_dim}; build it with head_dim={head_dim}"
            )
        scale = self.logit_scale(query.shape[-1])
        attn_mask, is_causal = causal_mask(
            query, key, attn_mask, is_causal, query_offset, key_offset
        )
        if backend == "flex":
            factored = self.relative_scores(
                query, key, query_offset=query_offset, key_offset=key_offset
            )
            if factored is not None:
                check_bias_backend(backend, check_dropout(dropout_p), no_dropout=("flex",))
                return flex_bias_attention(
                    query,
                    key,
                    value,
                    relative_scores=factored,
                    attn_mask=attn_mask,
                    is_causal=is_causal,
                    scale=scale,
                )
        bias = self.pair_bias(query, key, query_offset=query_offset, key_offset=key_offset)
        return dense_bias_attention(
            query,
            key,
            value,
            bias,
            attn_mask=attn_mask,
            is_causal=is_causal,
            dropout_p=dropout_p,
            scale=scale,
            backend=backend,
        )


@dataclasses.dataclass
class PositionScheme:
    """A named position scheme: options as dataclass fields, factories for the model's pieces."""

    name: ClassVar[str] = ""
    #: citation shown by ``relpos`` listings.
    paper: ClassVar[str] = ""
    #: True when the scheme knows positions only as absolute indices (sinusoidal, learned,
    #: integer), not as distances between tokens.
    absolute: ClassVar[bool] = False
    #: T5 computes its bias once and shares it with every layer.
    shared_across_layers: ClassVar[bool] = False

    def input_encoding(self, d_model: int, max_len: int) -> nn.Module | None:
        """Module ``(x (B, L, d_model), offset=0, padding=None) -> (B, L, d_model)`` added at the
        input, or None. ``offset`` is the first token's position (cached decoding), ``padding``
        ``(B, L)`` is True at right-padding (given by encoders). A module whose positions depend
        on the whole sequence (``randomized``) also has ``fixed(batch, width, device)``, a context
        in which calls continue one draw; the models decode inside it."""
        return None

    def attention_position(
        self, num_heads: int, head_dim: int, *, causal: bool
    ) -> AttentionPosition | None:
        """The per-layer module for self-attention (``causal`` for decoders), or None."""
        return None


def check_bool(value: object, name: str) -> None:
    """Scheme options that switch a term on or off: a string like ``"no"`` would be truthy."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


def check_finite_above(value: object, name: str, bound: float) -> None:
    """A real number ``> bound`` that is finite (NaN and inf fail every later check silently)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
        or not value > bound
    ):
        raise ValueError(f"{name} must be a number > {bound:g} and finite, got {value!r}")


def check_base(value: object, name: str = "base") -> None:
    """A frequency base: ``base ** (-2t/d)`` is NaN for a negative base and constant for 1."""
    check_finite_above(value, name, 1)


SCHEMES: dict[str, type[PositionScheme]] = {}


def register_scheme(cls: type[PositionScheme]) -> type[PositionScheme]:
    """Class decorator: make ``cls`` available as ``get_scheme(cls.name)``."""
    if not (isinstance(cls, type) and issubclass(cls, PositionScheme)):
        raise TypeError(
            "register_scheme takes a subclass of PositionScheme (use it as a class decorator), "
            f"got {type(cls).__name__} {cls!r}"
        )
    if not isinstance(cls.name, str) or not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name` to be registered")
    if cls.name in SCHEMES and SCHEMES[cls.name] is not cls:
        raise ValueError(f"a scheme named {cls.name!r} is already registered")
    SCHEMES[cls.name] = cls
    return cls


def available_schemes() -> list[str]:
    """The registered scheme names :func:`get_scheme` takes, sorted."""
    return sorted(SCHEMES)


def get_scheme(name: str | PositionScheme, **options) -> PositionScheme:
    """Build a scheme by name, e.g. ``get_scheme("shaw", max_distance=4, value_term=False)``.

    Given a scheme instance, return it with ``options`` replaced. Options are checked here (each
    scheme's ``__post_init__``), not when a model is built from the scheme.
    """
    if isinstance(name, PositionScheme):
        cls = type(name)
    elif name not in SCHEMES:
        raise ValueError(
            f"unknown position scheme {name!r}; valid names: {', '.join(available_schemes())}"
        )
    else:
        cls = SCHEMES[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(
            f"scheme {cls.name!r} has no option(s) {', '.join(unknown)}; "
            f"its options are: {', '.join(sorted(fields)) or '(none)'}"
        )
    if isinstance(name, PositionScheme):
        return dataclasses.replace(name, **options) if options else name
    return cls(**options)
