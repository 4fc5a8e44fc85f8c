"""The fused Triton kernel (``backend="triton"``) against the float64 paper-literal reference.

Without a GPU the kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, set below
before Triton is first used) on small CPU tensors with 16×16 tiles, so a length of 40 already
crosses several tiles and all three phases (left tail, band, right tail). With a GPU the same
grid runs on CUDA. Every case checks the output and all five gradients (query, key, value and
both tables).
"""

import os
import subprocess
import sys
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")

from backend_cases import make_case, make_mask  # noqa: E402

from relpos.attention import FusedDropout, shaw_attention, triton_shaw, triton_tune  # noqa: E402
from relpos.attention.eager import eager_attention  # noqa: E402
from relpos.attention.reference import reference_attention  # noqa: E402
from relpos.attention.triton_shaw import (  # noqa: E402
    KernelLaunch,
    TritonBlocks,
    triton_applies,
    triton_attention,
    triton_dropout_mask,
)

INTERPRETING = triton_shaw._interpreting()
DEVICE = "cpu" if INTERPRETING else "cuda"
pytestmark = pytest.mark.skipif(
    not INTERPRETING and not torch.cuda.is_available(),
    reason="needs CUDA or TRITON_INTERPRET=1",
)


def _case(**options):
    return make_case(**options, device=DEVICE, requires_grad=True)


def _run(fn, index, tensors, upstream, **kwargs):
    """Output and gradients of every tensor that is given, all in float64."""
    leaves = [t for t in tensors.values() if t is not None]
    out = fn(
        tensors["query"],
        tensors["key"],
        tensors["value"],
        index=index,
        key_table=tensors["key_table"],
        value_table=tensors["value_table"],
        **kwargs,
    )
    grads = torch.autograd.grad(out, leaves, upstream.to(out.dtype))
    return out.double(), [g.double() for g in grads]


def _check_against_reference(
    index,
    tensors,
    *,
    attn_mask=None,
    is_causal=False,
    tol=2e-5,
    blocks=None,
    scale=None,
    dropout=None,
):
    """With ``dropout`` (a ``FusedDropout``) the kernels draw their mask, and the reference is
    given the same mask, written out by ``triton_dropout_mask``."""
    scale = tensors["query"].shape[-1] ** -0.5 if scale is None else scale
    gen = torch.Generator().manual_seed(1)
    q = tensors["query"]
    upstream = torch.randn(*q.shape[:3], tensors["value"].shape[-1], generator=gen).to(DEVICE)
    out, grads = _run(
        triton_attention,
        index,
        tensors,
        upstream,
        attn_mask=attn_mask,
        is_causal=is_causal,
        scale=scale,
        blocks=blocks,
        dropout_mask=dropout,
    )
    exact = {
        name: None if t is None else t.detach().double().requires_grad_()
        for name, t in tensors.items()
    }
    ref_mask = attn_mask
    if attn_mask is not None and attn_mask.is_floating_point():
        ref_mask = attn_mask.double()
    ref_dropout = None
    if dropout is not None:
        ref_dropout = triton_dropout_mask(
            dropout, *q.shape[:2], index.query_len, index.key_len, DEVICE
        ).double()
    ref_out, ref_grads = _run(
        reference_attention,
        index,
        exact,
        upstream,
        attn_mask=ref_mask,
        is_causal=is_causal,
        scale=scale,
        dropout_mask=ref_dropout,
    )
    torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol)
    names = [name for name, t in tensors.items() if t is not None]
    for name, grad, ref_grad in zip(names, grads, ref_grads, strict=True):
        # Gradients are sums over many products; compare relative to their own size.
        atol = tol * max(1.0, ref_grad.abs().max().item())
        torch.testing.assert_close(
            grad, ref_grad, rtol=tol, atol=atol, msg=lambda m, name=name: f"grad {name}: {m}"
        )


CASES = {
    "plain": {},
    "causal": dict(is_causal=True),
    "key_padding": dict(mask="padding"),
    "query_offset_short_queries": dict(q_len=20, k_len=45, query_offset=25),
    "key_offset_long_queries": dict(q_len=45, k_len=20, key_offset=7),
    "per_head_tables": dict(per_head=True),
    "key_only": dict(values=False),
    "value_only": dict(keys=False),
    # Without tables the kernels are plain attention (gpu_check times this against SDPA).
    "no_tables": dict(keys=False, values=False, mask="padding"),
    "dense_mask_fully_masked_row": dict(mask="dense"),
    "float_mask": dict(mask="float"),
    "asymmetric_clipping_odd_length": dict(q_len=37, k_len=37, left=5, right=1),
    "one_bucket": dict(left=0, right=0),
    "clip_beyond_length": dict(left=50, right=50),
    "causal_padding_query_offset": dict(
        q_len=24, k_len=40, query_offset=16, is_causal=True, mask="padding"
    ),
    "head_dim_64_value_dim_16": dict(q_len=33, k_len=33, head_dim=64, value_dim=16),
    # Key lengths that are a multiple of the tile width take the path without bounds checks.
    "keys_a_multiple_of_the_tile": dict(q_len=37, k_len=48),
    "causal_keys_a_multiple_of_the_tile": dict(q_len=48, k_len=48, is_causal=True, left=20),
}


def _mask(kind, index, batch=1):
    return make_mask(kind, index, batch=batch, device=DEVICE)


def _check_case(name, blocks=None, dropout=None):
    """``CASES[name]`` (its mask and causality included) against the reference; returns its
    input tensors."""
    options = dict(CASES[name])
    is_causal = options.pop("is_causal", False)
    mask_kind = options.pop("mask", None)
    index, tensors = _case(**options)
    _check_against_reference(
        index,
        tensors,
        attn_mask=_mask(mask_kind, index),
        is_causal=is_causal,
        blocks=blocks,
        dropout=dropout,
    )
    return tensors


@pytest.mark.parametrize("name", list(CASES))
def test_values_and_all_gradients_match_reference(name):
    _check_case(name)


@pytest.mark.skipif(not INTERPRETING, reason="on a GPU the other tests run these tiles")
@pytest.mark.parametrize(
    "head_dim, dtype", [(64, torch.bfloat16), (128, torch.bfloat16), (64, torch.float32)]
)
def test_the_gpu_default_tiles_on_the_whole_grid(head_dim, dtype, monkeypatch):
    """The tiles ``default_blocks`` gives a GPU (the interpreter otherwise gets 16x16 ones),
    run by the interpreter on every case: the real tile sizes' edges (rows and keys past the
    ends, band tiles) with every mask, offset and table variant."""
    with monkeypatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "0")
        blocks = triton_shaw.default_blocks(head_dim, dtype)
    assert blocks.forward.block_m > 16  # the GPU's tiles, not the interpreter's
    for name in CASES:
        _check_case(name, blocks)


