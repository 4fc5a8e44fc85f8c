"""Layers built from schemes and backends."""

from .multihead import KVCache, MultiheadAttention

__all__ = ["KVCache", "MultiheadAttention"]
