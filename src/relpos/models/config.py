"""``ModelConfig`` and ``build_model``: the one place a model's size and position scheme are chosen.

The defaults are Ontañón et al. (2022)'s small encoder-decoder (2 layers, d = 64, 4 heads,
feed-forward 256, dropout 0.1), the size at which they compared absolute and relative positions on
algorithmic tasks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from torch import nn

from ..schemes import SCHEMES, PositionScheme, get_scheme

__all__ = ["ModelConfig", "build_model", "json_options", "ARCHS", "ACTIVATIONS"]

#: the three architectures; see :mod:`relpos.models.transformer`.
ARCHS = ("encoder-decoder", "decoder", "encoder")
ACTIVATIONS = ("relu", "gelu")


def json_options(options: object, name: str) -> dict:
    """``options`` as a saved ``config.json`` gives them back: JSON values, with tuples and
    ranges as lists. A config then equals itself after the round trip (resume compares the two),
    and a value JSON cannot hold fails here, not after the run folder exists."""
    if not isinstance(options, dict):
        raise TypeError(f"{name} must be a dict, got {type(options).__name__}")

    def plain(value: object, where: str) -> object:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple, range)):
            return [plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            return {key: plain(item, f"{where}.{key}") for key, item in value.items()}
        raise TypeError(
            f"{name}: {where} must be a JSON value (None, bool, number, str, list, dict with str "
            f"keys), got {type(value).__name__} {value!r:.60}"
        )

    for key in options:
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be str, got {key!r}")
    return {key: plain(value, key) for key, value in options.items()}


@dataclass
class ModelConfig:
    """Size, architecture and position scheme of a model (``build_model(config, vocab_size)``)."""

    arch: str = "encoder-decoder"  # "encoder-decoder" | "decoder" | "encoder"
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2  # per stack: an encoder-decoder has 2 encoder + 2 decoder layers
    d_ff: int = 256
    dropout: float = 0.1  # on embeddings, residual branches (and attention weights, see below)
    # on attention weights; None: the same as dropout (on a GPU the Triton kernels draw it)
    attention_dropout: float | None = None
    scheme: str = "shaw"
    # passed to relpos.get_scheme(scheme, **scheme_options), e.g. {"max_distance": 4}
    scheme_options: dict = field(default_factory=dict)
    # rows of a learned absolute table; it must cover the longest *evaluation* sequence, so the
    # rows past the training lengths exist but are never trained (that is what is being tested)
    max_len: int = 512
    activation: str = "relu"  # Vaswani et al. and Ontañón et al. used ReLU
    # output projection = token embedding (Press & Wolf 2017): a third fewer parameters here
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}; got {self.arch!r}")
        for name in ("d_model", "num_heads", "num_layers", "d_ff", "max_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})"
            )
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if name == "attention_dropout" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a float in [0, 1), got {value!r}")
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a float in [0, 1), got {value!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise TypeError(f"tie_embeddings must be a bool, got {self.tie_embeddings!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(ACTIVATIONS)}; got {self.activation!r}"
            )
        if isinstance(self.scheme, PositionScheme):
            if type(self.scheme) is SCHEMES.get(self.scheme.name):
                # A registered scheme's instance is kept as its name and options: config.json
                # then names it, and load_run / predict / resume read the same scheme back.
                own = {
                    f.name: getattr(self.scheme, f.name)
                    for f in dataclasses.fields(self.scheme)
                    if f.init
                }
                self.scheme_options = {**own, **self.scheme_options}
                self.scheme = self.scheme.name
            # else: an unregistered class builds models, but cannot be saved (to_dict refuses)
        elif not isinstance(self.scheme, str):
            raise TypeError(
                "scheme must be a scheme name or a PositionScheme, got "
                f"{type(self.scheme).__name__}"
            )
        self.scheme_options = json_options(self.scheme_options, "scheme_options")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def attention_dropout_p(self) -> float:
        """The dropout on attention weights: ``attention_dropout``, else ``dropout``."""
        return self.dropout if self.attention_dropout is None else self.attention_dropout

    def to_dict(self) -> dict:
        if isinstance(self.scheme, PositionScheme):
            raise TypeError(
                f"scheme {type(self.scheme).__name__} is not a registered scheme, so a saved "
                "config could not name it; register the class with relpos.register_scheme and "
                "pass its name"
            )
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"ModelConfig has no field(s) {', '.join(unknown)}; its fields are: "
                f"{', '.join(sorted(known))}"
            )
        return cls(**values)


def build_model(config: ModelConfig, vocab_size: int) -> nn.Module:
    """Build the model ``config.arch`` names, with ``vocab_size`` tokens (special tokens included).

    The scheme comes from the registry,
    ``relpos.get_scheme(config.scheme, **config.scheme_options)``; an unknown name raises a
    ``ValueError`` listing the valid ones.
    """
    from .transformer import DecoderOnly, EncoderDecoder, EncoderOnly

    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= 0:
        raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
    scheme = get_scheme(config.scheme, **config.scheme_options)
    classes = {"encoder-decoder": EncoderDecoder, "decoder": DecoderOnly, "encoder": EncoderOnly}
    return classes[config.arch](config, vocab_size, scheme)