def test_band_walked_in_narrower_tiles_and_strided_inputs():
    # 32-wide tiles whose band is walked 16 at a time, on (B, L, H, D) tensors viewed as
    # (B, H, L, D): the layout a projection produces.
    index, tensors = _case(q_len=70, k_len=70, left=4, right=9, batch=2)
    for name in ("query", "key", "value"):
        t = tensors[name].detach()
        tensors[name] = t.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()
    assert not tensors["query"].is_contiguous()
    launch = KernelLaunch(32, 32, band_block=16)
    _check_against_reference(
        index, tensors, blocks=TritonBlocks(launch, launch, launch), is_causal=True
    )


TMA_CASES = [
    "plain",
    "causal_padding_query_offset",
    "key_offset_long_queries",
    "head_dim_64_value_dim_16",
    "float_mask",
    "keys_a_multiple_of_the_tile",
]


@pytest.fixture
def described(monkeypatch):
    """The tensors the backend made TMA descriptors of, in order."""
    made = []
    make = triton_shaw._row_descriptor

    def recording(t, *args):
        made.append(t)
        return make(t, *args)

    monkeypatch.setattr(triton_shaw, "_row_descriptor", recording)
    return made


TMA = KernelLaunch(16, 16, band_block=16, tma=True)


@pytest.mark.parametrize("name", TMA_CASES)
def test_tail_tiles_through_tma_descriptors(name, described):
    """``KernelLaunch(tma=True)``: the tails' streamed tiles are loaded through tensor
    descriptors in all three kernels (the interpreter runs them like TMA: zero past the ends)."""
    tensors = _check_case(name, TritonBlocks(TMA, TMA, TMA))
    # forward: key, value; key/value gradients: query, grad_out; query gradient: key, value
    assert len(described) == 6
    assert described[0] is tensors["key"] and described[2] is tensors["query"]


def test_tma_falls_back_to_pointer_loads_for_unaligned_layouts(described):
    # Dense keys and values that start one element past a 16-byte boundary (as a slice of a
    # larger buffer would): no TMA descriptor can address them.
    index, tensors = _case(q_len=20, k_len=20)
    for name in ("key", "value"):
        t = tensors[name].detach()
        buffer = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
        shifted = buffer[1:].view(t.shape)
        shifted.copy_(t)
        tensors[name] = shifted.requires_grad_()
        assert not triton_shaw._tma_compatible(tensors[name])
    assert triton_shaw._tma_compatible(tensors["query"])
    _check_against_reference(index, tensors, blocks=TritonBlocks(TMA, TMA, TMA))
    # Only the key/value kernel, which streams queries and output gradients, used descriptors.
    assert len(described) == 2 and described[0] is tensors["query"]


#: Dropout drawn in the kernels, for the tests that add it to a case.
DROPOUT = FusedDropout(0.3, 2024)


@pytest.mark.parametrize(("group", "dropout"), [(2, None), (3, None), (2, DROPOUT)])
def test_query_blocks_grouped_per_program(group, dropout):
    """``KernelLaunch(group=g)``: the query-gradient kernel walks g blocks per program and sums
    their table-gradient partials in place; 45 rows are 3 blocks of 16, so the last group is
    short (g = 2) or the only one (g = 3); with dropout drawn in the kernels too."""
    index, tensors = _case(q_len=45, k_len=40, query_offset=3, per_head=True)
    tiny = KernelLaunch(16, 16, band_block=16)
    grouped = KernelLaunch(16, 16, band_block=16, group=group)
    _check_against_reference(
        index,
        tensors,
        attn_mask=_mask("padding", index),
        is_causal=True,
        blocks=TritonBlocks(tiny, grouped, tiny),
        dropout=dropout,
    )


HALVED = KernelLaunch(32, 16, band_block=16, halves=2)


# On a GPU every case compiles the kernels anew (seconds each): a few telling cases there.
HALVES_CASES = (
    list(CASES)
    if INTERPRETING
    else ["plain", "causal_padding_query_offset", "dense_mask_fully_masked_row", "float_mask"]
)


@pytest.mark.parametrize("name", HALVES_CASES)
def test_forward_rows_in_two_interleaved_halves(name):
    """``KernelLaunch(halves=2)``: the forward splits each 32-row block into two 16-row halves
    whose tail tiles run in one interleaved loop (band and epilogue one half after the other);
    every case of the grid (a few on a GPU), forward and all gradients."""
    tiny = KernelLaunch(16, 16, band_block=16)
    _check_case(name, TritonBlocks(HALVED, tiny, tiny))


def test_halves_with_tma_loads_and_a_query_block_past_the_end():
    # 37 rows: the second 32-row block's second half lies wholly past the last query.
    index, tensors = _case(q_len=37, k_len=50, left=3, right=7)
    launch = KernelLaunch(32, 16, band_block=16, tma=True, halves=2)
    tiny = KernelLaunch(16, 16, band_block=16)
    _check_against_reference(
        index, tensors, attn_mask=_mask("float", index), blocks=TritonBlocks(launch, tiny, tiny)
    )


SPLIT = KernelLaunch(16, 16, band_block=16, tma=True, split_tails=True)


@pytest.mark.parametrize("kernel", ["forward", "grad_query", "grad_key_value"])
@pytest.mark.parametrize("name", HALVES_CASES)
def test_tails_in_a_kernel_of_their_own(name, kernel, described):
    """``KernelLaunch(split_tails=True)``: the tails run in a kernel of their own
    (``forward_tails_kernel``, ``grad_query_tails_kernel``, ``grad_key_value_tails_kernel``;
    with ``warp_specialize=True`` Triton splits its loop into producer and consumer warps on a
    GPU, the same code otherwise) and the usual kernel adds the band and its epilogue to that
    partial result."""
    tiny = KernelLaunch(16, 16, band_block=16)
    blocks = TritonBlocks(
        **{
            which: SPLIT if which == kernel else tiny
            for which in ("forward", "grad_query", "grad_key_value")
        }
    )
    tensors = _check_case(name, blocks)
    if kernel == "forward":  # the query block too came by TMA (the tails kernel's)
        assert described[0] is tensors["key"] and described[2] is tensors["query"]
    elif kernel == "grad_key_value":  # queries and output gradients, then keys and values
        assert described[0] is tensors["query"] and described[2] is tensors["key"]
    else:  # keys and values, then the tails kernel's queries and output gradients
        assert described[0] is tensors["key"] and described[2] is tensors["query"]


