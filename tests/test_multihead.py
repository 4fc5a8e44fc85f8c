"""``relpos.MultiheadAttention``: layouts, masks, cross-attention, dropout and cached decoding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from relpos import KVCache, MultiheadAttention, get_scheme, shaw_attention
from relpos.schemes import AttentionPosition

TIGHT = dict(rtol=1e-9, atol=1e-10)
EMBED, HEADS = 12, 3


def make_module(**kwargs) -> MultiheadAttention:
    torch.manual_seed(0)
    module = MultiheadAttention(EMBED, HEADS, **kwargs).double()
    # Non-zero biases, so that a forgotten bias would show up.
    with torch.no_grad():
        for proj in (module.q_proj, module.k_proj, module.v_proj, module.out_proj):
            if proj.bias is not None:
                proj.bias.normal_()
    return module.eval()


def inputs(batch: int = 2, length: int = 6, width: int = EMBED, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, width, generator=gen, dtype=torch.float64)


def split_heads(x: torch.Tensor) -> torch.Tensor:
    batch, length, _ = x.shape
    return x.view(batch, length, HEADS, -1).transpose(1, 2)  # (B, H, L, D)


def by_hand(module: MultiheadAttention, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """The module's computation spelled out through ``shaw_attention``."""
    q, k, v = (split_heads(proj(x)) for proj in (module.q_proj, module.k_proj, module.v_proj))
    position = module.position
    out = shaw_attention(
        q,
        k,
        v,
        position.key_table,
        position.value_table,
        max_left=position.max_left,
        max_right=position.max_right,
        backend="reference",
        **kwargs,
    )  # (B, H, L, D)
    return module.out_proj(out.transpose(1, 2).reshape(x.shape))  # (B, L, E)


def test_self_attention_shape_and_parameters():
    module = make_module(max_distance=3)
    x = inputs()
    assert module(x).shape == x.shape
    assert module.head_dim == EMBED // HEADS
    assert module.position.key_table.shape == (7, 4)
    assert module.position.value_table.shape == (7, 4)
    per_head = make_module(max_distance=3, per_head_tables=True)
    assert per_head.position.key_table.shape == (HEADS, 7, 4)


def test_batch_first_false_is_the_transposed_layout():
    module = make_module(max_distance=2)
    seq_first = MultiheadAttention(EMBED, HEADS, max_distance=2, batch_first=False).double()
    seq_first.load_state_dict(module.state_dict())
    x = inputs()
    expected = module(x)
    out = seq_first(x.transpose(0, 1))  # (L, B, E)
    torch.testing.assert_close(out, expected.transpose(0, 1), **TIGHT)
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[1, -2:] = True
    torch.testing.assert_close(
        seq_first(x.transpose(0, 1), key_padding_mask=padding),
        module(x, key_padding_mask=padding).transpose(0, 1),
        **TIGHT,
    )


@pytest.mark.parametrize("per_head", [False, True])
def test_key_padding_mask_matches_by_hand(per_head):
    module = make_module(max_distance=2, per_head_tables=per_head)
    x = inputs()
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[0, -1] = True
    padding[1, -3:] = True  # True = padding, as in torch.nn.MultiheadAttention
    out = module(x, key_padding_mask=padding)
    expected = by_hand(module, x, attn_mask=~padding[:, None, None, :])
    torch.testing.assert_close(out, expected, **TIGHT)
    assert not torch.allclose(out, module(x))


def test_causal_matches_by_hand():
    module = make_module(max_distance=2)
    x = inputs()
    torch.testing.assert_close(
        module(x, is_causal=True), by_hand(module, x, is_causal=True), **TIGHT
    )
    # A later token does not change an earlier output.
    changed = x.clone()
    changed[:, -1] += 1.0
    torch.testing.assert_close(
        module(changed, is_causal=True)[:, :-1], module(x, is_causal=True)[:, :-1], **TIGHT
    )


