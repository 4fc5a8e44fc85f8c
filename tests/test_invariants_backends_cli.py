"""Behaviours of the attention entry points (``shaw_attention``, the backend registry, the input
checks, SDPA and FlexAttention backends) and of the command line's flag mapping that an earlier
test suite did not pin down (found by mutation testing).

For each test here, a small wrong change to the library (a dropped input check, a predicate
that is never consulted, a dropout mask that is not rescaled, a flag that does not reach its
config field, a default that moved) left every earlier test passing. The expected values come
from an independent formulation: the softmax written out in float64, a hand-made mask, the exact
error text naming the argument, or the config built by hand, never from the implementation under
test. The CLI tests replace training and timing with stand-ins, so they cost no training time.
"""

import argparse
import dataclasses
import functools
import json
import math

import pytest
import torch

import relpos.attention
import relpos.bench
import relpos.experiments.compare
import relpos.training
from relpos.attention import api, shaw_attention
from relpos.attention.flex import flex_applies, flex_shaw_attention
from relpos.attention.index import RelativeIndex
from relpos.cli import build_parser, main
from relpos.cli.bench import _int_list
from relpos.cli.compare import (
    _command_line,
    _parse_seeds,
    build_experiments,
    parse_list,
    parse_range,
)
from relpos.cli.flags import non_negative_int, positive_int
from relpos.cli.train import config_from_args, parse_option

# ---------------------------------------------------------------------------------------------
# Independent formulation


def softmax_attention(q, k, v, key_table, value_table, *, left, right, scale, q_off=0, k_off=0,
                      allowed=None, bias=None):  # fmt: skip
    """Shaw et al. Eq. 3-4 in float64 with plain tensor ops for ``q (B, H, Lq, D)``: the bucket
    of (r, c) is ``clip((k_off + c) - (q_off + r), -left, right) + left``; ``allowed (Lq, Lk)``
    bool masks keys (a row with none gives zeros); ``bias (Lq, Lk)`` is added to the logits."""
    q, k, v = q.double(), k.double(), v.double()
    rows = torch.arange(q.shape[-2])[:, None] + q_off
    cols = torch.arange(k.shape[-2])[None, :] + k_off
    bucket = (cols - rows).clamp(-left, right) + left  # (Lq, Lk)
    a_k, a_v = key_table.double()[bucket], value_table.double()[bucket]  # (Lq, Lk, D)
    logits = (q @ k.transpose(-1, -2) + torch.einsum("bhrd,rcd->bhrc", q, a_k)) * scale
    if bias is not None:
        logits = logits + bias.double()
    if allowed is not None:
        logits = logits.masked_fill(~allowed, -math.inf)
    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)
    return weights @ v + torch.einsum("bhrc,rcd->bhrd", weights, a_v)


