"""Behaviours that an earlier test suite did not pin down (found by mutation testing).

For each test here, a small wrong change to the library (a swapped argument, a dropped offset, a
changed default, an off-by-one clamp) left every earlier test passing. The expected values come
from an independent formulation: the paper's formula written out with plain loops, a worked
example computed by hand, Hugging Face's published formula or torch's own layer, never from the
implementation under test.
"""

import math

import pytest
import torch

import relpos
from relpos.attention.reference import masked_softmax
from relpos.schemes.rope import yarn_ramp

# ---------------------------------------------------------------------------------------------
# Independent formulations


def brute_shaw(
    q, k, v, key_table, value_table, *, left, right, scale, q_off=0, k_off=0, bias=None,
    key_query=False,
):  # fmt: skip
    """Shaw et al. Eq. 3-4 for one head, one (i, j) pair at a time: ``q (Lq, D)``, ``k (Lk, D)``,
    ``v (Lk, Dv)``, tables ``(left + right + 1, ·)``, optional additive ``bias (Lq, Lk)``;
    ``key_query`` adds Huang et al.'s ``k_j · a^K_ij`` inside the scale."""
    rows = []
    for i in range(q.shape[0]):
        logits, values = [], []
        for j in range(k.shape[0]):
            distance = (k_off + j) - (q_off + i)
            row = min(max(distance, -left), right) + left
            logit = q[i] @ (k[j] + key_table[row])
            if key_query:
                logit = logit + k[j] @ key_table[row]
            logit = logit * scale
            if bias is not None:
                logit = logit + bias[i, j]
            logits.append(logit)
            values.append(v[j] + value_table[row])
        logits = torch.stack(logits)
        weights = torch.exp(logits - logits.max())
        weights = weights / weights.sum()
        rows.append((weights[:, None] * torch.stack(values)).sum(0))
    return torch.stack(rows)