@pytest.mark.parametrize("name", ["plain", "causal_padding_query_offset"])
def test_capped_registers(name):
    """``KernelLaunch(max_registers=...)`` reaches the launch (on a GPU ptxas caps the registers
    and spills the rest; the interpreter ignores it) and changes no result."""
    capped = KernelLaunch(16, 16, band_block=16, max_registers=64)
    _check_case(name, TritonBlocks(capped, capped, capped))


def test_split_forward_falls_back_to_the_fused_kernel_without_tma(monkeypatch):
    """Where no TMA descriptor can address the inputs, the fused forward runs instead."""

    def tails_kernel(*args, **kwargs):
        raise AssertionError("the tails kernel ran without TMA")

    monkeypatch.setattr(triton_shaw, "_tma_compatible", lambda t: False)
    monkeypatch.setattr(triton_shaw, "_forward_tails", tails_kernel)
    index, tensors = _case(q_len=30, k_len=30)
    tiny = KernelLaunch(16, 16, band_block=16)
    _check_against_reference(index, tensors, blocks=TritonBlocks(SPLIT, tiny, tiny))


def test_tails_kernel_runs_unspecialised_where_triton_refuses(monkeypatch):
    """If Triton cannot compile the warp-specialised loop (a configuration it does not split),
    the tails kernel runs unspecialised, and that configuration is not tried again."""
    launches = []
    real = triton_shaw._launch

    def launch(kernel, grid, launch_options, *args, **meta):
        if "WARP_SPECIALIZE" in meta:
            launches.append(meta["WARP_SPECIALIZE"])
            if meta["WARP_SPECIALIZE"]:
                raise RuntimeError("PassManager::run failed")  # what Triton raises
        return real(kernel, grid, launch_options, *args, **meta)

    monkeypatch.setattr(triton_shaw, "_launch", launch)
    monkeypatch.setattr(triton_shaw, "_UNSPECIALISABLE", set())
    split = KernelLaunch(64, 16, band_block=16, tma=True, warp_specialize=True)
    tiny = KernelLaunch(16, 16, band_block=16)
    for _ in range(2):
        index, tensors = _case(q_len=70, k_len=70, dtype=torch.float16)
        _check_against_reference(index, tensors, blocks=TritonBlocks(split, tiny, tiny), tol=2e-2)
    assert launches == [True, False, False]  # refused once, then straight to the plain loop
    assert len(triton_shaw._UNSPECIALISABLE) == 1


def test_halves_are_checked():
    with pytest.raises(ValueError, match="halves must be 1 or 2"):
        KernelLaunch(64, 64, halves=3)
    with pytest.raises(ValueError, match="halves=2 needs block_m >= 32"):
        KernelLaunch(16, 16, halves=2)
    with pytest.raises(ValueError, match="grad_query.halves must be 1"):
        TritonBlocks(HALVED, HALVED, KernelLaunch(16, 16))
    with pytest.raises(ValueError, match="warp_specialize=True needs tma=True"):
        KernelLaunch(64, 64, warp_specialize=True)
    with pytest.raises(ValueError, match="split_tails=True needs tma=True"):
        KernelLaunch(64, 64, split_tails=True)
    with pytest.raises(ValueError, match="split_tails=True needs tma=True .* and halves=1"):
        KernelLaunch(64, 64, tma=True, split_tails=True, halves=2)
    with pytest.raises(ValueError, match="needs num_stages <= 2 .* got num_stages=3"):
        KernelLaunch(64, 64, num_stages=3, tma=True, warp_specialize=True)
    with pytest.raises(ValueError, match="max_registers must be None or an int in"):
        KernelLaunch(64, 64, max_registers=16)
    with pytest.raises(ValueError, match="max_registers must be None or an int in"):
        KernelLaunch(64, 64, max_registers=168.0)
    assert KernelLaunch(64, 64, max_registers=168).label == "64x64/32 w4 s2 r168"
    assert SPLIT.label == "16x16/16 w4 s2 tma split"
    assert SPLIT.splits and not KernelLaunch(16, 16, tma=True).splits
    assert KernelLaunch(16, 16, tma=True, warp_specialize=True).label == "16x16/32 w4 s2 tma ws"
    assert HALVED.label == "32x16/16 w4 s2 h2"


def _relayout(t, layout):
    """The same values in another memory layout: ``(B, L, H, D)`` viewed as ``(B, H, L, D)``,
    or rows cut from wider ones (gaps between rows)."""
    t = t.detach()
    if layout == "transposed":
        t = t.transpose(1, 2).contiguous().transpose(1, 2)
    elif layout == "sliced":
        t = torch.cat([t, t[..., :3]], dim=-1)[..., : t.shape[-1]]
    return t.requires_grad_()


# On a GPU every draw compiles new kernel variants (seconds each): fewer draws there.
@settings(max_examples=12 if INTERPRETING else 3, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 40), st.integers(1, 40)),
    dims=st.tuples(st.sampled_from([16, 24, 32]), st.sampled_from([16, 24, 32])),
    clipping=st.tuples(st.integers(0, 45), st.integers(0, 45)),
    offsets=st.tuples(st.integers(-20, 20), st.integers(-20, 20)),
    tables=st.sampled_from(["both", "both per head", "key", "value"]),
    mask=st.sampled_from([None, "dense", "padding", "float"]),
    is_causal=st.booleans(),
    scale=st.sampled_from([None, 0.3, -0.7]),
    layouts=st.lists(st.sampled_from(["plain", "transposed", "sliced"]), min_size=3, max_size=3),
    launches=st.lists(
        st.tuples(
            st.sampled_from([16, 32]), st.sampled_from([16, 32]), st.booleans(), st.integers(1, 3)
        ),
        min_size=3,
        max_size=3,
    ),
    split=st.sampled_from([None, "halves", "tails kernel"]),
    dropout_p=st.sampled_from([0.0, 0.0, 0.2, 0.6]),
    seed=st.integers(0, 2**16),
)
def test_random_configurations_match_reference(
    shape,
    dims,
    clipping,
    offsets,
    tables,
    mask,
    is_causal,
    scale,
    layouts,
    launches,
    split,
    dropout_p,
    seed,
):
    """Everything at once, drawn at random: lengths that are and are not tile multiples,
    clipping wider than the sequence, offsets, each table kind, each mask kind, causal, scales of
    either sign, memory layouts, tile sizes, TMA loads, grouped query blocks, the forward's
    interleaved halves or separate tails kernels, and dropout drawn in the kernels."""
    batch, heads, q_len, k_len = shape
    index, tensors = _case(
        batch=batch,
        heads=heads,
        q_len=q_len,
        k_len=k_len,
        head_dim=dims[0],
        value_dim=dims[1],
        left=clipping[0],
        right=clipping[1],
        query_offset=offsets[0],
        key_offset=offsets[1],
        per_head=tables == "both per head",
        keys=tables != "value",
        values=tables != "key",
        seed=seed,
    )
    for name, layout in zip(("query", "key", "value"), layouts, strict=True):
        tensors[name] = _relayout(tensors[name], layout)
    gen = torch.Generator().manual_seed(seed)
    attn_mask = {
        None: None,
        "dense": torch.rand(batch, 1, q_len, k_len, generator=gen) > 0.3,
        "padding": torch.rand(batch, 1, 1, k_len, generator=gen) > 0.2,
        "float": torch.randn(heads, q_len, k_len, generator=gen),
    }[mask]
    blocks = TritonBlocks(
        *(
            KernelLaunch(
                rows,
                cols,
                band_block=16,
                tma=tma,
                group=group,
                halves=2 if split == "halves" and kernel == 0 and rows == 32 else 1,
                split_tails=split == "tails kernel" and tma,
            )
            for kernel, (rows, cols, tma, group) in enumerate(launches)
        )
    )
    _check_against_reference(
        index,
        tensors,
        attn_mask=None if attn_mask is None else attn_mask.to(DEVICE),
        is_causal=is_causal,
        blocks=blocks,
        scale=scale,
        tol=1e-4,
        dropout=FusedDropout(dropout_p, seed) if dropout_p else None,
    )