def test_attn_mask_and_padding_combine():
    module = make_module(max_distance=2)
    x = inputs()
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[1, -2:] = True
    float_mask = torch.randn(6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = module(x, attn_mask=float_mask, key_padding_mask=padding, is_causal=True)
    allowed = ~padding[:, None, None, :] & torch.ones(6, 6, dtype=torch.bool).tril()
    expected_mask = float_mask.masked_fill(~allowed, float("-inf"))
    torch.testing.assert_close(out, by_hand(module, x, attn_mask=expected_mask), **TIGHT)


def test_cross_attention_is_content_only():
    module = make_module(max_distance=2, kdim=5, vdim=7)
    target, source, source_values = (
        inputs(length=4),
        inputs(length=6, width=5),
        inputs(length=6, width=7, seed=2),
    )
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[0, :2] = True
    out = module(target, source, source_values, key_padding_mask=padding)
    assert out.shape == (2, 4, EMBED)
    q = split_heads(module.q_proj(target))
    k = split_heads(module.k_proj(source))
    v = split_heads(module.v_proj(source_values))
    attended = F.scaled_dot_product_attention(q, k, v, attn_mask=~padding[:, None, None, :])
    expected = module.out_proj(attended.transpose(1, 2).reshape(2, 4, EMBED))
    torch.testing.assert_close(out, expected, **TIGHT)


def test_plain_module_matches_sdpa_by_hand():
    module = make_module()
    x = inputs()
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[1, -2:] = True
    q, k, v = (split_heads(proj(x)) for proj in (module.q_proj, module.k_proj, module.v_proj))
    for kwargs, mask in (
        (dict(), None),
        (dict(is_causal=True), torch.ones(6, 6, dtype=torch.bool).tril()),
        (dict(key_padding_mask=padding), ~padding[:, None, None, :]),
    ):
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, D)
        expected = module.out_proj(attended.transpose(1, 2).reshape(x.shape))
        torch.testing.assert_close(module(x, **kwargs), expected, **TIGHT)


# --- cached decoding --------------------------------------------------------------------------


DECODING = {
    "shared": dict(max_distance=2),
    "per-head": dict(max_distance=2, per_head_tables=True),
    "key-only": dict(max_distance=3, value_term=False),
    "value-only": dict(max_distance=1, key_term=False),
    "k>=length": dict(max_distance=10, per_head_tables=True),
    "plain": dict(),
}


@pytest.mark.parametrize(
    "chunks", [[1] * 7, [2, 3, 2], [3, 1, 3]], ids=["tokens", "2-3-2", "3-1-3"]
)
@pytest.mark.parametrize("config", list(DECODING), ids=list(DECODING))
def test_cached_decoding_equals_full_sequence(config, chunks):
    module = make_module(**DECODING[config])
    x = inputs(length=sum(chunks))
    full = module(x, is_causal=True)
    cache = KVCache()
    outputs, start = [], 0
    for size in chunks:
        outputs.append(module(x[:, start : start + size], is_causal=True, cache=cache))
        start += size
        assert cache.length == start
    torch.testing.assert_close(torch.cat(outputs, dim=1), full, **TIGHT)


def test_cached_decoding_with_padding_covers_cached_keys():
    module = make_module(max_distance=2)
    x = inputs(length=5)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[1, 0] = True  # left padding in the second sequence
    full = module(x, is_causal=True, key_padding_mask=padding)
    cache = KVCache()
    steps = [
        module(x[:, t : t + 1], is_causal=True, cache=cache, key_padding_mask=padding[:, : t + 1])
        for t in range(5)
    ]
    # Row 0 of the second sequence sees only a padded key: both runs give out_proj's bias there.
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TIGHT)
    torch.testing.assert_close(full[1, 0], module.out_proj.bias, **TIGHT)


def test_cached_decoding_uses_true_distances():
    # Hugging Face issue 19045: distance 0 for every cached key. With the query at offset 0 the
    # last step would differ from the full run; with the cache's offset it matches.
    module = make_module(max_distance=3)
    x = inputs(length=5)
    cache = KVCache()
    module(x[:, :4], is_causal=True, cache=cache)
    cached = KVCache(cache.key.clone(), cache.value.clone())
    right = module(x[:, 4:], cache=cache)
    wrong = module(x[:, 4:], cache=cached, query_offset=0)
    full = module(x, is_causal=True)[:, 4:]
    torch.testing.assert_close(right, full, **TIGHT)
    assert not torch.allclose(wrong, full)


