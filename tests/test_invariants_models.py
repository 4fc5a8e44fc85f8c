"""Behaviours of the models, their configuration, checkpoints, the tokenizer and the precision
switch that an earlier test suite did not pin down (found by mutation testing).

For each test here, a small wrong change to the library (a dropped residual connection, the
activations swapped, a causal encoder, a hard-coded BOS, a checkpoint that loads the older copy,
an RNG state that is saved but not restored) left every earlier test passing. The expected values
come from an independent formulation: a pre-LN transformer written out with plain tensor
operations on the model's own weights, T5's bucket formula written out, brute-force uncached
decoding, a worked example, or a property checked directly, never from the implementation under
test.
"""

import json
import math
import os
import random
import shutil
import stat

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_family import plain_t5_bucket  # T5's bucket formula, one integer at a time

from relpos.models import ModelConfig, build_model

VOCAB = 11


def config(arch, scheme="none", **changes):
    fields = dict(
        arch=arch, d_model=8, num_heads=2, num_layers=2, d_ff=12, dropout=0.0, scheme=scheme,
        max_len=16,
    )  # fmt: skip
    return ModelConfig(**{**fields, **changes})


def model_of(arch, scheme="none", seed=0, **changes):
    torch.manual_seed(seed)
    return build_model(config(arch, scheme, **changes), VOCAB).double().eval()


# ---------------------------------------------------------------------------------------------
# A pre-LN transformer written out with plain tensor operations, on the model's own weights


def t5_bias(position, length, *, causal):
    """``(H, L, L)``: the written-out T5 bias ``w[bucket(j - i), h]`` of a stack's shared module."""
    weights = position.bucket_weights  # (num_buckets, H)
    rows = [
        [
            weights[plain_t5_bucket(j - i, not causal, position.num_buckets, position.max_distance)]
            for j in range(length)
        ]
        for i in range(length)
    ]
    return torch.stack([torch.stack(row) for row in rows]).permute(2, 0, 1)


def layer_norm(module, x):
    return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)


def linear(module, x):
    out = x @ module.weight.T
    return out if module.bias is None else out + module.bias


def attend(mha, xq, xkv, allowed, bias=None):
    """softmax(q·k / sqrt(D) + bias) v per head; ``allowed (B, Lq, Lk)``: True where a query may
    look."""
    batch, lq, width = xq.shape
    heads = mha.num_heads
    size = width // heads

    def split(x, proj):
        return linear(proj, x).view(batch, x.shape[1], heads, size).transpose(1, 2)

    q, k, v = split(xq, mha.q_proj), split(xkv, mha.k_proj), split(xkv, mha.v_proj)
    logits = q @ k.transpose(-1, -2) / math.sqrt(size)  # (B, H, Lq, Lk)
    if bias is not None:
        logits = logits + bias
    logits = logits.masked_fill(~allowed[:, None], -math.inf)
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(batch, lq, width)
    return linear(mha.out_proj, out)


def stack_by_hand(stack, x, allowed, activation, *, memory=None, memory_allowed=None, bias=None):
    """Pre-LN blocks (Xiong et al. 2020): ``x + SelfAttn(LN x)``, ``x + CrossAttn(LN x, memory)``,
    ``x + W2 act(W1 LN x)``; then a final LayerNorm."""
    act = {"relu": F.relu, "gelu": F.gelu}[activation]
    for block in stack.blocks:
        h = layer_norm(block.norm_self, x)
        x = x + attend(block.self_attn, h, h, allowed, bias)
        if memory is not None:
            h = layer_norm(block.norm_cross, x)
            x = x + attend(block.cross_attn, h, memory, memory_allowed)
        h = layer_norm(block.norm_ff, x)
        x = x + linear(block.ff.fc_out, act(linear(block.ff.fc_in, h)))
    return layer_norm(stack.norm, x)


def embed_by_hand(model, stack, tokens, offset=0):
    """Vaswani et al.: the token vector times sqrt(d_model), plus the learned table's rows
    ``offset, offset + 1, …`` when the scheme has one."""
    x = model.token_embedding.weight[tokens] * math.sqrt(model.config.d_model)
    if stack.input_encoding is not None:
        x = x + stack.input_encoding.table[offset : offset + tokens.shape[1]]
    return x


