"""Per-distance scalar biases (T5, ALiBi) through SDPA and FlexAttention, against the manual path;
and ``relpos show --2d``."""

import json

import pytest
import torch

import relpos
from relpos.attention.flex_bias import (
    distance_bias_attention,
    expand_distance_bias,
    flex_applies,
    flex_bias_attention,
    relative_distances,
)
from relpos.attention.sdpa import reference_bias_attention
from relpos.cli import main

# FlexAttention's unfused eager path (forward only on CPU) warns that it is not compiled, and its
# internals still touch torch.jit.
pytestmark = [
    pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated"),
]


def test_distance_table_layout():
    distances = relative_distances(3, 5, query_offset=4, key_offset=1)
    assert distances.tolist() == list(range(1 - 4 - 2, 1 + 4 - 4 + 1))  # j - i from -5 to 1
    per_distance = torch.stack((distances * 1.0, distances * 10.0))  # (H=2, Lq + Lk - 1)
    dense = expand_distance_bias(per_distance, 3, 5)  # (H, Lq, Lk)
    i = torch.arange(3)[:, None] + 4
    j = torch.arange(5)[None, :] + 1
    assert torch.equal(dense[0], (j - i).double().float())
    assert torch.equal(dense[1], (j - i) * 10.0)


def test_distance_table_bad_shape():
    q = k = v = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match=r"distance_bias must have shape \(H, Lq \+ Lk - 1\)"):
        distance_bias_attention(q, k, v, torch.zeros(2, 6))
    with pytest.raises(ValueError, match="query_len and key_len must be >= 1"):
        relative_distances(0, 3)


def scheme_biases(q_len, k_len, offsets):
    torch.manual_seed(0)
    t5 = relpos.T5RelativeBias(3, num_buckets=8, max_distance=12).double()
    alibi = relpos.ALiBiBias(3, causal=False)
    with torch.no_grad():  # FlexAttention has no CPU backward
        return {
            "t5": t5.distance_bias(q_len, k_len, **offsets),
            "alibi": alibi.distance_bias(q_len, k_len, **offsets).double(),
        }


@pytest.mark.parametrize("mask_kind", ["none", "causal", "bool", "float"])
@pytest.mark.parametrize("shape", [(5, 5), (3, 7)])
def test_flex_eager_equals_reference(mask_kind, shape):
    q_len, k_len = shape
    offsets = dict(query_offset=k_len - q_len, key_offset=0)
    q = torch.randn(2, 3, q_len, 8, dtype=torch.float64)
    k, v = torch.randn(2, 2, 3, k_len, 8, dtype=torch.float64)
    attn_mask, is_causal = None, mask_kind == "causal"
    if mask_kind == "bool":
        attn_mask = torch.rand(2, 1, q_len, k_len) > 0.4
        attn_mask[1, 0, 0] = False  # no key at all: zeros, as with SDPA
    elif mask_kind == "float":
        attn_mask = torch.randn(q_len, k_len, dtype=torch.float64)
    for name, per_distance in scheme_biases(q_len, k_len, offsets).items():
        flex = flex_bias_attention(
            q,
            k,
            v,
            distance_bias=per_distance,
            attn_mask=attn_mask,
            is_causal=is_causal,
            compiled=False,
        )
        dense = expand_distance_bias(per_distance, q_len, k_len)
        manual = reference_bias_attention(
            q, k, v, bias=dense, attn_mask=attn_mask, is_causal=is_causal
        )
        assert torch.allclose(flex, manual, atol=1e-12), name
        via_backend = distance_bias_attention(
            q, k, v, per_distance, attn_mask=attn_mask, is_causal=is_causal, backend="sdpa"
        )
        assert torch.allclose(via_backend, manual, atol=1e-12), name


@pytest.mark.slow
def test_flex_compiled_equals_reference():
    # The one compiled test: compiling FlexAttention on CPU takes seconds to tens of seconds.
    q_len, k_len = 4, 9
    q = torch.randn(1, 3, q_len, 16)
    k, v = torch.randn(2, 1, 3, k_len, 16)
    per_distance = scheme_biases(q_len, k_len, dict(query_offset=5, key_offset=0))["alibi"].float()
    flex = flex_bias_attention(q, k, v, distance_bias=per_distance, is_causal=True)
    dense = expand_distance_bias(per_distance, q_len, k_len)
    manual = reference_bias_attention(q, k, v, bias=dense, is_causal=True)
    assert torch.allclose(flex, manual, atol=1e-5)


