"""The position-scheme family against its formulas (``shared/reference/family.md``), known values,
and every scheme's contract with the models: gradients, fused == manual path, cached decoding."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import relpos
from relpos.schemes.rope import rope_angles

# ---------------------------------------------------------------------------------------------
# T5 buckets


def plain_t5_bucket(n: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """The bucketing of family.md, one integer at a time, in plain Python floats."""
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        if n > 0:
            bucket = num_buckets
        n = abs(n)
    else:
        n = max(-n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return bucket + n
    scaled = math.log(n / max_exact) / math.log(max_distance / max_exact)
    return bucket + min(max_exact + math.floor(scaled * (num_buckets - max_exact)), num_buckets - 1)


T5_CONFIGS = [
    (True, 32, 128),  # T5's defaults (encoder)
    (False, 32, 128),  # T5's defaults (decoder)
    (True, 16, 64),
    (False, 8, 20),
    (True, 64, 256),
    (True, 10, 50),  # max_exact = 2
    (False, 2, 5),  # the smallest causal table
    (True, 33, 100),  # odd: T5's integer halving leaves the last bucket unused
]


@pytest.mark.parametrize("bidirectional, num_buckets, max_distance", T5_CONFIGS)
def test_t5_bucket_matches_formula_for_every_integer(bidirectional, num_buckets, max_distance):
    distances = torch.arange(-300, 301)
    got = relpos.t5_relative_bucket(
        distances, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance
    )
    expected = [
        plain_t5_bucket(n, bidirectional, num_buckets, max_distance) for n in distances.tolist()
    ]
    assert got.dtype == torch.long
    assert got.tolist() == expected
    assert got.min() >= 0 and got.max() < num_buckets


def test_t5_bucket_known_values_at_boundaries():
    def bucket(n, **kw):
        return relpos.t5_relative_bucket(torch.tensor([n]), **kw).item()

    # Defaults, bidirectional: 16 buckets per side, 8 exact; log buckets reach 15 at distance 128.
    for n, expected in [
        (0, 0),
        (-1, 1),
        (1, 17),
        (-7, 7),
        (-8, 8),
        (8, 24),
        (-15, 9),
        (-16, 10),  # log(2)/log(16)·8 = 2 exactly
        (-127, 15),
        (-128, 15),
        (128, 31),
        (-(10**9), 15),
        (10**9, 31),
    ]:
        assert bucket(n) == expected, n
    # Causal: later keys share bucket 0; 16 exact distances, the rest logarithmic up to 128.
    for n, expected in [(5, 0), (0, 0), (-3, 3), (-15, 15), (-16, 16), (-128, 31), (-(10**9), 31)]:
        assert bucket(n, bidirectional=False) == expected, n


def test_t5_bucket_is_monotone_in_distance():
    distances = torch.arange(0, 5000)
    for sign in (1, -1):
        buckets = relpos.t5_relative_bucket(sign * distances)
        assert bool((buckets[1:] >= buckets[:-1]).all())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(relative_position=torch.tensor([1.0])), TypeError, "integer tensor"),
        (dict(relative_position=[1, 2]), TypeError, "torch.Tensor"),
        (dict(num_buckets=3), ValueError, "num_buckets must be >= 4"),
        (dict(num_buckets=32, max_distance=8), ValueError, "max_distance must be >"),
        (dict(num_buckets=32.0), TypeError, "num_buckets must be an int"),
        (dict(bidirectional=1), TypeError, "bidirectional must be a bool"),
    ],
)
def test_t5_bucket_bad_input(kwargs, error, match):
    kwargs = {"relative_position": torch.arange(3), **kwargs}
    position = kwargs.pop("relative_position")
    with pytest.raises(error, match=match):
        relpos.t5_relative_bucket(position, **kwargs)


def test_t5_bias_reads_bucket_weights_with_offsets():
    bias = relpos.T5RelativeBias(3, num_buckets=8, max_distance=20)
    dense = bias.bias(4, 9, query_offset=5, key_offset=2)  # (H, Lq, Lk)
    i = torch.arange(4)[:, None] + 5
    j = torch.arange(9)[None, :] + 2
    buckets = relpos.t5_relative_bucket(j - i, num_buckets=8, max_distance=20)
    expected = bias.bucket_weights[buckets].permute(2, 0, 1)
    assert torch.equal(dense, expected)


def test_t5_scheme_is_shared_and_follows_causality():
    scheme = relpos.get_scheme("t5", num_buckets=16)
    assert scheme.shared_across_layers
    assert scheme.attention_position(2, 8, causal=True).bidirectional is False
    assert scheme.attention_position(2, 8, causal=False).bidirectional is True
    assert (
        relpos.get_scheme("t5", bidirectional=True)
        .attention_position(2, 8, causal=True)
        .bidirectional
    )
    with pytest.raises(ValueError, match="max_distance"):
        relpos.get_scheme("t5", num_buckets=32, max_distance=4)


# ---------------------------------------------------------------------------------------------
# ALiBi


def test_alibi_slopes_8_heads():
    assert relpos.alibi_slopes(8).tolist() == [2.0**-k for k in range(1, 9)]


def test_alibi_slopes_12_heads():
    # The 8 slopes for 8 heads, then every other slope for 16 heads (2^-0.5, 2^-1.5, ...).
    expected = [2.0**-k for k in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5]
    got = relpos.alibi_slopes(12, dtype=torch.float64)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-15, atol=0)
    assert torch.equal(relpos.alibi_slopes(12), torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize(
    "heads, expected",
    [
        (1, [2.0**-8]),
        (2, [2.0**-4, 2.0**-8]),
        (6, [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]),
        (16, [2.0 ** (-k / 2) for k in range(1, 17)]),
    ],
)
def test_alibi_slopes_other_head_counts(heads, expected):
    assert torch.allclose(
        relpos.alibi_slopes(heads, dtype=torch.float64),
        torch.tensor(expected, dtype=torch.float64),
        rtol=1e-15,
        atol=0,
    )


@pytest.mark.parametrize("heads", [0, -2, 2.0, True])
def test_alibi_slopes_bad_heads(heads):
    with pytest.raises(ValueError, match="num_heads"):
        relpos.alibi_slopes(heads)


@pytest.mark.parametrize("causal", [False, True])
def test_alibi_bias_formula(causal):
    alibi = relpos.ALiBiBias(4, causal=causal)
    dense = alibi.bias(3, 6, query_offset=4, key_offset=1)  # (H, Lq, Lk)
    slopes = relpos.alibi_slopes(4)
    for h in range(4):
        for r in range(3):
            for c in range(6):
                i, j = 4 + r, 1 + c
                expected = slopes[h] * (j - i) if causal else -slopes[h] * abs(i - j)
                assert dense[h, r, c].item() == pytest.approx(expected.item(), abs=1e-6)
    assert list(alibi.parameters()) == []


@pytest.mark.parametrize("name", ["t5", "alibi"])
def test_distance_bias_attend_names_a_3d_query_as_such(name):
    # A (H, L, D) query once read as "query has L heads": its length taken for the head count.
    position = relpos.get_scheme(name).attention_position(4, 8, causal=False)
    q = torch.randn(4, 6, 8)
    with pytest.raises(ValueError, match="query must have 4 dimensions"):
        position.attend(q, q, q)


# ---------------------------------------------------------------------------------------------
# RoPE


def complex_rope(x, positions, layout, base=10000.0):
    """RoPE as multiplication of channel pairs, seen as complex numbers, by e^{i p θ_t}."""
    d = x.shape[-1]
    theta = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rotation = torch.polar(
        torch.ones(len(positions), d // 2, dtype=torch.float64), positions.double()[:, None] * theta
    )
    if layout == "interleaved":
        pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], d // 2, 2).contiguous())
        return torch.view_as_real(pairs * rotation).flatten(-2)
    pairs = torch.complex(x[..., : d // 2], x[..., d // 2 :])
    rotated = pairs * rotation
    return torch.cat((rotated.real, rotated.imag), dim=-1)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_rope_matches_complex_rotation(layout):
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    got = relpos.apply_rope(x, offset=7, layout=layout)
    assert torch.allclose(got, complex_rope(x, torch.arange(5) + 7, layout), atol=1e-12)


def test_rope_layouts_differ_only_by_channel_order():
    x = torch.randn(4, 6, dtype=torch.float64)
    half_order = torch.cat((torch.arange(0, 6, 2), torch.arange(1, 6, 2)))  # interleaved -> half
    interleaved = relpos.apply_rope(x, layout="interleaved")
    half = relpos.apply_rope(x[:, half_order], layout="half")
    assert torch.allclose(interleaved[:, half_order], half, atol=1e-12)
    assert not torch.allclose(interleaved, relpos.apply_rope(x, layout="half"))


@settings(max_examples=25, deadline=None)
@given(
    p=st.integers(-50, 500),
    s=st.integers(-50, 500),
    shift=st.integers(-200, 2000),
    layout=st.sampled_from(["interleaved", "half"]),
    seed=st.integers(0, 2**16),
)
def test_rope_logit_depends_only_on_distance(p, s, shift, layout, seed):
    generator = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, 1, 16, dtype=torch.float64, generator=generator)

    def logit(query_pos, key_pos):
        rotated_q = relpos.apply_rope(q, positions=torch.tensor([query_pos]), layout=layout)
        rotated_k = relpos.apply_rope(k, positions=torch.tensor([key_pos]), layout=layout)
        return (rotated_q * rotated_k).sum().item()

    assert logit(p, s) == pytest.approx(logit(p + shift, s + shift), abs=1e-9)
    assert logit(p, s) == pytest.approx(
        (q * relpos.apply_rope(k, positions=torch.tensor([s - p]), layout=layout)).sum().item(),
        abs=1e-9,
    )


def test_rope_offset_continues_the_sequence():
    x = torch.randn(1, 2, 10, 8)
    full = relpos.apply_rope(x, layout="half")
    assert torch.allclose(relpos.apply_rope(x[:, :, 6:], offset=6, layout="half"), full[:, :, 6:])


def test_rope_linear_scaling_divides_positions():
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    scaled = relpos.apply_rope(x, offset=3, scaling="linear", scaling_factor=4.0)
    by_hand = relpos.apply_rope(x, positions=(torch.arange(6) + 3) / 4.0)
    assert torch.allclose(scaled, by_hand, atol=1e-12)
    assert not torch.allclose(scaled, relpos.apply_rope(x, offset=3))


def test_rope_ntk_scaling_raises_the_base():
    d, s = 16, 8.0
    ntk = relpos.rope_frequencies(d, scaling="ntk", scaling_factor=s)
    expected = relpos.rope_frequencies(d, base=10000.0 * s ** (d / (d - 2)))
    assert torch.allclose(ntk, expected, rtol=1e-14)
    plain = relpos.rope_frequencies(d)
    assert ntk[0] == plain[0] == 1.0  # the fastest pair is untouched ...
    assert ntk[-1].item() == pytest.approx(plain[-1].item() / s, rel=1e-12)  # ... the slowest / s
    angles = rope_angles(torch.tensor([3]), d, scaling="ntk", scaling_factor=s)
    assert torch.allclose(angles[0], 3 * ntk)


def test_yarn_ramp_known_values_for_a_llama_sized_head():
    # d = 128, base 10^4, trained on 4,096: pair t turns 4096·θ_t/2π times. 32 turns at
    # t = 128·ln(4096/64π)/(2 ln 10^4) = 20.94, one turn at t = 45.03: the ramp runs from pair
    # floor(20.94) = 20 to ceil(45.03) = 46, so pair 33 is halfway.
    ramp = relpos.schemes.rope.yarn_ramp(128, base=10000.0, original_max_len=4096)
    assert ramp.shape == (64,)
    assert ramp[[0, 20, 33, 46, 63]].tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


@pytest.mark.parametrize("d, length, s", [(128, 4096, 4.0), (64, 2048, 8.0), (16, 64, 2.0)])
def test_yarn_keeps_fast_pairs_and_interpolates_slow_ones(d, length, s):
    plain = relpos.rope_frequencies(d)
    yarn = relpos.rope_frequencies(d, scaling="yarn", scaling_factor=s, original_max_len=length)
    turns = length * plain / (2 * math.pi)  # over the training context
    ramp = (plain - yarn) / (plain - plain / s)  # 0: kept, 1: divided by s
    kept, divided = ramp.abs() < 1e-12, (ramp - 1).abs() < 1e-12
    assert kept[turns >= 32].all() and divided[turns <= 1].all()
    # A kept pair turns >= 32 times, unless the ramp starts at pair 0 (d = 16: pair 0 turns 10).
    assert (turns[1:][kept[1:]] >= 32).all()
    assert (turns[divided] <= 1).all()
    steps = ramp.diff()
    assert (steps >= 0).all()  # monotone, and linear between its ends:
    rising = steps[steps > 1e-12]
    assert torch.allclose(rising, rising[0].expand_as(rising))


def test_yarn_scales_cos_and_sin_and_keeps_logits_relative():
    s, d = 4.0, 16
    options = dict(scaling="yarn", scaling_factor=s, original_max_len=32)
    factor = 0.1 * math.log(s) + 1
    assert relpos.schemes.rope.yarn_attention_factor(s) == pytest.approx(factor)
    x = torch.randn(3, d, dtype=torch.float64)
    assert torch.allclose(relpos.apply_rope(x, positions=torch.zeros(3), **options), x * factor)
    q, k = torch.randn(2, 1, d, dtype=torch.float64)

    def logit(p, t):
        rq = relpos.apply_rope(q, positions=torch.tensor([p]), **options)
        rk = relpos.apply_rope(k, positions=torch.tensor([t]), **options)
        return (rq * rk).sum().item()

    assert logit(5, 40) == pytest.approx(logit(105, 140), abs=1e-9)
    assert logit(0, 0) == pytest.approx(factor**2 * (q * k).sum().item())
    position = relpos.get_scheme("rope", **options).attention_position(2, d, causal=True)
    assert position.original_max_len == 32 and "original_max_len=32" in repr(position)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layout="rotated"), "unknown RoPE layout 'rotated'"),
        (dict(scaling="dynamic", scaling_factor=2.0), "unknown RoPE scaling 'dynamic'"),
        (dict(scaling="yarn", scaling_factor=2.0), "scaling='yarn' needs original_max_len"),
        (dict(scaling="yarn", original_max_len=0), "needs original_max_len.*got 0"),
        (dict(scaling="ntk", original_max_len=16), "only used by scaling='yarn'"),
        (dict(scaling_factor=2.0), "has no effect without scaling"),
        (dict(scaling="linear", scaling_factor=0.0), "scaling_factor must be a number > 0"),
        (dict(base=1.0), "base must be a number > 1"),
    ],
)
def test_rope_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        relpos.apply_rope(torch.randn(3, 8), **kwargs)
    with pytest.raises(ValueError, match=match):
        relpos.RotaryPosition(8, **kwargs)


def test_rope_odd_head_size_is_refused():
    with pytest.raises(ValueError, match="head_dim must be even"):
        relpos.apply_rope(torch.randn(3, 7))
    with pytest.raises(ValueError, match="head_dim must be even"):
        relpos.get_scheme("rope").attention_position(2, 5, causal=True)
    with pytest.raises(ValueError, match="unknown RoPE layout"):
        relpos.get_scheme("rope", layout="neox")
    with pytest.raises(ValueError, match="NTK-aware scaling needs head_dim > 2"):
        relpos.rope_frequencies(2, scaling="ntk", scaling_factor=2.0)


# ---------------------------------------------------------------------------------------------
# Huang et al. (method 4)


def test_huang_method_4_formula():
    torch.manual_seed(0)
    position = relpos.get_scheme("huang", max_distance=3).attention_position(2, 4, causal=False)
    q, k, v = torch.randn(3, 1, 2, 5, 4, dtype=torch.float64)
    table = position.key_table.detach().double()  # (2k + 1, D), shared by the heads
    got = position.attend(q, k, v)
    logits = torch.empty(1, 2, 5, 5, dtype=torch.float64)
    for i in range(5):
        for j in range(5):
            a = table[max(-3, min(3, j - i)) + 3]
            logits[..., i, j] = (
                (q[..., i, :] * k[..., j, :]).sum(-1) + q[..., i, :] @ a + k[..., j, :] @ a
            ) / 2.0
    expected = torch.softmax(logits, dim=-1) @ v
    assert torch.allclose(got, expected, atol=1e-12)
    assert position.value_table is None
    method_3 = relpos.get_scheme("huang", key_query=False).attention_position(2, 4, causal=False)
    assert not method_3.key_query


def test_huang_with_shaws_value_term():
    torch.manual_seed(1)
    scheme = relpos.get_scheme("huang", max_distance=2, per_head=True, value_term=True)
    position = scheme.attention_position(2, 4, causal=False).double()
    q, k, v = torch.randn(3, 1, 2, 5, 4, dtype=torch.float64)
    a, a_v = position.key_table.detach(), position.value_table.detach()  # (H, 2k + 1, D) each
    rows = [[max(-2, min(2, j - i)) + 2 for j in range(5)] for i in range(5)]
    logits = torch.empty(1, 2, 5, 5, dtype=torch.float64)
    for i in range(5):
        for j in range(5):
            r = a[:, rows[i][j]]  # (H, D)
            logits[..., i, j] = (
                (q[..., i, :] * (k[..., j, :] + r)).sum(-1) + (k[..., j, :] * r).sum(-1)
            ) / 2.0
    weights = torch.softmax(logits, dim=-1)
    expected = weights @ v + torch.einsum("bhij,hijd->bhid", weights, a_v[:, torch.tensor(rows)])
    for backend in ("auto", "reference"):
        torch.testing.assert_close(position.attend(q, k, v, backend=backend), expected)
    with pytest.raises(TypeError, match="value_term must be a bool"):
        relpos.get_scheme("huang", value_term="yes")


# ---------------------------------------------------------------------------------------------
# Swin


def test_swin_index_2x2():
    assert relpos.swin_relative_position_index(2, 2).tolist() == [
        [4, 3, 1, 0],
        [5, 4, 2, 1],
        [7, 6, 4, 3],
        [8, 7, 5, 4],
    ]


def test_swin_index_7x7_properties():
    index = relpos.swin_relative_position_index(7, 7)
    assert index.shape == (49, 49) and index.dtype == torch.long
    assert index.min() == 0 and index.max() == 168
    assert bool((index.diagonal() == 84).all())
    assert torch.equal(index + index.T, torch.full_like(index, 168))  # (dy, dx) -> (-dy, -dx)
    assert len(index.unique()) == 13 * 13


def test_swin_index_matches_formula_for_a_rectangular_window():
    wh, ww = 3, 4
    index = relpos.swin_relative_position_index(wh, ww)
    for a in range(wh * ww):
        for b in range(wh * ww):
            dy, dx = a // ww - b // ww, a % ww - b % ww
            assert index[a, b] == (dy + wh - 1) * (2 * ww - 1) + (dx + ww - 1)


def test_window_bias_in_multihead_attention():
    torch.manual_seed(0)
    bias = relpos.WindowRelativeBias((2, 3), num_heads=2)
    assert bias.bias_table.shape == (3 * 5, 2)
    assert "rel_index" not in bias.state_dict()  # derived, not saved
    dense = bias.bias()
    assert torch.equal(dense[1], bias.bias_table[:, 1][bias.rel_index])
    attn = relpos.MultiheadAttention(8, 2, position=bias).double()
    windows = torch.randn(5, 6, 8, dtype=torch.float64)  # (B·nW, N, C)
    attn(windows).sum().backward()
    assert bias.bias_table.grad is not None and bias.bias_table.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"2x3 window of N = 6 tokens, got 5 queries"):
        attn(windows[:, :5])


def test_window_bias_resized_bicubic_is_swins_recipe():
    # Swin's load_pretrained, written out for square windows: the table (L1, H) as H images of
    # S1 x S1, bicubic to S2 x S2, back to (L2, H).
    torch.manual_seed(0)
    heads, small, large = 3, 4, 7
    bias = relpos.WindowRelativeBias(small, heads).double()
    torch.nn.init.normal_(bias.bias_table)
    s1, s2 = 2 * small - 1, 2 * large - 1
    images = bias.bias_table.detach().permute(1, 0).reshape(1, heads, s1, s1)
    expected = torch.nn.functional.interpolate(images, size=(s2, s2), mode="bicubic")
    expected = expected.reshape(heads, s2 * s2).permute(1, 0)
    resized = bias.resized(large)
    assert isinstance(resized, relpos.WindowRelativeBias)
    assert (resized.window_h, resized.window_w) == (large, large)
    assert resized.bias_table.dtype == torch.float64 and resized.bias_table.requires_grad
    torch.testing.assert_close(resized.bias_table.detach(), expected, rtol=0, atol=1e-12)
    # The centre row ("myself") lands on the centre row: its value is kept exactly.
    centre_old, centre_new = (small - 1) * (s1 + 1), (large - 1) * (s2 + 1)
    torch.testing.assert_close(resized.bias_table[centre_new], bias.bias_table[centre_old])
    # The same size gives the same table; a rectangular window resizes each axis.
    torch.testing.assert_close(bias.resized(small).bias_table, bias.bias_table)
    assert relpos.WindowRelativeBias((2, 5), 2).resized((3, 4)).bias_table.shape == (5 * 7, 2)


@pytest.mark.parametrize("old, new", [((3, 2), (5, 4)), ((4, 4), (2, 3)), ((2, 3), (2, 3))])
def test_window_bias_resized_clip_keeps_every_offset(old, new):
    torch.manual_seed(1)
    bias = relpos.WindowRelativeBias(old, 2)
    torch.nn.init.normal_(bias.bias_table)
    resized = bias.resized(new, mode="clip")
    (oh, ow), (nh, nw) = old, new
    dense = resized.bias()  # (H, N', N')
    tokens = [(y, x) for y in range(nh) for x in range(nw)]
    for i, (yi, xi) in enumerate(tokens):
        for j, (yj, xj) in enumerate(tokens):
            dy = max(-(oh - 1), min(oh - 1, yi - yj))
            dx = max(-(ow - 1), min(ow - 1, xi - xj))
            row = (dy + oh - 1) * (2 * ow - 1) + dx + ow - 1
            assert torch.equal(dense[:, i, j], bias.bias_table[row])


def test_window_bias_resized_is_a_new_parameter():
    bias = relpos.WindowRelativeBias(3, 2)
    resized = bias.resized(5, mode="clip")
    resized.bias().sum().backward()
    assert bias.bias_table.grad is None and resized.bias_table.grad is not None
    half = relpos.WindowRelativeBias(3, 2).to(torch.bfloat16)
    assert half.resized(5).bias_table.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="mode must be 'bicubic' or 'clip', got 'nearest'"):
        bias.resized(5, mode="nearest")
    with pytest.raises(ValueError, match="window_size"):
        bias.resized(0)


@pytest.mark.parametrize("size", [0, (2, 0), (2, 2, 2), 2.5])
def test_window_bad_size(size):
    with pytest.raises(ValueError, match="window_size"):
        relpos.WindowRelativeBias(size, 2)


# ---------------------------------------------------------------------------------------------
# Swin V2: continuous position bias


def plain_log_offset(delta: int, side: int) -> float:
    """Swin V2's coordinate for one offset, in plain Python: to [-8, 8], then log-spaced."""
    t = 8 * delta / (side - 1)
    return math.copysign(math.log2(1 + abs(t)) / 3, t) if t else 0.0


