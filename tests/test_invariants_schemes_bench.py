"""Behaviours of the smaller position schemes (ALiBi, Huang et al., integer, learned and sinusoidal
positions, Transformer-XL), the clipped relative index, the compare presets and the library side
of ``relpos bench`` that an earlier test suite did not pin down (found by mutation testing).

For each test here, a small wrong change to the library (a check dropped, a default changed, an
option that never reaches the module, a buffer saved in checkpoints, an off-by-one at a length
limit, an input cast to the wrong dtype) left every earlier test passing. The expected values come
from an independent formulation: the papers' formulas as ``shared/reference/family.md`` states
them, written out with plain Python numbers or loops; a worked example computed by hand; the
settings that the stored runs under ``docs/results`` and ``benchmarks/results`` recorded when they
were made; or a property checked directly, never from the implementation under test.
"""

import dataclasses
import json
import math
import os
import re
import time
from pathlib import Path

import pytest
import torch

import relpos
import relpos.bench
import relpos.experiments
from relpos.schemes import SCHEMES
from relpos.schemes.integer import IntegerPositions

# ---------------------------------------------------------------------------------------------
# The absolute schemes: what they have in common


def test_absolute_is_true_for_the_input_encodings_only():
    # Pins: PositionScheme.absolute ("knows positions only as absolute indices: sinusoidal,
    # learned, integer", base.py) for every registered scheme, integer's included; randomized
    # reads the sinusoidal or learned encodings at drawn absolute positions.
    absolute = {name for name, cls in SCHEMES.items() if cls.absolute}
    assert absolute == {"sinusoidal", "learned", "integer", "randomized"}


@pytest.mark.parametrize("name", ["sinusoidal", "learned", "integer"])
def test_input_encodings_keep_the_dtype_of_a_half_precision_input(name):
    # Pins: each module casts what it adds to x's dtype; bfloat16 plus a float32 table or
    # direction would otherwise turn the residual stream into float32.
    module = relpos.get_scheme(name).input_encoding(8, max_len=16)
    x = torch.randn(2, 5, 8).to(torch.bfloat16)
    out = module(x, offset=3)
    assert out.dtype == torch.bfloat16
    assert not torch.equal(out, x)


@pytest.mark.parametrize("name", ["learned", "integer"])
@pytest.mark.parametrize("offset", [True, False])
def test_input_encodings_refuse_a_bool_offset(name, offset):
    # Pins: offset=True is not read as position 1, nor False as 0.
    module = relpos.get_scheme(name).input_encoding(4, max_len=8)
    with pytest.raises(ValueError, match=rf"offset must be a non-negative int .*got {offset}"):
        module(torch.zeros(1, 2, 4), offset=offset)


@pytest.mark.parametrize("name", ["sinusoidal", "learned", "integer"])
@pytest.mark.parametrize("shape", [(1, 3, 1), (3, 4), (4, 4)])
def test_input_encodings_refuse_inputs_of_the_wrong_shape(name, shape):
    # Pins: a last dimension of 1 would broadcast to d_model, and a 2-D (L, d_model) input would
    # be read as L = d_model positions; both are refused, naming the expected shape.
    module = relpos.get_scheme(name).input_encoding(4, max_len=8)
    expected = re.escape(f"x must have shape (B, L, 4), got {shape}")
    with pytest.raises(ValueError, match=expected):
        module(torch.zeros(shape))


@pytest.mark.parametrize("width", [0, True, 2.0])
@pytest.mark.parametrize("build", [
    IntegerPositions, relpos.SinusoidalEncoding, lambda d: relpos.LearnedPositionEmbedding(8, d),
], ids=["integer", "sinusoidal", "learned"])  # fmt: skip
def test_input_encodings_refuse_a_bad_width(build, width):
    # Pins: d_model = 0 is refused with the message (not a ZeroDivisionError from an
    # initialisation, nor an encoding that adds nothing), and True is not a width of 1.
    with pytest.raises(ValueError, match=rf"d_model must be a positive int, got {width!r}"):
        build(width)


# ---------------------------------------------------------------------------------------------
# integer.py


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_integer_direction_starts_at_about_unit_length(seed):
    # Pins: "about unit length: position 1 moves a token as far as one embedding entry's
    # spread" (integer.py): w ~ N(0, 1/d) per entry, so |w|^2 is 1/d times a chi-square with d
    # degrees of freedom, whose relative spread at d = 4096 is sqrt(2/d) ≈ 2 %.
    torch.manual_seed(seed)
    assert 0.9 < IntegerPositions(4096).direction.norm().item() < 1.1