def test_tma_on_a_gpu_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    with pytest.raises(ValueError, match=r"tma=True\) needs a GPU with TMA .* this one has 8\.0"):
        triton_shaw._check_tma_device(torch.device("cuda", 0))
    triton_shaw._check_tma_device(torch.device("cpu"))  # the interpreter: no such limit


def test_sliced_inputs_with_gaps_between_rows():
    # Keys and values cut from rows one element wider: not dense, so gradient buffers made like
    # them would have other strides; the backend copies such inputs first.
    index, tensors = _case(q_len=20, k_len=20)
    for name in ("key", "value"):
        t = tensors[name].detach()
        tensors[name] = torch.cat([t, t[..., :1]], dim=-1)[..., : t.shape[-1]].requires_grad_()
        assert not triton_shaw._is_dense(tensors[name])
    _check_against_reference(index, tensors)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(key=lambda t: t[..., :16]), "key"),
        (dict(value=lambda t: t[:, :1]), "value"),
        (dict(key_table=lambda t: t[:, :-1]), "key_table must have shape"),
        (dict(value_table=lambda t: t.double()), "value_table has dtype"),
    ],
)
def test_called_directly_bad_shapes_are_refused(change, match):
    """``triton_attention`` checks its inputs itself: the kernels would read out of bounds."""
    index, tensors = _case(q_len=20, k_len=20)
    tensors = {n: (change[n](t.detach()) if n in change else t) for n, t in tensors.items()}
    with pytest.raises((ValueError, TypeError), match=match):
        triton_attention(
            tensors["query"],
            tensors["key"],
            tensors["value"],
            index=index,
            key_table=tensors["key_table"],
            value_table=tensors["value_table"],
        )


def test_keys_expanded_across_heads():
    # (B, 1, L, D) keys and values shared by both heads, as an expanded (stride 0) view.
    index, tensors = _case(q_len=24, k_len=24)
    shared = {n: tensors[n][:, :1].detach().requires_grad_() for n in ("key", "value")}
    expanded = dict(
        tensors,
        key=shared["key"].expand(-1, 2, -1, -1),
        value=shared["value"].expand(-1, 2, -1, -1),
    )
    out = triton_attention(
        expanded["query"],
        expanded["key"],
        expanded["value"],
        index=index,
        key_table=tensors["key_table"],
        value_table=tensors["value_table"],
    )
    grads = torch.autograd.grad(out.sum(), [shared["key"], shared["value"]])
    exact = {n: shared[n].detach().double().requires_grad_() for n in shared}
    ref = reference_attention(
        tensors["query"].detach().double(),
        exact["key"].expand(-1, 2, -1, -1),
        exact["value"].expand(-1, 2, -1, -1),
        index=index,
        key_table=tensors["key_table"].detach().double(),
        value_table=tensors["value_table"].detach().double(),
        attn_mask=None,
        is_causal=False,
        scale=32**-0.5,
    )
    ref_grads = torch.autograd.grad(ref.sum(), [exact["key"], exact["value"]])
    torch.testing.assert_close(out.double(), ref, rtol=2e-5, atol=2e-5)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad.double(), ref_grad, rtol=2e-5, atol=2e-4)


@pytest.mark.parametrize("scale", [-3.0, 0.0])
def test_scales_that_are_not_positive(scale):
    """Tail tiles take the maximum of unscaled logits only when the scale is positive; with a
    negative one that would subtract the minimum, and these large logits would overflow."""
    index, tensors = _case(q_len=37, k_len=48)
    with torch.no_grad():
        tensors["query"] *= 4
        tensors["key"] *= 4
    # Logits of several hundred make float32 rounding large next to the usual 2e-5; a wrongly
    # chosen maximum gives inf or NaN instead.
    _check_against_reference(
        index, tensors, attn_mask=_mask("padding", index), is_causal=True, tol=1e-3, scale=scale
    )


def test_a_second_backward_through_a_retained_graph_gives_the_same_gradients():
    """The backward writes scratch slots; none of them may be a tensor saved by the forward."""
    index, tensors = _case()
    leaves = [t for t in tensors.values() if t is not None]
    out = triton_attention(
        tensors["query"],
        tensors["key"],
        tensors["value"],
        index=index,
        key_table=tensors["key_table"],
        value_table=tensors["value_table"],
        is_causal=True,
    )
    upstream = torch.randn_like(out)
    first = torch.autograd.grad(out, leaves, upstream, retain_graph=True)
    second = torch.autograd.grad(out, leaves, upstream)
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_float16_inputs():
    index, tensors = _case(dtype=torch.float16)
    _check_against_reference(index, tensors, tol=2e-2)


@pytest.mark.skipif(not INTERPRETING, reason="the interpreter's limit; a GPU runs bf16 natively")
def test_bfloat16_under_the_interpreter_runs_the_eager_backend():
    # Triton's interpreter computes bf16 tl.dot wrongly (triton-lang/triton#11584): finite
    # garbage, off by ~1e9. The backend must not run its kernels there.
    index, tensors = _case(q_len=24, k_len=24, dtype=torch.bfloat16)
    kwargs = dict(index=index, attn_mask=None, is_causal=True, scale=0.2)
    q, k, v, key_table, value_table = tensors.values()
    out = triton_attention(q, k, v, key_table=key_table, value_table=value_table, **kwargs)
    upcast = [t.detach().float() for t in tensors.values()]
    expected = eager_attention(
        *upcast[:3], key_table=upcast[3], value_table=upcast[4], **kwargs
    ).to(torch.bfloat16)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # ... and the gradients are the eager ones too (it is differentiable like the kernel).
    out.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in tensors.values())