# --- dropout ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [dict(max_distance=2), dict()], ids=["shaw", "plain"])
def test_dropout_only_in_train_mode(kwargs):
    module = make_module(dropout=0.5, **kwargs)
    no_dropout = make_module(**kwargs)
    x = inputs()
    torch.testing.assert_close(module.eval()(x), no_dropout(x), **TIGHT)
    torch.testing.assert_close(module(x), module(x), **TIGHT)
    module.train()
    torch.manual_seed(1)
    first = module(x)
    torch.manual_seed(2)
    second = module(x)
    assert not torch.allclose(first, second)
    assert not torch.allclose(first, no_dropout(x))


# --- bad input --------------------------------------------------------------------------------


def test_embed_dim_not_divisible():
    with pytest.raises(ValueError, match=r"embed_dim \(10\) must be divisible by num_heads \(3\)"):
        MultiheadAttention(10, 3)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((0, 1), {}, ValueError, r"embed_dim must be a positive int, got 0"),
        ((-4, 2), {}, ValueError, r"embed_dim must be a positive int, got -4"),
        ((8.0, 2), {}, TypeError, r"embed_dim must be a positive int, got float 8.0"),
        ((8, 0), {}, ValueError, r"num_heads must be a positive int, got 0"),
        ((8, 2.0), {}, TypeError, r"num_heads must be a positive int, got float 2.0"),
        ((8, True), {}, TypeError, r"num_heads must be a positive int, got bool True"),
        ((8, 2), {"dropout": 1.5}, ValueError, r"dropout must be in \[0, 1\), got 1.5"),
        ((8, 2), {"dropout": "x"}, TypeError, r"dropout must be a float in \[0, 1\), got 'x'"),
        ((8, 2), {"dropout": float("nan")}, ValueError, r"dropout must be in \[0, 1\), got nan"),
        ((8, 2), {"kdim": 0}, ValueError, r"kdim must be None \(embed_dim\) or a positive int"),
        ((8, 2), {"vdim": 3.0}, TypeError, r"vdim must be None \(embed_dim\) or a positive int"),
        (
            (8, 2),
            {"position": "shaw"},
            TypeError,
            r"position must be an AttentionPosition .*'shaw'",
        ),
        ((8, 2), {"backend": "bogus"}, ValueError, r"unknown backend 'bogus'; valid names: auto"),
        ((8, 2), {"batch_first": "no"}, TypeError, r"batch_first must be a bool, got 'no'"),
        ((8, 2), {"max_distance": 2, "key_term": "no"}, TypeError, r"key_term must be a bool"),
        # Both a scheme and Shaw's k: one of them would be dropped without a word.
        (
            (8, 2),
            {"max_distance": 2, "position": AttentionPosition()},
            ValueError,
            r"give max_distance \(Shaw's terms\) or position .* not both; got max_distance=2",
        ),
        # Shaw's options without Shaw's tables did nothing.
        (
            (8, 2),
            {"per_head_tables": True},
            ValueError,
            r"per_head_tables=True configures Shaw's tables, which only exist with max_distance",
        ),
        (
            (8, 2),
            {"position": AttentionPosition(), "value_term": False},
            ValueError,
            r"value_term=False configures Shaw's tables",
        ),
    ],
)
def test_bad_constructor_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        MultiheadAttention(*args, **kwargs)


@pytest.mark.parametrize("value", [1, "yes", None])
def test_is_causal_must_be_a_bool(value):
    module = make_module()
    with pytest.raises(TypeError, match=rf"is_causal must be a bool, got {value!r}"):
        module(inputs(), is_causal=value)


# --- empty inputs -----------------------------------------------------------------------------


POSITIONS = {
    "plain": lambda: None,
    "shaw": lambda: get_scheme("shaw", max_distance=2).attention_position(HEADS, 4, causal=False),
    "t5": lambda: get_scheme("t5").attention_position(HEADS, 4, causal=False),
    "alibi": lambda: get_scheme("alibi").attention_position(HEADS, 4, causal=False),
    "rope": lambda: get_scheme("rope").attention_position(HEADS, 4, causal=False),
}


