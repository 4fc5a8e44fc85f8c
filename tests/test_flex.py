"""The FlexAttention backend (``backend="flex"``) against the float64 paper-literal reference.

On the CPU FlexAttention runs forward only: the grid uses PyTorch's unfused FlexAttention
(``compile=False``, no compile wait), and one slow test runs the compiled kernel. With a GPU the
forward and all five gradients are checked too.
"""

import warnings

import pytest
import torch
from backend_cases import make_case, make_mask

from relpos.attention import shaw_attention
from relpos.attention.api import AUTO_ORDER
from relpos.attention.eager import eager_attention
from relpos.attention.flex import flex_applies, flex_available, flex_shaw_attention
from relpos.attention.reference import reference_attention

pytestmark = [
    pytest.mark.skipif(not flex_available(), reason="this torch has no FlexAttention"),
    # The unfused path warns that it is unfused on every call; that is the point here.
    pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile"),
]


def _case(*, device="cpu", **options):
    return make_case(**{"q_len": 37, "k_len": 37, **options}, device=device)


def _mask(kind, index, device="cpu"):
    return make_mask(kind, index, device=device)


def _exact(tensors, requires_grad=False):
    return {
        name: None if t is None else t.detach().double().requires_grad_(requires_grad)
        for name, t in tensors.items()
    }


def _reference(index, exact, attn_mask=None, **kwargs):
    if attn_mask is not None and attn_mask.is_floating_point():
        attn_mask = attn_mask.double()
    return reference_attention(
        exact["query"],
        exact["key"],
        exact["value"],
        index=index,
        key_table=exact["key_table"],
        value_table=exact["value_table"],
        attn_mask=attn_mask,
        **kwargs,
    )


def _flex(index, tensors, **kwargs):
    return flex_shaw_attention(
        tensors["query"],
        tensors["key"],
        tensors["value"],
        index=index,
        key_table=tensors["key_table"],
        value_table=tensors["value_table"],
        **kwargs,
    )


CASES = {
    "plain": {},
    "causal": dict(is_causal=True),
    "key_padding": dict(mask="padding"),
    "query_offset": dict(q_len=20, k_len=45, query_offset=25),
    "key_offset": dict(q_len=45, k_len=20, key_offset=7),
    "per_head_tables": dict(per_head=True),
    "key_only": dict(values=False),
    "value_only": dict(keys=False),
    "dense_mask_fully_masked_row": dict(mask="dense"),
    "float_mask": dict(mask="float"),
    "one_bucket": dict(left=0, right=0),
    "two_buckets_causal": dict(left=1, right=0, is_causal=True),
    "asymmetric": dict(left=5, right=1),
    "clip_beyond_length": dict(left=40, right=40),
}


@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_reference_on_cpu(name):
    options = dict(CASES[name])
    is_causal = options.pop("is_causal", False)
    mask_kind = options.pop("mask", None)
    index, tensors = _case(**options)
    kwargs = dict(attn_mask=_mask(mask_kind, index), is_causal=is_causal, scale=0.2)
    with torch.no_grad():
        out = _flex(index, tensors, compile=False, **kwargs)
    torch.testing.assert_close(
        out.double(), _reference(index, _exact(tensors), **kwargs), rtol=1e-5, atol=1e-5
    )


# float64, tiny: every case with a value table and R >= 2 goes through the band and tail calls,
# whose masses must keep the input's precision (the value term, not only the output).
FLOAT64_CASES = {
    "value_only_causal": dict(keys=False, is_causal=True),
    "float_mask_with_empty_row": dict(mask="dense"),
    "per_head_asymmetric": dict(per_head=True, left=3, right=1),
    "one_query_decoding": dict(q_len=1, k_len=9, query_offset=8),
}


@pytest.mark.parametrize("name", list(FLOAT64_CASES))
def test_float64_forward_matches_reference_tightly(name):
    options = dict(FLOAT64_CASES[name])
    is_causal = options.pop("is_causal", False)
    mask_kind = options.pop("mask", None)
    options = {"q_len": 9, "k_len": 9, "head_dim": 8, "left": 2, "right": 2, **options}
    index, tensors = make_case(**options, dtype=torch.float64)
    kwargs = dict(attn_mask=_mask(mask_kind, index), is_causal=is_causal, scale=0.3)
    with torch.no_grad():
        out = _flex(index, tensors, compile=False, **kwargs)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _reference(index, tensors, **kwargs), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("value_table", [False, True], ids=["key_only", "keys_and_values"])
def test_float64_by_name_runs_on_the_cpu(value_table):
    # Compiled CPU FlexAttention takes float32/16/bf16 only; float64 runs the unfused path, with
    # or without a value table, instead of failing inside Inductor after the compile wait.
    index, tensors = make_case(q_len=6, k_len=6, head_dim=8, left=2, right=2, dtype=torch.float64)
    args = (tensors["query"], tensors["key"], tensors["value"], tensors["key_table"][0])
    args += (tensors["value_table"][0] if value_table else None,)
    with torch.no_grad():
        out = shaw_attention(*args, max_distance=2, is_causal=True, backend="flex")
    ref = shaw_attention(*args, max_distance=2, is_causal=True, backend="reference")
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)


# Shapes that broadcast to (B, H, Lq, Lk) with a last dimension of 1 (one value for every key).
ONE_KEY_COLUMN_MASKS = [(), (1,), (6, 1), (2, 1, 6, 1), (1, 2, 1, 1)]