def test_shaw_attention_runs_the_kernel_by_name():
    index, tensors = _case(q_len=24, k_len=24)
    q, k, v = tensors["query"], tensors["key"], tensors["value"]
    out = shaw_attention(
        q,
        k,
        v,
        tensors["key_table"][0],
        tensors["value_table"][0],
        max_distance=3,
        is_causal=True,
        backend="triton",
    )
    ref = shaw_attention(
        q,
        k,
        v,
        tensors["key_table"][0],
        tensors["value_table"][0],
        max_distance=3,
        is_causal=True,
        backend="reference",
    )
    torch.testing.assert_close(out, ref, rtol=2e-5, atol=2e-5)


def test_no_length_by_length_tensor_is_saved_for_backward():
    index, tensors = _case(q_len=40, k_len=48, left=2, right=2)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        triton_attention(
            tensors["query"],
            tensors["key"],
            tensors["value"],
            index=index,
            key_table=tensors["key_table"],
            value_table=tensors["value_table"],
        )
    batch_heads = 2
    largest_input = max(t.numel() for t in tensors.values())
    assert saved, "nothing was saved: the autograd Function did not run"
    # Inputs, output, and per-row buffers of Lq x R (R = 5) at most; Lq x Lk would be 1920 x 2.
    assert max(saved) <= max(largest_input, batch_heads * index.query_len * index.num_buckets)
    assert max(saved) < batch_heads * index.query_len * index.key_len


def test_a_dense_dropout_mask_and_key_query_run_the_eager_backend():
    index, tensors = _case(q_len=16, k_len=16)
    q, k, v = (tensors[n].detach() for n in ("query", "key", "value"))
    tables = {name: tensors[name].detach() for name in ("key_table", "value_table")}
    keep = (torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(3)) > 0.2).to(DEVICE)
    dropout_mask = keep.float() / 0.8
    for extra in (dict(dropout_mask=dropout_mask), dict(key_query=True)):
        out = triton_attention(
            q, k, v, index=index, attn_mask=None, is_causal=False, scale=0.2, **tables, **extra
        )
        expected = eager_attention(
            q, k, v, index=index, attn_mask=None, is_causal=False, scale=0.2, **tables, **extra
        )
        torch.testing.assert_close(out, expected)


# ------------------------------------------------------------ dropout drawn in the kernels


@pytest.mark.parametrize("name", HALVES_CASES)
def test_dropout_drawn_in_the_kernels_matches_the_reference_given_their_mask(name):
    """``FusedDropout``: the forward draws each weight's fate by Philox and both gradient
    kernels draw it again; the reference, given that mask written out by
    ``triton_dropout_mask``, agrees on the output and all five gradients in every case of the
    grid (masks, causal, offsets, per-head tables, key- or value-only, lengths off the tile, a
    fully masked row)."""
    _check_case(name, dropout=DROPOUT)


def test_dropout_with_halves_or_split_tails_runs_the_plain_kernels():
    """Blocks that ask for forward halves or tails kernels are reduced to the plain fused
    kernels (where dropout is drawn), a halved forward to blocks of one half's rows; the result
    is still the reference's."""
    split = KernelLaunch(16, 16, band_block=16, tma=True, split_tails=True)
    asked = TritonBlocks(HALVED, split, split)
    plain_tma = KernelLaunch(16, 16, band_block=16, tma=True)
    assert triton_shaw.dropout_blocks(asked) == TritonBlocks(
        KernelLaunch(16, 16, band_block=16), plain_tma, plain_tma
    )
    _check_case("causal_padding_query_offset", asked, dropout=DROPOUT)


def test_dropout_in_float16():
    """Dropout with float16 inputs (dropped weights are zeroed in float32, before the
    products)."""
    index, tensors = _case(dtype=torch.float16)
    _check_against_reference(index, tensors, tol=2e-2, dropout=DROPOUT)


def test_the_kernels_dropout_mask():
    """The mask is Bernoulli(1 - p) scaled by 1 / (1 - p), repeats under a seed, changes with
    it, differs between heads, batch entries and rows, and depends on the position only (a
    smaller call draws the same entries)."""
    drop = FusedDropout(0.25, 7)
    mask = triton_dropout_mask(drop, 2, 3, 40, 50, DEVICE)
    assert mask.shape == (2, 3, 40, 50) and mask.dtype == torch.float32
    torch.testing.assert_close(mask.unique().cpu(), torch.tensor([0.0, 1 / 0.75]))
    kept = (mask > 0).double().mean().item()  # 12,000 draws: standard deviation 0.004
    assert abs(kept - 0.75) < 0.02, kept
    assert torch.equal(mask, triton_dropout_mask(drop, 2, 3, 40, 50, DEVICE))
    reseeded = triton_dropout_mask(FusedDropout(0.25, 8), 2, 3, 40, 50, DEVICE)
    # Two independent masks disagree on 2 · 0.25 · 0.75 = 37.5 % of the entries.
    for a, b in (
        (mask, reseeded),
        (mask[0, 0], mask[0, 1]),
        (mask[0, 0], mask[1, 0]),
        (mask[0, 0, :-1], mask[0, 0, 1:]),
        (mask[0, 0, :, :40], mask[0, 0, :, :40].T),
    ):
        assert 0.3 < (a != b).double().mean().item() < 0.45
    torch.testing.assert_close(
        triton_dropout_mask(drop, 1, 1, 10, 20, DEVICE)[0, 0], mask[0, 0, :10, :20], rtol=0, atol=0
    )
    assert triton_dropout_mask(drop, 0, 3, 4, 4, DEVICE).shape == (0, 3, 4, 4)


def test_a_dropout_mask_of_another_kind_is_refused():
    index, tensors = _case(q_len=16, k_len=16)
    with pytest.raises(TypeError, match="dropout_mask must be None, a FusedDropout .* got float"):
        triton_attention(
            *(tensors[n] for n in ("query", "key", "value")),
            index=index,
            key_table=tensors["key_table"],
            value_table=tensors["value_table"],
            dropout_mask=0.3,
        )


