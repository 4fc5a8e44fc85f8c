"""The ``eager`` backend's fast path (hand-written backward, banded index) against the oracle.

``tests/test_attention.py`` runs every backend over the issue's grid through ``shaw_attention``.
This file looks inside ``eager``: the band/rectangle split of the clipped index on its own, and
:class:`~relpos.attention.eager.ShawAttentionFunction` with row blocks much smaller than the
inputs, so that every block boundary, window crop and clipped rectangle is exercised on tiny
float64 tensors.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relpos.attention import RelativeIndex, reference_attention
from relpos.attention import eager as eager_module
from relpos.attention.eager import (
    ShawAttentionFunction,
    add_by_bucket_,
    band_blocks,
    bucket_sum,
    eager_attention,
    fast_path_applies,
    gather_buckets,
    gather_scatter_attention,
    sum_by_bucket,
)

TIGHT = dict(rtol=1e-9, atol=1e-10)
NAMES = ("query", "key", "value", "key_table", "value_table")


def make_case(
    *,
    q_len=6,
    k_len=6,
    left=2,
    right=2,
    query_offset=0,
    key_offset=0,
    batch=2,
    heads=2,
    head_dim=3,
    value_dim=4,
    per_head=False,
    key_term=True,
    value_term=True,
    mask=None,
    is_causal=False,
    dropout=False,
    key_query=False,
    seed=0,
):
    """float64 leaves and the backend keyword arguments for one situation (``key_query``: Huang
    et al.'s key-query term as well)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    rows = left + right + 1
    lead = heads if per_head else 1
    tensors = {
        "query": randn(batch, heads, q_len, head_dim),
        "key": randn(batch, heads, k_len, head_dim),
        "value": randn(batch, heads, k_len, value_dim),
        "key_table": randn(lead, rows, head_dim) if key_term else None,
        "value_table": randn(lead, rows, value_dim) if value_term else None,
    }
    attn_mask = None
    if mask == "padding":
        attn_mask = torch.ones(batch, 1, 1, k_len, dtype=torch.bool)
        attn_mask[-1, ..., k_len // 2 :] = False
    elif mask == "bool":
        attn_mask = torch.rand(batch, heads, q_len, k_len, generator=gen) < 0.6
    elif mask == "float":
        attn_mask = randn(q_len, k_len)
        attn_mask[torch.rand(q_len, k_len, generator=gen) < 0.3] = float("-inf")
    elif mask == "empty-rows":
        attn_mask = torch.rand(batch, 1, q_len, k_len, generator=gen) < 0.6
        attn_mask[0, :, 1] = False  # one query row of the first sequence sees no key at all
        attn_mask[-1, :, -1] = False
    dropout_mask = None
    if dropout:
        keep = torch.rand(batch, heads, q_len, k_len, generator=gen) >= 0.3
        dropout_mask = keep.to(torch.float64) / 0.7
    kwargs = dict(
        index=RelativeIndex(q_len, k_len, left, right, query_offset, key_offset),
        attn_mask=attn_mask,
        is_causal=is_causal,
        scale=head_dim**-0.5,
        dropout_mask=dropout_mask,
        key_query=key_query,
    )
    return tensors, kwargs


def forward_backward(fn, tensors, kwargs, seed=1):
    leaves = {n: None if t is None else t.clone().requires_grad_(True) for n, t in tensors.items()}
    output = fn(
        leaves["query"],
        leaves["key"],
        leaves["value"],
        key_table=leaves["key_table"],
        value_table=leaves["value_table"],
        **kwargs,
    )
    gen = torch.Generator().manual_seed(seed)
    upstream = torch.randn(output.shape, generator=gen, dtype=torch.float64).to(output.dtype)
    (output * upstream).sum().backward()
    return output.detach(), {n: None if t is None else t.grad for n, t in leaves.items()}


def assert_fast_matches_reference(tensors, kwargs, block_rows):
    expected, expected_grads = forward_backward(reference_attention, tensors, kwargs)

    def fast(*args, **kw):
        return eager_attention(*args, block_rows=block_rows, **kw)

    actual, grads = forward_backward(fast, tensors, kwargs)
    assert not actual.isnan().any()
    torch.testing.assert_close(actual, expected, **TIGHT)
    for name in NAMES:
        if tensors[name] is None:
            assert grads[name] is None
            continue
        assert torch.isfinite(grads[name]).all(), name
        torch.testing.assert_close(grads[name], expected_grads[name], **TIGHT, msg=name)


# Each entry: one band-edge situation. Shapes are tiny; block_rows below makes several blocks.
CASES = {
    "square": {},
    "k=0": dict(left=0, right=0),
    "k=1": dict(left=1, right=1),
    "k>=L": dict(left=9, right=9),
    "k=L-1": dict(left=5, right=5),
    "Lq<Lk": dict(q_len=3, k_len=9),
    "Lq>Lk": dict(q_len=9, k_len=3),
    "one-query": dict(q_len=1, k_len=7, query_offset=6),
    "one-key": dict(q_len=5, k_len=1),
    "query-offset": dict(q_len=4, k_len=9, query_offset=5),
    "key-offset": dict(q_len=5, k_len=5, query_offset=1, key_offset=4),
    "far-offset": dict(q_len=4, k_len=4, query_offset=50),
    "far-key-offset": dict(q_len=4, k_len=4, key_offset=50),
    "asymmetric": dict(left=3, right=1, q_len=7, k_len=7),
    "left-only": dict(left=2, right=0),
    "right-only": dict(left=0, right=3, query_offset=2),
    "causal": dict(is_causal=True, q_len=7, k_len=7),
    "causal-Lq<Lk": dict(is_causal=True, q_len=4, k_len=7),
    "padding": dict(mask="padding", k_len=7),
    "bool-mask": dict(mask="bool"),
    "float-mask": dict(mask="float", is_causal=True),
    "fully-masked-rows": dict(mask="empty-rows"),
    "per-head": dict(per_head=True),
    "key-only": dict(value_term=False),
    "value-only": dict(key_term=False),
    "neither": dict(key_term=False, value_term=False),
    "dropout": dict(dropout=True),
    "dropout-key-only": dict(dropout=True, value_term=False),
    "dropout+mask": dict(dropout=True, mask="empty-rows", per_head=True),
    # Huang et al.'s key-query term: the key term seen from each key column.
    "key-query": dict(key_query=True),
    "key-query-asymmetric": dict(key_query=True, left=3, right=1, q_len=7, k_len=7),
    "key-query-Lq<Lk-offset": dict(key_query=True, q_len=4, k_len=9, query_offset=5),
    "key-query-Lq>Lk": dict(key_query=True, q_len=9, k_len=3, key_offset=2),
    "key-query-causal+padding": dict(key_query=True, is_causal=True, mask="padding", k_len=6),
    "key-query-per-head+dropout": dict(key_query=True, per_head=True, dropout=True),
    "key-query-key-only-k=0": dict(key_query=True, value_term=False, left=0, right=0),
    "key-query-k>=L": dict(key_query=True, left=9, right=9, mask="empty-rows"),
}


@pytest.mark.parametrize(
    "chunk_elements", [1, eager_module.CHUNK_ELEMENTS], ids=["chunk=block", "one-chunk"]
)
@pytest.mark.parametrize("block_rows", [1, 2, 3, 128])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_fast_path_matches_reference(case, block_rows, chunk_elements, monkeypatch):
    monkeypatch.setattr(eager_module, "CHUNK_ELEMENTS", chunk_elements)
    tensors, kwargs = make_case(**CASES[case])
    assert fast_path_applies(tensors["query"], tensors["key"])
    assert_fast_matches_reference(tensors, kwargs, block_rows)


@pytest.mark.parametrize(
    "block_rows, chunk_elements",
    [(2, 1), (2, 100), (128, eager_module.CHUNK_ELEMENTS)],
    ids=["one-block-chunks", "two-block-chunks", "one-chunk"],
)
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_forward_without_gradients_matches_reference(case, block_rows, chunk_elements, monkeypatch):
    # No input needs a gradient: the chunked forward runs, never forming the (Lq, Lk) weights.
    # With 2-row blocks and B = H = 2, a 100-entry chunk holds several blocks when Lk <= 6.
    monkeypatch.setattr(eager_module, "CHUNK_ELEMENTS", chunk_elements)
    tensors, kwargs = make_case(**CASES[case])
    args = [tensors[n] for n in ("query", "key", "value")]
    tables = dict(key_table=tensors["key_table"], value_table=tensors["value_table"])
    expected = reference_attention(*args, **tables, **kwargs)
    actual = eager_attention(*args, **tables, block_rows=block_rows, **kwargs)
    assert actual.grad_fn is None
    torch.testing.assert_close(actual, expected, **TIGHT)
    leaves = [t.clone().requires_grad_(True) for t in args]
    with torch.no_grad():
        under_no_grad = eager_attention(*leaves, **tables, block_rows=block_rows, **kwargs)
    torch.testing.assert_close(under_no_grad, expected, **TIGHT)


@pytest.mark.parametrize(
    "case",
    [
        dict(q_len=5, k_len=6, left=1, right=2, query_offset=1),
        dict(q_len=4, k_len=4, left=1, right=1, per_head=True, mask="empty-rows"),
        dict(q_len=4, k_len=5, left=2, right=0, is_causal=True, dropout=True),
        dict(q_len=3, k_len=5, left=0, right=0, key_term=False),
        dict(q_len=5, k_len=4, left=1, right=2, key_offset=1, key_query=True),
    ],
    ids=["offsets", "per-head+empty-rows", "causal+dropout", "k=0-value-only", "key-query"],
)
def test_gradcheck(case):
    tensors, kwargs = make_case(batch=1, heads=2, head_dim=2, value_dim=2, **case)
    names = [n for n in NAMES if tensors[n] is not None]

    def fn(*leaves):
        given_ = dict(zip(names, leaves, strict=True))
        return ShawAttentionFunction.apply(
            given_["query"],
            given_["key"],
            given_["value"],
            given_.get("key_table"),
            given_.get("value_table"),
            kwargs["attn_mask"],
            kwargs["dropout_mask"],
            kwargs["index"],
            kwargs["is_causal"],
            kwargs["scale"],
            2,
            kwargs["key_query"],
        )

    leaves = [tensors[n].clone().requires_grad_(True) for n in names]
    assert torch.autograd.gradcheck(fn, leaves)


@settings(max_examples=60, deadline=None)
@given(
    q_len=st.integers(1, 12),
    k_len=st.integers(1, 12),
    left=st.integers(0, 6),
    right=st.integers(0, 6),
    query_offset=st.integers(-8, 8),
    key_offset=st.integers(-8, 8),
    block_rows=st.integers(1, 7),
)
def test_band_split_matches_dense_index(
    q_len, k_len, left, right, query_offset, key_offset, block_rows
):
    index = RelativeIndex(q_len, k_len, left, right, query_offset, key_offset)
    dense = index.dense()  # (Lq, Lk)
    blocks = band_blocks(index, block_rows=block_rows)
    gen = torch.Generator().manual_seed(q_len * 131 + k_len)
    per_bucket = torch.randn(2, q_len, index.num_buckets, generator=gen, dtype=torch.float64)
    weights = torch.randn(2, q_len, k_len, generator=gen, dtype=torch.float64)

    added = add_by_bucket_(weights.clone(), per_bucket, blocks)
    torch.testing.assert_close(added, weights + gather_buckets(per_bucket, dense), **TIGHT)
    torch.testing.assert_close(
        sum_by_bucket(weights, blocks), bucket_sum(weights, dense, index.num_buckets), **TIGHT
    )
    # The key-query term's blocks: per key column instead of per query row.
    per_key = torch.randn(2, k_len, index.num_buckets, generator=gen, dtype=torch.float64)
    added = weights.clone()
    key_masses = torch.zeros_like(per_key)
    for n, (r0, r1) in enumerate(blocks.rows):
        eager_module._add_key_block_(added[:, r0:r1], per_key, blocks, n)
        eager_module._sum_key_block_(key_masses, weights[:, r0:r1], blocks, n)
    by_key = gather_buckets(per_key, dense.T).transpose(-1, -2)  # [i, j] = per_key[j, b(i, j)]
    torch.testing.assert_close(added, weights + by_key, **TIGHT)
    expected_masses = bucket_sum(weights.transpose(-1, -2), dense.T, index.num_buckets)
    torch.testing.assert_close(key_masses, expected_masses, **TIGHT)


def test_band_split_covers_every_column_once():
    # A rectangle of bucket 0, a window, a rectangle of bucket R - 1: they tile each row block.
    index = RelativeIndex(10, 13, 2, 3, query_offset=4, key_offset=1)
    blocks = band_blocks(index, block_rows=3)
    for (r0, r1), start, end in zip(blocks.rows, blocks.starts, blocks.ends, strict=True):
        assert 0 <= start <= end <= index.key_len
        dense = index.dense()[r0:r1]
        assert (dense[:, :start] == 0).all()
        assert (dense[:, end:] == index.num_buckets - 1).all()
    assert [r for rows in blocks.rows for r in range(*rows)] == list(range(index.query_len))


def test_fully_masked_rows_are_zero_with_zero_gradients():
    tensors, kwargs = make_case(mask="empty-rows", q_len=5, k_len=5)
    output, grads = forward_backward(
        lambda *a, **k: eager_attention(*a, block_rows=2, **k), tensors, kwargs
    )
    assert (output[0, :, 1] == 0).all() and (output[-1, :, -1] == 0).all()
    # The empty query row contributes nothing anywhere: its query gradient is exactly zero.
    assert (grads["query"][0, :, 1] == 0).all()
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)


def test_backward_twice_with_retain_graph_gives_the_same_gradients():
    # The backward must not consume what the forward saved (the weights buffer is reused in place
    # only inside the forward).
    tensors, kwargs = make_case(q_len=7, k_len=7, mask="padding")
    leaves = [t.clone().requires_grad_(True) for t in tensors.values()]
    output = eager_attention(
        *leaves[:3], key_table=leaves[3], value_table=leaves[4], block_rows=3, **kwargs
    )
    first = torch.autograd.grad(output.sum(), leaves, retain_graph=True)
    second = torch.autograd.grad(output.sum(), leaves)
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_inputs_are_not_modified_and_layouts_need_not_be_contiguous():
    tensors, kwargs = make_case(q_len=6, k_len=8, mask="float")
    # (B, L, H, D) storage seen as (B, H, L, D), as a multi-head layer hands them over.
    strided = {
        n: None if t is None or t.dim() != 4 else t.transpose(1, 2).contiguous().transpose(1, 2)
        for n, t in tensors.items()
    }
    strided["key_table"], strided["value_table"] = tensors["key_table"], tensors["value_table"]
    assert not strided["query"].is_contiguous()
    before = {n: t.clone() for n, t in strided.items()} | {"mask": kwargs["attn_mask"].clone()}
    assert_fast_matches_reference(strided, kwargs, block_rows=4)
    for name, t in strided.items():
        torch.testing.assert_close(t, before[name], rtol=0, atol=0)
    torch.testing.assert_close(kwargs["attn_mask"], before["mask"], rtol=0, atol=0)


def test_only_the_needed_gradients():
    tensors, kwargs = make_case()
    query = tensors["query"].clone().requires_grad_(True)
    output = eager_attention(
        query,
        tensors["key"],
        tensors["value"],
        key_table=tensors["key_table"],
        value_table=tensors["value_table"],
        **kwargs,
    )
    (grad,) = torch.autograd.grad(output.sum(), [query])
    expected = reference_attention(
        query,
        tensors["key"],
        tensors["value"],
        key_table=tensors["key_table"],
        value_table=tensors["value_table"],
        **kwargs,
    )
    (expected_grad,) = torch.autograd.grad(expected.sum(), [query])
    torch.testing.assert_close(grad, expected_grad, **TIGHT)


def test_float32_matches_float64_reference():
    tensors, kwargs = make_case(q_len=40, k_len=33, left=4, right=6, mask="padding", seed=3)
    expected, expected_grads = forward_backward(reference_attention, tensors, kwargs)
    as32 = {n: None if t is None else t.float() for n, t in tensors.items()}
    actual, grads = forward_backward(
        lambda *a, **k: eager_attention(*a, block_rows=16, **k), as32, kwargs
    )
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)
    for name in NAMES:
        torch.testing.assert_close(grads[name].double(), expected_grads[name], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "mask_shape",
    [(6, 6), (2, 6, 6), (1, 2, 6, 6), (2, 1, 6, 6), (2, 2, 6, 6), (2, 1, 1, 6), (2, 2, 1, 6)],
)
@pytest.mark.parametrize("extra", [{}, {"is_causal": True, "dropout": True}, {"key_query": True}])
def test_a_float_mask_that_needs_gradients_gets_them(mask_shape, extra):
    # A learned bias (T5's, DeBERTa's) reaches the fast path as a float mask with a gradient:
    # dS summed over the dimensions the mask broadcasts along, -inf entries included.
    tensors, kwargs = make_case(per_head=True, **extra)
    gen = torch.Generator().manual_seed(7)
    bias = torch.randn(mask_shape, generator=gen, dtype=torch.float64)
    if len(mask_shape) == 4 and mask_shape[2] == 6:
        bias[..., 2, :] = float("-inf")  # a fully masked row: zeros, zero gradients
    bias[..., 1] = float("-inf")
    for block_rows in (2, 128):
        results = []
        for fn in (
            reference_attention,
            lambda *a, block_rows=block_rows, **k: eager_attention(*a, block_rows=block_rows, **k),
        ):
            mask = bias.clone().requires_grad_(True)
            output, grads = forward_backward(fn, tensors, {**kwargs, "attn_mask": mask})
            results.append((output, grads, mask.grad))
        (expected, expected_grads, expected_mask_grad), (actual, grads, mask_grad) = results
        torch.testing.assert_close(actual, expected, **TIGHT)
        for name in NAMES:
            if tensors[name] is not None:
                torch.testing.assert_close(grads[name], expected_grads[name], **TIGHT, msg=name)
        assert mask_grad.shape == bias.shape and torch.isfinite(mask_grad).all()
        torch.testing.assert_close(mask_grad, expected_mask_grad, **TIGHT)
        assert mask_grad.abs().sum() > 0