@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("shape", ONE_KEY_COLUMN_MASKS, ids=str)
def test_masks_with_a_last_dimension_of_one(shape, kind):
    index, tensors = _case(batch=2, q_len=6, k_len=8, head_dim=8, left=2, right=2)
    gen = torch.Generator().manual_seed(4)
    if kind == "bool":
        mask = torch.rand(shape, generator=gen) > 0.3
    else:
        mask = torch.randn(shape, generator=gen)
    kwargs = dict(attn_mask=mask, is_causal=False, scale=0.3)
    with torch.no_grad():
        out = _flex(index, tensors, compile=False, **kwargs)
    torch.testing.assert_close(
        out.double(), _reference(index, _exact(tensors), **kwargs), rtol=1e-5, atol=1e-5
    )


@pytest.mark.slow
def test_compiled_forward_on_cpu():
    # Compiled FlexAttention on the CPU cannot return the log-sum-exp, so only the key term runs
    # compiled there (the value term uses the unfused path); one compile, about 10-20 s.
    index, tensors = _case(q_len=40, k_len=40, values=False)
    kwargs = dict(attn_mask=_mask("padding", index), is_causal=True, scale=0.2)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = _flex(index, tensors, compile=True, **kwargs)
    torch.testing.assert_close(
        out.double(), _reference(index, _exact(tensors), **kwargs), rtol=1e-5, atol=1e-5
    )


def test_backward_on_cpu_is_refused_with_a_clear_error():
    index, tensors = _case(q_len=8, k_len=8)
    tensors["query"].requires_grad_()
    with pytest.raises(ValueError, match="no backward on the CPU"):
        _flex(index, tensors, compile=False, attn_mask=None, is_causal=False, scale=0.2)
    # The error's advice works: under no_grad the same inputs (still requires_grad) run, and
    # agree with the reference. FlexAttention reads requires_grad, not the grad mode.
    with torch.no_grad():
        out = _flex(index, tensors, compile=False, attn_mask=None, is_causal=False, scale=0.2)
        expected = reference_attention(
            **tensors, index=index, attn_mask=None, is_causal=False, scale=0.2
        )
    torch.testing.assert_close(out, expected)


def test_registered_but_never_picked_by_auto():
    assert "flex" not in AUTO_ORDER
    assert not flex_applies(query=torch.zeros(1, 1, 4, 32))
    if torch.cuda.is_available():
        gpu = torch.zeros(1, 1, 4, 32, device="cuda")
        assert flex_applies(query=gpu)
        assert not flex_applies(query=gpu, dropout=True)
        assert not flex_applies(query=gpu, key_query=True)


def test_shaw_attention_runs_flex_by_name():
    index, tensors = _case(q_len=16, k_len=16)
    q, k, v = tensors["query"], tensors["key"], tensors["value"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # compile=True is the backend default; with a value table the CPU runs it unfused.
        out = shaw_attention(
            q,
            k,
            v,
            tensors["key_table"][0],
            tensors["value_table"][0],
            max_distance=3,
            backend="flex",
        )
    ref = shaw_attention(
        q,
        k,
        v,
        tensors["key_table"][0],
        tensors["value_table"][0],
        max_distance=3,
        backend="reference",
    )
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_dropout_and_key_query_run_the_eager_backend():
    index, tensors = _case(q_len=12, k_len=12)
    keep = torch.rand(1, 2, 12, 12, generator=torch.Generator().manual_seed(3)) > 0.2
    for extra in (dict(dropout_mask=keep.float() / 0.8), dict(key_query=True)):
        common = dict(
            index=index,
            key_table=tensors["key_table"],
            value_table=tensors["value_table"],
            attn_mask=None,
            is_causal=False,
            scale=0.2,
            **extra,
        )
        q, k, v = tensors["query"], tensors["key"], tensors["value"]
        torch.testing.assert_close(
            flex_shaw_attention(q, k, v, **common), eager_attention(q, k, v, **common)
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "name",
    [
        "plain",
        "causal",
        "key_padding",
        "query_offset",
        "per_head_tables",
        "value_only",
        "dense_mask_fully_masked_row",
    ],
)
def test_forward_and_gradients_on_gpu(name):
    options = dict(CASES[name])
    is_causal = options.pop("is_causal", False)
    mask_kind = options.pop("mask", None)
    index, tensors = _case(device="cuda", **options)
    leaves = {k: t.requires_grad_() for k, t in tensors.items() if t is not None}
    kwargs = dict(attn_mask=_mask(mask_kind, index, "cuda"), is_causal=is_causal, scale=0.2)
    out = _flex(index, tensors, **kwargs)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, list(leaves.values()), upstream)
    exact = _exact(tensors, requires_grad=True)
    ref = _reference(index, exact, **kwargs)
    ref_grads = torch.autograd.grad(ref, [exact[k] for k in leaves], upstream.double())
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
    for leaf, grad, ref_grad in zip(leaves, grads, ref_grads, strict=True):
        atol = 1e-4 * max(1.0, ref_grad.abs().max().item())
        torch.testing.assert_close(
            grad.double(),
            ref_grad,
            rtol=1e-4,
            atol=atol,
            msg=lambda m, leaf=leaf: f"grad {leaf}: {m}",
        )
