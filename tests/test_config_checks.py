"""Bad options are refused where they are given: scheme fields in ``get_scheme``, config fields
in ``ModelConfig`` / ``TrainConfig`` — not later at model build, never as NaN or a truthy string.
"""

from __future__ import annotations

import math

import pytest

from relpos import ShawRelativePosition, get_scheme
from relpos.models import ModelConfig
from relpos.schemes import ShawScheme
from relpos.training import TrainConfig

NAN, INF = math.nan, math.inf


# --- schemes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options, error, match",
    [
        ("sinusoidal", {"base": 0}, ValueError, r"base must be a number > 1 and finite, got 0"),
        ("sinusoidal", {"base": -1.0}, ValueError, r"base must be .*got -1.0"),
        ("sinusoidal", {"base": INF}, ValueError, r"base must be .*got inf"),
        ("sinusoidal", {"base": "1e4"}, ValueError, r"base must be .*got '1e4'"),
        ("sinusoidal", {"layout": "bogus"}, ValueError, r"unknown layout 'bogus'; valid"),
        (
            "rope",
            {"scaling": "linear", "scaling_factor": INF},
            ValueError,
            r"scaling_factor must be a number > 0 and finite, got inf",
        ),
        ("rope", {"scaling": "ntk", "scaling_factor": NAN}, ValueError, r"scaling_factor.*nan"),
        ("rope", {"base": INF}, ValueError, r"base must be a number > 1 and finite, got inf"),
        ("shaw", {"max_distance": -1}, ValueError, r"max_distance must be >= 0, got -1"),
        ("shaw", {"max_distance": 2.5}, TypeError, r"max_distance must be a non-negative int"),
        ("shaw", {"max_distance": "4"}, TypeError, r"max_distance must be .*'4'"),
        ("shaw", {"max_left": -1}, ValueError, r"max_left must be >= 0, got -1"),
        ("shaw", {"max_right": True}, TypeError, r"max_right must be a non-negative int"),
        ("shaw", {"key_term": "no"}, TypeError, r"key_term must be a bool, got 'no'"),
        ("shaw", {"value_term": 0}, TypeError, r"value_term must be a bool, got 0"),
        ("shaw", {"per_head": None}, TypeError, r"per_head must be a bool, got None"),
        ("huang", {"per_head": "x"}, TypeError, r"per_head must be a bool, got 'x'"),
        ("huang", {"key_query": 1}, TypeError, r"key_query must be a bool, got 1"),
        ("huang", {"max_distance": -2}, ValueError, r"max_distance must be >= 0, got -2"),
        ("learned", {"max_len": 0}, ValueError, r"max_len must be None .* or an int >= 1, got 0"),
        ("learned", {"max_len": -5}, ValueError, r"max_len must be .*got -5"),
        ("learned", {"max_len": 2.5}, TypeError, r"max_len must be .*got float 2.5"),
        ("t5", {"num_buckets": 32, "max_distance": 8}, ValueError, r"neither .*= 8; .*= 16"),
        ("t5", {"num_buckets": 1}, ValueError, r"num_buckets=1, .*need num_buckets >= 2"),
        (
            "t5",
            {"num_buckets": 32, "max_distance": 8, "bidirectional": True},
            ValueError,
            r"> the 8",
        ),
        ("t5", {"num_buckets": 32.0}, TypeError, r"num_buckets must be an int"),
    ],
)
def test_scheme_options_are_checked_in_get_scheme(name, options, error, match):
    with pytest.raises(error, match=match):
        get_scheme(name, **options)


def test_scheme_options_are_checked_when_replacing_an_instance():
    scheme = get_scheme("shaw")
    with pytest.raises(ValueError, match=r"scheme 'shaw' has no option\(s\) bogus; its options"):
        get_scheme(scheme, bogus=1)
    with pytest.raises(TypeError, match=r"key_term must be a bool"):
        get_scheme(scheme, key_term="no")


