"""Position schemes: one file per scheme, each registered by name.

Importing this package registers every built-in scheme; ``get_scheme(name, **options)`` builds one.
"""

from .alibi import ALiBiBias, ALiBiScheme, alibi_slopes
from .base import (
    SCHEMES,
    AttentionPosition,
    DistanceBias,
    PairBias,
    PositionScheme,
    available_schemes,
    get_scheme,
    register_scheme,
)
from .deberta import DebertaScheme, DisentangledPosition, deberta_log_bucket, deberta_relative_rows
from .huang import HuangScheme
from .integer import IntegerPositions, IntegerScheme
from .learned import LearnedPositionEmbedding, LearnedScheme
from .none import NoPositionScheme
from .randomized import RandomizedPositions, RandomizedScheme, random_ordered_positions
from .rope import RoPEScheme, RotaryPosition, apply_rope, rope_angles, rope_frequencies
from .shaw import ShawRelativePosition, ShawScheme
from .sinusoidal import SinusoidalEncoding, SinusoidalScheme, sinusoidal_encoding
from .swin import (
    ContinuousWindowBias,
    WindowRelativeBias,
    shifted_window_mask,
    swin_relative_position_index,
    swin_v2_log_offsets,
    window_partition,
    window_reverse,
)
from .t5 import T5RelativeBias, T5Scheme, t5_relative_bucket
from .transformer_xl import TransformerXLPosition, TransformerXLScheme

__all__ = [
    "SCHEMES",
    "AttentionPosition",
    "DistanceBias",
    "PairBias",
    "PositionScheme",
    "available_schemes",
    "get_scheme",
    "register_scheme",
    "LearnedPositionEmbedding",
    "LearnedScheme",
    "NoPositionScheme",
    "RandomizedPositions",
    "RandomizedScheme",
    "random_ordered_positions",
    "ShawRelativePosition",
    "ShawScheme",
    "SinusoidalEncoding",
    "SinusoidalScheme",
    "sinusoidal_encoding",
    "ALiBiBias",
    "ALiBiScheme",
    "alibi_slopes",
    "DebertaScheme",
    "DisentangledPosition",
    "deberta_log_bucket",
    "deberta_relative_rows",
    "HuangScheme",
    "IntegerPositions",
    "IntegerScheme",
    "RoPEScheme",
    "RotaryPosition",
    "apply_rope",
    "rope_angles",
    "rope_frequencies",
    "WindowRelativeBias",
    "ContinuousWindowBias",
    "swin_v2_log_offsets",
    "swin_relative_position_index",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
    "T5RelativeBias",
    "T5Scheme",
    "t5_relative_bucket",
    "TransformerXLPosition",
    "TransformerXLScheme",
]
