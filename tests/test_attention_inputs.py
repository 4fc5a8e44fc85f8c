"""Edge inputs shared by every attention entry point: integer masks, key/value lengths, empty
shapes, the key-query flag and the backend registry.

``tests/test_attention.py`` checks each argument of ``shaw_attention`` one by one; this file checks
that the content-only and scalar-bias paths (``sdpa_attention``, ``distance_bias_attention``, and
through them ``MultiheadAttention``) refuse the same bad inputs with the same messages, and that
every backend returns the right (empty or zero) result when a dimension is 0.
"""

from __future__ import annotations

import pytest
import torch

import relpos
from relpos.attention import (
    BACKENDS,
    RelativeIndex,
    available_backends,
    distance_bias_attention,
    flex_bias_attention,
    reference_bias_attention,
    register_backend,
    sdpa_attention,
    shaw_attention,
)
from relpos.attention.checks import logit_mask

pytestmark = [
    # FlexAttention's unfused path warns that it is not compiled; that is what runs on the CPU.
    pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile"),
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated"),
]

INT_MASK = r"attn_mask must be bool .* or floating point .*got dtype torch\.(uint8|int64)"


def _qkv(batch=1, heads=2, q_len=5, k_len=5, head_dim=4, value_len=None):
    gen = torch.Generator().manual_seed(0)
    value_len = k_len if value_len is None else value_len
    return (
        torch.randn(batch, heads, q_len, head_dim, generator=gen),
        torch.randn(batch, heads, k_len, head_dim, generator=gen),
        torch.randn(batch, heads, value_len, head_dim, generator=gen),
    )


# --- integer masks ----------------------------------------------------------------------------
# An integer 0/1 mask looks like a boolean one but would be *added* to the logits (masking
# nothing); SDPA itself refuses it, and so must every path here.


def _content_paths():
    distance_bias = torch.zeros(2, 9)  # (H, Lq + Lk - 1)
    return {
        "sdpa_attention": lambda q, k, v, mask: sdpa_attention(q, k, v, attn_mask=mask),
        "reference_bias_attention": lambda q, k, v, mask: reference_bias_attention(
            q, k, v, attn_mask=mask
        ),
        **{
            f"distance_bias_attention-{backend}": (
                lambda q, k, v, mask, backend=backend: distance_bias_attention(
                    q, k, v, distance_bias, attn_mask=mask, backend=backend
                )
            )
            for backend in ("sdpa", "reference", "auto", "eager")
        },
        "flex_bias_attention": lambda q, k, v, mask: flex_bias_attention(
            q, k, v, distance_bias=distance_bias, attn_mask=mask, compiled=False
        ),
        "shaw_attention": lambda q, k, v, mask: shaw_attention(
            q, k, v, max_distance=2, attn_mask=mask
        ),
    }


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
@pytest.mark.parametrize("path", list(_content_paths()))
def test_integer_masks_are_refused_on_every_path(path, dtype):
    q, k, v = _qkv()
    mask = torch.ones(5, 5, dtype=dtype).tril()
    with pytest.raises(TypeError, match=INT_MASK):
        _content_paths()[path](q, k, v, mask)


def test_logit_mask_refuses_integer_masks():
    mask = torch.ones(5, 5, dtype=torch.uint8)
    with pytest.raises(TypeError, match=INT_MASK):
        logit_mask(mask, False, 5, 5, dtype=torch.float32, device="cpu")


POSITIONS = {
    "none": lambda: None,
    "rope": lambda: relpos.RotaryPosition(4),
    "t5": lambda: relpos.T5RelativeBias(2),
    "alibi": lambda: relpos.ALiBiBias(2),
}


@pytest.mark.parametrize("position", list(POSITIONS))
def test_multihead_attention_refuses_integer_masks(position):
    layer = relpos.MultiheadAttention(8, 2, position=POSITIONS[position]()).eval()
    x = torch.randn(2, 5, 8)
    mask = torch.ones(5, 5, dtype=torch.uint8).tril()
    with pytest.raises(TypeError, match=INT_MASK):
        layer(x, attn_mask=mask)
    # Cross-attention is content-only in every layer: the same check applies there.
    with pytest.raises(TypeError, match=INT_MASK):
        layer(x, torch.randn(2, 5, 8), attn_mask=mask)


# --- q/k/v and mask shapes on the content-only paths ------------------------------------------


@pytest.mark.parametrize("path", ["sdpa_attention", "reference_bias_attention"])
def test_key_and_value_lengths_must_agree(path):
    # CPU SDPA would silently attend over the first Lv keys only.
    q, k, v = _qkv(k_len=7, value_len=6)
    with pytest.raises(
        ValueError, match=r"value must have shape \(B, H, Lk, Dv\) = \(1, 2, 7, Dv\)"
    ):
        _content_paths()[path](q, k, v, None)


def test_multihead_cross_attention_with_key_and_value_of_different_lengths():
    layer = relpos.MultiheadAttention(8, 2).eval()
    # The layer may check this itself; either way the call must not drop the seventh key.
    with pytest.raises(ValueError, match=r"value must have shape"):
        layer(torch.randn(2, 5, 8), torch.randn(2, 7, 8), torch.randn(2, 6, 8))