def test_learned_max_len_none_means_the_models():
    assert get_scheme("learned").input_encoding(8, max_len=16).max_len == 16
    assert get_scheme("learned", max_len=3).input_encoding(8, max_len=16).max_len == 3


def test_t5_direction_left_open_is_checked_for_the_direction_it_gets():
    # Valid for bidirectional buckets (> 8 exact distances) but not for causal ones (> 16).
    scheme = get_scheme("t5", num_buckets=32, max_distance=16)
    assert scheme.attention_position(2, 4, causal=False).bidirectional
    with pytest.raises(ValueError, match=r"bidirectional=None .*causal .*max_distance must be > "):
        scheme.attention_position(2, 4, causal=True)
    # Valid only for causal buckets: an encoder cannot use it.
    scheme = get_scheme("t5", num_buckets=3, max_distance=4)
    assert not scheme.attention_position(2, 4, causal=True).bidirectional
    with pytest.raises(ValueError, match=r"bidirectional=None .*num_buckets must be >= 4"):
        scheme.attention_position(2, 4, causal=False)


@pytest.mark.parametrize("flag", ["key_term", "value_term", "per_head", "key_query"])
def test_shaw_module_flags_must_be_bools(flag):
    # "no" or 1 would be truthy and switch the term on.
    with pytest.raises(TypeError, match=rf"{flag} must be a bool, got 'no'"):
        ShawRelativePosition(4, 2, **{flag: "no"})


# --- ModelConfig ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"dropout": "x"}, TypeError, r"dropout must be a float in \[0, 1\), got 'x'"),
        ({"dropout": None}, TypeError, r"dropout must be a float .*got None"),
        ({"dropout": NAN}, ValueError, r"dropout must be a float in \[0, 1\), got nan"),
        ({"tie_embeddings": "no"}, TypeError, r"tie_embeddings must be a bool, got 'no'"),
    ],
)
def test_model_config_rejects_bad_types(changes, error, match):
    with pytest.raises(error, match=match):
        ModelConfig(**changes)


def test_a_scheme_instance_is_saved_by_name_and_reads_back():
    # A ShawScheme instance was written to config.json as a dict of its fields without its
    # name, so load_run and predict failed on the run with "unhashable type: 'dict'".
    config = ModelConfig(scheme=ShawScheme(max_distance=2), scheme_options={"value_term": False})
    assert config.scheme == "shaw"
    assert config.scheme_options["max_distance"] == 2
    assert config.scheme_options["value_term"] is False
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_an_unregistered_scheme_instance_builds_models_but_is_not_saved():
    class Unregistered(ShawScheme):
        pass

    config = ModelConfig(scheme=Unregistered(max_distance=2))
    with pytest.raises(TypeError, match="not a registered scheme"):
        config.to_dict()
    with pytest.raises(TypeError, match=r"scheme must be a scheme name .*got int"):
        ModelConfig(scheme=3)


# --- TrainConfig ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lr", "weight_decay", "grad_clip", "min_lr_ratio"])
@pytest.mark.parametrize("value", [NAN, INF, -INF, -0.5])
def test_train_config_rejects_non_finite_and_negative_numbers(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be a finite number >= 0.*got {value}"):
        TrainConfig(**{name: value})


def test_train_config_min_lr_ratio_at_most_one():
    TrainConfig(min_lr_ratio=1.0)  # a constant learning rate after the warmup
    with pytest.raises(ValueError, match=r"min_lr_ratio must be .*<= 1.*got 1.5"):
        TrainConfig(min_lr_ratio=1.5)


@pytest.mark.parametrize("value", [True, 1.0, "2"])
def test_train_config_threads_must_be_an_int(value):
    with pytest.raises(TypeError, match=r"threads must be None or a positive int"):
        TrainConfig(threads=value)
    with pytest.raises(ValueError, match=r"threads must be None or a positive int, got 0"):
        TrainConfig(threads=0)