@pytest.mark.parametrize("batch, length", [(0, 5), (2, 0), (0, 0)])
@pytest.mark.parametrize("position", list(POSITIONS))
def test_empty_batch_or_sequence_gives_an_empty_output(position, batch, length):
    module = make_module(position=POSITIONS[position]())
    x = inputs(batch=batch, length=length)
    for is_causal in (False, True):
        assert module(x, is_causal=is_causal).shape == (batch, length, EMBED)
    cache = KVCache()
    assert module(x, is_causal=True, cache=cache).shape == (batch, length, EMBED)
    assert cache.length == length
    assert module(x, inputs(batch=batch, length=3)).shape == (batch, length, EMBED)


def test_cross_attention_to_an_empty_source_is_zero():
    module = make_module()
    out = module(inputs(length=3), inputs(length=0))
    torch.testing.assert_close(out, module.out_proj(torch.zeros(2, 3, EMBED, dtype=out.dtype)))


# --- cross-attention inputs -------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, match",
    [
        (
            (3, 6, EMBED),
            None,
            r"key must have shape \(B, Lk, kdim\) = \(2, Lk, 12\).*got \(3, 6, 12\)",
        ),
        ((2, 6, 8), None, r"key must have shape \(B, Lk, kdim\) = \(2, Lk, 12\).*got \(2, 6, 8\)"),
        ((6, EMBED), None, r"key must have shape \(B, Lk, kdim\).*got \(6, 12\)"),
        ((2, 7, EMBED), (2, 6, EMBED), r"value must have shape \(B, Lk, vdim\) = \(2, 7, 12\)"),
        ((2, 7, EMBED), (3, 7, EMBED), r"value must have shape .*got \(3, 7, 12\)"),
        ((2, 7, EMBED), (2, 7, 5), r"value must have shape .*got \(2, 7, 5\)"),
    ],
)
def test_bad_cross_attention_inputs(key, value, match):
    module = make_module()
    key = torch.zeros(key, dtype=torch.float64)
    value = None if value is None else torch.zeros(value, dtype=torch.float64)
    with pytest.raises(ValueError, match=match):
        module(inputs(), key, value)


def test_cross_attention_shapes_are_in_the_callers_layout():
    module = MultiheadAttention(EMBED, HEADS, batch_first=False)
    with pytest.raises(ValueError, match=r"key must have shape \(Lk, B, kdim\) = \(Lk, 2, 12\)"):
        module(torch.zeros(6, 2, EMBED), torch.zeros(6, 3, EMBED))
    with pytest.raises(TypeError, match=r"key must be a torch.Tensor or None, got list"):
        module(torch.zeros(6, 2, EMBED), [1.0])


# --- attn_mask --------------------------------------------------------------------------------


@pytest.mark.parametrize("max_distance", [2, None], ids=["shaw", "plain"])
@pytest.mark.parametrize(
    "mask, error, match",
    [
        (torch.ones(6, 5, dtype=torch.bool), ValueError, r"attn_mask of shape \(6, 5\) does not"),
        (torch.ones(4, 6, 6, dtype=torch.bool), ValueError, r"attn_mask of shape \(4, 6, 6\)"),
        (torch.ones(6, 6, dtype=torch.long), TypeError, r"attn_mask must be bool .*torch.int64"),
    ],
)
def test_attn_mask_is_checked_before_it_is_combined(max_distance, mask, error, match):
    module = make_module(max_distance=max_distance)
    padding = torch.zeros(2, 6, dtype=torch.bool)
    for kwargs in (dict(), dict(key_padding_mask=padding), dict(is_causal=True)):
        with pytest.raises(error, match=match):
            module(inputs(), attn_mask=mask, **kwargs)


def test_bad_attn_mask_leaves_cache_unchanged():
    module = make_module(max_distance=2)
    cache = KVCache()
    module(inputs(length=3), is_causal=True, cache=cache)
    # The new query sees the 3 cached keys and itself: the mask must be (1, 4), not (1, 3).
    with pytest.raises(ValueError, match=r"attn_mask of shape \(1, 3\) .* \(2, 3, 1, 4\)"):
        module(inputs(length=1), cache=cache, attn_mask=torch.ones(1, 3, dtype=torch.bool))
    assert cache.length == 3