def logits_by_hand(model, hidden):
    weight = model.token_embedding.weight if model.config.tie_embeddings else model.output.weight
    return hidden @ weight.T


def keys_not_padding(padding, query_len):
    return (~padding)[:, None, :].expand(-1, query_len, -1)


def causal(batch, length):
    return torch.ones(length, length, dtype=torch.bool).tril().expand(batch, -1, -1)


@pytest.mark.parametrize(
    "scheme, activation, tie",
    [("none", "relu", True), ("learned", "gelu", False), ("t5", "relu", True)],
)
def test_encoder_only_is_a_pre_ln_bidirectional_transformer(scheme, activation, tie):
    # Pins: both residual connections, the pre-LayerNorms and the final one, the activation the
    # config names, the sqrt(d_model) embedding scale, the input table, the key padding mask, an
    # encoder that sees both sides (T5's bidirectional buckets) and tied or untied output.
    options = {"num_buckets": 8, "max_distance": 10} if scheme == "t5" else {}
    model = model_of(
        "encoder", scheme, activation=activation, tie_embeddings=tie, scheme_options=options
    )
    tokens = torch.tensor([[4, 7, 5, 9, 6, 8], [10, 4, 4, 3, 0, 0]])
    padding = tokens == 0
    bias = None
    if scheme == "t5":
        bias = t5_bias(model.encoder.blocks[0].self_attn.position, 6, causal=False)
    hidden = stack_by_hand(
        model.encoder,
        embed_by_hand(model, model.encoder, tokens),
        keys_not_padding(padding, 6),
        activation,
        bias=bias,
    )
    with torch.no_grad():
        logits = model(tokens, padding)
    expected = logits_by_hand(model, hidden)
    torch.testing.assert_close(logits[~padding], expected[~padding], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scheme", ["learned", "t5"])
def test_encoder_decoder_is_a_pre_ln_transformer_with_content_only_cross_attention(scheme):
    # Pins: a bidirectional encoder that honours the source padding, a causal decoder (T5's
    # causal buckets), the cross-attention's own LayerNorm and residual, the source padding
    # masked in cross-attention, and each stack's own input table.
    options = {"num_buckets": 8, "max_distance": 10} if scheme == "t5" else {}
    model = model_of("encoder-decoder", scheme, scheme_options=options)
    source = torch.tensor([[4, 7, 5, 9, 6], [10, 4, 8, 0, 0]])
    target = torch.tensor([[1, 6, 6, 9, 4, 5], [1, 5, 10, 7, 7, 8]])
    padding = source == 0
    enc_bias = dec_bias = None
    if scheme == "t5":
        enc_bias = t5_bias(model.encoder.blocks[0].self_attn.position, 5, causal=False)
        dec_bias = t5_bias(model.decoder.blocks[0].self_attn.position, 6, causal=True)
    memory = stack_by_hand(
        model.encoder,
        embed_by_hand(model, model.encoder, source),
        keys_not_padding(padding, 5),
        "relu",
        bias=enc_bias,
    )
    hidden = stack_by_hand(
        model.decoder,
        embed_by_hand(model, model.decoder, target),
        causal(2, 6),
        "relu",
        memory=memory,
        memory_allowed=keys_not_padding(padding, 6),
        bias=dec_bias,
    )
    with torch.no_grad():
        logits = model(source, target, padding)
    torch.testing.assert_close(logits, logits_by_hand(model, hidden), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scheme", ["learned", "t5"])
def test_decoder_only_is_a_causal_pre_ln_transformer(scheme):
    # Pins: the causal mask and T5's causal (one-sided) buckets in a decoder-only stack.
    options = {"num_buckets": 8, "max_distance": 10} if scheme == "t5" else {}
    model = model_of("decoder", scheme, scheme_options=options)
    tokens = torch.tensor([[4, 7, 5, 3, 6, 8], [10, 4, 8, 3, 9, 2]])
    bias = None
    if scheme == "t5":
        bias = t5_bias(model.decoder.blocks[0].self_attn.position, 6, causal=True)
    hidden = stack_by_hand(
        model.decoder, embed_by_hand(model, model.decoder, tokens), causal(2, 6), "relu", bias=bias
    )
    with torch.no_grad():
        logits = model(tokens)
    torch.testing.assert_close(logits, logits_by_hand(model, hidden), rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Initialisation and dropout: what the config promises


def test_token_embedding_starts_with_std_d_model_to_the_minus_half():
    # Pins: Vaswani et al.'s initialisation, so that sqrt(d_model) times a token vector has
    # entries of unit scale (torch's default N(0, 1) would make them sqrt(d_model) times larger).
    torch.manual_seed(0)
    model = build_model(config("encoder", d_model=64, num_heads=4), 2000)
    std = float(model.token_embedding.weight.detach().std())
    assert std == pytest.approx(64**-0.5, rel=0.02)


def test_dropout_acts_on_embeddings_residual_branches_and_attention_weights():
    # Pins: ModelConfig.dropout reaches every place its comment names: after each stack's input
    # embedding, on each block's residual branches, and on the weights of self- and
    # cross-attention (encoder-decoder, 2 layers per stack: 2 + 4 dropout modules, 6 attentions).
    from relpos.layers import MultiheadAttention

    torch.manual_seed(0)
    model = build_model(config("encoder-decoder", dropout=0.3), VOCAB)
    modules = list(model.modules())
    dropouts = [m.p for m in modules if isinstance(m, torch.nn.Dropout)]
    attentions = [m.dropout for m in modules if isinstance(m, MultiheadAttention)]
    assert dropouts == [0.3] * 6
    assert attentions == [0.3] * 6


# ---------------------------------------------------------------------------------------------
# Cached greedy decoding against a brute-force uncached loop


def brute_greedy(logits_of, tokens, steps):
    """Append the argmax of the last position's logits, recomputing the whole prefix each step."""
    for _ in range(steps):
        tokens = torch.cat((tokens, logits_of(tokens)[:, -1].argmax(-1, keepdim=True)), 1)
    return tokens


def test_encoder_decoder_generate_starts_from_the_bos_it_is_given():
    # Pins: generate feeds ``bos`` itself (not the tokenizer's BOS = 1) as the first decoder input.
    model = model_of("encoder-decoder", "learned", seed=3)
    source = torch.tensor([[4, 7, 5, 9], [10, 4, 0, 0]])
    padding = source == 0

    def brute(bos):
        start = torch.full((2, 1), bos)
        return brute_greedy(lambda t: model(source, t, padding), start, 7)[:, 1:]

    expected = brute(9)
    assert not torch.equal(expected, brute(1))  # else this example could not tell them apart
    assert torch.equal(model.generate(source, padding, bos=9, eos=None, max_new_tokens=7), expected)


@pytest.mark.parametrize("length", [1, 2, 3])
def test_decoder_generate_continues_every_token_of_a_short_prompt(length):
    # Pins: every prompt token but the last goes into the caches before decoding starts, for the
    # shortest prompts too (a prompt of two tokens must not lose its first one).
    model = model_of("decoder", "learned", seed=4)
    prompt = torch.tensor([[4, 9, 6], [8, 5, 10]])[:, :length]
    expected = brute_greedy(model, prompt, 6)[:, length:]
    assert torch.equal(model.generate(prompt, eos=None, max_new_tokens=6), expected)


def test_special_token_ids_span_exactly_the_vocabulary():
    # Pins: the bounds of a special token id, [0, vocab_size), at both ends, and the refusal of
    # a missing or bool bos (True would pass as the id 1).
    seq2seq = model_of("encoder-decoder")
    decoder = model_of("decoder")
    source = torch.tensor([[4, 7]])
    assert decoder.generate(source, eos=0, max_new_tokens=2).shape[0] == 1
    assert seq2seq.generate(source, bos=0, eos=VOCAB - 1, max_new_tokens=2).shape[0] == 1
    with pytest.raises(ValueError, match=rf"eos must be a token id in \[0, {VOCAB}\).*got {VOCAB}"):
        decoder.generate(source, eos=VOCAB, max_new_tokens=2)
    with pytest.raises(ValueError, match=rf"bos must be a token id in \[0, {VOCAB}\).*got {VOCAB}"):
        seq2seq.generate(source, bos=VOCAB, eos=2, max_new_tokens=2)
    for bad in (None, True):
        with pytest.raises(TypeError, match=r"bos must be an int token id"):
            seq2seq.generate(source, bos=bad, eos=2, max_new_tokens=2)


# ---------------------------------------------------------------------------------------------
# checkpoint.py: atomic JSON, the checkpoint swap, RNG states, damaged files


@pytest.mark.skipif(os.name != "posix", reason="file modes and the umask are POSIX")
def test_atomic_write_json_is_readable_by_others_and_ends_its_last_line(tmp_path):
    # Pins: the file gets the permissions a plain open() would (0o666 less the umask), not
    # mkstemp's private 0o600, and the text is indented JSON with a final newline.
    from relpos.training.checkpoint import atomic_write_json

    obj = {"a": [1, 2.5, None], "b": {"c": "d"}}
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "x.json", obj)
        os.umask(0o077)
        atomic_write_json(tmp_path / "y.json", obj)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "y.json").stat().st_mode) == 0o600
    assert (tmp_path / "x.json").read_text() == json.dumps(obj, indent=2) + "\n"