def test_the_kernels_dropout_mask_refuses_bad_arguments():
    with pytest.raises(TypeError, match="dropout must be a FusedDropout"):
        triton_dropout_mask(0.3, 1, 1, 4, 4, DEVICE)
    with pytest.raises(ValueError, match="q_len must be an int >= 0"):
        triton_dropout_mask(DROPOUT, 1, 1, -1, 4, DEVICE)
    with pytest.raises(ValueError, match="batch × heads = 65536"):
        triton_dropout_mask(DROPOUT, 65536, 1, 1, 1, DEVICE)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(p=0.0, seed=1), ValueError, r"p must be in \(0, 1\), got 0.0"),
        (dict(p=1.0, seed=1), ValueError, r"p must be in \(0, 1\)"),
        (dict(p=True, seed=1), TypeError, "p must be a float"),
        (dict(p=0.1, seed=1.5), TypeError, "seed must be an int"),
        (dict(p=0.1, seed=-1), ValueError, r"seed must be in \[0, 2\*\*63\)"),
    ],
)
def test_fused_dropout_refuses_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        FusedDropout(**kwargs)


def test_shaw_attention_with_dropout_draws_in_the_kernels_seeded_by_the_generator():
    """``shaw_attention(dropout_p=, generator=)`` on the triton backend: the seed comes from
    the generator, so the same generator state gives the same output, and it is the reference's
    output under the kernels' mask for that seed."""
    index, tensors = _case(q_len=24, k_len=24)
    q, k, v = (tensors[name].detach() for name in ("query", "key", "value"))
    tables = tensors["key_table"][0].detach(), tensors["value_table"][0].detach()

    def attend(generator, backend="triton"):
        return shaw_attention(
            q, k, v, *tables, max_distance=3, dropout_p=0.2, generator=generator, backend=backend
        )

    out = attend(torch.Generator().manual_seed(5))
    torch.testing.assert_close(attend(torch.Generator().manual_seed(5)), out, rtol=0, atol=0)
    assert not torch.allclose(attend(torch.Generator().manual_seed(6)), out)
    seed = int(torch.randint(2**31 - 1, (), generator=torch.Generator().manual_seed(5)))
    mask = triton_dropout_mask(FusedDropout(0.2, seed), 1, 2, 24, 24, DEVICE)
    expected = reference_attention(
        q,
        k,
        v,
        index=index,
        key_table=tables[0][None],
        value_table=tables[1][None],
        attn_mask=None,
        is_causal=False,
        scale=q.shape[-1] ** -0.5,
        dropout_mask=mask,
    )
    torch.testing.assert_close(out, expected, rtol=2e-5, atol=2e-5)


def test_fused_dropout_on_a_path_without_it_uses_the_mask_torch_draws_from_its_seed():
    """Inputs the kernels do not take (here the key-query term) run the eager backend, whose
    dropout mask is drawn by torch from the same seed."""
    index, tensors = _case(q_len=16, k_len=16)
    q, k, v = (tensors[n].detach() for n in ("query", "key", "value"))
    tables = {name: tensors[name].detach() for name in ("key_table", "value_table")}
    common = dict(index=index, attn_mask=None, is_causal=False, scale=0.2, key_query=True)
    out = triton_attention(q, k, v, **tables, **common, dropout_mask=DROPOUT)
    dense = DROPOUT.dense_mask((1, 2, 16, 16), dtype=torch.float32, device=DEVICE)
    expected = eager_attention(q, k, v, **tables, **common, dropout_mask=dense)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize(("version", "applies"), [((3, 3), False), ((3, 4), True), ((4, 0), True)])
def test_auto_needs_a_triton_whose_compile_of_the_kernels_was_checked(
    monkeypatch, version, applies
):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: (9, 0))
    monkeypatch.setattr(triton_shaw, "triton_available", lambda: True)
    monkeypatch.setattr(triton_shaw, "triton_version", lambda: version)
    triton_shaw._cached_capability.cache_clear()
    query = types.SimpleNamespace(
        is_cuda=True, dtype=torch.float16, shape=(2, 4, 8, 64), device=torch.device("cuda", 0)
    )
    try:
        assert triton_shaw.triton_applies(query=query) is applies
    finally:
        triton_shaw._cached_capability.cache_clear()


def test_triton_version_reads_major_and_minor(monkeypatch):
    triton_shaw.triton_version.cache_clear()
    try:
        for text, expected in (("3.6.0", (3, 6)), ("3.10.1+git4f2a", (3, 10)), ("dev", (0, 0))):
            monkeypatch.setattr(triton, "__version__", text)
            triton_shaw.triton_version.cache_clear()
            assert triton_shaw.triton_version() == expected
    finally:
        triton_shaw.triton_version.cache_clear()


@pytest.mark.parametrize("takes_scope", [True, False])
def test_interpreter_loop_bound_patch_fits_both_signatures(monkeypatch, takes_scope):
    """Triton 3.6 patches the interpreter's tensors through a ``scope`` argument, 3.3-3.5 set
    the attribute directly; the NumPy 2.4 fix must work with either (checked by hand with 3.3.1,
    3.4.0, 3.5.1 and 3.9.0 under the interpreter)."""
    import numpy as np
    from triton.runtime import interpreter

    class Scope:
        def set_attr(self, target, name, value):
            setattr(target, name, value)

    def old_style(tensor):
        tensor.__bool__ = lambda self: True

    def new_style(tensor, scope):
        scope.set_attr(tensor, "__bool__", lambda self: True)

    monkeypatch.setattr(interpreter, "_patch_lang_tensor", new_style if takes_scope else old_style)
    triton_shaw._interpreter_loop_bounds.__wrapped__()  # past its once-only cache

    class Tensor:
        handle = types.SimpleNamespace(data=np.array([[7]]))

    interpreter._patch_lang_tensor(Tensor, *([Scope()] if takes_scope else []))
    assert range(Tensor()) == range(7) and bool(Tensor())


def test_a_compiled_caller_runs_the_kernels_as_they_are():
    """``torch.compile`` of a function that calls the triton backend: Dynamo leaves the backend
    to run as it is (before, it traced into Triton's interpreter and failed), and the values and
    gradients are the uncompiled ones. Dynamo's "eager" backend: no inductor build needed."""
    index, tensors = _case(q_len=12, k_len=12)

    def twice(query, key, value, key_table, value_table):
        out = triton_attention(
            query, key, value, index=index, key_table=key_table, value_table=value_table,
            is_causal=True,
        )  # fmt: skip
        return 2 * out

    torch._dynamo.reset()
    inputs = [tensors[n] for n in ("query", "key", "value", "key_table", "value_table")]
    expected = twice(*inputs)
    compiled = torch.compile(twice, backend="eager")(*inputs)
    torch.testing.assert_close(compiled, expected)
    upstream = torch.randn_like(expected)
    for got, want in zip(
        torch.autograd.grad(compiled, inputs, upstream),
        torch.autograd.grad(expected, inputs, upstream),
        strict=True,
    ):
        torch.testing.assert_close(got, want)