def test_swin_v2_log_offsets_known_values():
    offsets = relpos.swin_v2_log_offsets(8, 8)
    assert offsets.shape == (15, 15, 2) and offsets.dtype == torch.float32
    centre = 7  # offset 0
    assert offsets[centre, centre].tolist() == [0.0, 0.0]
    # dy = 7: 8 · 7/7 = 8 -> log2(9)/3; dy = 1: 8/7 -> log2(15/7)/3; odd in the offset.
    assert offsets[14, centre, 0].item() == pytest.approx(math.log2(9) / 3, abs=1e-6)
    assert offsets[8, centre, 0].item() == pytest.approx(math.log2(15 / 7) / 3, abs=1e-6)
    assert torch.equal(offsets[0, :, 0], -offsets[14, :, 0])
    assert torch.equal(offsets[:, 3, 1], torch.full((15,), offsets[0, 3, 1].item()))


@pytest.mark.parametrize("window, pretrained", [((3, 5), None), ((6, 4), (3, 2)), ((2, 2), None)])
def test_swin_v2_log_offsets_match_the_formula(window, pretrained):
    wh, ww = window
    ph, pw = pretrained or window
    offsets = relpos.swin_v2_log_offsets(wh, ww, pretrained_window_size=pretrained)
    for dy in range(-(wh - 1), wh):
        for dx in range(-(ww - 1), ww):
            got = offsets[dy + wh - 1, dx + ww - 1].tolist()
            assert got == pytest.approx([plain_log_offset(dy, ph), plain_log_offset(dx, pw)])