# ---------------------------------------------------------------------------------------------
# learned.py


def test_learned_table_starts_with_gpt2s_spread():
    # Pins: the table is drawn from N(0, 0.02^2), GPT-2's initialisation (learned.py). The
    # sample deviation of 32768 draws has a standard error of 0.02 / sqrt(2 · 32768) ≈ 8e-5.
    torch.manual_seed(0)
    table = relpos.LearnedPositionEmbedding(512, 64).table.detach()
    assert abs(table.std().item() - 0.02) < 0.0005 and abs(table.mean().item()) < 0.0005


def test_learned_past_the_table_names_the_positions_that_have_vectors():
    # Worked example: max_len 6 has rows for positions 0..5; a length-4 input at offset 3 needs
    # position 6.
    module = relpos.LearnedPositionEmbedding(6, 4)
    with pytest.raises(ValueError, match=r"position 6 is beyond .*positions 0\.\.5 have vectors"):
        module(torch.zeros(1, 4, 4), offset=3)


def test_learned_refuses_a_bool_length():
    # Pins: max_len=True is neither a table of one row nor, as a scheme option, left for the
    # model to find out later.
    with pytest.raises(ValueError, match="max_len must be a positive int, got True"):
        relpos.LearnedPositionEmbedding(True, 4)
    with pytest.raises(TypeError, match="max_len must be None .* got bool True"):
        relpos.get_scheme("learned", max_len=True)


# ---------------------------------------------------------------------------------------------
# sinusoidal.py


