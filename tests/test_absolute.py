"""Absolute encodings (sinusoidal, learned) and the scheme registry."""

from __future__ import annotations

import math

import pytest
import torch

import relpos
from relpos import (
    LearnedPositionEmbedding,
    ShawRelativePosition,
    SinusoidalEncoding,
    available_schemes,
    get_scheme,
    register_scheme,
    shaw_attention,
    sinusoidal_encoding,
)
from relpos.schemes import PositionScheme


def angle(position: int, pair: int, dim: int, base: float = 10000.0) -> float:
    return position / base ** (2 * pair / dim)


# --- sinusoidal -------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [8, 7, 1])
def test_sinusoidal_interleaved_matches_formula(dim):
    # Vaswani et al. Sec. 3.5: PE(p, 2t) = sin(p / 10000^(2t/d)), PE(p, 2t+1) = cos(...).
    positions = [0, 1, 2, 5, 17, 100]
    encoding = sinusoidal_encoding(torch.tensor(positions), dim)
    assert encoding.shape == (len(positions), dim) and encoding.dtype == torch.float32
    for row, p in enumerate(positions):
        for channel in range(dim):
            pair = channel // 2
            trig = math.sin if channel % 2 == 0 else math.cos
            expected = trig(angle(p, pair, dim))
            assert encoding[row, channel].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("dim", [8, 7, 2])
def test_sinusoidal_concat_matches_formula(dim):
    # All sines (one per frequency), then all cosines; an odd dim has one sine more.
    positions = [0, 3, 42]
    encoding = sinusoidal_encoding(torch.tensor(positions), dim, layout="concat")
    sines = (dim + 1) // 2
    assert encoding.shape == (3, dim)
    for row, p in enumerate(positions):
        for channel in range(dim):
            if channel < sines:
                expected = math.sin(angle(p, channel, dim))
            else:
                expected = math.cos(angle(p, channel - sines, dim))
            assert encoding[row, channel].item() == pytest.approx(expected, abs=1e-6)


def test_sinusoidal_layouts_are_permutations_of_each_other():
    positions = torch.arange(9)
    interleaved = sinusoidal_encoding(positions, 6)
    concat = sinusoidal_encoding(positions, 6, layout="concat")
    assert torch.equal(interleaved[:, [0, 2, 4, 1, 3, 5]], concat)
    assert not torch.equal(interleaved, concat)


def test_sinusoidal_base():
    encoding = sinusoidal_encoding(torch.tensor([3]), 4, base=100.0)
    assert encoding[0, 2].item() == pytest.approx(math.sin(3 / 100.0 ** (2 / 4)), abs=1e-6)


def test_sinusoidal_module_adds_encoding_with_offset():
    module = SinusoidalEncoding(6, layout="concat")
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    out = module(x, offset=5)
    assert out.dtype == torch.float64
    expected = x + sinusoidal_encoding(torch.arange(5, 9), 6, layout="concat").double()
    torch.testing.assert_close(out, expected)
    # Offset r + 5 is the same row as position r + 5 without offset.
    longer = module(torch.zeros(1, 9, 6))
    torch.testing.assert_close(module(torch.zeros(1, 4, 6), offset=5), longer[:, 5:])
    assert list(module.parameters()) == []


def test_sinusoidal_bad_input():
    with pytest.raises(
        ValueError, match=r"unknown layout 'split'; valid layouts: interleaved, concat"
    ):
        sinusoidal_encoding(torch.arange(3), 4, layout="split")
    with pytest.raises(ValueError, match=r"unknown layout 'split'"):
        SinusoidalEncoding(4, layout="split")
    with pytest.raises(ValueError, match=r"dim must be a positive int, got 0"):
        sinusoidal_encoding(torch.arange(3), 0)
    with pytest.raises(ValueError, match=r"dim must be a positive int, got 4.0"):
        sinusoidal_encoding(torch.arange(3), 4.0)
    with pytest.raises(ValueError, match=r"positions must be a 1-D tensor \(L,\), got \(2, 3\)"):
        sinusoidal_encoding(torch.zeros(2, 3), 4)
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, 8\), got \(1, 3, 6\)"):
        SinusoidalEncoding(8)(torch.zeros(1, 3, 6))


# --- learned ----------------------------------------------------------------------------------


def test_learned_adds_table_rows():
    torch.manual_seed(0)
    module = LearnedPositionEmbedding(6, 4)
    assert module.table.shape == (6, 4)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(module(x), x + module.table[:3])
    torch.testing.assert_close(module(x, offset=3), x + module.table[3:6])
    out = module(x)
    out.sum().backward()
    assert module.table.grad[:3].eq(2.0).all() and module.table.grad[3:].eq(0.0).all()


@pytest.mark.parametrize("length, offset, last", [(7, 0, 6), (2, 5, 6), (1, 6, 6), (3, 100, 102)])
def test_learned_past_max_len_is_a_clear_error(length, offset, last):
    module = LearnedPositionEmbedding(6, 4)
    with pytest.raises(ValueError) as error:
        module(torch.zeros(1, length, 4), offset=offset)
    message = str(error.value)
    assert f"position {last}" in message
    assert "max_len=6" in message
    assert "relative scheme" in message