def test_flex_float64_by_name_matches_reference():
    # Compiled CPU FlexAttention has no float64 kernel; float64 runs the unfused path instead of
    # failing inside Inductor after the compile wait.
    q, k, v = torch.randn(3, 1, 2, 4, 8, dtype=torch.float64)
    per_distance = torch.randn(2, 7, dtype=torch.float64)  # (H, Lq + Lk - 1)
    with torch.no_grad():
        flex = distance_bias_attention(q, k, v, per_distance, is_causal=True, backend="flex")
    manual = distance_bias_attention(q, k, v, per_distance, is_causal=True, backend="reference")
    assert flex.dtype == torch.float64
    torch.testing.assert_close(flex, manual, rtol=1e-9, atol=1e-9)


def test_backend_choice_and_errors():
    q = k = v = torch.randn(1, 2, 4, 8)
    per_distance = relpos.ALiBiBias(2).distance_bias(4, 4)
    assert not flex_applies(q, k, distance_bias=per_distance, attn_mask=None, dropout_p=0.0)
    manual = distance_bias_attention(q, k, v, per_distance, backend="reference")
    for backend in ("auto", "sdpa", "eager"):  # eager: the Shaw backend without tables
        fused = distance_bias_attention(q, k, v, per_distance, backend=backend)
        assert torch.allclose(fused, manual, atol=1e-6)
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        distance_bias_attention(q, k, v, per_distance, backend="fast")
    for backend in ("reference", "flex"):
        with pytest.raises(ValueError, match="has no attention dropout"):
            distance_bias_attention(q, k, v, per_distance, dropout_p=0.1, backend=backend)
    dropped = distance_bias_attention(q, k, v, per_distance, dropout_p=0.5, backend="sdpa")
    assert dropped.shape == (1, 2, 4, 8) and torch.isfinite(dropped).all()


def test_show_2d_prints_the_window_index(capsys):
    assert main(["show", "--2d", "--window", "2x2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "9 table rows, entry 4 is the token itself" in out[0]
    assert [line.split("|")[1].split() for line in out[3:]] == [
        ["4", "3", "1", "0"],
        ["5", "4", "2", "1"],
        ["7", "6", "4", "3"],
        ["8", "7", "5", "4"],
    ]
    assert main(["show", "--2d", "--window", "3x2", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["index"] == relpos.swin_relative_position_index(3, 2).tolist()
    assert shown["tokens"][:3] == ["0,0", "0,1", "1,0"]
    assert main(["show", "--2d", "--window", "7"]) == 2
    assert "--window must look like HxW" in capsys.readouterr().err
    assert main(["show", "--length", "3", "-k", "1", "--format", "json"]) == 0  # unchanged
    assert json.loads(capsys.readouterr().out)["index"][0] == [1, 2, 2]


def test_unfused_calls_do_not_warn_the_caller():
    """The unfused FlexAttention path is chosen on purpose (float64 on the CPU): torch's warning
    that it runs without torch.compile would only alarm the caller."""
    import warnings

    query = torch.randn(1, 2, 5, 8, dtype=torch.float64)
    bias = torch.randn(2, 9, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="flex_attention called without torch.compile")
        flex_bias_attention(query, query, query, distance_bias=bias)


@pytest.mark.parametrize("name", ["t5", "deberta", "transformer-xl"])
@pytest.mark.parametrize("mask_kind", ["none", "causal", "bool"])
def test_learned_biases_on_the_eager_backend_match_the_reference(name, mask_kind):
    # backend="eager" runs a dense bias through the eager Shaw backend without tables, the bias
    # as a float mask that gets dS: values and every gradient, the learned bias's included.
    torch.manual_seed(0)
    position = relpos.get_scheme(name).attention_position(3, 8, causal=False).double()
    for param in position.parameters():
        torch.nn.init.normal_(param)
    q_len, k_len = 5, 7
    attn_mask, is_causal = None, mask_kind == "causal"
    if mask_kind == "bool":
        attn_mask = torch.rand(2, 1, q_len, k_len, generator=torch.Generator().manual_seed(3)) > 0.4
        attn_mask[1, 0, 0] = False  # no key at all: zeros, zero gradients
    inputs = [torch.randn(2, 3, n, 8, dtype=torch.float64) for n in (q_len, k_len, k_len)]
    params = list(position.parameters())
    results = []
    for backend in ("reference", "eager"):
        leaves = [t.clone().requires_grad_(True) for t in inputs]
        output = position.attend(
            *leaves, attn_mask=attn_mask, is_causal=is_causal, query_offset=2, backend=backend
        )
        grads = torch.autograd.grad((output * output.detach().sin()).sum(), [*leaves, *params])
        results.append((output, grads))
    (expected, expected_grads), (actual, grads) = results
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-9)