def vaswani(position: int, channel: int, dim: int, base: float = 10000.0) -> float:
    """Vaswani et al. Sec. 3.5: PE(p, 2t) = sin(p / base^(2t/d)), PE(p, 2t+1) = cos(…)."""
    angle = position / base ** (2 * (channel // 2) / dim)
    return math.sin(angle) if channel % 2 == 0 else math.cos(angle)


def marian(position: int, channel: int, dim: int, base: float = 10000.0) -> float:
    """The same frequencies, all sines first, then all cosines (an odd dim: one sine more)."""
    sines = (dim + 1) // 2
    pair = channel if channel < sines else channel - sines
    angle = position / base ** (2 * pair / dim)
    return math.sin(angle) if channel < sines else math.cos(angle)


@pytest.mark.parametrize(
    "options, formula, base",
    [({}, vaswani, 10000.0), ({"base": 100.0}, vaswani, 100.0),
     ({"base": 50.0, "layout": "concat"}, marian, 50.0)],
)  # fmt: skip
def test_sinusoidal_scheme_adds_the_formula_its_options_name(options, formula, base):
    # Pins: the scheme's defaults are the paper's (interleaved, base 10000), and its base and
    # layout options reach the module it builds, which adds PE(offset + r) to row r.
    module = relpos.get_scheme("sinusoidal", **options).input_encoding(6, max_len=16)
    out = module(torch.zeros(1, 4, 6, dtype=torch.float64), offset=2)
    expected = [[formula(2 + r, c, 6, base) for c in range(6)] for r in range(4)]
    torch.testing.assert_close(out[0], torch.tensor(expected, dtype=torch.float64), atol=1e-6,
                               rtol=0)  # fmt: skip


def test_sinusoidal_encoding_is_exact_far_along_the_sequence():
    # Pins: the angles are formed in float64 and rounded once at the end: at p = 50 000 an
    # inverse frequency rounded to float32 (relative error up to 6e-8) would move an angle by
    # as much as 1e-3, far beyond float32's rounding of the result.
    positions = [10_000, 25_000, 50_000, 99_999]
    encoding = relpos.sinusoidal_encoding(torch.tensor(positions), 64)
    expected = [[vaswani(p, c, 64) for c in range(64)] for p in positions]
    torch.testing.assert_close(encoding.double(), torch.tensor(expected, dtype=torch.float64),
                               atol=2e-7, rtol=0)  # fmt: skip


def test_sinusoidal_encoding_refuses_a_bool_width():
    with pytest.raises(ValueError, match="dim must be a positive int, got True"):
        relpos.sinusoidal_encoding(torch.arange(3), True)


# ---------------------------------------------------------------------------------------------
# alibi.py


#: family.md: for H = 4 heads, first term and ratio 2^(-8/4) = 1/4.
SLOPES_4 = [1 / 4, 1 / 16, 1 / 64, 1 / 256]


@pytest.mark.parametrize("causal", [True, False])
def test_alibi_scheme_builds_the_form_its_causal_flag_names(causal):
    # Pins: the scheme hands causal on: a decoder's bias is m_h (j - i) at every pair (Press et
    # al.'s [-(i - 1), …, -1, 0] rows, positive above the diagonal, where the mask hides it), an
    # encoder's -m_h |i - j|.
    module = relpos.get_scheme("alibi").attention_position(4, 8, causal=causal)
    bias = module.bias(3, 5, query_offset=2)  # queries at 2, 3, 4; keys at 0..4
    for h, m in enumerate(SLOPES_4):
        for r in range(3):
            for c in range(5):
                i, j = 2 + r, c
                expected = m * (j - i) if causal else -m * abs(i - j)
                assert bias[h, r, c].item() == expected


def test_alibi_causal_and_bidirectional_forms_agree_under_a_causal_mask():
    # Pins the docstring's claim, with plain attention written out: the two forms give the same
    # outputs wherever a causal mask lets a query look.
    generator = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 1, 4, 5, 8, generator=generator)
    allowed = torch.ones(5, 5, dtype=torch.bool).tril()
    distance = torch.arange(5)[None, :] - torch.arange(5)[:, None]  # j - i
    slopes = torch.tensor(SLOPES_4)[:, None, None]
    logits = q @ k.transpose(-1, -2) / math.sqrt(8) + slopes * distance
    expected = logits.masked_fill(~allowed, -math.inf).softmax(-1) @ v
    for causal in (True, False):
        module = relpos.get_scheme("alibi").attention_position(4, 8, causal=causal)
        torch.testing.assert_close(module.attend(q, k, v, is_causal=True), expected)


def test_alibi_refuses_a_causal_flag_that_is_not_a_bool():
    with pytest.raises(TypeError, match="causal must be a bool, got 'yes'"):
        relpos.ALiBiBias(4, causal="yes")


def test_alibi_slopes_are_not_saved_in_checkpoints():
    # Pins: "no parameters; slopes is a non-persistent buffer": a model's state_dict has no
    # ALiBi entries, so a checkpoint has nothing of ALiBi's to load or to miss.
    assert relpos.ALiBiBias(4).state_dict() == {}
    from relpos.models import ModelConfig, build_model

    config = ModelConfig(arch="decoder", scheme="alibi", d_model=16, num_heads=2, num_layers=1,
                         d_ff=32)  # fmt: skip
    model = build_model(config, 10)
    assert not [name for name in model.state_dict() if "slopes" in name]


def test_alibi_bias_is_exact_at_long_distances():
    # Pins: distances are float32, exact integers up to 2^24 (half precision would round 4097
    # to 4096 and 5001 to 5000).
    bias = relpos.ALiBiBias(2).bias(1, 6000)  # (H, 1, 6000), distances 0..5999
    for h, m in enumerate([1 / 16, 1 / 256]):  # H = 2: first term and ratio 2^(-4)
        for j in (2049, 4097, 5001, 5999):
            assert bias[h, 0, j].item() == pytest.approx(-m * j, rel=1e-7)


# ---------------------------------------------------------------------------------------------
# huang.py


def test_huang_default_clipping_covers_128_positions_each_way():
    # Pins: the default max_distance is 128 (docs/schemes.md's results table lists "huang
    # (k = 128)"): a table of 2·128 + 1 rows shared by the heads.
    position = relpos.get_scheme("huang").attention_position(2, 4, causal=False)
    assert position.key_table.shape == (257, 4)
    assert (position.max_left, position.max_right) == (128, 128)


# ---------------------------------------------------------------------------------------------
# transformer_xl.py


def test_transformer_xl_sinusoids_use_the_schemes_base():
    # Pins: base reaches R_n. r_n = W_R R_n with R_n all sines, then all cosines of
    # n / base^(2t/d_model), n = i - j (Dai et al.; family.md), computed here for base 100.
    heads, dim, base = 2, 4, 100.0
    scheme = relpos.get_scheme("transformer-xl", base=base, content_bias=False, position_bias=False)
    position = scheme.attention_position(heads, dim, causal=False).double()
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, heads, 3, dim, dtype=torch.float64, generator=generator)
    w_r = position.position_proj.weight.detach()
    width = heads * dim
    expected = torch.empty(1, heads, 3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            n = i - j
            angles = [n / base ** (2 * t / width) for t in range(width // 2)]
            sinusoid = torch.tensor([math.sin(a) for a in angles] + [math.cos(a) for a in angles],
                                    dtype=torch.float64)  # fmt: skip
            r = (w_r @ sinusoid).view(heads, dim)
            expected[0, :, i, j] = (q[0, :, i] * r).sum(-1) / math.sqrt(dim)
    torch.testing.assert_close(position.pair_bias(q, k), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("content, positional", [(True, False), (False, True)])
def test_transformer_xl_scheme_switches_u_and_v_separately(content, positional):
    # Pins: content_bias switches u (term (c)) and position_bias switches v (term (d)), each
    # its own; the module has exactly the parameters the options name.
    position = relpos.get_scheme(
        "transformer-xl", content_bias=content, position_bias=positional
    ).attention_position(2, 4, causal=False)
    assert (position.content_bias is not None) == content
    assert (position.position_bias is not None) == positional


def test_transformer_xl_starts_from_the_official_codes_initialisation():
    # Pins: W_R, u and v are all drawn from N(0, 0.02^2) (the official code); nn.Linear's own
    # initialisation of W_R would be uniform with deviation 1/sqrt(3·256) ≈ 0.036.
    torch.manual_seed(0)
    position = relpos.TransformerXLPosition(8, 32)  # H·D = 256
    for name in ("position_proj.weight", "content_bias", "position_bias"):
        values = dict(position.named_parameters())[name].detach()
        assert 0.018 < values.std().item() < 0.022, name


@pytest.mark.parametrize("base", [1.0, 0.5, -2.0, math.inf])
def test_transformer_xl_module_refuses_a_base_that_gives_no_frequencies(base):
    # Pins: the module checks base itself, not only the scheme (base 1 makes every sinusoid
    # constant, a negative base makes them NaN).
    with pytest.raises(ValueError, match="base must be a number > 1 and finite"):
        relpos.TransformerXLPosition(2, 4, base=base)


@pytest.mark.parametrize("option", ["content_bias", "position_bias"])
def test_transformer_xl_module_refuses_switches_that_are_not_bools(option):
    # Pins: the module checks its switches itself: "no" is truthy and would learn the term.
    with pytest.raises(TypeError, match=f"{option} must be a bool, got 'no'"):
        relpos.TransformerXLPosition(2, 4, **{option: "no"})


@pytest.mark.parametrize("option", ["content_bias", "position_bias"])
def test_transformer_xl_scheme_checks_its_switches_in_get_scheme(option):
    # Pins: options are checked in get_scheme (base.py), not first when a model is built.
    with pytest.raises(TypeError, match=f"{option} must be a bool, got 'no'"):
        relpos.get_scheme("transformer-xl", **{option: "no"})


# ---------------------------------------------------------------------------------------------
# attention/index.py


@pytest.mark.parametrize("offset", ["query_offset", "key_offset"])
def test_relative_index_refuses_a_bool_offset(offset):
    # Pins: True is not read as position 1.
    with pytest.raises(TypeError, match=f"{offset} must be an int, got bool True"):
        relpos.relative_position_index(2, 3, 1, **{offset: True})


def test_relative_index_offsets_default_to_zero():
    # Worked example, k = 1: query 0 sees keys 0, 1, 2 at distances 0, 1, 2 (rows 1, 2, 2);
    # query 1 at -1, 0, 1 (rows 0, 1, 2).
    index = relpos.RelativeIndex(2, 3, 1, 1)
    assert index.diagonal_shift == 0
    assert index.dense().tolist() == [[1, 2, 2], [0, 1, 2]]


def test_relative_index_dense_is_made_on_the_device_asked_for():
    # The meta device shows where it was made without a GPU.
    dense = relpos.RelativeIndex(2, 3, 1, 1).dense(device="meta")
    assert dense.device.type == "meta" and dense.shape == (2, 3)


# ---------------------------------------------------------------------------------------------
# experiments/presets.py

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


@pytest.mark.parametrize(
    "preset, stored",
    [
        ("default", "compare-20261128-082804"),  # `relpos compare`, no flags
        ("k-sweep", "preset-k-sweep"),  # `relpos compare --preset k-sweep`
        ("kv-ablation", "preset-kv-ablation"),
        ("length-gen", "preset-length-gen"),
    ],
)
def test_each_preset_is_the_grid_its_stored_run_recorded(preset, stored):
    # Pins every setting of every preset (task, its options, titles, seeds, training budget,
    # architecture, variants with their options and labels, their order) against the
    # results.json that the preset's run in docs/results wrote when it was made; the documents
    # quote numbers from those runs, so a preset that drifted would no longer reproduce them.
    recorded = json.loads((RESULTS / stored / "results.json").read_text())
    assert recorded["preset"] == preset
    keys = ("title", "task", "task_options", "seeds", "train", "model")
    ours = [
        {**{key: getattr(e, key) for key in keys},
         "variants": [dataclasses.asdict(v) for v in e.variants]}
        for e in relpos.experiments.get_preset(preset)
    ]  # fmt: skip
    theirs = [{key: e[key] for key in (*keys, "variants")} for e in recorded["experiments"]]
    assert ours == theirs


@pytest.mark.parametrize("name", ["default", "k-sweep", "kv-ablation", "length-gen"])
def test_presets_are_fresh_objects_down_to_their_dicts(name):
    # Pins "callers may edit them": editing every dict and list of one call's experiments
    # leaves the next call's untouched, and no two experiments or variants of one call share a
    # dict or list (editing one experiment's options would change another's).
    first = relpos.experiments.get_preset(name)
    pristine = repr(relpos.experiments.get_preset(name))
    edited = []
    for experiment in first:
        for field in ("task_options", "train", "model"):
            edited.append(getattr(experiment, field))
        edited.append(experiment.seeds)
        edited.extend(variant.options for variant in experiment.variants)
    assert len({id(container) for container in edited}) == len(edited)
    for container in edited:
        if isinstance(container, list):
            container.append(99)
        else:
            container["edited"] = 1
    assert repr(relpos.experiments.get_preset(name)) == pristine


def test_preset_registry_refuses_a_second_preset_of_the_same_name():
    presets = relpos.experiments.presets
    with pytest.raises(ValueError, match="a preset named 'k-sweep' is already registered"):
        presets.register_preset("k-sweep")(lambda: [])
    assert presets.PRESETS["k-sweep"] is presets.k_sweep


def test_unknown_preset_is_a_value_error_listing_the_names_sorted():
    with pytest.raises(ValueError) as error:
        relpos.experiments.get_preset("table9")
    assert str(error.value) == (
        "unknown preset 'table9'; valid names: default, k-sweep, kv-ablation, length-gen"
    )
    assert relpos.experiments.DEFAULT_PRESET == "default"


# ---------------------------------------------------------------------------------------------
# bench.py: settings, checks, the order of calls, row summaries, the table and the JSON

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_bench_defaults_are_the_settings_of_the_recorded_main_run():
    # Pins BenchConfig's defaults against the config that `relpos bench --json …` (no other
    # flag; benchmarks/RESULTS.md, "Main result") recorded: L = 256…2048, B = 1, H = 4, D = 64,
    # k = 16, shared tables, float32, 10 timed calls after 2 warm-ups, the reference 3 times up
    # to L = 1024, forward + backward, memory measured. ``schemes`` and ``dropout`` (off, as
    # in that run) came later.
    recorded = json.loads((BENCHMARKS / "bench-1.json").read_text())
    config = dataclasses.asdict(relpos.bench.BenchConfig())
    assert config.pop("schemes") is None
    assert config.pop("dropout") == 0.0
    assert {**config, "lengths": list(config["lengths"])} == recorded["config"]
    # The machine description has the fields the recorded run has.
    assert set(relpos.bench.machine_info("cpu")) == set(recorded["machine"])


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"schemes": ()}, "schemes must name at least one scheme"),
        ({"reference_repeats": 0}, "reference_repeats must be a positive int, got 0"),
        ({"repeats": 0}, "repeats must be a positive int, got 0"),
        ({"heads": 0}, "heads must be a positive int, got 0"),
        ({"head_dim": 2.0}, "head_dim must be a positive int, got 2.0"),
        ({"max_distance": -1}, "max_distance must be >= 0, got -1"),
        ({"lengths": (8, 0)}, r"lengths must be positive ints, got \(8, 0\)"),
        ({"lengths": ()}, r"lengths must be positive ints, got \(\)"),
        ({"warmup": -1}, "warmup must be >= 0, got -1"),
        ({"dtype": "float8"}, "dtype must be one of float32, float64, bfloat16, float16"),
    ],
)
def test_bench_check_config_refuses_each_bad_setting(changes, message):
    config = relpos.bench.BenchConfig(**{"lengths": (8,), **changes})
    with pytest.raises(ValueError, match=message):
        relpos.bench.check_config(config)


