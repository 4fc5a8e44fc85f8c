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
    distance_bias_attention,
    flex_bias_attention,
    reference_bias_attention,
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
    with pytest.raises(ValueError, match=r"value must have shape .*\(2, 2, 7, Dv\)"):
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
