"""Small transformer models that take a position scheme by name: ``build_model(config, vocab)``."""

from .config import ACTIVATIONS, ARCHS, ModelConfig, build_model
from .transformer import (
    Block,
    DecoderOnly,
    EncoderDecoder,
    EncoderOnly,
    FeedForward,
    Stack,
    greedy_decode,
)

__all__ = [
    "ACTIVATIONS",
    "ARCHS",
    "ModelConfig",
    "build_model",
    "Block",
    "DecoderOnly",
    "EncoderDecoder",
    "EncoderOnly",
    "FeedForward",
    "Stack",
    "greedy_decode",
]
