"""Attention backends ("kernels"): they know indices, tables and biases — never schemes.

``shaw_attention`` dispatches to a backend by name: ``reference`` (paper-literal oracle),
``eager`` (``O(Lq·Lk)`` memory), and the fast ones registered by their own modules.
"""

# Registers the "flex" and "triton" backends; FlexAttention and Triton are imported on first use.
from . import flex, triton_shaw  # noqa: F401
from .api import (
    BACKENDS,
    FusedDropout,
    auto_backend,
    available_backends,
    backend_applies,
    register_backend,
    shaw_attention,
)
from .flex_bias import (
    RelativeScores,
    distance_bias_attention,
    expand_distance_bias,
    flex_bias_attention,
    gather_pair_scores,
    relative_distances,
)
from .index import RelativeIndex, relative_position_index, resolve_clipping, table_size
from .reference import masked_softmax, reference_attention
from .sdpa import reference_bias_attention, sdpa_attention

__all__ = [
    "BACKENDS",
    "FusedDropout",
    "auto_backend",
    "available_backends",
    "backend_applies",
    "register_backend",
    "shaw_attention",
    "distance_bias_attention",
    "expand_distance_bias",
    "flex_bias_attention",
    "gather_pair_scores",
    "relative_distances",
    "RelativeScores",
    "RelativeIndex",
    "relative_position_index",
    "resolve_clipping",
    "table_size",
    "masked_softmax",
    "reference_attention",
    "reference_bias_attention",
    "sdpa_attention",
]
