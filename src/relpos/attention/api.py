"""``shaw_attention``: the functional entry point, its checks, and the backend registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from . import checks
from .eager import eager_attention
from .index import RelativeIndex, resolve_clipping
from .reference import reference_attention

__all__ = [
    "shaw_attention",
    "register_backend",
    "available_backends",
    "auto_backend",
    "backend_applies",
    "BACKENDS",
    "FusedDropout",
]

Backend = Callable[..., Tensor]

#: name -> backend. Every backend takes ``(query, key, value, *, index, key_table, value_table,
#: attn_mask, is_causal, scale, dropout_mask, key_query)`` with tables already ``(Ht, R, D)``
#: and inputs in the compute dtype (float32 or float64). ``dropout_mask`` is the
#: ``(B, H, Lq, Lk)`` multiplier of the weights, or, for a backend registered with
#: ``fused_dropout=True``, a :class:`FusedDropout` from which it draws its own.
BACKENDS: dict[str, Backend] = {
    "reference": reference_attention,
    "eager": eager_attention,
}

#: name -> predicate(query, key_query, dropout) saying whether a backend can run these inputs;
#: ``auto`` walks ``AUTO_ORDER`` and takes the first that applies.
_APPLIES: dict[str, Callable[..., bool]] = {}
AUTO_ORDER: list[str] = ["eager"]
#: name -> dtypes a backend takes as they are (it accumulates in float32 itself); every other
#: dtype is upcast to float32 before the call.
_NATIVE_DTYPES: dict[str, tuple[torch.dtype, ...]] = {}
#: backends that draw their dropout mask themselves (given a FusedDropout, not a tensor).
_FUSED_DROPOUT: set[str] = set()


@dataclass(frozen=True)
class FusedDropout:
    """Dropout that a fused backend draws itself: each weight is dropped with probability
    ``p`` by the backend's own random stream under ``seed`` (the Triton kernels regenerate the
    same mask in the backward from it, so no ``Lq × Lk`` mask is stored). The kept weights are
    scaled by ``1 / (1 - p)``, as with a dense mask."""

    p: float
    seed: int

    def __post_init__(self) -> None:
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)):
            raise TypeError(f"FusedDropout p must be a float in (0, 1), got {self.p!r}")
        if not 0.0 < self.p < 1.0:
            raise ValueError(f"FusedDropout p must be in (0, 1), got {self.p}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"FusedDropout seed must be an int, got {self.seed!r}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"FusedDropout seed must be in [0, 2**63), got {self.seed}")

    def dense_mask(self, shape: tuple[int, ...], *, dtype, device) -> Tensor:
        """A ``shape`` multiplier drawn by torch from ``seed``: for a fused backend that hands
        an input to a non-fused path. (Not the fused backend's own mask, which comes from its
        own generator.)"""
        generator = torch.Generator(device=device).manual_seed(self.seed)
        return _dropout_mask(shape, self.p, dtype=dtype, device=device, generator=generator)


def register_backend(
    name: str,
    fn: Backend,
    *,
    applies: Callable[..., bool] | None = None,
    auto_priority: int | None = None,
    native_dtypes: tuple[torch.dtype, ...] = (),
    fused_dropout: bool = False,
) -> None:
    """Add a backend.

    ``native_dtypes``: half-precision dtypes the backend computes in directly (fused kernels
    that accumulate in float32 on their own); others get float32 copies of half inputs.

    ``fused_dropout``: with ``dropout_p > 0`` the backend is given a :class:`FusedDropout`
    (probability and seed) as ``dropout_mask`` and draws the mask itself, instead of a
    ``(B, H, Lq, Lk)`` tensor.

    ``applies(query=, key_query=, dropout=, has_mask=, value_dim=)`` says when ``auto`` may pick
    it (accept ``**context`` to stay compatible with new keys); ``auto_priority`` is its place in
    the ``auto`` order (0 = first).

    ``name`` must be new: ``"auto"`` is reserved for the dispatcher, and replacing a registered
    backend would silently change what every caller of that name gets. A backend is never
    called with an empty dimension (``shaw_attention`` sends those to ``reference``)."""
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a non-empty str, got {type(name).__name__}")
    if not name:
        raise ValueError("backend name must be a non-empty str, got ''")
    if name == "auto":
        raise ValueError("backend name 'auto' is reserved: it picks among the registered backends")
    if name in BACKENDS:
        raise ValueError(
            f"backend name {name!r} is already registered; registered names: {', '.join(BACKENDS)}"
        )
    if not callable(fn):
        raise TypeError(f"backend {name!r} must be callable, got {type(fn).__name__}")
    BACKENDS[name] = fn
    if applies is not None:
        _APPLIES[name] = applies
    _NATIVE_DTYPES[name] = tuple(native_dtypes)
    if fused_dropout:
        _FUSED_DROPOUT.add(name)
    if auto_priority is not None and name not in AUTO_ORDER:
        AUTO_ORDER.insert(auto_priority, name)


def available_backends() -> list[str]:
    """The names ``shaw_attention(backend=...)`` takes: ``"auto"``, then every registered
    backend in the order of registration (``AUTO_ORDER`` is the order ``"auto"`` tries)."""
    return ["auto", *BACKENDS]


def backend_applies(name: str, **context) -> bool:
    """Whether ``auto`` may pick backend ``name`` for inputs described by ``context``
    (``query=, key_query=, dropout=, has_mask=, value_dim=``); True for backends without a rule."""
    if name not in BACKENDS:
        valid = ", ".join(BACKENDS)
        raise ValueError(f"unknown backend {name!r}; valid names: {valid}")
    predicate = _APPLIES.get(name)
    return True if predicate is None else bool(predicate(**context))


def auto_backend(**context) -> str:
    """The backend ``backend="auto"`` runs for inputs described by ``context`` (as for
    :func:`backend_applies`): the first of ``AUTO_ORDER`` that applies."""
    return _pick_backend("auto", **context)


def _pick_backend(name: str, **context) -> str:
    if name == "auto":
        for candidate in AUTO_ORDER:
            applies = _APPLIES.get(candidate)
            if applies is None or applies(**context):
                return candidate
        return "eager"
    if name not in BACKENDS:
        valid = ", ".join(available_backends())
        raise ValueError(f"unknown backend {name!r}; valid names: {valid}")
    return name


def _dropout_mask(
    shape: tuple[int, ...], dropout_p: float, *, dtype, device, generator: torch.Generator | None
) -> Tensor:
    keep = torch.rand(shape, generator=generator, device=device) >= dropout_p
    return keep.to(dtype) / (1.0 - dropout_p)


def _dropout_seed(generator: torch.Generator | None) -> int:
    """A seed for a fused backend's dropout, drawn from ``generator`` (default: torch's CPU
    generator, which ``torch.manual_seed`` seeds), so that seeding torch makes runs repeat.
    Below 2**31: Triton passes such an int as int32, one compiled variant for every seed."""
    device = "cpu" if generator is None else generator.device
    return int(torch.randint(2**31 - 1, (), generator=generator, device=device))


def shaw_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_table: Tensor | None = None,
    value_table: Tensor | None = None,
    *,
    max_distance: int | None = None,
    attn_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
    query_offset: int = 0,
    key_offset: int = 0,
    max_left: int | None = None,
    max_right: int | None = None,
    key_query: bool = False,
    generator: torch.Generator | None = None,
    backend: str = "auto",
) -> Tensor:
    r"""Self-attention with relative position representations (Shaw et al., 2018).

    .. math::
        e_{ij} = \text{scale}\; q_i \cdot (k_j + a^K_{ij}), \quad
        z_i = \sum_j \operatorname{softmax}_j(e_i)\,(v_j + a^V_{ij}), \quad
        a^X_{ij} = w^X_{\mathrm{clip}(j - i, -k, k) + k}

    Shape legend: ``B`` batch, ``H`` heads, ``Lq`` / ``Lk`` query / key length, ``D`` head size,
    ``Dv`` value head size, ``R = 2k + 1`` (or ``max_left + max_right + 1``) table rows.

    Args:
        query: ``(B, H, Lq, D)``.
        key: ``(B, H, Lk, D)``.
        value: ``(B, H, Lk, Dv)``.
        key_table: ``a^K`` rows, ``(R, D)`` shared by all heads or ``(H, R, D)`` per head;
            ``None`` drops the key term.
        value_table: ``a^V`` rows, ``(R, Dv)`` or ``(H, R, Dv)``; ``None`` drops the value term.
        max_distance: the clipping distance ``k`` (required unless ``max_left`` and ``max_right``
            are both given).
        attn_mask: as in ``scaled_dot_product_attention``: boolean (True = may attend) or float
            (added to the logits), broadcasting to ``(B, H, Lq, Lk)``. A float mask must not hold
            ``+inf`` or NaN (its row's softmax is then NaN, as in SDPA); ``-inf`` masks a key.
            The values are not scanned for them, to keep the check off the hot path.
        is_causal: a query sees the keys at its own position and before it: row ``r`` sees
            column ``c`` iff ``key_offset + c <= query_offset + r``. With equal offsets (the
            default) that is SDPA's top-left mask (``c <= r``); with ``query_offset`` set for
            cached decoding it is the right one for the cached keys too. May be combined with
            ``attn_mask``.
        dropout_p: probability of dropping an attention weight; both value terms use the dropped
            weights. Applied whenever ``> 0`` (pass 0.0 at evaluation, as with SDPA). The
            eager and reference backends draw a ``(B, H, Lq, Lk)`` mask with ``torch.rand``;
            the Triton kernels draw theirs inside the kernel from a seed (Philox), so the same
            seed gives different masks on different backends.
        scale: logit scale, default ``1/sqrt(D)``.
        query_offset: absolute position of the first query; with a key/value cache this is the
            number of cached positions, so query ``r`` is at ``i = query_offset + r``. It moves
            the relative distances and, with ``is_causal``, the causal mask.
        key_offset: absolute position of the first key.
        max_left, max_right: asymmetric clipping (default ``max_distance`` each).
        key_query: also add ``k_j · a^K_ij`` to the logits (Huang et al. 2020, method 4); needs
            ``key_table``.
        generator: random generator for the dropout mask (or, for the Triton kernels, its
            seed).
        backend: ``"auto"`` (the fastest correct one), ``"reference"`` (paper-literal oracle),
            ``"eager"`` (``O(Lq·Lk)`` memory), and any backend added by ``register_backend``.

    Returns:
        ``(B, H, Lq, Dv)``. A query row whose keys are all masked returns zeros (not NaN), and
        its gradients are zero. Inputs with an empty dimension (``B``, ``H``, ``Lq`` or ``Lk``
        = 0) run the reference whatever ``backend`` names: there is nothing to compute (``Lk = 0``
        gives zero rows), and fused kernels would divide by the size or launch an empty grid.
    """
    batch, heads, q_len, k_len, head_dim = checks.check_qkv(query, key, value)
    left, right = resolve_clipping(max_distance, max_left, max_right)
    for value_, name in ((query_offset, "query_offset"), (key_offset, "key_offset")):
        if isinstance(value_, bool) or not isinstance(value_, int):
            raise TypeError(f"{name} must be an int, got {type(value_).__name__} {value_!r}")
    index = RelativeIndex(q_len, k_len, left, right, query_offset, key_offset)
    rows = index.num_buckets
    checks.check_table(key_table, "key_table", rows=rows, dim=head_dim, heads=heads, like=query)
    checks.check_table(
        value_table, "value_table", rows=rows, dim=value.shape[-1], heads=heads, like=query
    )
    checks.check_attn_mask(
        attn_mask, batch=batch, heads=heads, q_len=q_len, k_len=k_len, like=query
    )
    scale = checks.check_scale(scale, head_dim)
    dropout_p = checks.check_dropout(dropout_p)
    for flag, name in ((is_causal, "is_causal"), (key_query, "key_query")):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    if key_query and key_table is None:
        raise ValueError(
            "key_query=True needs a key_table: the key-query term k_j · a^K_ij reads the key "
            "table (pass one, or key_query=False)"
        )
    attn_mask, is_causal = checks.causal_by_position(
        attn_mask, is_causal, q_len, k_len, query_offset, key_offset, query.device
    )

    chosen = _pick_backend(
        backend,
        query=query,
        key_query=key_query,
        dropout=dropout_p > 0,
        has_mask=attn_mask is not None,
        value_dim=value.shape[-1],
    )
    if 0 in (batch, heads, q_len, k_len):
        chosen = "reference"  # handles every empty shape; see "Returns" above
    # Half precision is computed in float32 (softmax sums in bf16 lose whole digits), then cast
    # back — unless the backend is a fused kernel that accumulates in float32 itself.
    if query.dtype in _NATIVE_DTYPES.get(chosen, ()):
        compute_dtype = query.dtype
    else:
        compute_dtype = torch.promote_types(query.dtype, torch.float32)

    def cast(t: Tensor | None) -> Tensor | None:
        return t if t is None else t.to(compute_dtype)

    dropout_mask = None
    if dropout_p > 0 and chosen in _FUSED_DROPOUT:
        dropout_mask = FusedDropout(dropout_p, _dropout_seed(generator))
    elif dropout_p > 0:
        dropout_mask = _dropout_mask(
            (batch, heads, q_len, k_len),
            dropout_p,
            dtype=compute_dtype,
            device=query.device,
            generator=generator,
        )
    # Inside torch.autocast the backends' matmuls would drop back to half precision and meet the
    # float32 tensors above (an in-place scatter refuses the mix): they keep compute_dtype.
    with checks.autocast_off(query.device):
        output = BACKENDS[chosen](
            cast(query),
            cast(key),
            cast(value),
            index=index,
            key_table=cast(checks.normalize_table(key_table)),
            value_table=cast(checks.normalize_table(value_table)),
            attn_mask=attn_mask,
            is_causal=is_causal,
            scale=scale,
            dropout_mask=dropout_mask,
            key_query=key_query,
        )
    return output.to(query.dtype)
