"""Transformer-XL and DeBERTa (``shared/reference/family.md``): the schemes whose logit bias reads
the content as well as the distance, against their formulas written out pair by pair, against
the way the original code computes them (relative shift; gather and transpose), and known
bucket values."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import relpos
from relpos.attention import RelativeScores, flex_bias_attention, gather_pair_scores
from relpos.attention.flex_bias import distance_columns


def _qkv(heads, q_len, k_len, dim, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(2, heads, q_len, dim, dtype=torch.float64, generator=generator)
    k, v = torch.randn(2, 2, heads, k_len, dim, dtype=torch.float64, generator=generator)
    return q, k, v


def _randomise(position):
    position = position.double()
    torch.manual_seed(3)
    for param in position.parameters():  # nonzero, so that every term matters
        torch.nn.init.normal_(param)
    return position


def _softmax_attention(logits, v, mask=None):
    if mask is not None:
        logits = logits.masked_fill(~mask, -math.inf)
    return torch.softmax(logits, dim=-1) @ v


# ---------------------------------------------------------------------------------------------
# Transformer-XL


def txl_sinusoid(n: int, width: int) -> torch.Tensor:
    """``R_n`` in float64: all sines, then all cosines, frequencies 10000^(-2t/width)."""
    freqs = torch.tensor([10000.0 ** (-2 * t / width) for t in range(width // 2)])
    return torch.cat(((n * freqs).sin(), (n * freqs).cos()))


@pytest.mark.parametrize("offsets", [(0, 0), (3, 1), (7, 0)])
def test_transformer_xl_matches_its_four_terms(offsets):
    heads, dim, q_len, k_len = 2, 4, 5, 6
    query_offset, key_offset = offsets
    position = _randomise(
        relpos.get_scheme("transformer-xl").attention_position(heads, dim, causal=False)
    )
    q, k, v = _qkv(heads, q_len, k_len, dim)
    w_r = position.position_proj.weight.detach()  # (H·D, H·D)
    u, v_bias = position.content_bias.detach(), position.position_bias.detach()  # (H, D)
    logits = torch.empty(2, heads, q_len, k_len, dtype=torch.float64)
    for i in range(q_len):
        for j in range(k_len):
            distance = (query_offset + i) - (key_offset + j)  # i - j
            r = (w_r @ txl_sinusoid(distance, heads * dim).double()).view(heads, dim)  # W_R R
            a = (q[..., i, :] * k[..., j, :]).sum(-1)
            b = (q[..., i, :] * r).sum(-1)
            c = (u * k[..., j, :]).sum(-1)
            d = (v_bias * r).sum(-1)
            logits[..., i, j] = (a + b + c + d) / math.sqrt(dim)
    expected = _softmax_attention(logits, v)
    for backend in ("auto", "reference"):
        got = position.attend(
            q, k, v, query_offset=query_offset, key_offset=key_offset, backend=backend
        )
        # R is computed in float32 (as sinusoidal_encoding gives it).
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_transformer_xl_equals_the_relative_shift_of_the_original_code():
    # The official code scores each query against r_{L-1}, …, r_0 and then shifts each row i
    # left by L-1-i (pad one zero column, reshape to (L+1, L), drop a row): the causal part
    # of the result is (q_i + v)·r_{i-j}.
    heads, dim, length = 2, 4, 7
    position = _randomise(
        relpos.get_scheme("transformer-xl").attention_position(heads, dim, causal=True)
    )
    q, k, _ = _qkv(heads, length, length, dim, seed=1)
    vectors = position.relative_vectors(torch.arange(length - 1, -1, -1), torch.float64)
    raw = (q + position.position_bias[:, None]) @ vectors.transpose(-1, -2)  # (B, H, L, L)
    padded = torch.nn.functional.pad(raw, (1, 0))  # (B, H, L, L + 1)
    shifted = padded.view(2, heads, length + 1, length)[:, :, 1:].view_as(raw)
    content = (k @ position.content_bias[..., None]).transpose(-1, -2)  # u·k_j, (B, H, 1, L)
    expected = (shifted + content) / math.sqrt(dim)
    got = position.pair_bias(q, k)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    torch.testing.assert_close(got[..., causal], expected[..., causal].detach())


def test_transformer_xl_switches_off_u_and_v():
    position = relpos.get_scheme(
        "transformer-xl", content_bias=False, position_bias=False
    ).attention_position(2, 4, causal=True)
    assert position.content_bias is None and position.position_bias is None
    assert {name for name, _ in position.named_parameters()} == {"position_proj.weight"}


# ---------------------------------------------------------------------------------------------
# DeBERTa


def plain_delta(n: int, k: int) -> int:
    """δ for the query-minus-key distance n, without log buckets."""
    return min(max(n + k, 0), 2 * k - 1)


@pytest.mark.parametrize("offsets", [(0, 0), (3, 1), (0, 6)])
@pytest.mark.parametrize("terms", [(True, True), (True, False), (False, True)])
def test_deberta_matches_its_disentangled_terms(offsets, terms):
    heads, dim, q_len, k_len, k = 2, 4, 5, 7, 3
    c2p, p2c = terms
    query_offset, key_offset = offsets
    position = _randomise(
        relpos.get_scheme("deberta", max_distance=k, c2p=c2p, p2c=p2c).attention_position(
            heads, dim, causal=False
        )
    )
    q, k_, v = _qkv(heads, q_len, k_len, dim, seed=2)
    logits = torch.empty(2, heads, q_len, k_len, dtype=torch.float64)
    for i in range(q_len):
        for j in range(k_len):
            delta = plain_delta((query_offset + i) - (key_offset + j), k)
            total = (q[..., i, :] * k_[..., j, :]).sum(-1)
            if c2p:
                total = total + (q[..., i, :] * position.key_table[:, delta]).sum(-1)
            if p2c:
                total = total + (k_[..., j, :] * position.query_table[:, delta]).sum(-1)
            logits[..., i, j] = total / math.sqrt(dim * (1 + c2p + p2c))
    expected = _softmax_attention(logits.detach(), v)
    for backend in ("auto", "reference"):
        got = position.attend(
            q, k_, v, query_offset=query_offset, key_offset=key_offset, backend=backend
        )
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_deberta_position_to_content_as_the_original_code_gathers_it():
    # key @ Q^rᵀ, gathered on a key-by-key grid at clamp(-(a - b) + k), then transposed.
    heads, dim, length, k = 2, 4, 8, 3
    position = _randomise(
        relpos.get_scheme("deberta", max_distance=k, c2p=False).attention_position(
            heads, dim, causal=False
        )
    )
    q, key, _ = _qkv(heads, length, length, dim, seed=4)
    ids = torch.arange(length)
    grid = ids[:, None] - ids[None, :]  # (a, b) -> a - b
    index = (-grid + k).clamp(0, 2 * k - 1)
    scores = key @ position.query_table.transpose(-1, -2)  # (B, H, L, 2k)
    gathered = scores.gather(-1, index.expand(2, heads, length, length)).transpose(-1, -2)
    expected = gathered / math.sqrt(dim * 2)
    torch.testing.assert_close(position.pair_bias(q, key), expected)


def test_deberta_rows_are_asymmetric_and_clamped():
    rows = relpos.deberta_relative_rows(1, 9, max_distance=3, query_offset=4)
    # Query 4 against keys 0…8: i - j = 4 … -4, row clamp(i - j + 3, 0, 5).
    assert rows.tolist() == [[5, 5, 5, 4, 3, 2, 1, 0, 0]]


# DeBERTa V2's log buckets at its defaults (bucket_size 256, max_position 512), by hand:
# |n| <= 128 exact; n = 129: ceil(log(129/128) / log(511/128) · 127) = ceil(0.714) = 1 -> 129;
# n = 200: ceil(0.3224 · 127) = ceil(40.94) = 41 -> 169; n = 511: ceil(127) -> 255;
# n = 1000: ceil(1.4849 · 127) = ceil(188.6) = 189 -> 317 (the row index clamps it).
LOG_BUCKETS = {0: 0, 5: 5, -5: -5, 127: 127, 128: 128, -128: -128, 129: 129, 200: 169}
LOG_BUCKETS |= {-200: -169, 511: 255, -511: -255, 1000: 317}


@pytest.mark.parametrize(
    "bucket_size, max_position, error",
    [(0, 4, ValueError), (1, 4, ValueError), (4, 2, ValueError), (8, 5, ValueError),
     (4.0, 8, TypeError), (4, True, TypeError)],
)  # fmt: skip
def test_deberta_log_buckets_refuse_sizes_without_a_log_scale(bucket_size, max_position, error):
    # (4, 2) and (8, 3) gave buckets that shrink with the distance; (0, ·) divided by zero.
    with pytest.raises(error, match="bucket_size|max_position"):
        relpos.deberta_log_bucket(torch.arange(-6, 7), bucket_size, max_position)


def test_deberta_log_buckets_known_values():
    distances = torch.tensor(list(LOG_BUCKETS))
    got = relpos.deberta_log_bucket(distances, 256, 512)
    assert got.dtype == torch.long
    assert got.tolist() == list(LOG_BUCKETS.values())


@pytest.mark.parametrize("bucket_size, max_position", [(256, 512), (8, 20), (16, 100), (4, 9)])
def test_deberta_log_buckets_are_odd_monotone_and_reach_the_edge(bucket_size, max_position):
    n = torch.arange(0, 3 * max_position)
    buckets = relpos.deberta_log_bucket(n, bucket_size, max_position)
    assert torch.equal(relpos.deberta_log_bucket(-n, bucket_size, max_position), -buckets)
    assert (buckets.diff() >= 0).all()
    mid = bucket_size // 2
    assert torch.equal(buckets[: mid + 1], n[: mid + 1])  # exact near the query
    assert buckets[max_position - 1] == bucket_size - 1


def test_deberta_log_bucket_rows_stay_in_the_table():
    position = relpos.get_scheme("deberta", max_distance=20, position_buckets=8)
    layer = position.attention_position(2, 4, causal=False)
    assert layer.key_table.shape == (2, 16, 4)
    rows = relpos.deberta_relative_rows(50, 50, max_distance=20, position_buckets=8)
    assert rows.min() == 0 and rows.max() == 15
    q, k, v = _qkv(2, 50, 50, 4)
    assert torch.isfinite(layer.double().attend(q, k, v)).all()


# ---------------------------------------------------------------------------------------------
# Both: the shared gather, options, errors


def test_gather_pair_scores_reads_query_and_key_rows():
    scores = torch.arange(2 * 3 * 4, dtype=torch.float64).view(1, 2, 3, 4)  # (B, H, L, R)
    rows = torch.tensor([[0, 3, 1], [2, 2, 0], [1, 0, 3]])  # (Lq, Lk)
    by_query = gather_pair_scores(scores, rows, per="query")
    by_key = gather_pair_scores(scores, rows, per="key")
    for h in range(2):
        for i in range(3):
            for j in range(3):
                assert by_query[0, h, i, j] == scores[0, h, i, rows[i, j]]
                assert by_key[0, h, i, j] == scores[0, h, j, rows[i, j]]
    with pytest.raises(ValueError, match="per must be"):
        gather_pair_scores(scores, rows, per="value")


@pytest.mark.parametrize(
    "name, options, error, match",
    [
        ("deberta", {"max_distance": 0}, ValueError, "max_distance must be >= 1"),
        ("deberta", {"max_distance": 2.5}, TypeError, "max_distance must be an int"),
        ("deberta", {"position_buckets": 1}, ValueError, "position_buckets must be 0"),
        ("deberta", {"position_buckets": -4}, ValueError, "position_buckets must be 0"),
        (
            "deberta",
            {"max_distance": 5, "position_buckets": 8},
            ValueError,
            "max_distance must be >",
        ),
        ("deberta", {"p2c": "no"}, TypeError, "p2c must be a bool"),
        ("transformer-xl", {"content_bias": "no"}, TypeError, "content_bias must be a bool"),
        ("transformer-xl", {"base": 1.0}, ValueError, "base must be a number > 1"),
    ],
)
def test_bad_options_are_refused(name, options, error, match):
    with pytest.raises(error, match=match):
        relpos.get_scheme(name, **options)


@pytest.mark.parametrize("name", ["deberta", "transformer-xl"])
def test_wrong_heads_unknown_backend_and_reference_dropout_are_refused(name):
    position = relpos.get_scheme(name).attention_position(2, 4, causal=False)
    q, k, v = torch.randn(3, 1, 3, 5, 4)
    with pytest.raises(ValueError, match="built for 2; build it with num_heads=3"):
        position.attend(q, k, v)
    q, k, v = torch.randn(3, 1, 2, 5, 4)
    with pytest.raises(ValueError, match="no attention dropout"):
        position.attend(q, k, v, dropout_p=0.1, backend="reference")
    with pytest.raises(ValueError, match="unknown backend 'fused'; valid names: auto, eager"):
        position.attend(q, k, v, backend="fused")
    # A Shaw backend's name (a model passes its own to every layer) is accepted, as for T5.
    torch.testing.assert_close(position.attend(q, k, v, backend="eager"), position.attend(q, k, v))
    assert position.attend(q, k, v, dropout_p=0.1).shape == (1, 2, 5, 4)


@pytest.mark.parametrize("name", ["deberta", "transformer-xl"])
def test_wrong_head_size_is_refused_by_name(name):
    # The relative vectors are head_dim wide: another size failed inside a matmul, in torch's words.
    position = relpos.get_scheme(name).attention_position(2, 8, causal=False)
    q, k, v = torch.randn(3, 1, 2, 5, 4)
    with pytest.raises(ValueError, match="head size 4 but .* built for head_dim=8"):
        position.attend(q, k, v)


@pytest.mark.parametrize("name", ["deberta", "transformer-xl"])
def test_fully_masked_row_gives_zeros_and_finite_gradients(name):
    position = _randomise(relpos.get_scheme(name).attention_position(2, 4, causal=False))
    q, k, v = (t.requires_grad_() for t in _qkv(2, 4, 4, 4))
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[1] = False
    out = position.attend(q, k, v, attn_mask=mask)
    assert torch.equal(out[:, :, 1], torch.zeros_like(out[:, :, 1]))
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    assert all(torch.isfinite(p.grad).all() for p in position.parameters())


@pytest.mark.parametrize(
    "name, options",
    [
        ("deberta", {}),
        ("transformer-xl", {}),
        ("huang", {}),
        ("shaw", {"value_term": False}),
    ],
)
def test_without_a_value_term_a_run_of_one_token_has_no_length(name, options):
    # docs/experiments.md, section 1: relative schemes without Shaw's a^V reverse "00" as "0".
    # If every token is the same, every value is the same, so any attention weights average to
    # that value: the outputs of "aa" are two copies of the output of "a". a^V breaks this.
    torch.manual_seed(5)
    position = _randomise(relpos.get_scheme(name, **options).attention_position(2, 4, causal=False))
    token = torch.randn(1, 2, 1, 4, dtype=torch.float64)
    for length in (1, 2, 5):
        same = token.expand(1, 2, length, 4)
        out = position.attend(same, same, same)
        torch.testing.assert_close(out, same)
    shaw = _randomise(relpos.get_scheme("shaw").attention_position(2, 4, causal=False))
    out = shaw.attend(token.expand(1, 2, 2, 4), token.expand(1, 2, 2, 4), token.expand(1, 2, 2, 4))
    assert not torch.allclose(out[..., 0, :], out[..., 1, :])  # a^V tells the two apart


def literal_pair_bias(position, q, k, query_offset, key_offset):
    """Each scheme's bias, one (i, j) pair at a time, from the papers' terms."""
    heads, dim = q.shape[1], q.shape[-1]
    bias = torch.empty(*q.shape[:-1], k.shape[-2], dtype=torch.float64)
    for i in range(q.shape[-2]):
        for j in range(k.shape[-2]):
            n = (query_offset + i) - (key_offset + j)  # i - j
            if isinstance(position, relpos.DisentangledPosition):
                span = position.position_buckets or position.max_distance
                if position.position_buckets:
                    n = relpos.deberta_log_bucket(torch.tensor(n), span, position.max_distance)
                row = int(min(max(n + span, 0), 2 * span - 1))
                total = 0.0
                if position.key_table is not None:
                    total = total + (q[..., i, :] * position.key_table[:, row]).sum(-1)
                if position.query_table is not None:
                    total = total + (k[..., j, :] * position.query_table[:, row]).sum(-1)
                bias[..., i, j] = total * position.logit_scale(dim)
            else:
                w_r = position.position_proj.weight
                r = (w_r @ txl_sinusoid(n, heads * dim).double()).view(heads, dim)
                total = ((q[..., i, :] + position.position_bias) * r).sum(-1)
                total = total + (position.content_bias * k[..., j, :]).sum(-1)
                bias[..., i, j] = total / math.sqrt(dim)
    return bias


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(["deberta", "deberta-log", "transformer-xl"]),
    heads=st.integers(1, 3),
    half_dim=st.integers(1, 3),
    q_len=st.integers(1, 6),
    k_len=st.integers(1, 7),
    query_offset=st.integers(0, 9),
    key_offset=st.integers(0, 9),
    seed=st.integers(0, 2**16),
)
def test_pair_bias_equals_the_literal_terms_on_random_blocks(
    name, heads, half_dim, q_len, k_len, query_offset, key_offset, seed
):
    dim = 2 * half_dim  # TXL's sinusoids are H·D wide; any D works, even keeps the check exact
    if name == "transformer-xl":
        scheme = relpos.get_scheme(name)
    elif name == "deberta":
        scheme = relpos.get_scheme(name, max_distance=3)
    else:  # log buckets reached inside these blocks: |i - j| runs up to 15
        scheme = relpos.get_scheme("deberta", max_distance=8, position_buckets=4)
    torch.manual_seed(seed)
    position = _randomise(scheme.attention_position(heads, dim, causal=False))
    q = torch.randn(2, heads, q_len, dim, dtype=torch.float64)
    k = torch.randn(2, heads, k_len, dim, dtype=torch.float64)
    with torch.no_grad():
        got = position.pair_bias(q, k, query_offset=query_offset, key_offset=key_offset)
        expected = literal_pair_bias(position, q, k, query_offset, key_offset)
    # TXL's sinusoids are float32 (sinusoidal_encoding); DeBERTa is exact in float64.
    tolerance = 1e-5 if name == "transformer-xl" else 1e-12
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)


# ---------------------------------------------------------------------------------------------
# DeBERTa's factored bias through FlexAttention (never forms the (Lq, Lk) bias)


def _deberta(heads, dim, **options):
    scheme = relpos.get_scheme("deberta", **options)
    return _randomise(scheme.attention_position(heads, dim, causal=False))


def _mask(kind, q_len, k_len):
    if kind == "bool":
        mask = torch.rand(2, 1, q_len, k_len, generator=torch.Generator().manual_seed(1)) > 0.4
        mask[1, 0, 0] = False  # a row with no key at all: zeros, as with SDPA
        return mask, False
    if kind == "float":
        return torch.randn(q_len, k_len, dtype=torch.float64), False
    return None, kind == "causal"


@pytest.mark.parametrize("mask_kind", ["none", "causal", "bool", "float"])
@pytest.mark.parametrize(
    "options",
    [
        {"max_distance": 2},
        {"max_distance": 3, "c2p": False},
        {"max_distance": 3, "p2c": False},
        {"max_distance": 6, "position_buckets": 4},  # log buckets reached: |i - j| up to 10
    ],
)
@pytest.mark.parametrize("shape", [(5, 5, 0, 0), (3, 8, 5, 0), (6, 4, 0, 3)])
@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")
def test_deberta_flex_equals_the_dense_bias(mask_kind, options, shape):
    q_len, k_len, query_offset, key_offset = shape
    position = _deberta(3, 4, **options)
    q, k, v = _qkv(3, q_len, k_len, 4)
    attn_mask, is_causal = _mask(mask_kind, q_len, k_len)
    kwargs = dict(
        attn_mask=attn_mask, is_causal=is_causal, query_offset=query_offset, key_offset=key_offset
    )
    with torch.no_grad():  # FlexAttention has no backward on the CPU
        flex = position.attend(q, k, v, backend="flex", **kwargs)
        reference = position.attend(q, k, v, backend="reference", **kwargs)
    torch.testing.assert_close(flex, reference, rtol=1e-12, atol=1e-12)


def test_relative_scores_form_the_literal_bias():
    position = _deberta(2, 4, max_distance=8, position_buckets=4)
    q, k, _ = _qkv(2, 5, 7, 4)
    with torch.no_grad():
        factored = position.relative_scores(q, k, query_offset=9, key_offset=0)
        expected = literal_pair_bias(position, q, k, 9, 0)
    assert factored.query_scores.shape == (2, 2, 5, 8) and factored.rows.shape == (11,)
    torch.testing.assert_close(factored.dense(5, 7), expected, rtol=1e-12, atol=1e-12)
    pair_rows = relpos.deberta_relative_rows(
        5, 7, max_distance=8, position_buckets=4, query_offset=9
    )
    assert torch.equal(factored.rows[distance_columns(5, 7)], pair_rows)


def test_relative_scores_with_bad_shapes_are_refused():
    q = k = v = torch.randn(2, 3, 4, 8, dtype=torch.float64)  # float64: no compile wait
    rows = torch.zeros(7, dtype=torch.long)
    scores = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    cases = [
        (RelativeScores(rows[:6], scores), ValueError, r"rows must have Lq \+ Lk - 1 = 7 entries"),
        (RelativeScores(rows.float(), scores), TypeError, "rows must be a 1-D LongTensor"),
        (RelativeScores(rows, scores[:1]), ValueError, r"query_scores must have shape \(B, H, L"),
        (RelativeScores(rows, None, scores[..., :3]), None, None),
        (RelativeScores(rows, scores, scores[..., :3]), ValueError, "same R relative rows"),
        (RelativeScores(rows + 5, scores), ValueError, r"rows must lie in \[0, R\) = \[0, 5\)"),
        (RelativeScores(rows, scores.long()), TypeError, "query_scores must be a floating-point"),
    ]
    for factored, error, match in cases:
        if error is None:
            with torch.no_grad():
                assert flex_bias_attention(q, k, v, relative_scores=factored).shape == q.shape
            continue
        with pytest.raises(error, match=match):
            flex_bias_attention(q, k, v, relative_scores=factored)


def test_deberta_flex_refuses_dropout_and_cpu_gradients():
    position = _deberta(2, 4)
    q, k, v = _qkv(2, 5, 5, 4)
    with pytest.raises(ValueError, match="backend='flex' has no attention dropout"):
        position.attend(q, k, v, backend="flex", dropout_p=0.1)
    # The tables need gradients, so the captured scores do, even for inputs that do not.
    with pytest.raises(ValueError, match="no backward on the CPU"):
        position.attend(q, k, v, backend="flex")
    # As the error advises: under no_grad it runs, even for inputs that require a gradient.
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    with torch.no_grad():
        flex = position.attend(*leaves, backend="flex")
        torch.testing.assert_close(flex, position.attend(q, k, v, backend="reference"))
    # Transformer-XL has no factored form (one vector per distance): "flex" runs SDPA, as any
    # name a dense bias has no kernel for.
    txl = _randomise(relpos.get_scheme("transformer-xl").attention_position(2, 4, causal=False))
    torch.testing.assert_close(
        txl.attend(q, k, v, backend="flex"), txl.attend(q, k, v, backend="reference")
    )


@pytest.mark.slow
def test_deberta_flex_compiled_equals_the_dense_bias():
    # Compiled CPU FlexAttention (float32): the fused kernel reading both gathers in score_mod,
    # at two shapes (a second shape once got a recompiled kernel that indexed out of bounds).
    position = _deberta(2, 16, max_distance=4).float()
    for q_len, k_len, offset in ((6, 9, 3), (5, 5, 0)):
        q, k, v = (t.float() for t in _qkv(2, q_len, k_len, 16))
        kwargs = dict(is_causal=True, query_offset=offset)
        with torch.no_grad():
            flex = position.attend(q, k, v, backend="flex", **kwargs)
            reference = position.attend(q, k, v, backend="reference", **kwargs)
        torch.testing.assert_close(flex, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("is_causal", [False, True])
def test_deberta_flex_forward_and_gradients_on_gpu(is_causal):
    position = _deberta(4, 32, max_distance=16, position_buckets=8).float().cuda()
    q, k, v = (t.float().cuda().requires_grad_() for t in _qkv(4, 300, 300, 32))
    leaves = [q, k, v, position.key_table, position.query_table]
    out = position.attend(q, k, v, backend="flex", is_causal=is_causal)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, upstream)
    exact = _randomise(position.cpu().double())  # the same parameters (same seed) in float64
    cpu = [t.detach().cpu().double().requires_grad_() for t in (q, k, v)]
    reference = exact.attend(*cpu, backend="reference", is_causal=is_causal)
    ref_leaves = [*cpu, exact.key_table, exact.query_table]
    ref_grads = torch.autograd.grad(reference, ref_leaves, upstream.cpu().double())
    torch.testing.assert_close(out.cpu().double(), reference, rtol=1e-4, atol=1e-4)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        atol = 1e-4 * max(1.0, ref_grad.abs().max().item())
        torch.testing.assert_close(grad.cpu().double(), ref_grad, rtol=1e-4, atol=atol)