def test_bench_check_config_takes_the_edge_values_and_the_named_backends():
    # Pins: k = 0 (one bucket) and warmup = 0 are valid; the backends named are the ones timed,
    # the baseline "sdpa" among them; unnamed, the CPU's are SDPA first, then every Shaw backend
    # that runs on the CPU with a backward (not flex, not triton).
    check = relpos.bench.check_config
    device, backends = check(
        relpos.bench.BenchConfig(lengths=(8,), max_distance=0, warmup=0, backends=("eager", "sdpa"))
    )
    assert device == torch.device("cpu") and backends == ["eager", "sdpa"]
    assert check(relpos.bench.BenchConfig(lengths=(8,)))[1] == ["sdpa", "reference", "eager"]


def test_bench_default_backends_are_those_that_apply_to_the_configs_dtype(monkeypatch):
    # Pins: the backends probed are asked about a query of the config's dtype, and about the
    # config's dropout (here a stand-in says eager applies to float64 only, reference only
    # without dropout).
    def applies(name, query, dropout=False):
        if name == "reference":
            return not dropout
        return name == "eager" and query.dtype == torch.float64

    monkeypatch.setattr(relpos.bench, "_applies", applies)
    check = relpos.bench.check_config
    assert check(relpos.bench.BenchConfig(lengths=(8,), dtype="float64"))[1] == [
        "sdpa",
        "reference",
        "eager",
    ]
    assert check(relpos.bench.BenchConfig(lengths=(8,)))[1] == ["sdpa", "reference"]
    assert check(relpos.bench.BenchConfig(lengths=(8,), dropout=0.1))[1] == ["sdpa"]