def test_continuous_window_bias_is_the_mlp_of_each_pairs_offset():
    torch.manual_seed(0)
    wh, ww, heads = 3, 4, 2
    position = relpos.ContinuousWindowBias((wh, ww), heads, hidden_dim=16).double()
    for param in position.parameters():
        torch.nn.init.normal_(param)
    bias = position.bias()  # (H, N, N)
    assert bias.shape == (heads, wh * ww, wh * ww)
    assert 0 < bias.min() and bias.max() < 16
    tokens = [(y, x) for y in range(wh) for x in range(ww)]  # row-major, as the windows
    for i, (yi, xi) in enumerate(tokens):
        for j, (yj, xj) in enumerate(tokens):
            coords = torch.tensor(
                [plain_log_offset(yi - yj, wh), plain_log_offset(xi - xj, ww)], dtype=torch.float64
            )
            expected = 16 * torch.sigmoid(position.mlp(coords))
            torch.testing.assert_close(bias[:, i, j], expected, rtol=1e-6, atol=1e-6)
    assert set(position.state_dict()) == {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight"}


def test_continuous_window_bias_transfers_to_a_larger_window():
    # Swin V2's point: the MLP reads coordinates, so an 8x8 model runs on 16x16 windows.
    torch.manual_seed(1)
    small = relpos.ContinuousWindowBias(8, 2, hidden_dim=32)
    large = relpos.ContinuousWindowBias(16, 2, hidden_dim=32, pretrained_window_size=8)
    large.load_state_dict(small.state_dict())
    small_bias, large_bias = small.bias(), large.bias()
    # Token (0, 0) against (dy, dx) = (-3, -5): the same offset, the same bias, in both windows.
    small_j, large_j = 3 * 8 + 5, 3 * 16 + 5
    assert torch.allclose(small_bias[:, 0, small_j], large_bias[:, 0, large_j])
    x = torch.randn(2, 256, 8)
    out = relpos.MultiheadAttention(8, 2, position=large)(x)
    assert out.shape == (2, 256, 8) and torch.isfinite(out).all()


def test_continuous_window_bias_resized_keeps_the_training_window():
    torch.manual_seed(2)
    small = relpos.ContinuousWindowBias((4, 3), 2, hidden_dim=8).double()
    large = small.resized(6)
    assert large.pretrained_window_size == (4, 3) and large.mlp[0].weight.dtype == torch.float64
    built = relpos.ContinuousWindowBias(6, 2, hidden_dim=8, pretrained_window_size=(4, 3))
    built.load_state_dict(small.state_dict())
    torch.testing.assert_close(large.bias(), built.double().bias())
    # Offset (1, 2) has the same bias in both windows; resizing again keeps the 4x3 scale.
    small_bias, large_bias = small.bias(), large.resized((8, 8)).bias()
    assert torch.equal(small_bias[:, 1 * 3 + 2, 0], large_bias[:, 1 * 8 + 2, 0])
    assert large.mlp[0].weight is not small.mlp[0].weight


def test_continuous_window_bias_bad_input():
    with pytest.raises(ValueError, match="each side must be >= 2, got 1x3; pass pretrained"):
        relpos.ContinuousWindowBias((1, 3), 2)
    assert (
        relpos.ContinuousWindowBias((1, 3), 2, pretrained_window_size=(2, 3)).bias().shape[0] == 2
    )
    with pytest.raises(ValueError, match="hidden_dim must be a positive int"):
        relpos.ContinuousWindowBias(4, 2, hidden_dim=0)
    with pytest.raises(ValueError, match="window_size"):
        relpos.ContinuousWindowBias(4, 2, pretrained_window_size=(4, 0))
    position = relpos.ContinuousWindowBias(2, 2)
    q = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        position.attend(q, q, q, backend="fast")


# ---------------------------------------------------------------------------------------------
# Every scheme: registry, gradients, fused == manual, cached decoding

FAMILY = ["t5", "alibi", "rope", "huang", "deberta", "transformer-xl", "none"]


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("causal", [False, True])
def test_scheme_builds_by_name(name, causal):
    scheme = relpos.get_scheme(name)
    assert scheme.name == name and scheme.paper
    assert scheme.input_encoding(16, 10) is None  # none of these touches the input
    position = scheme.attention_position(4, 8, causal=causal)
    if name == "none":
        assert position is None
    else:
        assert isinstance(position, relpos.AttentionPosition)


def test_unknown_option_is_refused():
    with pytest.raises(ValueError, match="has no option"):
        relpos.get_scheme("alibi", slope=1.0)


def build(name, causal, heads=2, head_dim=4):
    position = relpos.get_scheme(name).attention_position(heads, head_dim, causal=causal)
    if name in ("huang", "deberta"):  # small tables so that the inputs below are clipped, too
        position = relpos.get_scheme(name, max_distance=3).attention_position(
            heads, head_dim, causal=causal
        )
    return position


@pytest.mark.parametrize("name", FAMILY)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    attn = relpos.MultiheadAttention(8, 2, position=build(name, causal=True))
    attn(torch.randn(2, 9, 8), is_causal=True).square().sum().backward()
    own = dict(attn.position.named_parameters())
    expected = {
        "t5": {"bucket_weights"},
        "huang": {"key_table"},
        "deberta": {"key_table", "query_table"},
        "transformer-xl": {"position_proj.weight", "content_bias", "position_bias"},
    }.get(name, set())
    assert set(own) == expected
    # (A key-projection bias can get an exactly-zero gradient: softmax ignores q·b_k.)
    for param_name, param in [*own.items(), ("q_proj.weight", attn.q_proj.weight)]:
        assert param.grad is not None and param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize(
    "name", ["t5", "alibi", "rope", "huang", "deberta", "transformer-xl", "swin", "swin-v2"]
)
@pytest.mark.parametrize("masked", [False, True])
def test_fused_path_equals_manual_reference(name, masked):
    torch.manual_seed(1)
    length = 6
    if name == "swin":
        position, offsets = relpos.WindowRelativeBias((2, 3), 2), {}
    elif name == "swin-v2":
        position, offsets = relpos.ContinuousWindowBias((2, 3), 2, hidden_dim=8), {}
    else:
        position, offsets = build(name, causal=True), dict(query_offset=3, key_offset=1)
    position = position.double()
    for param in position.parameters():  # nonzero tables, so the position terms matter
        torch.nn.init.normal_(param)
    content_q, content_k, v = torch.randn(3, 2, 2, length, 4, dtype=torch.float64)
    q, k = position.rotate(content_q, content_k, **offsets)
    mask = None
    if masked:
        mask = torch.rand(2, 1, length, length) > 0.3
        mask[0, 0, 2] = False  # a row with no key at all gives zeros
    fused = position.attend(q, k, v, attn_mask=mask, backend="auto", **offsets)
    manual = position.attend(q, k, v, attn_mask=mask, backend="reference", **offsets)
    assert torch.allclose(fused, manual, atol=1e-12)
    if masked:
        assert torch.equal(fused[0, :, 2], torch.zeros_like(fused[0, :, 2]))
    plain = relpos.AttentionPosition().attend(content_q, content_k, v, attn_mask=mask)
    assert not torch.allclose(fused, plain)  # the position terms did something


@pytest.mark.parametrize("name", FAMILY + ["shaw"])
def test_attend_with_a_query_offset_is_causal_by_position(name):
    # A scheme's attention piece called directly, as a decoding loop of one's own would: the
    # last rows at their offset, with is_causal, equal the full causal pass's last rows.
    torch.manual_seed(3)
    if name == "shaw":
        position = relpos.ShawRelativePosition(4, max_distance=2, num_heads=2)
    else:  # "none": plain content attention
        position = build(name, causal=True) or relpos.AttentionPosition()
    position = position.double()
    for param in position.parameters():
        torch.nn.init.normal_(param)
    q, k, v = torch.randn(3, 2, 2, 7, 4, dtype=torch.float64)
    q, k = position.rotate(q, k)  # positions 0..6 (RoPE); the others leave q, k as they are
    full = position.attend(q, k, v, is_causal=True)
    step = position.attend(q[:, :, 5:], k, v, is_causal=True, query_offset=5)
    torch.testing.assert_close(step, full[:, :, 5:], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", FAMILY + ["shaw"])
def test_cached_decoding_equals_full_recomputation(name):
    torch.manual_seed(2)
    if name == "shaw":
        attn = relpos.MultiheadAttention(8, 2, max_distance=2)
    else:
        attn = relpos.MultiheadAttention(8, 2, position=build(name, causal=True))
    attn = attn.double().eval()
    if name == "t5":  # distances up to 11 span exact and logarithmic buckets
        attn.position = relpos.T5RelativeBias(
            2, bidirectional=False, num_buckets=8, max_distance=10
        ).double()
    x = torch.randn(2, 12, 8, dtype=torch.float64)
    full = attn(x, is_causal=True)
    cache, pieces, start = relpos.KVCache(), [], 0
    for size in (4, 1, 3, 1, 1, 2):
        pieces.append(attn(x[:, start : start + size], is_causal=True, cache=cache))
        start += size
    assert cache.length == 12
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Swin's windows: partition, reverse, shifted-window mask


def test_window_partition_matches_an_explicit_loop_and_reverses():
    torch.manual_seed(3)
    batch, height, width, channels, (wh, ww) = 2, 6, 8, 3, (3, 4)
    x = torch.randn(batch, height, width, channels)
    windows = relpos.window_partition(x, (wh, ww))
    assert windows.shape == (batch * 2 * 2, wh * ww, channels)
    n = 0
    for b in range(batch):
        for wy in range(height // wh):
            for wx in range(width // ww):
                for t in range(wh * ww):  # row-major inside the window
                    y, xx = wy * wh + t // ww, wx * ww + t % ww
                    assert torch.equal(windows[n, t], x[b, y, xx])
                n += 1
    assert torch.equal(relpos.window_reverse(windows, (wh, ww), height, width), x)
    with pytest.raises(ValueError, match="a 6x8 grid does not split into 4x4 windows"):
        relpos.window_partition(x, 4)
    with pytest.raises(ValueError, match=r"windows must be \(B·nW, 12, C\) with nW = 4"):
        relpos.window_reverse(windows[:3], (wh, ww), height, width)


@pytest.mark.parametrize("size, window, shift", [(8, 4, 2), ((6, 9), (3, 3), (1, 2)), (8, 4, 0)])
def test_shifted_window_mask_allows_exactly_the_pairs_that_are_near_in_the_image(
    size, window, shift
):
    # Independent of Swin's region labels: after rolling by -shift, two patches of one window
    # may attend to each other iff they are less than a window apart in the unrolled image
    # (a wrapped-round patch is a whole image away).
    height, width = (size, size) if isinstance(size, int) else size
    wh, ww = (window, window) if isinstance(window, int) else window
    sh, sw = (shift, shift) if isinstance(shift, int) else shift
    mask = relpos.shifted_window_mask(height, width, window, shift)
    coords = torch.stack(
        torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij"), dim=-1
    )  # (Hp, Wp, 2): each patch's (y, x) in the image
    rolled = torch.roll(coords, shifts=(-sh, -sw), dims=(0, 1))
    windows = relpos.window_partition(rolled[None], window)  # (nW, N, 2) image coordinates
    gap = (windows[:, :, None, :] - windows[:, None, :, :]).abs()  # (nW, N, N, 2)
    expected = (gap[..., 0] < wh) & (gap[..., 1] < ww)
    assert mask.dtype == torch.bool and mask.shape == expected.shape
    assert torch.equal(mask, expected)
    if shift == 0:
        assert bool(mask.all())


def test_shifted_window_mask_bad_shift():
    with pytest.raises(ValueError, match=r"shift must be an int or a pair .*got 4 for window 4"):
        relpos.shifted_window_mask(8, 8, 4, 4)
    with pytest.raises(ValueError, match="shift must be"):
        relpos.shifted_window_mask(8, 8, 4, 1.5)


def test_a_shifted_window_block_never_mixes_wrapped_patches():
    # Roll, partition, attend with Swin's bias and mask, reverse, roll back: changing the patch
    # at the image's top-left corner must leave the bottom-right patch's output unchanged,
    # though the roll puts both in one window.
    torch.manual_seed(4)
    size, window, shift, channels, heads = 8, 4, 2, 8, 2
    attn = relpos.MultiheadAttention(
        channels, heads, position=relpos.WindowRelativeBias(window, heads)
    ).double()
    mask = relpos.shifted_window_mask(size, size, window, shift)[:, None]  # (nW, 1, N, N)

    def block(image, attn_mask=mask):  # (1, Hp, Wp, C)
        rolled = torch.roll(image, shifts=(-shift, -shift), dims=(1, 2))
        out = attn(relpos.window_partition(rolled, window), attn_mask=attn_mask)
        out = relpos.window_reverse(out, window, size, size)
        return torch.roll(out, shifts=(shift, shift), dims=(1, 2))

    image = torch.randn(1, size, size, channels, dtype=torch.float64)
    changed = image.clone()
    changed[0, 0, 0] += 1.0
    before, after = block(image), block(changed)
    assert torch.equal(before[0, -1, -1], after[0, -1, -1])
    assert not torch.equal(before[0, 1, 1], after[0, 1, 1])  # a true neighbour does see it
    unmasked = block(changed, None)[0, -1, -1] - block(image, None)[0, -1, -1]
    assert unmasked.abs().max() > 0  # without the mask the wrapped patches would mix