def complex_rope(x, positions, base=10000.0):
    """RoFormer Eq. 34 with the paper's pairing: channels ``(2t, 2t + 1)`` as one complex number,
    multiplied by ``exp(i · p · base^(-2t/d))``."""
    d = x.shape[-1]
    out = torch.empty_like(x)
    for r, p in enumerate(positions):
        for t in range(d // 2):
            angle = p * base ** (-2 * t / d)
            z = complex(x[..., r, 2 * t].item(), x[..., r, 2 * t + 1].item())
            z = z * complex(math.cos(angle), math.sin(angle))
            out[..., r, 2 * t], out[..., r, 2 * t + 1] = z.real, z.imag
    return out


# ---------------------------------------------------------------------------------------------
# reference.py: the oracle's softmax


def test_masked_softmax_takes_out_the_row_maximum():
    # Pins: the max subtraction. exp(1000) overflows float32 (and float64), so without it the
    # oracle returns inf / inf = NaN for logits a trained model can easily reach.
    logits = torch.tensor([[1000.0, 999.0, -math.inf], [-math.inf] * 3])
    e = math.e
    expected = torch.tensor([[e / (e + 1), 1 / (e + 1), 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(masked_softmax(logits), expected, atol=1e-6)


def test_reference_backend_is_finite_for_large_logits():
    # Pins: the same stability in reference_attention, against the per-pair formula (which
    # takes its own maximum out).
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, 3, 4, dtype=torch.float64) for _ in range(3))
    key_table, value_table = torch.randn(2, 3, 4, dtype=torch.float64)
    got = relpos.shaw_attention(
        q, k, v, key_table, value_table, max_distance=1, scale=400.0, backend="reference"
    )
    expected = brute_shaw(
        q[0, 0], k[0, 0], v[0, 0], key_table, value_table, left=1, right=1, scale=400.0
    )
    assert torch.isfinite(got).all()
    assert torch.allclose(got[0, 0], expected, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# eager.py: the hand-written backward


@pytest.mark.parametrize("mask_shape", [(1, 2, 4, 5), (4, 5)])
def test_eager_learned_bias_gets_its_gradient_when_nothing_else_needs_one(mask_shape):
    # Pins: dS is still formed when only the float mask (a learned bias) requires a gradient,
    # e.g. when the attention inputs are frozen; the gradient is that of the per-pair formula.
    torch.manual_seed(1)
    q, k = (
        torch.randn(1, 2, 4, 3, dtype=torch.float64),
        torch.randn(1, 2, 5, 3, dtype=torch.float64),
    )
    v = torch.randn(1, 2, 5, 3, dtype=torch.float64)
    key_table, value_table = torch.randn(2, 5, 3, dtype=torch.float64)
    bias = torch.randn(mask_shape, dtype=torch.float64, requires_grad=True)
    out = relpos.shaw_attention(
        q, k, v, key_table, value_table, max_distance=2, attn_mask=bias, backend="eager"
    )
    upstream = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * upstream).sum(), bias)

    bias_ref = bias.detach().clone().requires_grad_(True)
    total = 0.0
    for h in range(2):
        head_bias = bias_ref[0, h] if bias_ref.dim() == 4 else bias_ref
        z = brute_shaw(
            q[0, h], k[0, h], v[0, h], key_table, value_table,
            left=2, right=2, scale=3**-0.5, bias=head_bias,
        )  # fmt: skip
        total = total + (z * upstream[0, h]).sum()
    (expected,) = torch.autograd.grad(total, bias_ref)
    assert grad.abs().sum() > 0
    assert torch.allclose(grad, expected, atol=1e-10)


INPUT_NAMES = ["query", "key", "value", "key_table", "value_table"]


@pytest.mark.parametrize("key_query", [False, True], ids=["shaw", "key-query"])
@pytest.mark.parametrize("name", INPUT_NAMES)
def test_eager_gradient_of_one_input_when_only_it_requires_grad(name, key_query):
    # Pins: the hand-written backward forms dS (and the key-query term's per-key sums) whenever
    # any input that depends on them needs a gradient, e.g. when only the relative tables are
    # trained on a frozen model; each gradient is that of the per-pair formula.
    torch.manual_seed(2)
    tensors = {
        "query": torch.randn(1, 2, 4, 3, dtype=torch.float64),
        "key": torch.randn(1, 2, 5, 3, dtype=torch.float64),
        "value": torch.randn(1, 2, 5, 3, dtype=torch.float64),
        "key_table": torch.randn(3, 3, dtype=torch.float64),
        "value_table": torch.randn(3, 3, dtype=torch.float64),
    }
    tensors[name].requires_grad_(True)
    q, k, v, key_table, value_table = (tensors[n] for n in INPUT_NAMES)
    out = relpos.shaw_attention(
        q, k, v, key_table, value_table, max_distance=1, key_query=key_query, backend="eager"
    )
    upstream = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * upstream).sum(), tensors[name])

    leaves = {n: t.detach().clone().requires_grad_(n == name) for n, t in tensors.items()}
    total = 0.0
    for h in range(2):
        z = brute_shaw(
            leaves["query"][0, h], leaves["key"][0, h], leaves["value"][0, h],
            leaves["key_table"], leaves["value_table"],
            left=1, right=1, scale=3**-0.5, key_query=key_query,
        )  # fmt: skip
        total = total + (z * upstream[0, h]).sum()
    (expected,) = torch.autograd.grad(total, leaves[name])
    assert grad.abs().sum() > 0
    assert torch.allclose(grad, expected, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# checks.py


def test_a_value_head_size_of_zero_is_refused():
    # Pins: Dv = 0 is refused like D = 0, instead of returning an empty output silently.
    q = k = torch.randn(1, 1, 3, 4)
    v = torch.randn(1, 1, 3, 0)
    with pytest.raises(ValueError, match="head_dim must be > 0"):
        relpos.shaw_attention(q, k, v, max_distance=1)


# ---------------------------------------------------------------------------------------------
# shaw.py: the layer and the scheme with asymmetric clipping and offsets


def test_shaw_position_max_distance_is_the_larger_clipping_side():
    # Pins: ShawRelativePosition.max_distance is the farther of the two clipping distances.
    position = relpos.ShawRelativePosition(4, 2, max_left=1, max_right=3)
    assert (position.max_left, position.max_right, position.max_distance) == (1, 3, 3)
    assert relpos.ShawRelativePosition(4, 2, max_left=5, max_right=0).max_distance == 5


def _check_shaw_attend(position, *, left, right, q_off, k_off):
    torch.manual_seed(3)
    q = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    k, v = torch.randn(2, 1, 2, 6, 4, dtype=torch.float64)
    position = position.double()
    with torch.no_grad():  # distinct rows, so that a wrong row shows
        position.key_table.copy_(torch.randn_like(position.key_table))
        position.value_table.copy_(torch.randn_like(position.value_table))
    got = position.attend(q, k, v, query_offset=q_off, key_offset=k_off, backend="eager")
    for h in range(2):
        expected = brute_shaw(
            q[0, h], k[0, h], v[0, h], position.key_table.detach(), position.value_table.detach(),
            left=left, right=right, scale=0.5, q_off=q_off, k_off=k_off,
        )  # fmt: skip
        assert torch.allclose(got[0, h], expected, atol=1e-10), h


@pytest.mark.parametrize("q_off, k_off", [(0, 0), (5, 2), (1, 4)])
def test_shaw_position_attend_clips_each_side_and_uses_both_offsets(q_off, k_off):
    # Pins: attend passes max_left / max_right to the index in that order (a distance to the
    # left is clipped at -max_left), and uses query_offset and key_offset: i = q_off + r,
    # j = k_off + c.
    position = relpos.ShawRelativePosition(4, 2, num_heads=2, max_left=1, max_right=3)
    _check_shaw_attend(position, left=1, right=3, q_off=q_off, k_off=k_off)


def test_shaw_scheme_builds_layers_with_its_asymmetric_clipping():
    # Pins: ShawScheme hands max_left / max_right to its layers unswapped (the tables have the
    # same number of rows either way, so only the attention shows it).
    scheme = relpos.get_scheme("shaw", max_distance=2, max_left=3, max_right=1)
    position = scheme.attention_position(2, 4, causal=False)
    assert (position.max_left, position.max_right) == (3, 1)
    _check_shaw_attend(position, left=3, right=1, q_off=2, k_off=0)


# ---------------------------------------------------------------------------------------------
# t5.py: T5's defaults


def test_t5_scheme_defaults_are_t5s():
    # Pins: 32 buckets and max_distance 128 (T5's defaults); with them distance -7 is exact,
    # -8 starts the logarithmic buckets, and -128 and beyond share the last lower-half bucket.
    scheme = relpos.get_scheme("t5")
    assert (scheme.num_buckets, scheme.max_distance) == (32, 128)
    bias = scheme.attention_position(2, 4, causal=False)
    assert bias.bucket_weights.shape == (32, 2)
    buckets = relpos.t5_relative_bucket(
        torch.tensor([-7, -8, -127, -128, -1000, 1, 7, 1000]),
        num_buckets=scheme.num_buckets,
        max_distance=scheme.max_distance,
    )
    # floor(ln(n / 8) / ln(16) · 8) + 8: n = 127 -> 15 (7.98 floors to 7), n >= 128 -> 15 (cap).
    assert buckets.tolist() == [7, 8, 15, 15, 15, 17, 23, 31]


def test_t5_scheme_initialises_the_bias_with_std_of_d_model_to_the_minus_half():
    # Pins: Hugging Face's T5 initialisation, std = d_model^-0.5 with d_model = H · D (here
    # 8 · 32 = 256, std 1/16), not head_dim^-0.5.
    torch.manual_seed(4)
    bias = relpos.get_scheme("t5").attention_position(8, 32, causal=False)
    std = bias.bucket_weights.detach().std().item()
    assert 0.05 < std < 0.075


# ---------------------------------------------------------------------------------------------
# rope.py


def test_rope_scheme_defaults_are_the_papers_rotation():
    # Pins: RoPEScheme's defaults are RoFormer's: base 10000 and pairs (2t, 2t + 1).
    torch.manual_seed(5)
    position = relpos.get_scheme("rope").attention_position(1, 8, causal=False)
    x = torch.randn(1, 1, 5, 8, dtype=torch.float64)
    q, k = position.rotate(x, x, query_offset=40, key_offset=40)
    expected = complex_rope(x, range(40, 45))
    assert torch.allclose(q, expected, atol=1e-12)
    assert torch.allclose(k, expected, atol=1e-12)


def test_rotary_position_rotates_queries_and_keys_by_their_own_offsets():
    # Pins: keys turn by key_offset + r and queries by query_offset + r (MultiheadAttention
    # passes different ones when query_offset is given explicitly).
    torch.manual_seed(6)
    position = relpos.RotaryPosition(8)
    q = torch.randn(1, 1, 3, 8, dtype=torch.float64)
    k = torch.randn(1, 1, 4, 8, dtype=torch.float64)
    got_q, got_k = position.rotate(q, k, query_offset=6, key_offset=2)
    assert torch.allclose(got_q, complex_rope(q, range(6, 9)), atol=1e-12)
    assert torch.allclose(got_k, complex_rope(k, range(2, 6)), atol=1e-12)


def test_rotary_position_uses_its_base_and_linear_scaling():
    # Pins: a RotaryPosition layer rotates with the base and scaling factor it was built with
    # (linear interpolation: position p turns as p / s would).
    torch.manual_seed(7)
    position = relpos.get_scheme(
        "rope", base=500.0, scaling="linear", scaling_factor=2.0
    ).attention_position(1, 8, causal=False)
    x = torch.randn(1, 1, 4, 8, dtype=torch.float64)
    q, _ = position.rotate(x, x, query_offset=3, key_offset=3)
    assert torch.allclose(q, complex_rope(x, [p / 2 for p in range(3, 7)], base=500.0), atol=1e-12)


@pytest.mark.parametrize(
    "base, expected",
    [
        # d = 8, L = 4096: pair_turning(n) = 8 ln(4096 / 2πn) / (2 ln base).
        # base 100: 32 turns at t = 2.62 (floor 2), one turn at 5.63 (ceil 6 <= d - 1 = 7),
        # so the ramp is (t - 2) / 4 over the d/2 = 4 pairs.
        (100.0, [0.0, 0.0, 0.0, 0.25]),
        # base 10: 5.24 -> 5 and 11.26 -> 12, capped at d - 1 = 7: every pair is below the ramp.
        (10.0, [0.0, 0.0, 0.0, 0.0]),
    ],
)
def test_yarn_ramp_caps_its_end_at_head_dim_minus_one(base, expected):
    # Pins: Hugging Face's find_correction_range clamps the ramp's end to dim - 1 (the head
    # size), not to the last pair index d/2 - 1.
    ramp = yarn_ramp(8, base=base, original_max_len=4096)
    assert torch.allclose(ramp, torch.tensor(expected, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# deberta.py


def hf_log_bucket(n: int, bucket_size: int, max_position: int) -> float:
    """Hugging Face's make_log_bucket_position for one integer, before the final ceil."""
    mid = bucket_size // 2
    return math.log(abs(n) / mid) / math.log((max_position - 1) / mid) * (mid - 1)


@pytest.mark.parametrize("bucket_size, max_position", [(8, 10), (8, 30), (16, 40)])
def test_deberta_log_buckets_follow_the_formula_for_small_tables(bucket_size, max_position):
    # Pins: the logarithm's base is (max_position - 1) / mid. Worked example (8, 10): n = 7 is
    # ceil(ln(7/4) / ln(9/4) · 3) + 4 = ceil(2.07) + 4 = 7 (base 10/4 would give 6).
    mid = bucket_size // 2
    distances = range(mid + 1, 3 * max_position)
    got = relpos.deberta_log_bucket(torch.tensor(list(distances)), bucket_size, max_position)
    for n, bucket in zip(distances, got.tolist(), strict=True):
        scaled = hf_log_bucket(n, bucket_size, max_position)
        if abs(scaled - round(scaled)) > 1e-4:  # float32 and float64 agree on the ceiling
            assert bucket == math.ceil(scaled) + mid, n
    if (bucket_size, max_position) == (8, 10):
        assert relpos.deberta_log_bucket(torch.tensor([7, -7]), 8, 10).tolist() == [7, -7]


def test_deberta_default_clipping_is_shaws():
    # Pins: DeBERTa's default k is 16, Shaw's, so that the two schemes see the same distances.
    assert relpos.get_scheme("deberta").max_distance == 16
    assert relpos.get_scheme("deberta").max_distance == relpos.get_scheme("shaw").max_distance


# ---------------------------------------------------------------------------------------------
# swin.py


def test_continuous_window_bias_is_swin_v2s_relu_mlp():
    # Pins: Swin V2's continuous position bias, 16 · sigmoid(W2 · ReLU(W1 · Δ̂ + b1)), with
    # Δ̂ = sign(t) · log2(1 + |t|) / 3 and t = 8 · (dy, dx) / (W - 1), written out per offset.
    torch.manual_seed(8)
    bias = relpos.ContinuousWindowBias((2, 3), 2, hidden_dim=16).double()
    with torch.no_grad():  # weights large enough that the activation's shape matters
        for layer in (bias.mlp[0], bias.mlp[2]):
            layer.weight.copy_(torch.randn_like(layer.weight))
        bias.mlp[0].bias.copy_(torch.randn_like(bias.mlp[0].bias))
    w1, b1, w2 = bias.mlp[0].weight, bias.mlp[0].bias, bias.mlp[2].weight
    table = bias.table()
    row = 0
    for dy in range(-1, 2):
        for dx in range(-2, 3):
            t = (8 * dy / 1, 8 * dx / 2)
            logs = [math.copysign(math.log2(1 + abs(c)), c) / 3 if c else 0.0 for c in t]
            hidden = (w1 @ torch.tensor(logs, dtype=torch.float64) + b1).clamp(min=0)
            expected = 16 * torch.sigmoid(w2 @ hidden)
            assert torch.allclose(table[row], expected, atol=1e-6), (dy, dx)
            row += 1


# ---------------------------------------------------------------------------------------------
# multihead.py


def _torch_pair(batch_first: bool):
    torch.manual_seed(9)
    theirs = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first).double().eval()
    return theirs, relpos.MultiheadAttention.from_torch(theirs).eval()


@pytest.mark.parametrize("batch_first", [True, False])
def test_cross_attention_equals_torchs_in_either_layout(batch_first):
    # Pins: cross-attention (no positions) computes what torch.nn.MultiheadAttention does, with
    # sequence-first inputs too (keys and values are transposed like the queries).
    theirs, ours = _torch_pair(batch_first)
    shape = (2, 3, 8) if batch_first else (3, 2, 8)  # B = 2, Lq = 3
    x = torch.randn(shape, dtype=torch.float64)
    memory = torch.randn((2, 5, 8) if batch_first else (5, 2, 8), dtype=torch.float64)
    expected, _ = theirs(x, memory, memory, need_weights=False)
    assert torch.allclose(ours(x, memory, memory), expected, atol=1e-12)


def test_causal_cross_attention_masks_like_torchs_causal_mask():
    # Pins: is_causal reaches cross-attention as the top-left mask (query r sees keys c <= r);
    # torch's boolean mask marks what may NOT be attended.
    theirs, ours = _torch_pair(True)
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    memory = torch.randn(2, 5, 8, dtype=torch.float64)
    blocked = ~torch.ones(3, 5, dtype=torch.bool).tril()
    expected, _ = theirs(x, memory, memory, attn_mask=blocked, need_weights=False)
    assert torch.allclose(ours(x, memory, memory, is_causal=True), expected, atol=1e-12)


def test_kv_cache_refuses_values_of_another_shape_and_stays_as_it_was():
    # Pins: the value half of KVCache's check: a mismatched value raises a ValueError that
    # names the cache, before anything is stored.
    cache = relpos.KVCache()
    key, value = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    cache.append(key, value)
    with pytest.raises(ValueError, match="KVCache"):
        cache.append(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 5))
    assert cache.length == 3 and cache.value is value
