"""relpos: position representations for transformer attention.

Centred on Shaw, Uszkoreit & Vaswani (2018), "Self-Attention with Relative Position
Representations". Layers, from the bottom up:

* :mod:`relpos.attention` — backends that know only indices, tables and biases;
* :mod:`relpos.schemes` — position schemes, one file each, registered by name;
* :mod:`relpos.layers` — :class:`MultiheadAttention` with a key/value cache;
* ``relpos.models``, ``relpos.tasks``, ``relpos.cli`` — models, synthetic tasks, command line.
"""

from .attention import (
    RelativeIndex,
    available_backends,
    register_backend,
    relative_position_index,
    shaw_attention,
)
from .layers import KVCache, MultiheadAttention
from .schemes import (
    ALiBiBias,
    AttentionPosition,
    ContinuousWindowBias,
    DisentangledPosition,
    DistanceBias,
    LearnedPositionEmbedding,
    PairBias,
    PositionScheme,
    RotaryPosition,
    ShawRelativePosition,
    SinusoidalEncoding,
    T5RelativeBias,
    TransformerXLPosition,
    WindowRelativeBias,
    alibi_slopes,
    apply_rope,
    available_schemes,
    deberta_log_bucket,
    deberta_relative_rows,
    get_scheme,
    register_scheme,
    rope_frequencies,
    shifted_window_mask,
    sinusoidal_encoding,
    swin_relative_position_index,
    swin_v2_log_offsets,
    t5_relative_bucket,
    window_partition,
    window_reverse,
)

__version__ = "0.1.0"

__all__ = [
    "RelativeIndex",
    "available_backends",
    "register_backend",
    "relative_position_index",
    "shaw_attention",
    "KVCache",
    "MultiheadAttention",
    "AttentionPosition",
    "ContinuousWindowBias",
    "DisentangledPosition",
    "DistanceBias",
    "LearnedPositionEmbedding",
    "PairBias",
    "PositionScheme",
    "ShawRelativePosition",
    "SinusoidalEncoding",
    "available_schemes",
    "deberta_log_bucket",
    "deberta_relative_rows",
    "get_scheme",
    "register_scheme",
    "sinusoidal_encoding",
    "ALiBiBias",
    "RotaryPosition",
    "T5RelativeBias",
    "TransformerXLPosition",
    "WindowRelativeBias",
    "alibi_slopes",
    "apply_rope",
    "rope_frequencies",
    "swin_relative_position_index",
    "swin_v2_log_offsets",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
    "t5_relative_bucket",
    "__version__",
]