def test_atomic_write_json_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    # Pins: a value JSON cannot hold raises, the previous file stays, and the temporary file
    # is removed rather than left next to it.
    from relpos.training.checkpoint import atomic_write_json

    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"exact": 1.0})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"exact": object()})
    assert json.loads(path.read_text()) == {"exact": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_rng_state_round_trip_through_json_restores_every_generator():
    # Pins: set_rng_state(rng_state()) puts back Python's, NumPy's and torch's generators,
    # including the cached second normal deviate of Python's gauss() and NumPy's legacy
    # generator (a state that dropped it would give a different next normal draw).
    from relpos.training.checkpoint import rng_state, set_rng_state

    def draws():
        return (
            random.random(), random.gauss(0, 1), np.random.rand(), np.random.standard_normal(),
            torch.rand(3).tolist(),
        )  # fmt: skip

    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        random.gauss(0, 1)  # leaves the pair's second deviate cached
        np.random.standard_normal()  # likewise
        state = json.loads(json.dumps(rng_state()))
        first = draws()
        random.seed(123)
        np.random.seed(123)
        torch.manual_seed(123)
        set_rng_state(state)
        assert draws() == first
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


def test_rng_state_saves_and_restores_the_cuda_generators(monkeypatch):
    # The CUDA branch of rng_state/set_rng_state, on the CPU: with CUDA faked as initialised on
    # two devices, every device's state is saved and put back as the same bytes; a checkpoint
    # from a machine with another device count leaves the CUDA generators alone.
    from relpos.training.checkpoint import rng_state, set_rng_state

    states = [torch.arange(8, dtype=torch.uint8), torch.arange(8, 16, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    state = json.loads(json.dumps(rng_state()))
    cpu_state = torch.get_rng_state()
    set_rng_state(state)
    assert [s.tolist() for s in restored] == [s.tolist() for s in states]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    restored.clear()
    set_rng_state(state)
    assert restored == []
    torch.set_rng_state(cpu_state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rng_state_round_trip_on_a_real_gpu():
    from relpos.training.checkpoint import rng_state, set_rng_state

    torch.cuda.init()
    saved = torch.cuda.get_rng_state_all()
    try:
        state = json.loads(json.dumps(rng_state()))
        first = torch.rand(4, device="cuda").tolist()
        torch.cuda.manual_seed_all(123)
        set_rng_state(state)
        assert torch.rand(4, device="cuda").tolist() == first
    finally:
        torch.cuda.set_rng_state_all(saved)


def tiny_training_pieces(num_layers=1):
    from relpos.training import TrainConfig, make_optimizer

    torch.manual_seed(0)
    model = build_model(config("encoder", num_layers=num_layers), VOCAB)
    optimizer = make_optimizer(model, TrainConfig(model=model.config))
    return model, optimizer


def test_a_save_after_a_kill_mid_save_starts_clean_and_keeps_one_checkpoint(tmp_path):
    # Pins: a checkpoint.tmp left half-written by a kill is discarded, not reused (its stray
    # files would join the next checkpoint), and a checkpoint.old left by a kill just after the
    # swap is removed before the next swap (renaming onto a non-empty folder fails).
    from relpos.training.checkpoint import read_checkpoint_state, save_checkpoint

    model, optimizer = tiny_training_pieces()
    save_checkpoint(tmp_path, model, optimizer, {"step": 1})
    shutil.copytree(tmp_path / "checkpoint", tmp_path / "checkpoint.old")
    (tmp_path / "checkpoint.tmp").mkdir()
    (tmp_path / "checkpoint.tmp" / "stray.bin").write_bytes(b"half")
    save_checkpoint(tmp_path, model, optimizer, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    files = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "state.json"]
    assert read_checkpoint_state(tmp_path)["step"] == 2


def test_the_newest_complete_checkpoint_is_the_one_loaded(tmp_path):
    # Pins: with both folders present (killed after the swap, before .old was removed) the
    # newer "checkpoint" wins; a folder without state.json is not a checkpoint at all.
    from relpos.training.checkpoint import load_checkpoint, read_checkpoint_state, save_checkpoint

    model, optimizer = tiny_training_pieces()
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    for step in (1, 2):
        save_checkpoint(tmp_path / str(step), model, optimizer, {"step": step})
    run = tmp_path / "run"
    run.mkdir()
    os.replace(tmp_path / "1" / "checkpoint", run / "checkpoint.old")
    os.replace(tmp_path / "2" / "checkpoint", run / "checkpoint")
    assert load_checkpoint(run, model)["step"] == 2
    assert read_checkpoint_state(run)["step"] == 2
    empty = tmp_path / "empty"
    (empty / "checkpoint").mkdir(parents=True)
    assert read_checkpoint_state(empty) is None
    assert load_checkpoint(empty, model) is None


def test_a_float64_models_optimizer_state_comes_back_bit_for_bit(tmp_path):
    # Pins: the optimizer tensors are stored in their own dtype; a float64 model's AdamW
    # moments must not pass through float32 on the way.
    from relpos.training import TrainConfig, make_optimizer
    from relpos.training.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_model(config("encoder"), VOCAB).double()
    optimizer = make_optimizer(model, TrainConfig(model=model.config))
    tokens = torch.randint(4, VOCAB, (2, 5))
    model(tokens).logsumexp(-1).mean().backward()
    optimizer.step()
    save_checkpoint(tmp_path, model, optimizer, {"step": 1})
    fresh = build_model(config("encoder"), VOCAB).double()
    fresh_optimizer = make_optimizer(fresh, TrainConfig(model=fresh.config))
    load_checkpoint(tmp_path, fresh, fresh_optimizer)
    saved, loaded = optimizer.state_dict()["state"], fresh_optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    for index, per_param in saved.items():
        for name, value in per_param.items():
            assert loaded[index][name].dtype == value.dtype, (index, name)
            assert torch.equal(loaded[index][name], value), (index, name)


def test_loading_weights_into_another_architecture_is_refused(tmp_path):
    # Pins: strict loading; a model with a layer the checkpoint lacks must not silently keep
    # that layer's random weights.
    from relpos.training.checkpoint import load_checkpoint, save_checkpoint

    model, optimizer = tiny_training_pieces(num_layers=1)
    save_checkpoint(tmp_path, model, optimizer, {"step": 1})
    deeper, _ = tiny_training_pieces(num_layers=2)
    with pytest.raises(RuntimeError, match="blocks.1"):
        load_checkpoint(tmp_path, deeper)


def test_load_run_says_what_a_folder_lacks(tmp_path):
    # Pins: the two FileNotFoundErrors of load_run, each saying what is missing, rather than a
    # bare "No such file" or a TypeError from a state that is not there.
    from relpos.training import TrainConfig, load_run

    with pytest.raises(FileNotFoundError, match=r"is not a run folder: it has no config\.json"):
        load_run(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(TrainConfig().to_dict()))
    with pytest.raises(FileNotFoundError, match=r"has no complete checkpoint yet"):
        load_run(tmp_path)


def test_damaged_json_names_the_file_and_gives_the_callers_advice(tmp_path):
    # Pins: a file that is not UTF-8 counts as damaged like a truncated one, and read_json says
    # the advice it is given (not the checkpoint's).
    from relpos.training.checkpoint import read_checkpoint_state, read_json

    path = tmp_path / "config.json"
    path.write_text('{"a": ')
    with pytest.raises(ValueError, match=r"config\.json is damaged .*; restore it from a backup"):
        read_json(path, "restore it from a backup")
    folder = tmp_path / "run" / "checkpoint"
    folder.mkdir(parents=True)
    (folder / "state.json").write_bytes(b'{"step": "\xff\xfe"}')
    with pytest.raises(ValueError, match=r"state\.json is damaged .*delete that checkpoint"):
        read_checkpoint_state(tmp_path / "run")


# ---------------------------------------------------------------------------------------------
# config.py: ModelConfig and json_options


def test_json_options_gives_what_a_json_round_trip_gives():
    # Pins: None kept, tuples and ranges turned into lists at any depth, inside lists and dicts
    # alike, so a config equals itself read back from config.json.
    from relpos.models.config import json_options

    options = {"a": None, "b": (1, (2, 3)), "c": {"d": (4,), "e": range(2), "f": {"g": (5,)}}}
    assert json_options(options, "x") == {
        "a": None, "b": [1, [2, 3]], "c": {"d": [4], "e": [0, 1], "f": {"g": [5]}},
    }  # fmt: skip
    assert json_options(options, "x") == json.loads(json.dumps(options, default=list))


@pytest.mark.parametrize(
    "options, error, match",
    [
        ([("max_distance", 3)], TypeError, r"x must be a dict, got list"),
        ({3: 1}, TypeError, r"x keys must be str, got 3"),
        ({"a": {1: 2}}, TypeError, r"x: a must be a JSON value .*got dict"),
        ({"a": [1, {2}]}, TypeError, r"x: a\[1\] must be a JSON value .*got set"),
    ],
)
def test_json_options_refuses_what_json_cannot_hold(options, error, match):
    # Pins: each refusal json.dumps would make later (a non-str key would come back as a
    # str, a set not at all), here with the path to the value.
    from relpos.models.config import json_options

    with pytest.raises(error, match=match):
        json_options(options, "x")


@pytest.mark.parametrize("name", ["d_model", "num_heads", "num_layers", "d_ff", "max_len"])
@pytest.mark.parametrize("value", [0, True, 2.0])
def test_model_config_sizes_are_positive_ints_and_not_bools(name, value):
    # Pins: every size field is checked, True is not taken for 1, and 0 is refused.
    with pytest.raises(ValueError, match=rf"{name} must be a positive int, got {value!r}"):
        ModelConfig(**{name: value})


def test_model_config_refuses_a_bool_dropout_and_unknown_fields():
    # Pins: True is not a dropout of 1.0 (bool is an int), and a config.json field this version
    # does not know is named rather than silently dropped.
    with pytest.raises(TypeError, match=r"dropout must be a float in \[0, 1\), got True"):
        ModelConfig(dropout=True)
    with pytest.raises(ValueError, match=r"no field\(s\) depth, width; its fields are: .*arch"):
        ModelConfig.from_dict({"arch": "decoder", "width": 3, "depth": 2})


def test_build_model_refuses_a_dict_config_and_a_bool_or_empty_vocabulary():
    # Pins: build_model's own argument checks, which the model classes behind it do not repeat.
    with pytest.raises(TypeError, match=r"config must be a ModelConfig, got dict"):
        build_model({"arch": "decoder"}, VOCAB)
    for bad in (True, 0):
        with pytest.raises(ValueError, match=rf"vocab_size must be a positive int, got {bad!r}"):
            build_model(config("decoder"), bad)


def test_model_config_defaults_are_ontanon_et_als_small_model():
    # Pins: the defaults the module docstring names (Ontañón et al. 2022: 2 layers, d = 64,
    # 4 heads, feed-forward 256, dropout 0.1, on attention weights too), with Shaw positions,
    # ReLU, tied embeddings and a 512-row table, which every stored result that does not say
    # otherwise was trained with.
    expected = dict(
        arch="encoder-decoder", d_model=64, num_heads=4, num_layers=2, d_ff=256, dropout=0.1,
        attention_dropout=None, scheme="shaw", scheme_options={}, max_len=512,
        activation="relu", tie_embeddings=True,
    )  # fmt: skip
    assert ModelConfig().attention_dropout_p == 0.1
    assert ModelConfig().to_dict() == expected


# ---------------------------------------------------------------------------------------------
# tokenizer.py and precision.py


def test_tokenizer_ids_and_names_of_the_special_tokens():
    # Pins: the four special tokens and their ids as the module docstring fixes them, EOS kept
    # as a token when decoding is told not to stop at it, and an empty vocabulary refused.
    from relpos.training.tokenizer import BOS, EOS, PAD, SEP, Tokenizer

    assert (PAD, BOS, EOS, SEP) == (0, 1, 2, 3)
    tokenizer = Tokenizer(["x", "y"])
    assert tokenizer.decode([0, 1, 3, 4, 2, 5]) == ["<pad>", "<bos>", "<sep>", "x"]
    assert tokenizer.decode([4, 2, 5], stop_at_eos=False) == ["x", "<eos>", "y"]
    with pytest.raises(ValueError, match="vocabulary is empty"):
        Tokenizer([])


def test_tokenizer_error_shows_the_first_twenty_tokens_and_the_count():
    # Pins: a large vocabulary is cut to its first twenty tokens plus a count in the error, and
    # a vocabulary of exactly twenty is shown whole, without the count.
    from relpos.training.tokenizer import Tokenizer

    vocabulary = [f"t{i}" for i in range(25)]
    shown = ", ".join(repr(t) for t in vocabulary[:20])
    with pytest.raises(ValueError) as error:
        Tokenizer(vocabulary).encode(["t1", "zz"])
    assert str(error.value) == f"token 'zz' is not in the task vocabulary: {shown}, … (25 in all)"
    with pytest.raises(ValueError) as error:
        Tokenizer(vocabulary[:20]).encode(["zz"])
    assert str(error.value) == f"token 'zz' is not in the task vocabulary: {shown}"


def test_precision_contexts_compute_in_their_dtype_and_refuse_other_names():
    # Pins: "fp32" leaves matrix products in float32, "bf16" runs them in bfloat16 (not
    # float16, which would need loss scaling), anything else is refused by autocast itself.
    from relpos.training.precision import autocast

    a = torch.randn(4, 4)
    with autocast("fp32", "cpu"):
        assert (a @ a).dtype == torch.float32
    with autocast("bf16", torch.device("cpu")):
        assert (a @ a).dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"precision must be one of fp32, bf16, got 'fp16'"):
        autocast("fp16", "cpu")


# ---------------------------------------------------------------------------------------------
# LoadedRun.predict with a scripted tagger


class Tagger(torch.nn.Module):
    """An encoder-only stand-in: position ``i`` predicts ``script[id]`` for the id there; it
    records the padding mask it is given and the dtype a matrix product gets in its forward."""

    arch = "encoder"

    def __init__(self, script, vocab):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # predict reads the device from it
        self.script, self.vocab = script, vocab
        self.paddings, self.dtypes = [], []

    def forward(self, tokens, padding):
        self.paddings.append(padding)
        self.dtypes.append((self.weight[:, None] @ self.weight[None]).dtype)
        out = torch.zeros(*tokens.shape, self.vocab)
        for index, token in enumerate(tokens.flatten().tolist()):
            out.view(-1, self.vocab)[index, self.script[token]] = 1.0
        return out


def test_encoder_only_predictions_keep_eos_and_stop_at_the_sources_length():
    # Pins: an encoder-only model gives exactly one output per source token, EOS included (it
    # is a tag like any other, not a stop), and nothing for the padding of a shorter source,
    # which the model is told about.
    from relpos.training import TrainConfig
    from relpos.training.checkpoint import LoadedRun
    from relpos.training.tokenizer import EOS, PAD, Tokenizer

    tokenizer = Tokenizer(["a", "b", "c"])  # a = 4, b = 5, c = 6
    script = {4: EOS, 5: 6, 6: 4, PAD: 5}
    tagger = Tagger(script, len(tokenizer))
    run = LoadedRun(TrainConfig(model=ModelConfig(arch="encoder")), tagger, tokenizer, 0, None)
    assert run.predict(["bab", "c"]) == [["c", "<eos>", "c"], ["a"]]
    (padding,) = tagger.paddings
    assert padding.tolist() == [[False, False, False], [False, True, True]]


def test_predict_computes_in_the_runs_precision():
    # Pins: a bf16 run's predictions are decoded under bf16 autocast, as its evaluation was.
    from relpos.training import TrainConfig
    from relpos.training.checkpoint import LoadedRun
    from relpos.training.tokenizer import Tokenizer

    tokenizer = Tokenizer(["a"])
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        tagger = Tagger({4: 4, 0: 4}, len(tokenizer))
        config = TrainConfig(model=ModelConfig(arch="encoder"), precision=precision)
        LoadedRun(config, tagger, tokenizer, 0, None).predict(["a"])
        assert tagger.dtypes == [dtype]


class Continuer(torch.nn.Module):
    """A decoder-only stand-in whose generate records its prompt and budget and emits that many
    copies of the task token 4 (never EOS)."""

    arch = "decoder"

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def generate(self, prompt, *, eos, max_new_tokens):
        self.calls.append((prompt.tolist(), eos, max_new_tokens))
        return torch.full((1, max_new_tokens), 4)


def test_decoder_only_default_budget_is_what_the_positions_leave_and_at_least_one():
    # Pins: the prompt is the source then SEP, the default budget is max_len minus the source
    # minus SEP (8 - 2 - 1 = 5 here), and a source that leaves no room still gets one token.
    from relpos.training import TrainConfig
    from relpos.training.checkpoint import LoadedRun
    from relpos.training.tokenizer import EOS, SEP, Tokenizer

    tokenizer = Tokenizer(["a", "b"])  # a = 4, b = 5
    model = Continuer()
    config = TrainConfig(model=ModelConfig(arch="decoder", max_len=8))
    run = LoadedRun(config, model, tokenizer, 0, None)
    assert run.predict(["ab", "b" * 7, "a"], max_new_tokens=None) == [
        ["a"] * 5, ["a"], ["a"] * 6,
    ]  # fmt: skip
    assert model.calls == [
        ([[4, 5, SEP]], EOS, 5), ([[5] * 7 + [SEP]], EOS, 1), ([[4, SEP]], EOS, 6),
    ]  # fmt: skip


class Translator(torch.nn.Module):
    """An encoder-decoder stand-in: generate records its arguments and answers each row with
    the task token 4 then EOS (and EOS after that, as greedy_decode pads finished rows)."""

    arch = "encoder-decoder"

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def generate(self, source, padding, *, bos, eos, max_new_tokens):
        self.calls.append((source.tolist(), padding.tolist(), bos, eos, max_new_tokens))
        out = torch.full((source.shape[0], max_new_tokens), 2)
        out[:, 0] = 4
        return out


def test_encoder_decoder_predict_decodes_one_padded_batch_that_can_stop_at_eos():
    # Pins: the sources go in as one right-padded batch with its padding mask, decoding starts
    # from BOS and is told EOS, so that it stops once every row has ended instead of running
    # the whole max_len budget, and the output is cut at EOS.
    from relpos.training import TrainConfig
    from relpos.training.checkpoint import LoadedRun
    from relpos.training.tokenizer import BOS, EOS, PAD, Tokenizer

    tokenizer = Tokenizer(["a", "b"])  # a = 4, b = 5
    model = Translator()
    config = TrainConfig(model=ModelConfig(max_len=9))
    assert LoadedRun(config, model, tokenizer, 0, None).predict(["ab", "b"]) == [["a"], ["a"]]
    assert model.calls == [
        ([[4, 5], [5, PAD]], [[False, False], [False, True]], BOS, EOS, 9),
    ]  # fmt: skip