def test_bench_time_steps_takes_turns_with_per_step_counts():
    # Pins: warm-ups first, then rounds of one call each, a step with fewer repeats sitting out
    # the last rounds; times in milliseconds (each step sleeps 5 ms).
    calls = []

    def step(name):
        def call():
            calls.append(name)
            time.sleep(0.005)

        return call

    times = relpos.bench.time_steps(
        {"a": step("a"), "b": step("b")}, repeats={"a": 3, "b": 1}, warmup={"a": 2, "b": 0}
    )
    assert calls == ["a", "a", "a", "b", "a", "a"]
    assert [len(times["a"]), len(times["b"])] == [3, 1]
    assert all(t > 4.0 for t in times["a"] + times["b"])


@pytest.fixture
def fake_timing(monkeypatch):
    """time_steps replaced by fixed times (ms) per name, recording what it was asked for; the
    peak memory of every step is 2.5 MiB; the load averages are (1.234, 0.5, 0.25) before and
    (2.346, 0.75, 0.127) after."""
    asked = []
    fixed = {"sdpa": [2.0, 1.0, 4.0], "eager": [3.1234, 5.0, 2.4567], "reference": [400.0, 600.0]}

    def fake_time_steps(steps, *, repeats, warmup, device="cpu"):
        asked.append({"names": list(steps), "repeats": repeats, "warmup": warmup})
        return {name: fixed.get(name, [1.0]) for name in steps}

    monkeypatch.setattr(relpos.bench, "time_steps", fake_time_steps)
    monkeypatch.setattr(relpos.bench, "peak_memory_bytes", lambda step, device: 5 * 2**19)
    loads = iter([(1.234, 0.5, 0.25), (2.346, 0.75, 0.127)])
    monkeypatch.setattr(os, "getloadavg", lambda: next(loads))
    return asked