def _inputs(batch=1, heads=2, q_len=5, k_len=5, dim=4, rows=5, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def make(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    q, k, v = (
        make(batch, heads, q_len, dim),
        make(batch, heads, k_len, dim),
        make(batch, heads, k_len, dim),
    )
    return q, k, v, make(rows, dim), make(rows, dim)


# ---------------------------------------------------------------------------------------------
# checks.py: each refused input names the argument


@pytest.mark.parametrize(
    "change, error, message",
    [
        # query and key with head size 0 (value fine): 1/sqrt(0) would be the next thing to fail
        (dict(dim=0), ValueError, r"head_dim must be > 0, got query \(1, 2, 5, 0\)"),
        (dict(attn_mask=[[True]]), TypeError, "attn_mask must be a torch.Tensor or None, got list"),
        (dict(scale=True), ValueError, "scale must be a finite float or None"),
        (dict(dropout_p=True), TypeError, r"dropout_p must be a float in \[0, 1\), got True"),
        (dict(dropout_p=False), TypeError, r"dropout_p must be a float in \[0, 1\), got False"),
    ],
    ids=["zero-head-dim", "list-mask", "bool-scale", "bool-dropout-true", "bool-dropout-false"],
)
def test_shaw_attention_refuses_with_the_argument_named(change, error, message):
    # Pins: a bool is not a number here (True would be a scale of 1 or p = 1 refused as a range,
    # False a silent p = 0); a mask that is not a tensor and a zero head size get their own
    # messages instead of an AttributeError or ZeroDivisionError.
    change = dict(change)
    q, k, v, a_k, a_v = _inputs(dim=change.pop("dim", 4))
    v, a_v = torch.ones(1, 2, 5, 4), torch.ones(5, 4)  # the value's head size stays 4
    with pytest.raises(error, match=message):
        shaw_attention(q, k, v, None, a_v, max_distance=2, **change)


@pytest.mark.parametrize("backend", ["reference", "eager"])
def test_causal_by_position_with_a_float_mask(backend):
    # Pins: with is_causal and unequal offsets (cached decoding) a float mask is combined with
    # the by-position causal mask (key k_off + c visible iff <= q_off + r), not used alone.
    q, k, v, a_k, a_v = _inputs(q_len=3, k_len=6, rows=5)
    bias = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    out = shaw_attention(q, k, v, a_k, a_v, max_distance=2, attn_mask=bias, is_causal=True,
                         query_offset=3, key_offset=1, backend=backend)  # fmt: skip
    allowed = torch.arange(6)[None, :] + 1 <= torch.arange(3)[:, None] + 3
    expected = softmax_attention(q, k, v, a_k, a_v, left=2, right=2, scale=0.5, q_off=3, k_off=1,
                                 allowed=allowed, bias=bias)  # fmt: skip
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def test_reference_casts_a_float_mask_of_another_dtype():
    # Pins: a float64 mask with float32 inputs is cast to the compute dtype (the reference backend
    # would otherwise meet a float64 weight matrix and a float32 value: a dtype error).
    q, k, v, a_k, a_v = _inputs()
    bias = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = shaw_attention(q, k, v, a_k, a_v, max_distance=2, attn_mask=bias, backend="reference")
    expected = softmax_attention(q, k, v, a_k, a_v, left=2, right=2, scale=0.5, bias=bias)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# api.py: shaw_attention's own checks and dropout


def test_offsets_must_be_ints_not_bools_or_floats():
    # Pins: both offsets are checked; True would silently be position 1, 1.0 a float index.
    q, k, v, a_k, a_v = _inputs()
    with pytest.raises(TypeError, match="query_offset must be an int, got bool True"):
        shaw_attention(q, k, v, a_k, a_v, max_distance=2, query_offset=True)
    with pytest.raises(TypeError, match="key_offset must be an int, got float 1.0"):
        shaw_attention(q, k, v, a_k, a_v, max_distance=2, key_offset=1.0)


@pytest.mark.parametrize("backend", ["reference", "eager"])
def test_dropout_keeps_a_weight_at_one_over_one_minus_p_and_draws_per_head(backend):
    # Pins: inverted dropout (a kept weight is divided by 1 - p) and a mask drawn for every head.
    # With one key the softmax weight is 1, so each output row is exactly 0 (dropped) or
    # (v + a^V_bucket) / (1 - p); the heads see the same inputs but their own masks.
    heads, p = 64, 0.5
    q, k, v, a_k, a_v = _inputs(heads=1, q_len=3, k_len=1, rows=3, dtype=torch.float64)
    q, k, v = (t.expand(1, heads, -1, -1) for t in (q, k, v))
    gen = torch.Generator().manual_seed(0)
    out = shaw_attention(q, k, v, a_k, a_v, max_distance=1, dropout_p=p, generator=gen,
                         backend=backend)  # fmt: skip
    rows = torch.arange(3)
    kept = (v[:, :, 0:1, :] + a_v[(0 - rows).clamp(-1, 1) + 1][None, None]) / (1 - p)
    is_kept = torch.isclose(out, kept).all(-1)
    is_dropped = (out == 0).all(-1)
    assert (is_kept | is_dropped).all()
    assert is_kept.any() and is_dropped.any()
    assert (is_kept.any(1) & is_dropped.any(1)).all()  # per row, some heads keep, some drop


def test_no_dropout_draws_no_random_numbers():
    # Pins: dropout_p=0 makes no mask; drawing one would move the global random stream that the
    # caller's own sampling continues from.
    q, k, v, a_k, a_v = _inputs()
    torch.manual_seed(0)
    shaw_attention(q, k, v, a_k, a_v, max_distance=2, dropout_p=0.0)
    after = torch.rand(4)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(4))


# ---------------------------------------------------------------------------------------------
# api.py: the backend registry and "auto" (a scratch copy of the registry per test)


@pytest.fixture
def registry(monkeypatch):
    """The registry's tables replaced by copies, so a backend registered here is gone after the
    test; returns a log that the recording backends below append to."""
    monkeypatch.setattr(api, "BACKENDS", dict(api.BACKENDS))
    monkeypatch.setattr(api, "_APPLIES", dict(api._APPLIES))
    monkeypatch.setattr(api, "_NATIVE_DTYPES", dict(api._NATIVE_DTYPES))
    monkeypatch.setattr(api, "AUTO_ORDER", list(api.AUTO_ORDER))
    monkeypatch.setattr(api, "_FUSED_DROPOUT", set(api._FUSED_DROPOUT))
    return []


def _recording(log, name):
    """A backend that logs its name and the dtype it was given, then runs eager."""

    def backend(query, key, value, **kwargs):
        log.append((name, query.dtype))
        return api.BACKENDS["eager"](query, key, value, **kwargs)

    return backend


def test_register_backend_refuses_what_cannot_be_called(registry):
    with pytest.raises(TypeError, match="backend 'broken' must be callable, got int"):
        api.register_backend("broken", 3)
    assert "broken" not in api.available_backends()


def test_auto_asks_each_predicate_with_the_call_context(registry):
    # Pins: a backend registered with auto_priority=0 is tried first, through its predicate;
    # the predicate gets the call's dropout, mask and value size; when it declines, auto goes on
    # to eager. A backend with no predicate always applies.
    contexts = []

    def applies(**context):
        contexts.append(context)
        return not context["dropout"] and not context["has_mask"]

    api.register_backend("picky", _recording(registry, "picky"), applies=applies,
                         auto_priority=0)  # fmt: skip
    q, k, v, a_k, _ = _inputs(dim=4)
    v6 = torch.ones(1, 2, 5, 6)  # a value head size (6) other than the query's (4)
    mask = torch.ones(5, 5, dtype=torch.bool)
    shaw_attention(q, k, v6, a_k, None, max_distance=2, attn_mask=mask, dropout_p=0.25)
    assert registry == []  # declined: eager ran
    (context,) = contexts
    assert context["query"] is q and context["key_query"] is False
    assert (context["dropout"], context["has_mask"], context["value_dim"]) == (True, True, 6)
    shaw_attention(q, k, v6, a_k, None, max_distance=2)
    assert registry == [("picky", torch.float32)]
    assert api.backend_applies("picky", query=q, dropout=True, has_mask=False) is False
    api.register_backend("anything", _recording(registry, "anything"), auto_priority=0)
    shaw_attention(q, k, v6, a_k, None, max_distance=2)
    assert registry[-1] == ("anything", torch.float32)


def test_backend_applies_names_unknown_backends_and_defaults_to_true():
    q = torch.zeros(1, 1, 4, 8)
    assert api.backend_applies("eager", query=q) is True  # no predicate: always
    assert api.backend_applies("flex", query=q) is False  # CPU: FlexAttention is not picked
    with pytest.raises(ValueError, match="unknown backend 'nope'; valid names: reference, eager"):
        api.backend_applies("nope", query=q)


def test_native_dtypes_reach_the_backend_as_they_are(registry):
    # Pins: a backend declaring bfloat16 native gets bfloat16 inputs; any other gets float32
    # copies; both return the input's dtype.
    api.register_backend("fused", _recording(registry, "fused"), native_dtypes=(torch.bfloat16,))
    api.register_backend("plain", _recording(registry, "plain"))
    q, k, v, a_k, a_v = _inputs(dtype=torch.bfloat16)
    for name in ("fused", "plain"):
        out = shaw_attention(q, k, v, a_k, a_v, max_distance=2, backend=name)
        assert out.dtype == torch.bfloat16
    assert registry == [("fused", torch.bfloat16), ("plain", torch.float32)]


def test_a_fused_dropout_backend_gets_a_probability_and_a_seed_not_a_mask(registry):
    # Pins: fused_dropout=True hands the backend FusedDropout(p, seed), the seed drawn from the
    # call's generator (or torch's CPU generator, so torch.manual_seed repeats it); any other
    # backend gets the (B, H, Lq, Lk) multiplier; without dropout both get None.
    given = []

    def keeping(query, key, value, *, dropout_mask, **kwargs):
        given.append(dropout_mask)
        return api.BACKENDS["eager"](query, key, value, dropout_mask=None, **kwargs)

    api.register_backend("drawing", keeping, fused_dropout=True)
    api.register_backend("plain", keeping)
    q, k, v, a_k, a_v = _inputs()
    attend = functools.partial(shaw_attention, q, k, v, a_k, a_v, max_distance=2)
    attend(dropout_p=0.25, generator=torch.Generator().manual_seed(4), backend="drawing")
    seed = int(torch.randint(2**31 - 1, (), generator=torch.Generator().manual_seed(4)))
    assert given[-1] == api.FusedDropout(0.25, seed)
    for _ in range(2):
        torch.manual_seed(9)
        attend(dropout_p=0.25, backend="drawing")
    assert given[-1] == given[-2] != given[0]
    attend(dropout_p=0.0, backend="drawing")
    assert given[-1] is None
    attend(dropout_p=0.25, backend="plain")
    assert isinstance(given[-1], torch.Tensor) and given[-1].shape == (1, 2, 5, 5)


def test_fused_dropout_dense_mask_repeats_under_its_seed():
    drop = api.FusedDropout(0.5, 3)
    mask = drop.dense_mask((2, 3, 4, 5), dtype=torch.float64, device="cpu")
    assert mask.dtype == torch.float64 and set(mask.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(mask, drop.dense_mask((2, 3, 4, 5), dtype=torch.float64, device="cpu"))
    other = api.FusedDropout(0.5, 4).dense_mask((2, 3, 4, 5), dtype=torch.float64, device="cpu")
    assert not torch.equal(mask, other)


def test_a_backend_is_never_called_without_keys(registry):
    # Pins: Lk = 0 goes to the reference whatever backend is named (a fused kernel would divide
    # by zero); the rows are zeros.
    api.register_backend("fused", _recording(registry, "fused"))
    q, k, v, a_k, a_v = _inputs(k_len=0)
    out = shaw_attention(q, k, v, a_k, a_v, max_distance=2, backend="fused")
    assert registry == [] and out.shape == (1, 2, 5, 4) and not out.any()


# ---------------------------------------------------------------------------------------------
# sdpa.py


def test_sdpa_bias_of_another_float_dtype_is_cast():
    # Pins: a float64 bias with float32 inputs is cast to the inputs' dtype (SDPA refuses a mask
    # of another dtype); the result is softmax(q kT * scale + bias) v written out in float64.
    q, k, v, _, _ = _inputs(q_len=4, k_len=6)
    bias = torch.randn(2, 4, 6, dtype=torch.float64)
    out = relpos.attention.sdpa_attention(q, k, v, bias=bias, scale=0.3)
    logits = q.double() @ k.double().transpose(-1, -2) * 0.3 + bias
    torch.testing.assert_close(out.double(), torch.softmax(logits, -1) @ v.double(), atol=1e-5,
                               rtol=1e-5)  # fmt: skip


def test_sdpa_dropout_applies_with_a_bias():
    # Pins: dropout_p reaches SDPA on the masked path too (a bias or mask given), not only on the
    # plain one. With one key the weight is 1: each output row is 0 or v / (1 - p).
    q, k, v, _, _ = _inputs(heads=64, q_len=2, k_len=1)
    torch.manual_seed(0)
    out = relpos.attention.sdpa_attention(q, k, v, bias=torch.zeros(2, 1), dropout_p=0.5)
    kept = torch.isclose(out, (v / 0.5).expand_as(out)).all(-1)
    dropped = (out == 0).all(-1)
    assert (kept | dropped).all() and kept.any() and dropped.any()


def test_sdpa_checks_dropout_and_scale():
    # Pins: sdpa_attention checks dropout_p and scale as shaw_attention does (SDPA itself takes
    # p = 1 and a NaN scale without a word).
    q, k, v, _, _ = _inputs()
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\), got 1.0"):
        relpos.attention.sdpa_attention(q, k, v, dropout_p=1.0)
    with pytest.raises(ValueError, match="scale must be a finite float or None"):
        relpos.attention.sdpa_attention(q, k, v, scale=float("nan"))


# ---------------------------------------------------------------------------------------------
# flex.py: the FlexAttention backend (CPU forward; unfused unless said otherwise)


def _flex(q, k, v, a_k, a_v, *, left, right, **kwargs):
    index = RelativeIndex(q.shape[-2], k.shape[-2], left, right, 0, 0)
    tables = [None if t is None else t[None] for t in (a_k, a_v)]  # (1, R, D): shared by heads
    with torch.no_grad():
        return flex_shaw_attention(q, k, v, index=index, key_table=tables[0],
                                   value_table=tables[1], **kwargs)  # fmt: skip


def test_flex_predicate_on_cuda_declines_dropout_and_key_query():
    # Pins: on CUDA the predicate declines dropout and the key-query term (FlexAttention has
    # neither). Its only reading of the query is .is_cuda, so a stand-in serves on any machine.
    cuda_query = argparse.Namespace(is_cuda=True)
    assert flex_applies(query=cuda_query) is True
    assert flex_applies(query=cuda_query, dropout=True) is False
    assert flex_applies(query=cuda_query, key_query=True) is False


@pytest.mark.parametrize(
    "left, right",
    [(1, 1), (9, 9), (9, 8), (0, 0)],
    ids=["R=3", "R=19", "R=18", "R=1-empty-row"],
)
def test_flex_value_term_for_every_band_width(left, right):
    # Pins: the bucket masses of the value term. R = 3 has a single interior bucket; R = 19 has
    # 17 interior buckets, more than 16 one-hot codes; R = 18 has exactly 16, so one more key in
    # the band (a tail key counted as interior) would share a code; R = 1 with a query row that
    # sees no key must give a zero row, not the one bucket's value vector.
    length, rows = 24, left + right + 1
    q, k, v, a_k, a_v = _inputs(heads=1, q_len=length, k_len=length, rows=rows,
                                dtype=torch.float64)  # fmt: skip
    allowed = torch.rand(length, length, generator=torch.Generator().manual_seed(3)) > 0.2
    allowed[5] = False
    out = _flex(q, k, v, a_k, a_v, left=left, right=right, attn_mask=allowed, scale=0.3,
                compile=False)  # fmt: skip
    expected = softmax_attention(q, k, v, a_k, a_v, left=left, right=right, scale=0.3,
                                 allowed=allowed)  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    assert not out[..., 5, :].any()


def test_flex_default_scale_is_one_over_sqrt_head_dim():
    # Pins: scale=None on the backend itself (shaw_attention always passes one) is 1/sqrt(D).
    q, k, v, a_k, a_v = _inputs(heads=1, dim=16, rows=5, dtype=torch.float64)
    out = _flex(q, k, v, a_k, a_v, left=2, right=2, scale=None, compile=False)
    expected = softmax_attention(q, k, v, a_k, a_v, left=2, right=2, scale=0.25)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.filterwarnings("ignore")
def test_flex_compiled_bool_mask_that_differs_per_batch_and_head():
    # Pins: a boolean mask that differs across batch entries and heads gets a block mask per
    # entry and head. The compiled kernel skips the blocks a block mask leaves out, so one built
    # from batch 0, head 0 alone (which sees no key here) would blank every other entry and head.
    # The unfused path reads the mask element by element and cannot tell; hence one compile
    # (key term only: the compiled CPU path), about 15-20 s.
    q, k, v, a_k, _ = _inputs(batch=2, heads=2, q_len=16, k_len=16, dim=16, rows=5)
    allowed = torch.rand(2, 2, 16, 16, generator=torch.Generator().manual_seed(5)) > 0.4
    allowed[0, 0] = False  # batch 0, head 0 sees no key: its block mask has no block
    out = _flex(q, k, v, a_k, None, left=2, right=2, attn_mask=allowed, scale=0.25, compile=True)
    zero = torch.zeros(5, 16)
    expected = torch.cat([
        torch.cat([softmax_attention(q[b:b + 1, h:h + 1], k[b:b + 1, h:h + 1],
                                     v[b:b + 1, h:h + 1], a_k, zero, left=2, right=2, scale=0.25,
                                     allowed=allowed[b, h]) for h in range(2)], dim=1)
        for b in range(2)
    ])  # fmt: skip
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# cli/show.py


def test_show_causal_without_t5_is_refused(capsys):
    # Pins: --causal alone (not only --buckets) is a T5 flag; dropped, `show --causal` would
    # silently print Shaw's index, which has no direction.
    assert main(["show", "--causal"]) == 2
    assert "--buckets and --causal describe T5's buckets: add --t5" in capsys.readouterr().err


def test_show_2d_default_window_is_2x2(capsys):
    # Pins: the documented default window (2x2: (2*2-1)^2 = 9 rows, the token itself at 4).
    assert main(["show", "--2d", "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["window"] == [2, 2] and shown["num_rows"] == 9
    assert shown["tokens"] == ["0,0", "0,1", "1,0", "1,1"]


@pytest.mark.parametrize("window", ["2x0", "0x2"])
def test_show_window_sides_must_both_be_positive(capsys, window):
    # Pins: the width is checked as well as the height; a 2x0 window has no tokens.
    assert main(["show", "--2d", "--window", window]) == 2
    assert f"--window sides must be >= 1, got '{window}'" in capsys.readouterr().err


def test_show_t5_table_names_its_direction(capsys):
    # Pins: the title says causal for --causal and bidirectional without it.
    assert main(["show", "--t5", "--causal", "--buckets", "8", "-k", "16"]) == 0
    assert capsys.readouterr().out.startswith("T5 buckets (causal, 8 buckets, max_distance 16)")
    assert main(["show", "--t5"]) == 0
    assert capsys.readouterr().out.startswith("T5 buckets (bidirectional, 32 buckets")


# ---------------------------------------------------------------------------------------------
# cli/bench.py: every flag reaches its BenchConfig field (timing replaced by a stand-in)


@pytest.fixture
def bench_calls(monkeypatch):
    """``run_benchmark`` replaced: records each config and returns an empty result at once;
    ``torch.set_num_threads`` records its argument instead of changing the process."""
    calls = {"configs": [], "threads": []}

    def fake_run_benchmark(config, progress=None):
        calls["configs"].append(config)
        return {"config": {}, "rows": [], "load_average": {"before": 0.0, "after": 0.0}}

    monkeypatch.setattr(relpos.bench, "run_benchmark", fake_run_benchmark)
    monkeypatch.setattr(torch, "set_num_threads", calls["threads"].append)
    return calls


def test_bench_flags_map_onto_bench_config(bench_calls, tmp_path, capsys):
    # Pins: each flag sets its own field (batch, dtype, per-head tables, reference length,
    # forward only, no memory, empty names in --backends skipped), --threads reaches torch, the
    # header says forward, and --json may name a folder that does not exist yet.
    path = tmp_path / "new" / "folder" / "bench.json"
    args = ["bench", "--lengths", "8 16", "-B", "3", "-H", "2", "-D", "4", "-k", "2",
            "--per-head", "--dtype", "float64", "--repeats", "3", "--reference-repeats", "1",
            "--warmup", "2", "--backends", "sdpa,,eager", "--fwd-only", "--no-memory",
            "--reference-max-length", "12", "--threads", "1", "--json", str(path)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    expected = relpos.bench.BenchConfig(
        lengths=(8, 16), batch=3, heads=2, head_dim=4, max_distance=2, shared=False,
        dtype="float64", device="cpu", repeats=3, reference_repeats=1, warmup=2,
        backends=("sdpa", "eager"), backward=False, reference_max_length=12, memory=False,
    )  # fmt: skip
    assert bench_calls["configs"] == [expected]
    assert bench_calls["threads"] == [1]
    header = capsys.readouterr().out.splitlines()[0]
    assert "cpu float64, B=3 H=2 D=4, k=2, per-head tables, forward, median of 3" in header
    assert json.loads(path.read_text())["load_average"] == {"before": 0.0, "after": 0.0}


def test_bench_defaults_are_bench_configs(bench_calls, capsys):
    # Pins: without flags the config is BenchConfig's own (shared tables, memory, backward).
    assert main(["bench", "--lengths", "8"]) == 0, capsys.readouterr().err
    assert bench_calls["configs"] == [relpos.bench.BenchConfig(lengths=(8,))]
    assert bench_calls["threads"] == []  # --threads not given: torch's own setting stays
    assert "forward+backward" in capsys.readouterr().out.splitlines()[0]


def test_bench_threads_below_one_are_refused(bench_calls, capsys):
    assert main(["bench", "--lengths", "8", "--threads", "0"]) == 2
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err
    assert bench_calls == {"configs": [], "threads": []}


def test_bench_lengths_take_commas_or_spaces_and_refuse_none():
    # Pins: "512,1024", "512 1024" and "512, 1024" are the same list; no number is an error.
    assert _int_list("512,1024") == _int_list("512 1024") == _int_list("512, ,1024") == (512, 1024)
    with pytest.raises(argparse.ArgumentTypeError, match="expected at least one length"):
        _int_list(" , ")


# ---------------------------------------------------------------------------------------------
# cli/compare.py: the parsers of the flags, the grid they build, the recorded command


def _experiments(*flags):
    return build_experiments(build_parser().parse_args(["compare", *flags]))[0]


def test_compare_length_ranges():
    # Pins: one number is a range of one length; lengths start at 1; the high end is not below
    # the low one.
    assert parse_range("5") == (5, 5) and parse_range("2-7") == (2, 7)
    for text in ("0-8", "0", "8-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a length range like 1-8"):
            parse_range(text)


def test_compare_lists_seeds_and_counts():
    # Pins: empty items are skipped and an empty list refused; seeds are >= 0; --steps and
    # --jobs are positive; -k may be 0 (Shaw's k = 0: one bucket, a valid clipping distance).
    assert parse_list(" shaw,, none ,") == ["shaw", "none"]
    with pytest.raises(argparse.ArgumentTypeError, match="expected a comma-separated list"):
        parse_list(" , ")
    with pytest.raises(argparse.ArgumentTypeError, match="seeds must be >= 0"):
        _parse_seeds("0,-1")
    with pytest.raises(argparse.ArgumentTypeError, match="expected a positive int, got '0'"):
        positive_int("0")
    assert non_negative_int("0") == 0
    (experiment,) = _experiments("--schemes", "shaw", "-k", "0")
    assert experiment.variants[0].options == {"max_distance": 0}


def test_compare_flags_reach_the_experiment():
    # Pins: --arch, a --task-option given alone, and --train-lengths 1-N setting the minimum
    # even over a --task-option (the range is the later, explicit word). --eval-lengths drops
    # the preset's max_eval_length, so the recorded options say what is evaluated.
    (experiment,) = _experiments("--arch", "decoder", "--task-option", "n_train=17")
    assert experiment.model["arch"] == "decoder"
    assert experiment.task_options["n_train"] == 17
    (experiment,) = _experiments("--task-option", "min_train_length=3", "--train-lengths", "1-6")
    assert experiment.task_options["min_train_length"] == 1
    assert experiment.task_options["max_train_length"] == 6
    (experiment,) = _experiments("--eval-lengths", "2-4")
    assert experiment.task_options["eval_lengths"] == [2, 3, 4]
    assert "max_eval_length" not in experiment.task_options


def test_compare_default_preset_by_name_takes_grid_flags():
    # Pins: --preset default is the default grid, so it combines with --task like no --preset.
    (experiment,) = _experiments("--preset", "default", "--task", "copy", "--steps", "5")
    assert experiment.task == "copy" and experiment.train["steps"] == 5


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--task-option", "n_train=10"], "--task-option"),
        (["-k", "2"], "-k"),
    ],
)
def test_compare_other_presets_refuse_each_grid_flag(flags, named):
    # Pins: every grid flag, not only some, is refused with a preset that defines its own grid.
    with pytest.raises(ValueError, match=f"cannot be combined with {named}"):
        _experiments("--preset", "k-sweep", *flags)


def test_compare_device_given_twice_is_refused():
    with pytest.raises(ValueError, match=r"device given twice \(--device and an option"):
        _experiments("--device", "cpu", "--train-option", "device=cpu")


def test_compare_recorded_command_repeats_the_run():
    # Pins: results.json's command gives the ranges as LOW-HIGH, --jobs, --resume and --quiet.
    flags = ["--train-lengths", "2-4", "--eval-lengths", "1-9", "--jobs", "2", "--out", "x",
             "--resume", "--quiet"]  # fmt: skip
    command = _command_line(build_parser().parse_args(["compare", *flags]))
    assert command == (
        "relpos compare --train-lengths 2-4 --eval-lengths 1-9 --jobs 2 --out x --resume --quiet"
    )


def test_compare_resume_needs_out(monkeypatch, capsys):
    # Pins: --resume without --out is refused (there is no folder to continue) before anything
    # runs; the stand-in fails the test if training would start instead.
    def no_training(*args, **kwargs):
        raise AssertionError("run_compare must not be reached")

    monkeypatch.setattr(relpos.experiments.compare, "run_compare", no_training)
    assert main(["compare", "--resume", "--quiet"]) == 2
    assert "--resume needs --out: the run folder to continue" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# cli/train.py: KEY=VALUE options, flags over a saved config, what `run` prints (training
# replaced by a stand-in)


def _train_args(*flags):
    return build_parser().parse_args(["train", *flags])


def test_train_option_needs_a_key_and_an_equals_sign():
    assert parse_option("k=4") == ("k", 4) and parse_option("name=abc") == ("name", "abc")
    for text in ("=4", "k4"):
        with pytest.raises(ValueError, match=f"expected KEY=VALUE, got {text!r}"):
            parse_option(text)


def test_train_option_dicts_have_no_flag_of_their_own():
    # Pins: task_options and scheme_options are set by the repeatable KEY=VALUE flags only; a
    # --task-options/--scheme-options flag taking a plain string would not be a dict.
    flags = {s for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
             for s in a.option_strings}  # fmt: skip
    assert {"--task-option", "--scheme-option"} <= flags
    assert not {"--task-options", "--scheme-options"} & flags


def test_train_flags_win_over_a_saved_config_and_keep_its_other_options():
    # Pins: on --resume a KEY=VALUE flag replaces that key of the saved options (and is then
    # refused by the resume check if it changes the run) and keeps the others; -k 0 is a value.
    base = relpos.training.TrainConfig(task_options={"n_train": 50, "n_eval_per_length": 3})
    base = dataclasses.replace(
        base, model=dataclasses.replace(base.model, scheme_options={"max_distance": 4,
                                                                    "per_head": True})
    )  # fmt: skip
    args = _train_args("--task-option", "n_train=9", "--scheme-option", "max_distance=2")
    config = config_from_args(args, base)
    assert config.task_options == {"n_train": 9, "n_eval_per_length": 3}
    assert config.model.scheme_options == {"max_distance": 2, "per_head": True}
    assert config_from_args(_train_args("-k", "0"), base).model.scheme_options == {
        "max_distance": 0, "per_head": True,
    }  # fmt: skip


METRICS = {
    "by_length": {
        "2": {"seen": True, "exact": 0.5, "token": 0.75, "tf_token": 1.0, "count": 4},
        "9": {"seen": False, "exact": 0.0, "token": 0.125, "tf_token": None, "count": 2},
    },
    "seen": {"exact": 0.5, "token": 0.75, "tf_token": 1.0, "count": 4},
    "unseen": {"exact": 0.0, "token": 0.125, "tf_token": None, "count": 2},
    "final_loss": 0.25,
}


@pytest.fixture
def train_calls(monkeypatch):
    """``relpos.training.train`` replaced: records its config and keywords, returns METRICS."""
    calls = []

    def fake_train(config, run_dir, **kwargs):
        calls.append((config, str(run_dir), kwargs))
        return argparse.Namespace(metrics=METRICS, seconds=1.5)

    monkeypatch.setattr(relpos.training, "train", fake_train)
    monkeypatch.delenv("RANK", raising=False)
    return calls


def test_train_prints_percentages_and_seen(train_calls, tmp_path, capsys):
    # Pins: rates print as percentages, the seen column says yes/no, the progress flag reaches
    # train, and --json prints the metrics themselves.
    run_dir = str(tmp_path / "run")
    assert main(["train", "--run-dir", run_dir, "--steps", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["2", "yes", "50.0", "75.0", "100.0", "4"]
    assert lines[2].split() == ["9", "no", "0.0", "12.5", "-", "2"]
    assert lines[-1] == f"final loss 0.2500; 1.5 s; run folder: {run_dir}"
    assert train_calls[0][2]["progress"] is True
    assert main(["train", "--run-dir", run_dir, "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == METRICS
    assert train_calls[1][2]["progress"] is False


def test_train_prints_on_rank_zero_only(train_calls, tmp_path, monkeypatch, capsys):
    # Pins: under torchrun only rank 0 prints the table; the others train silently.
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 0
    assert capsys.readouterr().out == "" and len(train_calls) == 1


def test_train_without_resume_ignores_a_saved_config(train_calls, tmp_path, capsys):
    # Pins: only --resume reads the saved config.json; --overwrite starts from the defaults and
    # the flags given, not from the settings of the run it replaces.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saved = relpos.training.TrainConfig(lr=0.5, steps=7)
    (run_dir / "config.json").write_text(json.dumps(saved.to_dict()))
    assert main(["train", "--run-dir", str(run_dir), "--overwrite", "--steps", "3"]) == 0
    assert train_calls[0][0] == relpos.training.TrainConfig(steps=3)