def test_gradcheck_with_a_learned_bias():
    tensors, kwargs = make_case(batch=1, heads=2, head_dim=2, value_dim=2, q_len=5, k_len=4)
    bias = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    names = [n for n in NAMES if tensors[n] is not None]

    def fn(mask, *leaves):
        given_ = dict(zip(names, leaves, strict=True))
        return ShawAttentionFunction.apply(
            given_["query"], given_["key"], given_["value"], given_["key_table"],
            given_["value_table"], mask, None, kwargs["index"], False, kwargs["scale"], 2, False,
        )  # fmt: skip

    leaves = [tensors[n].clone().requires_grad_(True) for n in names]
    assert torch.autograd.gradcheck(fn, [bias, *leaves])


@pytest.mark.parametrize("case", ["square", "Lq<Lk", "causal", "fully-masked-rows", "key-query"])
def test_the_readable_gather_scatter_formulation_matches_reference(case):
    # eager runs the fast path for every non-empty input now; the readable formulation of the
    # same split stays (benchmarks/compile_eager.py times it compiled), checked here.
    tensors, kwargs = make_case(**CASES[case])
    expected, expected_grads = forward_backward(reference_attention, tensors, kwargs)
    actual, grads = forward_backward(gather_scatter_attention, tensors, kwargs)
    torch.testing.assert_close(actual, expected, **TIGHT)
    for name in NAMES:
        if tensors[name] is not None:
            torch.testing.assert_close(grads[name], expected_grads[name], **TIGHT, msg=name)