def test_more_batch_heads_than_a_cuda_grid_axis_holds_run_the_eager_backend(monkeypatch):
    """The kernels put batch × heads on the grid's second axis (at most 65,535 programs on
    CUDA; the interpreter has no such limit, so the limit is lowered here to reach the branch)."""
    index, tensors = _case(q_len=16, k_len=16)  # batch 1, heads 2
    q, k, v = (tensors[n].detach() for n in ("query", "key", "value"))
    tables = {name: tensors[name].detach() for name in ("key_table", "value_table")}
    plain = dict(attn_mask=None, is_causal=False, scale=0.25)
    expected = eager_attention(q, k, v, index=index, **plain, **tables)

    def launched(*args, **kwargs):
        raise AssertionError("a kernel was launched")

    monkeypatch.setattr(triton_shaw, "_launch", launched)
    monkeypatch.setattr(triton_shaw, "MAX_BATCH_HEADS", 2)
    with pytest.raises(AssertionError, match="a kernel was launched"):
        triton_attention(q, k, v, index=index, **plain, **tables)
    monkeypatch.setattr(triton_shaw, "MAX_BATCH_HEADS", 1)
    out = triton_attention(q, k, v, index=index, **plain, **tables)
    torch.testing.assert_close(out, expected)


def test_applies_only_to_cuda_inputs_without_key_query():
    cpu = torch.zeros(1, 1, 4, 32)
    assert not triton_applies(query=cpu)
    assert not triton_applies(query=cpu, dropout=True)
    if torch.cuda.is_available():
        gpu = cpu.cuda()
        assert triton_applies(query=gpu, value_dim=32)
        assert triton_applies(query=gpu, dropout=True)  # drawn in the kernels
        assert not triton_applies(query=gpu, key_query=True)
        assert not triton_applies(query=gpu.double())
        assert not triton_applies(query=torch.zeros(1, 1, 4, 256, device="cuda"))


@pytest.mark.parametrize(
    ("capability", "applies"), [((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)]
)
def test_auto_leaves_cards_older_than_ampere_to_the_eager_path(monkeypatch, capability, applies):
    """On sm_75 the default dQ tiles need 96 KiB of shared memory per block and the card gives 64
    (compiled on the CPU: benchmarks/shared_memory.py), so ``auto`` must not pick the kernel
    there. A stand-in for a CUDA tensor and a faked card: no GPU needed."""
    asked = []

    def capability_of(index):
        asked.append(index)
        return capability

    monkeypatch.setattr(torch.cuda, "get_device_capability", capability_of)
    monkeypatch.setattr(triton_shaw, "triton_available", lambda: True)
    monkeypatch.setattr(triton_shaw, "triton_version", lambda: (3, 6))
    triton_shaw._cached_capability.cache_clear()
    query = types.SimpleNamespace(
        is_cuda=True, dtype=torch.bfloat16, shape=(1, 2, 8, 64), device=torch.device("cuda", 3)
    )
    try:
        assert triton_shaw.triton_applies(query=query) is applies
        assert triton_shaw.triton_applies(query=query) is applies
        query.shape = (4096, 16, 8, 64)  # 65,536 batch × heads: one past a CUDA grid axis
        assert triton_shaw.triton_applies(query=query) is False
    finally:
        triton_shaw._cached_capability.cache_clear()
    assert asked == [3]  # the card's index, asked once


def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    index, tensors = _case(q_len=8, k_len=8)
    if tensors["query"].is_cuda:
        pytest.skip("inputs are on CUDA here")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        triton_attention(
            tensors["query"],
            tensors["key"],
            tensors["value"],
            index=index,
            key_table=None,
            value_table=None,
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(block_m=24, block_n=16), "block_m must be a power of two"),
        (dict(block_m=16, block_n=8), "block_n must be a power of two"),
        (dict(block_m=16, block_n=16, group=0), "group must be an int >= 1"),
    ],
)
def test_bad_tile_sizes_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KernelLaunch(**kwargs)


def test_band_tile_larger_than_its_loop_tile_is_rejected():
    wide = KernelLaunch(32, 16, band_block=32)
    fine = KernelLaunch(16, 16, band_block=16)
    with pytest.raises(ValueError, match="forward.band_block must be <= its loop block 16"):
        TritonBlocks(forward=wide, grad_query=fine, grad_key_value=fine)