def test_bench_rows_summarise_the_times_by_hand(fake_timing):
    # Worked example: SDPA took 2, 1, 4 ms (median 2, min 1); eager 3.1234, 5, 2.4567 ms
    # (median 3.1234 → 3.123, min 2.457, 3.1234 / 2 = 1.5617 → 1.562 SDPA); the reference 400
    # and 600 ms (median 500, 250 × SDPA). The reference runs at L = reference_max_length, with
    # one warm-up call and reference_repeats timed calls. Peaks are in MiB of 2^20 bytes.
    lines = []
    config = relpos.bench.BenchConfig(
        lengths=(8,), heads=1, head_dim=4, max_distance=2, repeats=3, reference_repeats=2,
        warmup=4, backends=("sdpa", "eager", "reference"), reference_max_length=8,
    )  # fmt: skip
    results = relpos.bench.run_benchmark(config, progress=lines.append)
    assert fake_timing == [{"names": ["sdpa", "eager", "reference"],
                            "repeats": {"sdpa": 3, "eager": 3, "reference": 2},
                            "warmup": {"sdpa": 4, "eager": 4, "reference": 1}}]  # fmt: skip
    common = {"length": 8, "peak_mib": 2.5}
    assert results["rows"] == [
        {**common, "backend": "sdpa", "median_ms": 2.0, "min_ms": 1.0, "ratio_to_sdpa": 1.0,
         "times_ms": [2.0, 1.0, 4.0]},
        {**common, "backend": "eager", "median_ms": 3.123, "min_ms": 2.457,
         "ratio_to_sdpa": 1.562, "times_ms": [3.123, 5.0, 2.457]},
        {**common, "backend": "reference", "median_ms": 500.0, "min_ms": 400.0,
         "ratio_to_sdpa": 250.0, "times_ms": [400.0, 600.0]},
    ]  # fmt: skip
    assert results["load_average"] == {"before": [1.23, 0.5, 0.25], "after": [2.35, 0.75, 0.13]}
    json.dumps(results)  # the CLI writes it as JSON
    # One progress line per row, no header: L (6 wide), two spaces, the name (10 wide), then
    # median (10), min (9), ratio (8) and peak (9), each after one space.
    assert lines == [
        "     8  sdpa             2.00      1.00     1.00       2.5",
        "     8  eager            3.12      2.46     1.56       2.5",
        "     8  reference      500.00    400.00   250.00       2.5",
    ]


