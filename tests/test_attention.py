"""``relpos.shaw_attention``: every backend against the paper-literal reference, and its checks.

The reference (Eq. 3-4 gathered into ``(Lq, Lk, D)``) is the oracle. Every other registered
backend must match it in float64 — values and gradients with respect to the query, key, value and
both tables — over a grid of shapes, masks, offsets, table layouts and ablations. The Triton and
Flex backends are tested in their own files (they need their own devices/shapes).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relpos import shaw_attention
from relpos.attention import BACKENDS, resolve_clipping

FAST_BACKENDS = [name for name in BACKENDS if name not in ("reference", "triton", "flex")]
GRAD_NAMES = ("query", "key", "value", "key_table", "value_table")
TIGHT = dict(rtol=1e-9, atol=1e-10)


def make_inputs(
    *,
    batch: int = 2,
    heads: int = 2,
    q_len: int = 5,
    k_len: int = 5,
    head_dim: int = 4,
    value_dim: int | None = None,
    max_distance: int | None = 2,
    max_left: int | None = None,
    max_right: int | None = None,
    key_term: bool = True,
    value_term: bool = True,
    per_head: bool = False,
    mask: str | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> tuple[dict, dict]:
    """Random tensors ``(query, key, value, key_table, value_table)`` and the matching kwargs."""
    gen = torch.Generator().manual_seed(seed)
    value_dim = head_dim if value_dim is None else value_dim
    left, right = resolve_clipping(max_distance, max_left, max_right)
    rows = left + right + 1

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    table_lead = (heads,) if per_head else ()
    tensors = {
        "query": randn(batch, heads, q_len, head_dim),
        "key": randn(batch, heads, k_len, head_dim),
        "value": randn(batch, heads, k_len, value_dim),
        "key_table": randn(*table_lead, rows, head_dim) if key_term else None,
        "value_table": randn(*table_lead, rows, value_dim) if value_term else None,
    }
    kwargs = dict(max_distance=max_distance, max_left=max_left, max_right=max_right)
    if mask == "bool":
        kwargs["attn_mask"] = torch.rand(batch, 1, q_len, k_len, generator=gen) < 0.7
    elif mask == "float":
        float_mask = randn(heads, q_len, k_len)
        float_mask[torch.rand(heads, q_len, k_len, generator=gen) < 0.2] = float("-inf")
        kwargs["attn_mask"] = float_mask
    elif mask == "padding":
        padding = torch.ones(batch, 1, 1, k_len, dtype=torch.bool)
        padding[-1, ..., -2:] = False  # the last sequence of the batch is two keys shorter
        kwargs["attn_mask"] = padding
    elif mask is not None:
        raise ValueError(f"unknown mask kind {mask!r}")
    return tensors, kwargs


def run(backend: str, tensors: dict, upstream_seed: int = 1, **kwargs):
    """Output and gradients of ``sum(output * g)`` for a fixed random ``g``."""
    leaves = {
        name: None if t is None else t.detach().clone().requires_grad_(True)
        for name, t in tensors.items()
    }
    output = shaw_attention(*leaves.values(), backend=backend, **kwargs)
    gen = torch.Generator().manual_seed(upstream_seed)
    upstream = torch.randn(output.shape, generator=gen, dtype=torch.float64).to(output.dtype)
    (output * upstream).sum().backward()
    grads = {name: None if t is None else t.grad for name, t in leaves.items()}
    return output.detach(), grads


def assert_matches_reference(backend: str, tensors: dict, **kwargs) -> torch.Tensor:
    expected, expected_grads = run("reference", tensors, **kwargs)
    actual, actual_grads = run(backend, tensors, **kwargs)
    torch.testing.assert_close(actual, expected, **TIGHT)
    for name in GRAD_NAMES:
        if tensors[name] is None:
            continue
        assert actual_grads[name] is not None, f"{backend}: no gradient for {name}"
        torch.testing.assert_close(actual_grads[name], expected_grads[name], **TIGHT, msg=name)
    return expected


# (inputs, call kwargs): the grid from the issue, one entry per situation.
GRID = {
    "square": ({}, {}),
    "Lq<Lk": (dict(q_len=3, k_len=7), {}),
    "Lq>Lk": (dict(q_len=7, k_len=3), {}),
    "k=0": (dict(max_distance=0), {}),
    "k>=length": (dict(max_distance=9, q_len=4, k_len=6), {}),
    "k=1": (dict(max_distance=1, q_len=6, k_len=6), {}),
    "bool-mask": (dict(mask="bool"), {}),
    "float-mask": (dict(mask="float"), {}),
    "key-padding": (dict(mask="padding"), {}),
    "causal": ({}, dict(is_causal=True)),
    "causal-Lq<Lk": (dict(q_len=3, k_len=6), dict(is_causal=True)),
    "causal+bool-mask": (dict(mask="bool"), dict(is_causal=True)),
    "causal+float-mask": (dict(mask="float"), dict(is_causal=True)),
    "query-offset": (dict(q_len=2, k_len=6), dict(query_offset=4)),
    "key-offset": (dict(q_len=4, k_len=4), dict(query_offset=1, key_offset=3)),
    "negative-offset": ({}, dict(query_offset=-3)),
    "per-head": (dict(per_head=True), {}),
    "per-head+mask": (dict(per_head=True, mask="float"), dict(is_causal=True)),
    "key-only": (dict(value_term=False), {}),
    "value-only": (dict(key_term=False), {}),
    "neither": (dict(key_term=False, value_term=False), {}),
    "asymmetric": (dict(max_distance=None, max_left=1, max_right=3, q_len=6, k_len=6), {}),
    "asymmetric-one-side": (dict(max_distance=2, max_left=0), {}),
    "key-query": ({}, dict(key_query=True)),
    "key-query-per-head": (dict(per_head=True, q_len=3, k_len=6), dict(key_query=True)),
    "Dv!=D": (dict(value_dim=3), {}),
    "Dv!=D-per-head": (dict(value_dim=6, per_head=True), {}),
    "scale": ({}, dict(scale=0.3)),
    "single-key": (dict(q_len=3, k_len=1), {}),
    "no-keys": (dict(q_len=3, k_len=0), {}),
}


@pytest.mark.parametrize("case", list(GRID), ids=list(GRID))
@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_backend_matches_reference(backend, case):
    input_kwargs, call_kwargs = GRID[case]
    tensors, kwargs = make_inputs(**input_kwargs)
    assert_matches_reference(backend, tensors, **kwargs, **call_kwargs)


@pytest.mark.parametrize("backend", ["auto", *FAST_BACKENDS])
def test_dropout_with_fixed_generator(backend):
    tensors, kwargs = make_inputs(q_len=6, k_len=6)

    def with_seed(name: str, seed: int):
        generator = torch.Generator().manual_seed(seed)
        return run(name, tensors, dropout_p=0.4, generator=generator, **kwargs)

    expected, expected_grads = with_seed("reference", 7)
    actual, actual_grads = with_seed(backend, 7)
    torch.testing.assert_close(actual, expected, **TIGHT)
    for name in GRAD_NAMES:
        torch.testing.assert_close(actual_grads[name], expected_grads[name], **TIGHT, msg=name)
    # The dropout really did something, and another seed drops other weights.
    no_dropout, _ = run(backend, tensors, **kwargs)
    other_seed, _ = with_seed(backend, 8)
    assert not torch.allclose(actual, no_dropout)
    assert not torch.allclose(actual, other_seed)


@pytest.mark.parametrize("backend", ["reference", *FAST_BACKENDS])
def test_dropout_drops_weights_for_both_value_terms(backend):
    # With a constant vector c as every value (and a zero value table) the output is
    # (Σ_j dropped α_ij)·c; with c as every value-table row (and zero values) it must be the same
    # -- unless the value-table term used other weights than the content term.
    tensors, kwargs = make_inputs(q_len=5, k_len=5, key_term=False)
    constant = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)

    def dropped(value, value_table):
        generator = torch.Generator().manual_seed(11)
        return shaw_attention(
            tensors["query"],
            tensors["key"],
            value,
            None,
            value_table,
            dropout_p=0.5,
            generator=generator,
            backend=backend,
            **kwargs,
        )

    through_values = dropped(constant.expand(2, 2, 5, 4), torch.zeros(5, 4, dtype=torch.float64))
    through_table = dropped(torch.zeros(2, 2, 5, 4, dtype=torch.float64), constant.expand(5, 4))
    torch.testing.assert_close(through_table, through_values, **TIGHT)
    # Without dropout the weights sum to one and the output would be c everywhere.
    assert not torch.allclose(through_values, constant.expand_as(through_values))


@pytest.mark.parametrize("backend", ["reference", *FAST_BACKENDS])
@pytest.mark.parametrize(
    "input_kwargs, call_kwargs",
    [
        (dict(), dict()),
        (dict(per_head=True, value_dim=2, mask="float"), dict(key_query=True)),
        (dict(max_distance=None, max_left=0, max_right=2, key_term=False), dict(is_causal=True)),
    ],
    ids=["shared", "per-head+key-query+mask", "asymmetric+value-only+causal"],
)
def test_gradcheck(backend, input_kwargs, call_kwargs):
    tiny = dict(batch=1, heads=2, q_len=3, k_len=4, head_dim=3, max_distance=1, seed=5)
    tensors, kwargs = make_inputs(**{**tiny, **input_kwargs})
    names = [name for name, t in tensors.items() if t is not None]
    leaves = [tensors[name].clone().requires_grad_(True) for name in names]

    def fn(*inputs):
        given = dict(zip(names, inputs, strict=True))
        args = [given.get(name) for name in GRAD_NAMES]
        return shaw_attention(*args, backend=backend, **kwargs, **call_kwargs)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6)


# --- masks that empty a row -------------------------------------------------------------------


def fully_masked_inputs(kind: str):
    tensors, kwargs = make_inputs(q_len=4, k_len=5)
    if kind == "bool":
        mask = torch.ones(4, 5, dtype=torch.bool)
        mask[1] = False
        empty_rows = [1]
    elif kind == "float":
        mask = torch.zeros(2, 1, 4, 5, dtype=torch.float64)
        mask[0, :, 2] = float("-inf")
        empty_rows = [2]  # batch 0 only; checked below
    else:  # causal + mask: row 0 may see only key 0, which the mask takes away
        mask = torch.ones(4, 5, dtype=torch.bool)
        mask[:, 0] = False
        kwargs["is_causal"] = True
        empty_rows = [0]
    kwargs["attn_mask"] = mask
    return tensors, kwargs, empty_rows


@pytest.mark.parametrize("kind", ["bool", "float", "causal+mask"])
@pytest.mark.parametrize("backend", ["reference", *FAST_BACKENDS])
def test_fully_masked_rows_give_zeros_and_finite_gradients(backend, kind):
    tensors, kwargs, empty_rows = fully_masked_inputs(kind)
    output, grads = run(backend, tensors, **kwargs)
    batches = [0] if kind == "float" else [0, 1]
    for row in empty_rows:
        assert torch.equal(output[batches, :, row], torch.zeros_like(output[batches, :, row]))
        assert torch.equal(
            grads["query"][batches, :, row], torch.zeros_like(output[batches, :, row])
        )
    assert torch.isfinite(output).all()
    for name in GRAD_NAMES:
        assert torch.isfinite(grads[name]).all(), name
    # The other rows are not zero: the mask emptied only what it should.
    assert output.abs().sum() > 0
    if backend != "reference":
        assert_matches_reference(backend, tensors, **kwargs)


# --- precision --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("backend", ["reference", "auto", *FAST_BACKENDS])
def test_half_precision_inputs(backend, dtype, atol):
    tensors, kwargs = make_inputs(dtype=dtype, mask="float", per_head=True)
    output, grads = run(backend, tensors, **kwargs)
    assert output.dtype == dtype
    for name in GRAD_NAMES:
        assert grads[name].dtype == dtype, name
    as_double = {name: t.double() for name, t in tensors.items()}
    double_kwargs = {**kwargs, "attn_mask": kwargs["attn_mask"].double()}
    expected, expected_grads = run("reference", as_double, **double_kwargs)
    torch.testing.assert_close(output.double(), expected, rtol=atol, atol=atol)
    for name in GRAD_NAMES:
        torch.testing.assert_close(
            grads[name].double(), expected_grads[name], rtol=atol, atol=4 * atol, msg=name
        )


@pytest.mark.parametrize("backend", ["reference", "auto", *FAST_BACKENDS])
def test_under_autocast_as_without_it(backend):
    # Under torch.autocast a model hands over bf16 projections (and its layer casts the tables
    # alike); the backends compute in float32 as they do for bf16 inputs outside autocast
    # (autocast used to turn their matmuls back to bf16, and the eager path's in-place scatter
    # refused the mix).
    tensors, kwargs = make_inputs(dtype=torch.bfloat16, mask="float", per_head=True)
    expected, expected_grads = run(backend, tensors, **kwargs)
    leaves = {n: None if t is None else t.clone().requires_grad_(True) for n, t in tensors.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = shaw_attention(*leaves.values(), backend=backend, **kwargs)
    generator = torch.Generator().manual_seed(1)  # the upstream gradient run() uses
    upstream = torch.randn(output.shape, generator=generator, dtype=torch.float64)
    (output * upstream.to(output.dtype)).sum().backward()  # outside the context, as advised
    assert output.dtype == torch.bfloat16
    torch.testing.assert_close(output, expected, rtol=0, atol=0)
    for name in GRAD_NAMES:
        torch.testing.assert_close(leaves[name].grad, expected_grads[name], rtol=0, atol=0)
    # A backward called inside the context (not advised, but common) runs too.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, grads = run(backend, tensors, **kwargs)
    for name in GRAD_NAMES:
        assert grads[name].dtype == torch.bfloat16 and torch.isfinite(grads[name]).all()
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=0.05, atol=0.05)


def test_float32_inputs_keep_float32():
    tensors, kwargs = make_inputs(dtype=torch.float32)
    assert shaw_attention(*tensors.values(), **kwargs).dtype == torch.float32


# --- positions --------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    q_len=st.integers(1, 5),
    k_len=st.integers(1, 6),
    k=st.integers(0, 4),
    query_offset=st.integers(-8, 8),
    key_offset=st.integers(-8, 8),
    shift=st.integers(-50, 50),
    per_head=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_translation_invariance(q_len, k_len, k, query_offset, key_offset, shift, per_head, seed):
    tensors, kwargs = make_inputs(
        batch=1, q_len=q_len, k_len=k_len, max_distance=k, per_head=per_head, seed=seed
    )
    for backend in ["reference", *FAST_BACKENDS]:
        base = shaw_attention(
            *tensors.values(),
            query_offset=query_offset,
            key_offset=key_offset,
            backend=backend,
            **kwargs,
        )
        shifted = shaw_attention(
            *tensors.values(),
            query_offset=query_offset + shift,
            key_offset=key_offset + shift,
            backend=backend,
            **kwargs,
        )
        torch.testing.assert_close(shifted, base, **TIGHT)


@pytest.mark.parametrize("backend", ["reference", *FAST_BACKENDS])
def test_query_offset_gives_the_rows_of_the_full_computation(backend):
    # Cached decoding: the last two queries at their absolute offset equal the last two rows.
    tensors, kwargs = make_inputs(q_len=6, k_len=6)
    full = shaw_attention(*tensors.values(), backend=backend, **kwargs)
    tail = dict(tensors, query=tensors["query"][:, :, 4:])
    step = shaw_attention(*tail.values(), query_offset=4, backend=backend, **kwargs)
    torch.testing.assert_close(step, full[:, :, 4:], **TIGHT)
    # ... and the offset matters: at offset 0 they would see other relative vectors.
    wrong = shaw_attention(*tail.values(), query_offset=0, backend=backend, **kwargs)
    assert not torch.allclose(wrong, full[:, :, 4:])


@pytest.mark.parametrize("backend", ["reference", *FAST_BACKENDS])
def test_causal_with_a_query_offset_masks_by_position(backend):
    # Cached decoding through the functional API: the new queries at their offset, is_causal,
    # and no mask of one's own give the last rows of the full causal computation. (SDPA's
    # top-left mask would let the single new query see only the first key.)
    tensors, kwargs = make_inputs(q_len=6, k_len=6, mask="padding")
    full = shaw_attention(*tensors.values(), is_causal=True, backend=backend, **kwargs)
    for start in (3, 5):
        tail = dict(tensors, query=tensors["query"][:, :, start:])
        step = shaw_attention(
            *tail.values(), is_causal=True, query_offset=start, backend=backend, **kwargs
        )
        torch.testing.assert_close(step, full[:, :, start:], **TIGHT)
    # Keys that start after the queries: query r (position r) sees keys 2 + c <= r, so rows 0
    # and 1 see none and give zeros, not NaN; row 3 sees the first two keys.
    tensors, kwargs = make_inputs(q_len=4, k_len=4)
    shifted = shaw_attention(
        *tensors.values(), is_causal=True, key_offset=2, backend=backend, **kwargs
    )
    allowed = torch.tensor([[c + 2 <= r for c in range(4)] for r in range(4)])
    explicit = shaw_attention(
        *tensors.values(), attn_mask=allowed, key_offset=2, backend=backend, **kwargs
    )
    torch.testing.assert_close(shifted, explicit, **TIGHT)
    assert torch.equal(shifted[:, :, :2], torch.zeros_like(shifted[:, :, :2]))


def test_reference_matches_eq_3_and_4_by_hand():
    # One head, three tokens, k = 1, written out as loops over i and j.
    tensors, kwargs = make_inputs(batch=1, heads=1, q_len=3, k_len=3, head_dim=2, max_distance=1)
    q, k, v = (tensors[n][0, 0] for n in ("query", "key", "value"))
    a_key, a_value = tensors["key_table"], tensors["value_table"]
    expected = torch.zeros(3, 2, dtype=torch.float64)
    for i in range(3):
        logits = torch.stack(
            [q[i] @ (k[j] + a_key[max(-1, min(1, j - i)) + 1]) / 2**0.5 for j in range(3)]
        )
        alpha = logits.softmax(0)
        for j in range(3):
            expected[i] += alpha[j] * (v[j] + a_value[max(-1, min(1, j - i)) + 1])
    for backend in ["reference", *FAST_BACKENDS]:
        output = shaw_attention(*tensors.values(), backend=backend, **kwargs)
        torch.testing.assert_close(output[0, 0], expected, **TIGHT)


def test_neither_table_is_plain_attention():
    tensors, kwargs = make_inputs(key_term=False, value_term=False, mask="bool")
    expected = torch.nn.functional.scaled_dot_product_attention(
        tensors["query"], tensors["key"], tensors["value"], attn_mask=kwargs["attn_mask"]
    )
    expected = torch.nan_to_num(expected)  # SDPA may give NaN for a fully masked row
    for backend in ["reference", "auto", *FAST_BACKENDS]:
        output = shaw_attention(*tensors.values(), backend=backend, **kwargs)
        torch.testing.assert_close(output, expected, **TIGHT)


@pytest.mark.parametrize("case", ["square", "float-mask", "per-head", "key-query", "Dv!=D"])
def test_auto_backend_matches_reference(case):
    input_kwargs, call_kwargs = GRID[case]
    tensors, kwargs = make_inputs(**input_kwargs)
    assert_matches_reference("auto", tensors, **kwargs, **call_kwargs)


# --- bad input --------------------------------------------------------------------------------


def _good():
    tensors, _ = make_inputs(batch=2, heads=2, q_len=3, k_len=5, head_dim=4)
    return tensors


def _with(**changes):
    return {**_good(), **changes}


BAD_INPUTS = {
    "query-rank": (
        _with(query=torch.randn(2, 3, 4, dtype=torch.float64)),
        {},
        ValueError,
        r"query must have 4 dimensions .*got shape \(2, 3, 4\)",
    ),
    "key-rank": (
        _with(key=torch.randn(1, 2, 2, 5, 4, dtype=torch.float64)),
        {},
        ValueError,
        r"key must have 4 dimensions .*got shape \(1, 2, 2, 5, 4\)",
    ),
    "value-rank": (
        _with(value=torch.randn(5, 4, dtype=torch.float64)),
        {},
        ValueError,
        r"value must have 4 dimensions .*got shape \(5, 4\)",
    ),
    "key-heads": (
        _with(key=torch.randn(2, 3, 5, 4, dtype=torch.float64)),
        {},
        ValueError,
        r"key must have shape \(B, H, Lk, D\) = \(2, 2, Lk, 4\) .*got \(2, 3, 5, 4\)",
    ),
    "key-head-dim": (
        _with(key=torch.randn(2, 2, 5, 3, dtype=torch.float64)),
        {},
        ValueError,
        r"key must have shape .*\(2, 2, Lk, 4\).*got \(2, 2, 5, 3\)",
    ),
    "value-length": (
        _with(value=torch.randn(2, 2, 4, 4, dtype=torch.float64)),
        {},
        ValueError,
        r"value must have shape \(B, H, Lk, Dv\) = \(2, 2, 5, Dv\) .*got \(2, 2, 4, 4\)",
    ),
    "key-dtype": (
        _with(key=torch.randn(2, 2, 5, 4)),
        {},
        TypeError,
        r"key has dtype torch.float32 but query has torch.float64",
    ),
    "value-device": (
        _with(value=torch.empty(2, 2, 5, 4, dtype=torch.float64, device="meta")),
        {},
        ValueError,
        r"value is on meta but query is on cpu",
    ),
    "query-int": (
        _with(query=torch.ones(2, 2, 3, 4, dtype=torch.long)),
        {},
        TypeError,
        r"query must be a floating-point tensor, got dtype torch.int64",
    ),
    "key-not-tensor": (
        _with(key=[[1.0]]),
        {},
        TypeError,
        r"key must be a torch.Tensor, got list",
    ),
    "max-distance-negative": (
        _good(),
        dict(max_distance=-1),
        ValueError,
        r"max_distance must be >= 0, got -1",
    ),
    "max-distance-float": (
        _good(),
        dict(max_distance=2.5),
        TypeError,
        r"max_distance must be a non-negative int",
    ),
    "max-distance-missing": (
        _good(),
        dict(max_distance=None),
        ValueError,
        r"give max_distance",
    ),
    "key-table-rows": (
        _with(key_table=torch.randn(4, 4, dtype=torch.float64)),
        {},
        ValueError,
        r"key_table must have shape \(2k\+1, D\) = \(5, 4\).*got \(4, 4\)",
    ),
    "value-table-dim": (
        _with(value_table=torch.randn(5, 3, dtype=torch.float64)),
        {},
        ValueError,
        r"value_table must have shape \(2k\+1, D\) = \(5, 4\).*got \(5, 3\)",
    ),
    "asymmetric-table-rows": (
        _good(),
        dict(max_distance=None, max_left=1, max_right=2),
        ValueError,
        r"key_table must have shape .*= \(4, 4\).*got \(5, 4\)",
    ),
    "per-head-table-heads": (
        _with(key_table=torch.randn(3, 5, 4, dtype=torch.float64)),
        {},
        ValueError,
        r"key_table must have shape .*\(H, 2k\+1, D\) = \(2, 5, 4\) per head, got \(3, 5, 4\)",
    ),
    "table-rank": (
        _with(value_table=torch.randn(1, 2, 5, 4, dtype=torch.float64)),
        {},
        ValueError,
        r"value_table must have shape .*got \(1, 2, 5, 4\)",
    ),
    "table-dtype": (
        _with(key_table=torch.randn(5, 4)),
        {},
        TypeError,
        r"key_table has dtype torch.float32 but query has torch.float64",
    ),
    "table-device": (
        _with(value_table=torch.empty(5, 4, dtype=torch.float64, device="meta")),
        {},
        ValueError,
        r"value_table is on meta but query is on cpu",
    ),
    "table-not-tensor": (
        _with(key_table="table"),
        {},
        TypeError,
        r"key_table must be a torch.Tensor or None",
    ),
    "mask-shape": (
        _good(),
        dict(attn_mask=torch.ones(3, 6, dtype=torch.bool)),
        ValueError,
        r"attn_mask of shape \(3, 6\) does not broadcast to \(B, H, Lq, Lk\) = \(2, 2, 3, 5\)",
    ),
    "mask-batch": (
        _good(),
        dict(attn_mask=torch.ones(4, 1, 3, 5, dtype=torch.bool)),
        ValueError,
        r"attn_mask of shape \(4, 1, 3, 5\) does not broadcast",
    ),
    "mask-rank": (
        _good(),
        dict(attn_mask=torch.ones(1, 2, 2, 3, 5, dtype=torch.bool)),
        ValueError,
        r"attn_mask of shape \(1, 2, 2, 3, 5\) does not broadcast",
    ),
    "mask-dtype": (
        _good(),
        dict(attn_mask=torch.ones(3, 5, dtype=torch.int32)),
        TypeError,
        r"attn_mask must be bool .* or floating point .*got dtype torch.int32",
    ),
    "mask-device": (
        _good(),
        dict(attn_mask=torch.ones(3, 5, dtype=torch.bool, device="meta")),
        ValueError,
        r"attn_mask is on meta but query is on cpu",
    ),
    "dropout-one": (_good(), dict(dropout_p=1.0), ValueError, r"dropout_p must be in \[0, 1\)"),
    "dropout-negative": (
        _good(),
        dict(dropout_p=-0.1),
        ValueError,
        r"dropout_p must be in \[0, 1\), got -0.1",
    ),
    "dropout-string": (_good(), dict(dropout_p="0.1"), TypeError, r"dropout_p must be a float"),
    "scale-nan": (_good(), dict(scale=float("nan")), ValueError, r"scale must be a finite float"),
    "is-causal-int": (_good(), dict(is_causal=1), TypeError, r"is_causal must be a bool"),
    "query-offset-float": (
        _good(),
        dict(query_offset=1.5),
        TypeError,
        r"query_offset must be an int",
    ),
    "backend-unknown": (
        _good(),
        dict(backend="nope"),
        ValueError,
        r"unknown backend 'nope'; valid names: auto, reference, eager",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_names_the_argument(case):
    tensors, kwargs, error, match = BAD_INPUTS[case]
    kwargs = {"max_distance": 2, **kwargs}
    with pytest.raises(error, match=match):
        shaw_attention(*tensors.values(), **kwargs)


@pytest.mark.parametrize("shape", [(), (5,), (3, 5), (2, 3, 5), (2, 1, 3, 5), (1, 1, 1, 5)])
def test_masks_broadcast_like_sdpa(shape):
    # Every shape that broadcasts to (B, H, Lq, Lk) means the same as its expanded version.
    tensors, kwargs = make_inputs(q_len=3, k_len=5)
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(2)) < 0.6
    expanded = mask.expand(2, 2, 3, 5)
    for backend in ["reference", *FAST_BACKENDS]:
        output = shaw_attention(*tensors.values(), attn_mask=mask, backend=backend, **kwargs)
        expected = shaw_attention(*tensors.values(), attn_mask=expanded, backend=backend, **kwargs)
        torch.testing.assert_close(output, expected, **TIGHT)