def _compile_without_the_interpreter(script: str, done: str) -> None:
    """Run ``script`` in a fresh process without ``TRITON_INTERPRET`` (the kernels must be built
    for compiling there); it prints ``done`` when every assertion in it held."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and done in result.stdout, result.stderr[-3000:]


def test_kernels_compile_for_hopper_without_a_gpu():
    """The interpreter never lowers the kernels; compile all four for sm_90 in a fresh process
    (Triton's own compiler and ptxas, no GPU needed), causal with a key-padding mask, as a launch
    specialises them (then the loads are asynchronous copies), and with TMA loads at a length
    that is no multiple of the tile."""
    script = (
        "from relpos.attention.triton_shaw import KernelLaunch, TritonBlocks, compile_kernels\n"
        "for name, kernel in compile_kernels(64, is_causal=True, mask_kind=1).items():\n"
        "    assert kernel.asm['cubin'], name\n"
        "    assert 'cp.async' in kernel.asm['ptx'] or name == 'grad_prepare', name\n"
        "tma = KernelLaunch(64, 64, band_block=64, tma=True)\n"
        "blocks = TritonBlocks(tma, tma, tma)\n"
        "for name, kernel in compile_kernels(64, blocks=blocks, length=1000).items():\n"
        "    assert 'cp.async.bulk.tensor' in kernel.asm['ptx'] or name == 'grad_prepare', name\n"
        "# the forward's tails in a kernel of their own, its loop warp-specialised\n"
        "split = KernelLaunch(64, 64, band_block=32, tma=True, warp_specialize=True)\n"
        "plain = KernelLaunch(64, 64, band_block=32)\n"
        "kernels = compile_kernels(64, blocks=TritonBlocks(split, split, split))\n"
        "for name in ('forward_tails', 'grad_query_tails', 'grad_key_value_tails'):\n"
        "    assert 'ttg.warp_specialize' in kernels[name].asm['ttgir'], name\n"
        "# capped registers: the cap reaches ptxas (.maxnreg), tails kernels share it\n"
        "capped = KernelLaunch(64, 64, band_block=32, num_stages=3, max_registers=168)\n"
        "kernels = compile_kernels(64, blocks=TritonBlocks(capped, plain, capped))\n"
        "assert '.maxnreg 168' in kernels['forward'].asm['ptx']\n"
        "assert '.maxnreg 168' in kernels['grad_key_value'].asm['ptx']\n"
        "assert '.maxnreg' not in kernels['grad_query'].asm['ptx']\n"
        "# dropout drawn in the kernels (the plain fused ones), causal with a padding mask\n"
        "kernels = compile_kernels(64, dropout=True, is_causal=True, mask_kind=1)\n"
        "assert all(kernel.asm['cubin'] for kernel in kernels.values())\n"
        "assert 'forward_tails' not in kernels\n"
        "# a flag only the forward has (inference: nothing saved for the backward)\n"
        "kernels = compile_kernels(64, constexprs={'SAVE_FOR_BACKWARD': False})\n"
        "assert all(kernel.asm['cubin'] for kernel in kernels.values())\n"
        "print('compiled')\n"
    )
    _compile_without_the_interpreter(script, "compiled")


def test_default_tiles_fit_the_shared_memory_of_ampere_and_ada_cards():
    """``auto`` picks the kernel on Ampere cards and later, with tiles timed on an H200; a launch
    whose tiles need more shared memory than the card has fails (OutOfResources). Compiled for sm_86
    (RTX 30xx, A10, A40) and sm_89 (RTX 40xx, L4, L40), whose blocks get at most 99 KiB, the
    default tiles of the largest heads (where they need the most) fit, and they lower at all:
    nothing Hopper-only is in the default path. (Measured with Triton 3.6: at most 76 KiB, the
    float32 and bf16 D = 128 key/value kernels; the A100, sm_80, allows 163 KiB.)"""
    script = (
        "import torch\n"
        "from relpos.attention.triton_shaw import compile_kernels\n"
        "for arch in (86, 89):\n"
        "    for dtype in (torch.bfloat16, torch.float32):\n"
        "        kernels = compile_kernels(128, dtype, length=1000, arch=arch)\n"
        "        assert {'forward', 'grad_query', 'grad_key_value'} <= set(kernels), kernels\n"
        "        for name, kernel in kernels.items():\n"
        "            assert kernel.asm['cubin'], (arch, dtype, name)\n"
        "            shared = kernel.metadata.shared\n"
        "            assert 0 < shared <= 99 * 1024, (arch, dtype, name, shared)\n"
        "print('fits')\n"
    )
    _compile_without_the_interpreter(script, "fits")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_on_gpu_at_a_realistic_size(dtype):
    index, tensors = _case(
        batch=2,
        heads=4,
        q_len=300,
        k_len=300,
        head_dim=64,
        value_dim=64,
        left=16,
        right=16,
        dtype=dtype,
    )
    _check_against_reference(index, tensors, is_causal=True, tol=3e-2)


# ------------------------------------------------------------------------ tuning (triton_tune)

TINY = KernelLaunch(16, 16, band_block=16)


def _tune(**kwargs):
    options = dict(
        head_dim=16,
        dtype=torch.float32,
        length=40,
        batch=1,
        heads=1,
        max_distance=3,
        calls=1,
        rounds=1,
        device=DEVICE,
    )
    return triton_tune.tune_blocks(**{**options, **kwargs})


def test_tuning_times_each_candidate_and_returns_the_fastest_that_agree(monkeypatch):
    """A candidate whose results are wrong is dropped however fast it is; here the forward
    with 32-row blocks is made to return twice the right output."""
    wrong = KernelLaunch(32, 16, band_block=16)
    real = triton_tune.triton_attention

    def attention(*args, blocks, **kwargs):
        out = real(*args, blocks=blocks, **kwargs)
        return out * 2 if blocks.forward == wrong else out

    monkeypatch.setattr(triton_tune, "triton_attention", attention)
    grouped = KernelLaunch(16, 16, band_block=16, group=2)
    candidates = {"forward": [wrong], "grad_query": [grouped], "grad_key_value": [TINY]}
    result = _tune(candidates=candidates)
    labels = [row["label"] for row in result.rows]
    assert labels == [
        "default",
        "forward 32x16/16 w4 s2",
        "grad_query 16x16/16 w4 s2 g2",
        "grad_key_value 16x16/16 w4 s2",
    ]
    default = triton_shaw.default_blocks(16, torch.float32)
    assert "results differ" in result.rows[1]["error"]
    assert result.blocks.forward == default.forward  # the only alternative was wrong
    assert result.blocks.grad_query in (default.grad_query, grouped)
    for row in (result.rows[0], *result.rows[2:]):
        assert row["disagreement"] <= 1e-5 and row["fwd_ms"] > 0 and row["fwd_bwd_ms"] > 0


def test_tuning_times_forward_options_by_the_forward_alone():
    result = _tune(candidates={"forward": [HALVED]})
    default_row, halved_row = result.rows
    assert halved_row["label"] == "forward 32x16/16 w4 s2 h2" and "error" not in halved_row
    assert halved_row["fwd_ms"] > 0 and "fwd_bwd_ms" not in halved_row
    assert default_row["fwd_bwd_ms"] > 0
    assert result.blocks.forward in (HALVED, triton_shaw.default_blocks(16, torch.float32).forward)


def test_tuning_skips_a_candidate_that_cannot_run():
    too_wide_band = KernelLaunch(16, 16, band_block=32)  # band tile wider than its loop tile
    result = _tune(candidates={"forward": [too_wide_band]})
    assert "forward.band_block must be <=" in result.rows[1]["error"]
    assert result.blocks.forward == triton_shaw.default_blocks(16, torch.float32).forward


@pytest.mark.parametrize(
    "candidates, error, match",
    [
        ({"backward": [TINY]}, ValueError, "unknown kernel 'backward'; valid names"),
        ({"forward": [(64, 64)]}, TypeError, "must hold KernelLaunch objects, got tuple"),
    ],
)
def test_tuning_refuses_bad_candidates(candidates, error, match):
    with pytest.raises(error, match=match):
        _tune(candidates=candidates)


def test_tuning_without_a_gpu_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="tune_blocks times the kernels on a CUDA GPU"):
        triton_tune.tune_blocks(device="cuda")


def test_disagreement_is_relative_and_infinite_for_non_finite_results():
    reference = [torch.tensor([2.0, -4.0]), torch.tensor([1.0])]
    assert triton_tune.disagreement(reference, reference) == 0.0
    assert (
        triton_tune.disagreement([torch.tensor([2.0, -3.0]), torch.tensor([1.0])], reference)
        == 0.25
    )
    assert triton_tune.disagreement(
        [torch.tensor([2.0, float("nan")]), reference[1]], reference
    ) == float("inf")