def test_bench_rows_without_the_baseline_have_no_ratio(fake_timing):
    config = relpos.bench.BenchConfig(lengths=(8,), heads=1, head_dim=4, max_distance=2,
                                      backends=("eager",), memory=False)  # fmt: skip
    (row,) = relpos.bench.run_benchmark(config)["rows"]
    assert row["backend"] == "eager" and row["ratio_to_sdpa"] is None


def test_bench_scheme_rows_print_in_a_wider_column(fake_timing):
    # Pins: scheme labels get the 30-wide "scheme" column in the progress lines as well (alibi
    # took 1 ms against SDPA's median of 2 ms).
    lines = []
    config = relpos.bench.BenchConfig(lengths=(4,), heads=2, head_dim=4, schemes=(("alibi", {}),),
                                      memory=False)  # fmt: skip
    relpos.bench.run_benchmark(config, progress=lines.append)
    assert lines[1] == "     4  alibi" + " " * 25 + "       1.00      1.00     0.50       n/a"
    assert relpos.bench.name_column(config) == ("scheme", 30)


def test_bench_table_header_and_missing_values():
    # Pins the header's titles and widths (the same as the rows'), "-" for a missing ratio
    # and "n/a" for a missing peak, two decimals throughout.
    rows = [{"length": 256, "backend": "eager", "median_ms": 2.8, "min_ms": 2.5,
             "ratio_to_sdpa": None, "peak_mib": 3.74},
            {"length": 256, "backend": "reference", "median_ms": 174.5, "min_ms": 170.0,
             "ratio_to_sdpa": 119.333, "peak_mib": None}]  # fmt: skip
    assert relpos.bench.format_table(rows).splitlines() == [
        "     L  backend     median ms    min ms   x SDPA  peak MiB",
        "   256  eager            2.80      2.50        -       3.7",
        "   256  reference      174.50    170.00   119.33       n/a",
    ]
    scheme_header = relpos.bench.format_table([], column=("scheme", 30))
    assert scheme_header == "     L  scheme" + " " * 24 + "  median ms    min ms   x SDPA  peak MiB"


