"""Multi-head attention with a pluggable position scheme, masks, dropout and a key/value cache.

``MultiheadAttention(embed_dim, num_heads, max_distance=k)`` is Shaw et al.'s relative
self-attention; ``position=`` takes any :class:`~relpos.schemes.AttentionPosition` (T5 bias, ALiBi,
RoPE, …); with neither it is plain content attention.

Incremental decoding: pass a :class:`KVCache`; the new queries sit at absolute positions
``cache.length + r``, so relative distances to cached keys are the true ones (a major library once
used distance 0 for every cached key, Hugging Face issue 19045).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..attention.api import available_backends
from ..attention.checks import causal_by_position, check_attn_mask
from ..schemes.base import AttentionPosition, check_bool
from ..schemes.shaw import ShawRelativePosition

__all__ = ["MultiheadAttention", "KVCache"]


@dataclass
class KVCache:
    """Projected (and, for RoPE, rotated) keys and values seen so far: ``(B, H, L, D)`` each."""

    key: Tensor | None = None
    value: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.key is None else self.key.shape[2]

    def append(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Add ``key (B, H, L, D)`` and ``value (B, H, L, Dv)``; return all keys and values so far.

        A cache belongs to one attention layer and one batch of sequences: the new keys and values
        must match the cached ones in batch size, heads, head size, dtype and device. On a
        mismatch it raises and stays as it was.
        """
        self.key, self.value = self.extended(key, value)
        return self.key, self.value

    def extended(self, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """What :meth:`append` would hold after adding ``key`` and ``value``, leaving the cache
        as it is (a layer stores the result only once its attention has succeeded)."""
        if self.key is None:
            return key, value
        self._check_like_cached(key, value)
        return torch.cat((self.key, key), dim=2), torch.cat((self.value, value), dim=2)

    def _check_like_cached(self, key: Tensor, value: Tensor) -> None:
        def without_length(t: Tensor) -> tuple[int, ...]:
            return (*t.shape[:2], t.shape[3])  # (B, H, D)

        same_keys = without_length(key) == without_length(self.key)
        if not same_keys or without_length(value) != without_length(self.value):
            raise ValueError(
                f"this KVCache holds keys of shape (B, H, L, D) = {tuple(self.key.shape)} and "
                f"values {tuple(self.value.shape)}, but the new keys are {tuple(key.shape)} and "
                f"values {tuple(value.shape)}: a cache serves one attention layer and one batch "
                "of sequences; use a new KVCache for another batch or layer"
            )
        if key.dtype != self.key.dtype or key.device != self.key.device:
            raise TypeError(
                f"this KVCache holds {self.key.dtype} keys on {self.key.device}, but the new keys "
                f"are {key.dtype} on {key.device}; use a new KVCache after changing the module's "
                "dtype or device"
            )


def _check_positive_int(value: object, name: str, *, none: str | None = None) -> None:
    """``value`` must be an int >= 1 (or None, when ``none`` says what None means)."""
    if none is not None and value is None:
        return
    expected = f"None ({none}) or a positive int" if none is not None else "a positive int"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {expected}, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be {expected}, got {value}")


class MultiheadAttention(nn.Module):
    """Multi-head attention, ``batch_first`` by default.

    Args:
        embed_dim: model width ``E``; ``head_dim = E // num_heads``.
        num_heads: ``H``.
        max_distance: Shaw clipping distance ``k``; ``None`` for no relative terms.
        key_term / value_term: keep Shaw's ``a^K`` / ``a^V``.
        per_head_tables: one relative table per head (paper's base model) instead of shared.
        position: any :class:`AttentionPosition` instead of Shaw's terms (give it or
            ``max_distance``, not both).
        dropout: attention-weight dropout, active in ``train()`` mode.
        bias: biases on the four projections.
        kdim, vdim: widths of the key/value inputs for cross-attention (default ``E``).
        batch_first: inputs are ``(B, L, E)`` (default) rather than ``(L, B, E)``.
        backend: attention backend for relative schemes (``"auto"``, ``"eager"``, …); the
            attribute ``module.backend`` may be changed later, e.g. to compare backends on
            one set of weights.

    The position scheme's parameters live on ``module.position``: for Shaw's terms,
    ``position.key_table`` / ``position.value_table``, ``(2k+1, D)`` shared or ``(H, 2k+1, D)``
    per head (``None`` for a term that is off).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        max_distance: int | None = None,
        key_term: bool = True,
        value_term: bool = True,
        per_head_tables: bool = False,
        position: AttentionPosition | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        _check_positive_int(embed_dim, "embed_dim")
        _check_positive_int(num_heads, "num_heads")
        if embed_dim % num_heads:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})"
            )
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"dropout must be a float in [0, 1), got {dropout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        _check_positive_int(kdim, "kdim", none="embed_dim")
        _check_positive_int(vdim, "vdim", none="embed_dim")
        for name, flag in (
            ("key_term", key_term),
            ("value_term", value_term),
            ("per_head_tables", per_head_tables),
            ("bias", bias),
            ("batch_first", batch_first),
        ):
            check_bool(flag, name)
        if position is not None and not isinstance(position, AttentionPosition):
            raise TypeError(
                "position must be an AttentionPosition (e.g. "
                "relpos.get_scheme('t5').attention_position(num_heads, head_dim, causal=False)) "
                f"or None, got {type(position).__name__} {position!r:.80}; for Shaw's relative "
                "positions pass max_distance=k instead"
            )
        if position is not None and max_distance is not None:
            raise ValueError(
                f"give max_distance (Shaw's terms) or position (any other scheme), not both; got "
                f"max_distance={max_distance!r} and position={type(position).__name__}"
            )
        shaw_defaults = {"key_term": True, "value_term": True, "per_head_tables": False}
        shaw_given = {"key_term": key_term, "value_term": value_term}
        shaw_given["per_head_tables"] = per_head_tables
        changed = [
            f"{name}={shaw_given[name]}"
            for name in shaw_defaults
            if shaw_given[name] != shaw_defaults[name]
        ]
        if max_distance is None and changed:
            raise ValueError(
                f"{', '.join(changed)} configures Shaw's tables, which only exist with "
                "max_distance=k; pass max_distance, or leave the option out"
            )
        if backend not in available_backends():
            raise ValueError(
                f"unknown backend {backend!r}; valid names: {', '.join(available_backends())}"
            )
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout, self.batch_first, self.backend = dropout, batch_first, backend
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(kdim or embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(vdim or embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        if position is None and max_distance is not None:
            position = ShawRelativePosition(
                self.head_dim,
                max_distance,
                num_heads=num_heads,
                key_term=key_term,
                value_term=value_term,
                per_head=per_head_tables,
            )
        self.position = position if position is not None else AttentionPosition()
        self.reset_parameters()

    @classmethod
    def from_torch(
        cls,
        module: nn.MultiheadAttention,
        *,
        max_distance: int | None = None,
        position: AttentionPosition | None = None,
        **options,
    ) -> MultiheadAttention:
        """A relpos layer with the weights of a ``torch.nn.MultiheadAttention``, to give an
        existing (pretrained) model relative positions.

        The projections, biases, widths, dropout and ``batch_first`` are copied; ``max_distance``,
        ``position`` and the other keyword ``options`` are this class's (``key_term``,
        ``per_head_tables``, ``backend``, …). Without positions the new layer computes what
        ``module`` does. The relative tables start at their usual random values; zero them
        (``nn.init.zeros_(layer.position.key_table)``, and ``value_table``) to start from exactly
        ``module``'s function and let training grow the relative terms.

        Two differences from ``torch.nn.MultiheadAttention`` remain at the call: a bool
        ``attn_mask`` here marks what **may** be attended (SDPA's convention; torch's layer
        marks what may not: pass ``~mask``), and the call returns the output alone, not
        ``(output, weights)``. ``add_bias_kv`` and ``add_zero_attn`` have no counterpart and are
        refused.
        """
        if not isinstance(module, nn.MultiheadAttention):
            raise TypeError(
                f"module must be a torch.nn.MultiheadAttention, got {type(module).__name__}"
            )
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError(
                "module uses add_bias_kv or add_zero_attn, which relpos.MultiheadAttention has "
                "no counterpart for"
            )
        for name in ("embed_dim", "num_heads", "kdim", "vdim", "dropout", "batch_first", "bias"):
            if name in options:
                raise ValueError(f"{name} is copied from module; do not pass it to from_torch")
        embed_dim = module.embed_dim
        has_bias = module.out_proj.bias is not None
        layer = cls(
            embed_dim,
            module.num_heads,
            max_distance=max_distance,
            position=position,
            dropout=module.dropout,
            bias=has_bias,
            kdim=module.kdim,
            vdim=module.vdim,
            batch_first=module.batch_first,
            **options,
        )
        if module.in_proj_weight is not None:  # one (3E, E) matrix: q, k, v stacked
            weights = module.in_proj_weight.chunk(3)
        else:  # kdim or vdim != embed_dim: three matrices
            weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
        biases = module.in_proj_bias.chunk(3) if has_bias else (None, None, None)
        layer = layer.to(device=module.out_proj.weight.device, dtype=module.out_proj.weight.dtype)
        with torch.no_grad():
            for proj, weight, bias in zip(
                (layer.q_proj, layer.k_proj, layer.v_proj), weights, biases, strict=True
            ):
                proj.weight.copy_(weight)
                if bias is not None:
                    proj.bias.copy_(bias)
            layer.out_proj.weight.copy_(module.out_proj.weight)
            if has_bias:
                layer.out_proj.bias.copy_(module.out_proj.bias)
        return layer

    def reset_parameters(self) -> None:
        # As torch.nn.MultiheadAttention: Xavier-uniform projections, zero biases.
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(proj.weight)
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        # Explicit sizes, not -1: view cannot infer a dimension of an empty (B = 0 or L = 0) tensor.
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, D)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
        query_offset: int | None = None,
    ) -> Tensor:
        """Attention output, same layout as ``query``.

        Args:
            query: ``(B, Lq, E)`` (or ``(Lq, B, E)`` if not ``batch_first``).
            key, value: ``(B, Lk, kdim)`` / ``(B, Lk, vdim)`` for cross-attention; ``None`` for
                self-attention (keys and values come from ``query``). ``module(x, x, x)``, the
                ``torch.nn.MultiheadAttention`` idiom, is self-attention too.
            key_padding_mask: ``(B, Lk)`` bool, **True marks padding** (as in
                ``torch.nn.MultiheadAttention``); for a cache, covers all cached keys too.
            attn_mask: bool (True = may attend) or float, broadcasting to ``(B, H, Lq, Lk)``.
            is_causal: query at absolute position ``i`` sees keys at positions ``<= i``; with a
                cache this is offset by the cache length.
            cache: a :class:`KVCache` (self-attention) that is read and extended in place.
            query_offset: absolute position of the first query among the keys, which are
                always at ``0 … Lk - 1`` (cached keys first); default: the cache length, as in
                decoding. It places the queries relative to the keys; it does not move the whole
                sequence (which no relative scheme could see).

        Returns:
            ``(B, Lq, E)``; empty when ``B = 0`` or ``Lq = 0``.
        """
        if key is query and (value is None or value is query):
            # torch.nn.MultiheadAttention's idiom for self-attention; treating it as
            # cross-attention would silently drop the relative position terms.
            key = value = None
        self._check_inputs(query, key, value)
        if not isinstance(is_causal, bool):
            raise TypeError(f"is_causal must be a bool, got {is_causal!r}")
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache or None, got {type(cache).__name__}")
        if not self.batch_first:
            query = query.transpose(0, 1)
            key = None if key is None else key.transpose(0, 1)
            value = None if value is None else value.transpose(0, 1)
        self_attention = key is None
        if not self_attention and value is None:
            value = key
        key_input = query if self_attention else key
        value_input = query if self_attention else value

        if cache is not None and not self_attention:
            raise ValueError(
                "cache is for self-attention only (it appends the new keys at every call); "
                "for cross-attention project the source once and pass it as key/value"
            )
        batch, q_len = query.shape[:2]
        past = cache.length if cache is not None else 0
        k_len = past + key_input.shape[1]
        q_offset = past if query_offset is None else query_offset
        # Check before the cache is extended, so that a bad call leaves the cache as it was.
        self._check_key_padding_mask(key_padding_mask, batch, k_len)
        check_attn_mask(
            attn_mask, batch=batch, heads=self.num_heads, q_len=q_len, k_len=k_len, like=query
        )
        q = self._split_heads(self.q_proj(query))  # (B, H, Lq, D)
        k = self._split_heads(self.k_proj(key_input))  # (B, H, Lk_new, D)
        v = self._split_heads(self.v_proj(value_input))  # (B, H, Lk_new, Dv)
        if self_attention:
            q, k = self.position.rotate(q, k, query_offset=q_offset, key_offset=past)
        if cache is not None:
            k, v = cache.extended(k, v)  # (B, H, past + Lk_new, D), stored below
        out = self._attend(
            q, k, v, attn_mask, key_padding_mask, is_causal, q_offset, self_attention
        )
        if cache is not None:
            # Only now: a call that raised (a bad mask, a backend that refuses) leaves the
            # cache as it was, and a retry does not see its keys twice.
            cache.key, cache.value = k, v
        return self._merge_heads(out)

    def _attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        attn_mask: Tensor | None,
        key_padding_mask: Tensor | None,
        is_causal: bool,
        q_offset: int,
        self_attention: bool,
    ) -> Tensor:
        """``(B, H, Lq, Dv)``: the heads' attention over all keys (cached ones included)."""
        batch, _, q_len, _ = q.shape
        k_len = k.shape[2]
        if batch == 0 or q_len == 0:
            # Nothing to attend from; some kernels and position modules refuse empty blocks.
            return q.new_zeros(batch, self.num_heads, q_len, self.head_dim)
        mask = self._mask(attn_mask, key_padding_mask)
        # Without an offset the causal mask is SDPA's top-left one and stays a flag, so fused
        # kernels can skip whole masked blocks; with cached keys it becomes a mask by position
        # here, so that a position module of the user's own needs to know only the flag.
        mask, causal_flag = causal_by_position(mask, is_causal, q_len, k_len, q_offset, 0, q.device)
        if self_attention:
            out = self.position.attend(
                q,
                k,
                v,
                attn_mask=mask,
                is_causal=causal_flag,
                dropout_p=self.dropout if self.training else 0.0,
                query_offset=q_offset,
                key_offset=0,
                backend=self.backend,
            )
        else:
            # Cross-attention is content-only: source and target positions are not comparable,
            # and Shaw et al. use relative positions in self-attention only.
            out = AttentionPosition.attend(
                self.position,
                q,
                k,
                v,
                attn_mask=mask,
                is_causal=causal_flag,
                dropout_p=self.dropout if self.training else 0.0,
            )
        return out

    def _merge_heads(self, out: Tensor) -> Tensor:
        """``(B, H, Lq, D)`` → the projected output ``(B, Lq, E)`` in the caller's layout."""
        batch, _, q_len, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, q_len, self.embed_dim)  # (B, Lq, E)
        out = self.out_proj(out)
        return out if self.batch_first else out.transpose(0, 1)

    def _check_inputs(self, query: Tensor, key: Tensor | None, value: Tensor | None) -> None:
        """Shapes in the caller's layout: ``(B, L, ·)``, or ``(L, B, ·)`` if not batch_first."""
        for name, t in (("query", query), ("key", key), ("value", value)):
            if (t is not None or name == "query") and not isinstance(t, Tensor):
                none = "" if name == "query" else " or None"
                raise TypeError(f"{name} must be a torch.Tensor{none}, got {type(t).__name__}")

        def layout(batch: object, length: object, width: object) -> str:
            dims = (batch, length, width) if self.batch_first else (length, batch, width)
            return "(" + ", ".join(map(str, dims)) + ")"

        if query.dim() != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(
                f"query must have shape {layout('B', 'L', self.embed_dim)}, "
                f"got {tuple(query.shape)}"
            )
        if key is None:
            if value is not None:
                raise ValueError("value given without key; pass both for cross-attention")
            kdim, vdim = self.k_proj.in_features, self.v_proj.in_features
            if (kdim, vdim) != (self.embed_dim, self.embed_dim):
                raise ValueError(
                    f"self-attention projects keys and values from the query, but this module "
                    f"was built with kdim={kdim}, vdim={vdim} (embed_dim={self.embed_dim}); "
                    "pass key and value for cross-attention"
                )
            return
        batch = query.shape[0 if self.batch_first else 1]
        kdim, vdim = self.k_proj.in_features, self.v_proj.in_features
        if (
            key.dim() != 3
            or key.shape[-1] != kdim
            or key.shape[0 if self.batch_first else 1] != batch
        ):
            raise ValueError(
                f"key must have shape {layout('B', 'Lk', 'kdim')} = {layout(batch, 'Lk', kdim)} "
                f"to match query {tuple(query.shape)}, got {tuple(key.shape)}"
            )
        if value is None:
            value = key
        k_len = key.shape[1 if self.batch_first else 0]
        if value.dim() != 3 or value.shape != (*key.shape[:2], vdim):
            raise ValueError(
                f"value must have shape {layout('B', 'Lk', 'vdim')} = {layout(batch, k_len, vdim)} "
                f"to match key {tuple(key.shape)}, got {tuple(value.shape)}"
            )

    @staticmethod
    def _check_key_padding_mask(key_padding_mask: Tensor | None, batch: int, k_len: int) -> None:
        if key_padding_mask is None:
            return
        if (
            not isinstance(key_padding_mask, Tensor)
            or key_padding_mask.shape != (batch, k_len)
            or key_padding_mask.dtype != torch.bool
        ):
            got = (
                f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
                if isinstance(key_padding_mask, Tensor)
                else type(key_padding_mask).__name__
            )
            raise ValueError(
                f"key_padding_mask must be a bool tensor of shape (B, Lk) = ({batch}, {k_len}) "
                f"with True at padding (Lk counts cached keys too), got {got}"
            )

    def _mask(self, attn_mask: Tensor | None, key_padding_mask: Tensor | None) -> Tensor | None:
        """Combine ``attn_mask`` and ``key_padding_mask`` into one ``(B|1, 1|H, Lq, Lk)`` mask
        (boolean True = may attend, or float added to the logits)."""
        if key_padding_mask is None:
            return attn_mask
        allowed = ~key_padding_mask[:, None, None, :]  # (B, 1, 1, Lk)
        if attn_mask is None:
            return allowed
        if attn_mask.dtype == torch.bool:
            return attn_mask & allowed
        return torch.where(allowed, attn_mask, torch.full_like(attn_mask, float("-inf")))
