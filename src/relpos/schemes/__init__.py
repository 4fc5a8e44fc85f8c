"""Position schemes: one file per scheme, each registered by name.

Importing this package registers every built-in scheme; ``get_scheme(name, **options)`` builds one.
"""

from .base import (
    SCHEMES,
    AttentionPosition,
    PositionScheme,
    available_schemes,
    get_scheme,
    register_scheme,
)
from .learned import LearnedPositionEmbedding, LearnedScheme
from .none import NoPositionScheme
from .shaw import ShawRelativePosition, ShawScheme
from .sinusoidal import SinusoidalEncoding, SinusoidalScheme, sinusoidal_encoding

__all__ = [
    "SCHEMES",
    "AttentionPosition",
    "PositionScheme",
    "available_schemes",
    "get_scheme",
    "register_scheme",
    "LearnedPositionEmbedding",
    "LearnedScheme",
    "NoPositionScheme",
    "ShawRelativePosition",
    "ShawScheme",
    "SinusoidalEncoding",
    "SinusoidalScheme",
    "sinusoidal_encoding",
]