@pytest.mark.parametrize(
    "mask, match",
    [
        (torch.zeros(2, 5, dtype=torch.bool), r"\(B, Lk\) = \(2, 6\).*got torch.bool \(2, 5\)"),
        (torch.zeros(6, dtype=torch.bool), r"\(B, Lk\) = \(2, 6\).*got torch.bool \(6,\)"),
        (torch.zeros(2, 6), r"got torch.float32 \(2, 6\)"),
    ],
)
def test_bad_key_padding_mask(mask, match):
    module = make_module(max_distance=2)
    with pytest.raises(ValueError, match=r"key_padding_mask must be a bool tensor.*" + match):
        module(inputs(), key_padding_mask=mask)


def test_bad_key_padding_mask_leaves_cache_unchanged():
    module = make_module(max_distance=2)
    cache = KVCache()
    module(inputs(length=3), is_causal=True, cache=cache)
    with pytest.raises(ValueError, match=r"key_padding_mask .*\(2, 4\)"):
        module(inputs(length=1), cache=cache, key_padding_mask=torch.zeros(2, 1, dtype=torch.bool))
    assert cache.length == 3


def test_bad_query_and_key_arguments():
    module = make_module(max_distance=2)
    with pytest.raises(ValueError, match=r"query must have shape \(B, L, 12\), got \(2, 6, 8\)"):
        module(inputs(width=8))
    with pytest.raises(ValueError, match=r"value given without key"):
        module(inputs(), value=inputs())
    with pytest.raises(ValueError, match=r"cache is for self-attention only"):
        module(inputs(), inputs(), cache=KVCache())


def test_torch_style_self_attention_call_keeps_positions():
    # module(x, x, x) is how torch.nn.MultiheadAttention is called for self-attention.
    module = make_module(max_distance=2)
    x = inputs()
    torch.testing.assert_close(module(x, x, x, is_causal=True), module(x, is_causal=True), **TIGHT)
    torch.testing.assert_close(module(x, x), module(x), **TIGHT)
    # A different tensor with the same values is cross-attention: content only.
    assert not torch.allclose(module(x, x.clone()), module(x))


# --- cache misuse -----------------------------------------------------------------------------


def _filled_cache(module: MultiheadAttention) -> KVCache:
    cache = KVCache()
    module(inputs(length=3), is_causal=True, cache=cache)
    return cache


@pytest.mark.parametrize(
    "other, x, match",
    [
        ("same", inputs(batch=3, length=1), r"\(B, H, L, D\) = \(2, 3, 3, 4\).* \(3, 3, 1, 4\)"),
        ("heads", inputs(length=1), r"\(B, H, L, D\) = \(2, 3, 3, 4\).* \(2, 2, 1, 6\)"),
        ("width", inputs(length=1, width=24), r"\(B, H, L, D\) = \(2, 3, 3, 4\).* \(2, 3, 1, 8\)"),
    ],
)
def test_cache_from_another_batch_or_layer_is_refused(other, x, match):
    module = make_module(max_distance=2)
    cache = _filled_cache(module)
    if other == "heads":
        module = MultiheadAttention(EMBED, 2, max_distance=2).double()
    elif other == "width":
        module = MultiheadAttention(24, HEADS, max_distance=2).double()
    with pytest.raises(ValueError, match=r"this KVCache holds keys of shape " + match):
        module(x, is_causal=True, cache=cache)
    assert cache.length == 3


def test_cache_dtype_must_match():
    module = make_module(max_distance=2)
    cache = _filled_cache(module)
    with pytest.raises(TypeError, match=r"KVCache holds torch.float64 keys.*torch.float32"):
        module.float()(inputs(length=1).float(), is_causal=True, cache=cache)
    assert cache.length == 3


def test_a_call_that_fails_inside_attention_leaves_the_cache_as_it_was():
    # The error comes after the keys were projected (here: a position module for other heads);
    # a retry must not see the failed call's keys twice.
    module = make_module(max_distance=2).eval()
    x = inputs(length=3)
    full = module(x, is_causal=True)
    cache = KVCache()
    module(x[:, :1], is_causal=True, cache=cache)
    shaw = module.position
    module.position = get_scheme("t5").attention_position(HEADS + 1, 4, causal=True)
    with pytest.raises(ValueError, match=f"query has {HEADS} heads"):
        module(x[:, 1:2], is_causal=True, cache=cache)
    assert cache.length == 1
    module.position = shaw
    retry = module(x[:, 1:2], is_causal=True, cache=cache)
    torch.testing.assert_close(retry, full[:, 1:2], **TIGHT)
    assert cache.length == 2


