"""Randomized positions (Ruoss et al. 2023): the draw, the encoding it indexes, the models' use."""

import itertools
import math

import pytest
import torch

import relpos
from relpos.models import ModelConfig, build_model
from relpos.schemes import RandomizedPositions, random_ordered_positions
from relpos.schemes.sinusoidal import sinusoidal_encoding


def test_a_draw_is_increasing_distinct_in_range_and_zero_past_each_length():
    torch.manual_seed(0)
    lengths = torch.tensor([0, 1, 3, 5, 5])
    positions = random_ordered_positions(lengths, 5, 7)
    assert positions.shape == (5, 5) and positions.dtype == torch.long
    for row, n in zip(positions.tolist(), lengths.tolist(), strict=True):
        drawn = row[:n]
        assert drawn == sorted(set(drawn)), row  # strictly increasing
        assert all(0 <= p < 7 for p in drawn)
        assert row[n:] == [0] * (5 - n)


def test_every_ordered_subset_is_equally_likely():
    # 3 positions out of [0, 5): C(5, 3) = 10 subsets, each drawn with probability 1/10. With
    # 20,000 draws a count's standard deviation is sqrt(20000 · 0.1 · 0.9) ≈ 42, and 250 is
    # six of them: a bias toward small positions (a draw that kept consecutive runs, or the
    # first n of a larger draw) moves counts by thousands.
    torch.manual_seed(1)
    positions = random_ordered_positions(torch.full((20_000,), 3), 3, 5)
    counts = {tuple(c): 0 for c in itertools.combinations(range(5), 3)}
    for row in positions.tolist():
        counts[tuple(row)] += 1
    assert len(counts) == math.comb(5, 3)
    assert all(abs(count - 2_000) < 250 for count in counts.values()), counts


def test_a_draw_follows_the_generator():
    draw = lambda seed: random_ordered_positions(  # noqa: E731
        torch.tensor([4, 2]), 4, 50, generator=torch.Generator().manual_seed(seed)
    )
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def test_a_draw_refuses_more_tokens_than_positions_and_bad_lengths():
    with pytest.raises(ValueError, match="needs 9 distinct positions, but max_position=8"):
        random_ordered_positions(torch.tensor([9]), 9, 8)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\], got \[5\]"):
        random_ordered_positions(torch.tensor([5]), 4, 8)
    with pytest.raises(ValueError, match="lengths must be a 1-D int tensor"):
        random_ordered_positions(torch.tensor([2.0]), 4, 8)
    with pytest.raises(ValueError, match="max_position must be an int >= 1, got True"):
        random_ordered_positions(torch.tensor([1]), 1, True)


@pytest.mark.parametrize("encoding", ["sinusoidal", "learned"])
def test_the_module_adds_the_encoding_of_the_drawn_positions(encoding):
    # Same seed, same draw: the module's output minus x is the table read at the positions the
    # function draws, row by row, padding rows drawing for their own length.
    module = RandomizedPositions(8, 20, encoding).double()
    x = torch.randn(3, 6, 8, dtype=torch.float64)
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[1, 4:] = True
    padding[2, 1:] = True
    torch.manual_seed(7)
    out = module(x, padding=padding)
    torch.manual_seed(7)
    positions = random_ordered_positions(torch.tensor([6, 4, 1]), 6, 20)
    table = module.table.double()
    if encoding == "sinusoidal":
        torch.testing.assert_close(table, sinusoidal_encoding(torch.arange(20), 8).double())
    torch.testing.assert_close(out - x, table[positions])
    assert positions[1, :4].max() < 20 and positions[2, 0] >= 0


def test_the_sinusoids_are_not_saved_and_the_learned_table_is():
    assert RandomizedPositions(4, 10).state_dict() == {}
    learned = RandomizedPositions(4, 10, "learned")
    assert list(learned.state_dict()) == ["learned.table"]
    assert learned.table.requires_grad and learned.table.shape == (10, 4)


def test_the_module_draws_again_in_evaluation_mode():
    # As the authors' code does: the model never meets consecutive positions.
    module = RandomizedPositions(4, 1000).eval()
    x = torch.zeros(1, 5, 4)
    assert not torch.equal(module(x), module(x))