def test_bench_scheme_labels():
    # Pins: max_distance is shown as k, other options by name, in order; a backend other than
    # auto (sdpa included) follows after " / ".
    label = relpos.bench.scheme_label
    assert label("deberta", {"max_distance": 4, "c2p": False}) == "deberta k=4 c2p=False"
    assert label("t5", {"num_buckets": 64}, "sdpa") == "t5 num_buckets=64 / sdpa"
    assert label("rope", {}, "auto") == "rope"


@pytest.mark.parametrize("shared, shape", [(True, (5, 4)), (False, (2, 5, 4))])
def test_bench_tables_are_shared_or_per_head_with_2k_plus_1_rows(shared, shape):
    config = relpos.bench.BenchConfig(heads=2, head_dim=4, max_distance=2, shared=shared)
    tensors, upstream = relpos.bench._inputs(config, 6, torch.device("cpu"))
    assert tensors["key_table"].shape == tensors["value_table"].shape == shape
    assert tensors["query"].shape == upstream.shape == (1, 2, 6, 4)


def test_bench_scheme_steps_rotate_before_attending():
    # Pins: a scheme's step is its rotate and then its attend, as in a model's layer: RoPE's
    # forward is SDPA on the rotated query and key, rotation written out with complex numbers
    # (RoFormer Eq. 34, tests/test_invariants.py).
    from test_invariants import complex_rope

    config = relpos.bench.BenchConfig(lengths=(6,), heads=2, head_dim=4, dtype="float64",
                                      schemes=(("rope", {}),), backward=False)  # fmt: skip
    tensors, upstream = relpos.bench._inputs(config, 6, torch.device("cpu"))
    steps = relpos.bench._scheme_steps(config, ["auto"], tensors, upstream, "cpu")
    q, k, v = tensors["query"], tensors["key"], tensors["value"]
    positions = torch.arange(6)
    rotated = [torch.stack([complex_rope(t[0, h], positions) for h in range(2)])[None]
               for t in (q, k)]  # fmt: skip
    scores = rotated[0] @ rotated[1].transpose(-1, -2) / 2.0  # 1 / sqrt(D), D = 4
    expected = torch.softmax(scores, dim=-1) @ v
    torch.testing.assert_close(steps["rope"](), expected)


@pytest.mark.parametrize("name", ["shaw", "t5", "transformer-xl", "deberta"])
def test_bench_scheme_steps_run_the_module_in_the_configs_dtype(name):
    # Pins: the scheme's module is cast to the config's dtype, so a float64 bench times float64
    # attention (a float32 module fails on float64 inputs, or computes in another dtype).
    config = relpos.bench.BenchConfig(heads=2, head_dim=4, dtype="float64", backward=False,
                                      schemes=((name, {}),))  # fmt: skip
    tensors, upstream = relpos.bench._inputs(config, 5, torch.device("cpu"))
    steps = relpos.bench._scheme_steps(config, ["auto"], tensors, upstream, "cpu")
    assert steps[name]().dtype == torch.float64


def test_bench_scheme_steps_time_the_reference_up_to_its_limit():
    # Pins: the literal reference is skipped only above reference_max_length.
    config = relpos.bench.BenchConfig(heads=2, head_dim=4, reference_max_length=6,
                                      schemes=(("shaw", {"max_distance": 2}),))  # fmt: skip
    tensors, upstream = relpos.bench._inputs(config, 6, torch.device("cpu"))
    steps = relpos.bench._scheme_steps(config, ["auto", "reference"], tensors, upstream, "cpu")
    assert list(steps) == ["sdpa", "shaw k=2", "shaw k=2 / reference"]


def test_bench_peak_memory_counts_frees_in_time_order():
    # Pins: a tensor freed before the next one is allocated does not add to the peak (two
    # 1 MiB temporaries one after the other peak at 1 MiB, not 2); a device that is neither
    # CPU nor CUDA has no measurement.
    def step():
        first = torch.ones(2**18)
        del first
        second = torch.ones(2**18)
        del second

    peak = relpos.bench.peak_memory_bytes(step, torch.device("cpu"))
    assert 2**20 <= peak < 1.5 * 2**20
    assert relpos.bench.peak_memory_bytes(step, torch.device("meta")) is None