def test_self_attention_needs_keys_and_values_of_the_model_width():
    module = MultiheadAttention(EMBED, HEADS, kdim=5, vdim=7)
    with pytest.raises(ValueError, match=r"built with kdim=5, vdim=7 \(embed_dim=12\); pass key"):
        module(inputs().float())


def test_cache_must_be_a_kv_cache():
    with pytest.raises(TypeError, match=r"cache must be a KVCache or None, got dict"):
        make_module()(inputs(), cache={})


# --- from torch.nn.MultiheadAttention -------------------------------------------------------


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_from_torch_computes_what_the_torch_module_does(batch_first, bias):
    torch.manual_seed(0)
    source = torch.nn.MultiheadAttention(EMBED, HEADS, bias=bias, batch_first=batch_first)
    source = source.double().eval()
    layer = MultiheadAttention.from_torch(source).eval()
    assert layer.batch_first == batch_first and layer.q_proj.weight.dtype == torch.float64
    x = inputs()  # (2, 6, E)
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[1, -2:] = True
    blocked = torch.ones(6, 6, dtype=torch.bool).triu(1)  # torch's convention: True = blocked
    if not batch_first:
        x = x.transpose(0, 1)
    expected, _ = source(x, x, x, key_padding_mask=padding, attn_mask=blocked, need_weights=False)
    got = layer(x, key_padding_mask=padding, attn_mask=~blocked)
    torch.testing.assert_close(got, expected, **TIGHT)
    torch.testing.assert_close(layer(x, key_padding_mask=padding, is_causal=True), got, **TIGHT)


def test_from_torch_cross_attention_with_other_key_and_value_widths():
    torch.manual_seed(1)
    source = torch.nn.MultiheadAttention(EMBED, HEADS, kdim=5, vdim=7, batch_first=True)
    source = source.double().eval()
    layer = MultiheadAttention.from_torch(source, max_distance=2).eval()
    target, keys, values = inputs(length=4), inputs(length=6, width=5), inputs(length=6, width=7)
    expected, _ = source(target, keys, values, need_weights=False)
    torch.testing.assert_close(layer(target, keys, values), expected, **TIGHT)


def test_from_torch_with_zeroed_tables_starts_from_the_torch_function():
    torch.manual_seed(2)
    source = torch.nn.MultiheadAttention(EMBED, HEADS, batch_first=True).double().eval()
    layer = MultiheadAttention.from_torch(source, max_distance=3, per_head_tables=True).eval()
    x = inputs()
    expected, _ = source(x, x, x, need_weights=False)
    assert not torch.allclose(layer(x), expected)  # random relative tables: another function
    torch.nn.init.zeros_(layer.position.key_table)
    torch.nn.init.zeros_(layer.position.value_table)
    torch.testing.assert_close(layer(x), expected, **TIGHT)
    assert layer.position.key_table.shape == (HEADS, 7, EMBED // HEADS)


def test_from_torch_refuses_what_it_cannot_copy():
    with pytest.raises(
        TypeError, match=r"module must be a torch.nn.MultiheadAttention, got Linear"
    ):
        MultiheadAttention.from_torch(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match=r"add_bias_kv or add_zero_attn"):
        MultiheadAttention.from_torch(torch.nn.MultiheadAttention(8, 2, add_bias_kv=True))
    with pytest.raises(ValueError, match=r"add_bias_kv or add_zero_attn"):
        MultiheadAttention.from_torch(torch.nn.MultiheadAttention(8, 2, add_zero_attn=True))
    with pytest.raises(ValueError, match=r"batch_first is copied from module"):
        MultiheadAttention.from_torch(torch.nn.MultiheadAttention(8, 2), batch_first=True)


def test_the_backend_can_be_switched_on_one_set_of_weights():
    module = make_module(max_distance=2)
    x = inputs()
    module.backend = "reference"
    reference = module(x, is_causal=True)
    module.backend = "eager"
    torch.testing.assert_close(module(x, is_causal=True), reference, **TIGHT)