def test_the_module_keeps_a_half_precision_dtype():
    out = RandomizedPositions(8, 16)(torch.zeros(2, 5, 8, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.abs().sum() > 0


def test_the_module_refuses_what_it_cannot_draw_for():
    module = RandomizedPositions(4, 8)
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, 4\), got \(2, 4\)"):
        module(torch.zeros(2, 4))
    with pytest.raises(
        ValueError, match=r"offset must be 0 for randomized positions outside fixed\(\), got 2"
    ):
        module(torch.zeros(1, 1, 4), offset=2)
    with pytest.raises(ValueError, match="offset must be 0 .* got True"):
        module(torch.zeros(1, 1, 4), offset=True)
    with pytest.raises(ValueError, match="needs 9 distinct positions, but max_position=8"):
        module(torch.zeros(1, 9, 4))
    with pytest.raises(ValueError, match=r"padding must be a bool tensor of shape \(1, 3\)"):
        module(torch.zeros(1, 3, 4), padding=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="unknown encoding 'rope'; valid: sinusoidal, learned"):
        RandomizedPositions(4, 8, "rope")
    with pytest.raises(ValueError, match="d_model must be a positive int, got 0"):
        RandomizedPositions(0, 8)


def test_the_scheme_checks_its_options_and_defaults_to_the_models_length():
    with pytest.raises(ValueError, match="unknown encoding 'integer'"):
        relpos.get_scheme("randomized", encoding="integer")
    with pytest.raises(ValueError, match="max_position must be an int >= 1, got 0"):
        relpos.get_scheme("randomized", max_position=0)
    assert relpos.get_scheme("randomized").input_encoding(8, max_len=33).max_position == 33
    scheme = relpos.get_scheme("randomized", max_position=40, encoding="learned")
    module = scheme.input_encoding(8, max_len=33)
    assert (module.max_position, module.encoding) == (40, "learned")
    assert scheme.absolute


def test_an_encoder_draws_each_rows_positions_for_its_own_length():
    # The encoder passes its padding down: a row of 2 real tokens padded to 6 gets a 2-subset of
    # [0, L), not the first two of a 6-subset (which would favour small positions). With L = 8,
    # the first of 2 drawn positions is 0 with probability 2/8; the first of 6 with 6/8.
    config = ModelConfig(
        arch="encoder", d_model=8, num_heads=2, num_layers=1, d_ff=16, dropout=0.0,
        scheme="randomized", scheme_options={"max_position": 8}, max_len=8,
    )  # fmt: skip
    model = build_model(config, 10)
    seen = []
    model.encoder.input_encoding.register_forward_hook(
        lambda module, args, out: seen.append(out - args[0])
    )
    tokens = torch.randint(4, 10, (400, 6))
    padding = torch.zeros(400, 6, dtype=torch.bool)
    padding[:, 2:] = True
    torch.manual_seed(0)
    model(tokens, padding)
    first = seen[0][:, 0]  # (400, 8): the encoding added to each row's first token
    at_zero = (first - model.encoder.input_encoding.table[0]).abs().sum(-1) < 1e-6
    assert 0.15 < at_zero.float().mean().item() < 0.35  # 2/8 = 0.25, not 6/8


def test_inside_fixed_calls_in_pieces_read_one_draw():
    module = RandomizedPositions(6, 30).double()
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    with module.fixed(2, 7) as positions:
        whole = module(x)
        pieces = torch.cat([module(x[:, :3]), module(x[:, 3:4], offset=3), module(x[:, 4:], 4)], 1)
        again = module(x)
    assert positions.shape == (2, 7) and module._fixed is None
    torch.testing.assert_close(pieces, whole)
    torch.testing.assert_close(again, whole)
    torch.testing.assert_close(whole - x, module.table.double()[positions])


def test_fixed_refuses_calls_outside_its_draw_and_nesting():
    module = RandomizedPositions(4, 30)
    with module.fixed(2, 5):
        with pytest.raises(ValueError, match=r"drew positions for 2 rows of 5 tokens; .*3 rows"):
            module(torch.zeros(3, 1, 4))
        with pytest.raises(ValueError, match=r"this call asks for 2 rows, tokens 4\.\.5"):
            module(torch.zeros(2, 2, 4), offset=4)
        with pytest.raises(ValueError, match="offset must be a non-negative int .* got -1"):
            module(torch.zeros(2, 1, 4), offset=-1)
        with pytest.raises(RuntimeError, match="already active"):
            with module.fixed(2, 5):
                pass
    with module.fixed(1, 31) as positions:  # a budget above L: all of [0, L), in order
        assert positions.tolist() == [list(range(30))]
        with pytest.raises(ValueError, match=r"drew positions for 1 rows of 30 tokens"):
            module(torch.zeros(1, 31, 4))
    assert module._fixed is None


@pytest.mark.parametrize("arch", ["encoder-decoder", "decoder"])
def test_generate_draws_once_for_the_tokens_it_feeds(arch, monkeypatch):
    # Training feeds BOS T (encoder-decoder) or S SEP T (decoder) to the decoder: generate()
    # fixes one draw for as many tokens, max_new_tokens for BOS and all but the last generated
    # token, or the prompt plus max_new_tokens - 1.
    config = ModelConfig(
        arch=arch, d_model=8, num_heads=2, num_layers=1, d_ff=16, dropout=0.0,
        scheme="randomized", scheme_options={"max_position": 40}, max_len=40,
    )  # fmt: skip
    model = build_model(config, 10).eval()
    module = model.decoder.input_encoding
    draws, fixed = [], module.fixed

    def recording(batch, width, device):
        draws.append((batch, width))
        return fixed(batch, width, device)

    monkeypatch.setattr(module, "fixed", recording)
    source = torch.randint(4, 10, (3, 5))
    if arch == "encoder-decoder":
        out = model.generate(source, bos=1, eos=None, max_new_tokens=6)
        assert draws == [(3, 6)]
    else:
        out = model.generate(source, eos=None, max_new_tokens=6)
        assert draws == [(3, 5 + 6 - 1)]
    assert out.shape == (3, 6)