def test_learned_at_the_last_position_works():
    module = LearnedPositionEmbedding(6, 4)
    torch.testing.assert_close(module(torch.zeros(1, 1, 4), offset=5)[0], module.table[5:].detach())


def test_learned_bad_input():
    with pytest.raises(ValueError, match=r"max_len must be a positive int, got 0"):
        LearnedPositionEmbedding(0, 4)
    with pytest.raises(ValueError, match=r"d_model must be a positive int, got 2.5"):
        LearnedPositionEmbedding(4, 2.5)
    module = LearnedPositionEmbedding(6, 4)
    with pytest.raises(ValueError, match=r"offset must be a non-negative int .*got -2"):
        module(torch.zeros(1, 3, 4), offset=-2)
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, 4\), got \(1, 3, 5\)"):
        module(torch.zeros(1, 3, 5))


def test_integer_positions_add_p_times_one_direction():
    """The seed's literal '0, 1, 2, …': row r at offset o gets (o + r) · w, with no length limit."""
    module = get_scheme("integer").input_encoding(4, max_len=8)
    x = torch.randn(2, 3, 4)
    out = module(x, offset=5)
    expected = x + torch.tensor([5.0, 6.0, 7.0])[:, None] * module.direction.detach()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert module(torch.zeros(1, 100, 4)).shape == (1, 100, 4)  # past max_len: no table to end
    with pytest.raises(ValueError, match=r"offset must be a non-negative int .*got -1"):
        module(x, offset=-1)
    out.sum().backward()
    assert module.direction.grad is not None


# --- registry ---------------------------------------------------------------------------------


def test_builtin_schemes_are_registered():
    assert {"none", "learned", "shaw", "sinusoidal"} <= set(available_schemes())
    assert available_schemes() == sorted(available_schemes())


def test_get_sinusoidal_and_learned():
    sinusoidal = get_scheme("sinusoidal", layout="concat")
    assert sinusoidal.absolute
    encoding = sinusoidal.input_encoding(8, max_len=16)
    assert isinstance(encoding, SinusoidalEncoding) and encoding.layout == "concat"
    assert sinusoidal.attention_position(2, 4, causal=False) is None

    learned = get_scheme("learned")
    assert learned.absolute
    table = learned.input_encoding(8, max_len=16)
    assert isinstance(table, LearnedPositionEmbedding) and table.max_len == 16
    assert get_scheme("learned", max_len=5).input_encoding(8, max_len=16).max_len == 5


def test_get_none():
    scheme = get_scheme("none")
    assert scheme.input_encoding(8, 16) is None
    assert scheme.attention_position(2, 4, causal=True) is None
    assert not scheme.absolute


def test_get_shaw_builds_tables_that_attend_like_shaw_attention():
    scheme = get_scheme("shaw", max_distance=3, per_head=True, value_term=False)
    assert scheme.input_encoding(8, 16) is None and not scheme.absolute
    layer = scheme.attention_position(2, 4, causal=False)
    assert isinstance(layer, ShawRelativePosition)
    assert layer.key_table.shape == (2, 7, 4) and layer.value_table is None
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 4, generator=gen) for _ in range(3))
    expected = shaw_attention(q, k, v, layer.key_table, None, max_distance=3)
    torch.testing.assert_close(layer.attend(q, k, v), expected)
    default = get_scheme("shaw").attention_position(2, 4, causal=False)
    assert default.key_table.shape == (33, 4) and default.value_table.shape == (33, 4)


def test_get_scheme_accepts_an_instance():
    scheme = get_scheme("shaw", max_distance=2)
    assert get_scheme(scheme) is scheme
    replaced = get_scheme(scheme, max_distance=5)
    assert replaced.max_distance == 5 and scheme.max_distance == 2


def test_unknown_scheme_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown position scheme 'rope2'; valid names: .*shaw"):
        get_scheme("rope2")


def test_unknown_option_lists_options():
    pattern = r"scheme 'shaw' has no option\(s\) distance; its options are: .*max_distance"
    with pytest.raises(ValueError, match=pattern):
        get_scheme("shaw", distance=4)
    with pytest.raises(ValueError, match=r"scheme 'none' has no option\(s\) k; .*\(none\)"):
        get_scheme("none", k=1)


def test_register_scheme_refuses_nameless_and_duplicate():
    class Nameless(PositionScheme):
        pass

    with pytest.raises(ValueError, match=r"Nameless needs a non-empty `name`"):
        register_scheme(Nameless)

    class Impostor(PositionScheme):
        name = "shaw"

    with pytest.raises(ValueError, match=r"a scheme named 'shaw' is already registered"):
        register_scheme(Impostor)
    assert relpos.schemes.SCHEMES["shaw"] is relpos.schemes.ShawScheme


@pytest.mark.parametrize("wrong", [3, relpos.schemes.ShawScheme(), dict])
def test_register_scheme_refuses_what_is_not_a_scheme_class(wrong):
    # An instance (register_scheme(MyScheme())) or any other object is named in the error,
    # not met with an AttributeError about `name`.
    before = dict(relpos.schemes.SCHEMES)
    with pytest.raises(TypeError, match="register_scheme takes a subclass of PositionScheme"):
        register_scheme(wrong)
    assert relpos.schemes.SCHEMES == before