@pytest.mark.parametrize(
    "path",
    ["sdpa_attention", "reference_bias_attention", "distance_bias_attention-sdpa"],
)
def test_content_paths_check_the_mask_shape(path):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"attn_mask of shape \(3, 5, 5\) does not broadcast"):
        _content_paths()[path](q, k, v, torch.ones(3, 5, 5, dtype=torch.bool))


def test_sdpa_attention_checks_query_rank():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"query must have 4 dimensions"):
        sdpa_attention(q[0], k, v)


# --- empty shapes -----------------------------------------------------------------------------

EMPTY = {
    "B=0": dict(batch=0),
    "H=0": dict(heads=0),
    "Lq=0": dict(q_len=0),
    "Lk=0": dict(k_len=0),
}


def _empty_case(batch=2, heads=2, q_len=4, k_len=5, tables=True, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    tensors = {
        "query": randn(batch, heads, q_len, 4),
        "key": randn(batch, heads, k_len, 4),
        "value": randn(batch, heads, k_len, 3),
        "key_table": randn(5, 4) if tables else None,
        "value_table": randn(5, 3) if tables else None,
    }
    mask = torch.ones(batch, 1, q_len, k_len, dtype=torch.bool)
    return tensors, mask


@pytest.mark.parametrize("tables", [True, False], ids=["tables", "no_tables"])
@pytest.mark.parametrize("empty", list(EMPTY))
@pytest.mark.parametrize("backend", available_backends())
def test_empty_inputs_on_every_backend(backend, empty, tables):
    # Every backend name, even one that cannot run here (triton without a GPU or interpreter):
    # there is nothing to compute, and the result is what the reference gives.
    tensors, mask = _empty_case(**EMPTY[empty], tables=tables)
    batch, heads, q_len, _ = tensors["query"].shape
    needs_grad = backend != "flex"  # FlexAttention has no CPU backward
    leaves = {name: t.requires_grad_(needs_grad) for name, t in tensors.items() if t is not None}
    with torch.set_grad_enabled(needs_grad):
        output = shaw_attention(
            *tensors.values(), max_distance=2, attn_mask=mask, is_causal=True, backend=backend
        )
    assert output.shape == (batch, heads, q_len, 3)
    assert output.dtype == torch.float64
    assert torch.equal(output, torch.zeros_like(output))  # Lk = 0: no key, a zero row
    if needs_grad:
        grads = torch.autograd.grad(output.sum(), list(leaves.values()), allow_unused=True)
        for name, grad in zip(leaves, grads, strict=True):
            assert grad is None or torch.equal(grad, torch.zeros_like(leaves[name])), name


@pytest.mark.parametrize("tables", [True, False], ids=["tables", "no_tables"])
@pytest.mark.parametrize("empty", list(EMPTY))
@pytest.mark.parametrize("backend", [name for name in BACKENDS if name != "reference"])
def test_empty_inputs_to_a_backend_called_directly(backend, empty, tables):
    # The backends are public too (eager_attention, triton_attention, flex_shaw_attention); flex
    # with Lk = 0 and no value table used to kill the process (SIGFPE in compiled CPU code).
    tensors, _ = _empty_case(**EMPTY[empty], tables=tables, dtype=torch.float32)
    batch, heads, q_len, _ = tensors["query"].shape
    index = RelativeIndex(q_len, tensors["key"].shape[2], 2, 2)
    with torch.no_grad():
        output = BACKENDS[backend](
            tensors["query"],
            tensors["key"],
            tensors["value"],
            index=index,
            key_table=None if not tables else tensors["key_table"][None],
            value_table=None if not tables else tensors["value_table"][None],
            attn_mask=None,
            is_causal=False,
            scale=0.5,
        )
    assert output.shape == (batch, heads, q_len, 3)
    assert torch.equal(output, torch.zeros_like(output))


# --- the key-query flag -----------------------------------------------------------------------


def test_key_query_must_be_a_bool():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match=r"key_query must be a bool, got 1"):
        shaw_attention(q, k, v, torch.randn(5, 4), max_distance=2, key_query=1)


def test_key_query_needs_a_key_table():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"key_query=True needs a key_table"):
        shaw_attention(q, k, v, None, torch.randn(5, 4), max_distance=2, key_query=True)


# --- the backend registry ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["auto", "reference", "eager", "flex", "triton"])
def test_register_backend_refuses_a_taken_name(name):
    before = (dict(BACKENDS), available_backends())
    with pytest.raises(
        ValueError, match=rf"backend name {name!r} is (reserved|already registered)"
    ):
        register_backend(name, BACKENDS["eager"])
    assert (dict(BACKENDS), available_backends()) == before
    assert len(set(available_backends())) == len(available_backends())


@pytest.mark.parametrize("name", ["", 3, None])
def test_register_backend_refuses_a_name_that_is_not_a_string(name):
    with pytest.raises((TypeError, ValueError), match="backend name must be a non-empty str"):
        register_backend(name, BACKENDS["eager"])
