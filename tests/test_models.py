"""Models: every architecture × every registered scheme, cached decoding, sharing, errors."""

import dataclasses

import pytest
import torch

import relpos
from relpos.layers import KVCache, MultiheadAttention
from relpos.models import ARCHS, ModelConfig, build_model, greedy_decode
from relpos.schemes import AttentionPosition, ShawScheme

SCHEMES = relpos.available_schemes()  # new schemes are covered without touching this file
VOCAB = 13


def tiny(arch: str, scheme: str, **changes) -> ModelConfig:
    fields = dict(
        arch=arch,
        d_model=16,
        num_heads=2,
        num_layers=2,
        d_ff=32,
        dropout=0.0,
        scheme=scheme,
        max_len=64,
    )
    return ModelConfig(**{**fields, **changes})


def forward(model, tokens, padding=None):
    if model.arch == "encoder-decoder":
        return model(tokens, tokens[:, :5], padding)
    if model.arch == "decoder":
        return model(tokens)
    return model(tokens, padding)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_and_scheme_trains(arch, scheme):
    torch.manual_seed(0)
    model = build_model(tiny(arch, scheme), VOCAB)
    tokens = torch.randint(4, VOCAB, (3, 7))
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[0, 5:] = True
    logits = forward(model, tokens, padding if arch != "decoder" else None)
    assert logits.shape == (3, 5 if arch == "encoder-decoder" else 7, VOCAB)
    assert torch.isfinite(logits).all()
    logits.logsumexp(-1).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def _naive_greedy(model, source, padding, steps):
    """Greedy decoding that recomputes the whole prefix at every step (no cache). A scheme that
    draws positions per sequence (randomized) draws once, for the tokens generate() feeds."""
    batch = source.shape[0]
    if model.arch == "encoder-decoder":
        memory = model.encode(source, padding)
        tokens = torch.full((batch, 1), 1, dtype=torch.long)  # BOS = 1
        with model.decoder.one_draw(batch, steps, "cpu"):
            for _ in range(steps):
                nxt = model.decode(tokens, memory, padding)[:, -1].argmax(-1, keepdim=True)
                tokens = torch.cat((tokens, nxt), 1)
        return tokens[:, 1:]
    tokens = source
    with model.decoder.one_draw(batch, source.shape[1] + steps - 1, "cpu"):
        for _ in range(steps):
            tokens = torch.cat((tokens, model(tokens)[:, -1].argmax(-1, keepdim=True)), 1)
    return tokens[:, source.shape[1] :]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("arch", ["encoder-decoder", "decoder"])
def test_cached_decoding_equals_full_recomputation(arch, scheme):
    torch.manual_seed(1)
    model = build_model(tiny(arch, scheme), VOCAB).double().eval()
    source = torch.randint(4, VOCAB, (4, 6))
    padding = None
    if arch == "encoder-decoder":
        padding = torch.zeros(4, 6, dtype=torch.bool)
        padding[1, 4:] = True  # a padded source row: cross-attention must ignore it
    steps = 9  # beyond the source length, so positions keep growing past it
    # Logits step by step: cached (one new token per call) vs recomputed from scratch, both
    # reading one draw of positions for a scheme that draws them (randomized).
    caches = [KVCache() for _ in range(2)]
    tokens = torch.randint(4, VOCAB, (4, steps))
    memory = model.encode(source, padding) if arch == "encoder-decoder" else None
    with model.decoder.one_draw(4, steps, "cpu"):
        if arch == "encoder-decoder":
            full = model.decode(tokens, memory, padding)
            cached = torch.cat(
                [
                    model.decode(tokens[:, t : t + 1], memory, padding, caches=caches)
                    for t in range(steps)
                ],
                1,
            )
        else:
            full = model(tokens)
            cached = [model(tokens[:, t : t + 1], caches=caches) for t in range(steps)]
            cached = torch.cat(cached, 1)
    torch.testing.assert_close(cached, full, rtol=1e-9, atol=1e-9)
    # And generate() equals naive greedy; eos=None: no early stop. The same seed before each
    # gives a drawing scheme the same encoder and decoder positions in both.
    torch.manual_seed(2)
    if arch == "encoder-decoder":
        generated = model.generate(source, padding, bos=1, eos=None, max_new_tokens=steps)
    else:
        generated = model.generate(source, eos=None, max_new_tokens=steps)
    torch.manual_seed(2)
    assert torch.equal(generated, _naive_greedy(model, source, padding, steps))


def test_greedy_decode_stops_and_pads_finished_rows_with_eos():
    # Row 0 says EOS (2) at once, row 1 after two tokens; decoding stops when both are done.
    script = iter([[2, 5], [7, 6], [9, 2], [8, 8]])

    def step(tokens):
        logits = torch.zeros(2, 1, 10)
        for row, token in enumerate(next(script)):
            logits[row, 0, token] = 1.0
        return logits

    out = greedy_decode(step, torch.ones(2, 1, dtype=torch.long), eos=2, max_new_tokens=10)
    assert out.tolist() == [[2, 2, 2], [5, 6, 2]]


def test_relative_terms_in_self_attention_only():
    model = build_model(tiny("encoder-decoder", "shaw"), VOCAB)
    for block in model.decoder.blocks:
        assert type(block.self_attn.position).__name__ == "ShawRelativePosition"
        assert type(block.cross_attn.position) is AttentionPosition  # content-only
    assert model.encoder.input_encoding is None and model.decoder.input_encoding is None


def test_absolute_schemes_add_input_encodings_per_stack():
    model = build_model(tiny("encoder-decoder", "learned"), VOCAB)
    assert model.encoder.input_encoding is not model.decoder.input_encoding
    assert all(type(b.self_attn.position) is AttentionPosition for b in model.encoder.blocks)


@dataclasses.dataclass
class SharedShaw(ShawScheme):
    shared_across_layers = True  # as T5 does; ShawScheme itself keeps tables per layer


def test_shared_across_layers_builds_one_module_per_stack():
    shared = build_model(tiny("decoder", SharedShaw(max_distance=2)), VOCAB)
    per_layer = build_model(tiny("decoder", ShawScheme(max_distance=2)), VOCAB)
    first, second = (b.self_attn.position for b in shared.decoder.blocks)
    assert first is second
    assert per_layer.decoder.blocks[0].self_attn.position is not (
        per_layer.decoder.blocks[1].self_attn.position
    )
    table = 2 * (2 * 2 + 1) * 8  # key + value tables of (2k+1, head_dim)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(per_layer) - count(shared) == table


def test_unknown_scheme_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: .*shaw"):
        build_model(tiny("decoder", "no-such-scheme"), VOCAB)
    with pytest.raises(ValueError, match="max_distance"):
        build_model(tiny("decoder", "shaw", scheme_options={"k": 3}), VOCAB)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"arch": "seq2seq"}, "arch must be one of"),
        ({"d_model": 30, "num_heads": 4}, "divisible"),
        ({"num_layers": 0}, "num_layers"),
        ({"dropout": 1.0}, "dropout"),
        ({"attention_dropout": -0.1}, "attention_dropout must be a float in"),
        ({"attention_dropout": 1.0}, "attention_dropout must be a float in"),
        ({"activation": "tanh"}, "activation"),
    ],
)
def test_model_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(changes.pop("arch", "decoder"), "none", **changes)


@pytest.mark.parametrize("arch", ["encoder-decoder", "decoder"])
def test_attention_dropout_sets_the_attention_layers_alone(arch):
    """``attention_dropout`` (None: ``dropout``) reaches self- and cross-attention; ``dropout``
    keeps the embeddings' and residual branches'. At 0 a GPU can run Shaw's fused kernel."""

    def rates(model):
        attention = {m.dropout for m in model.modules() if isinstance(m, MultiheadAttention)}
        other = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
        return attention, other

    assert rates(build_model(tiny(arch, "shaw", dropout=0.2), VOCAB)) == ({0.2}, {0.2})
    separate = tiny(arch, "shaw", dropout=0.2, attention_dropout=0.0)
    assert rates(build_model(separate, VOCAB)) == ({0.0}, {0.2})
    with pytest.raises(TypeError, match="attention_dropout must be a float"):
        tiny(arch, "shaw", attention_dropout="0.1")


def test_learned_positions_past_max_len_raise_a_clear_error():
    model = build_model(tiny("decoder", "learned", max_len=8), VOCAB)
    model(torch.randint(4, VOCAB, (1, 8)))  # the last row of the table is fine
    with pytest.raises(ValueError, match="max_len=8"):
        model(torch.randint(4, VOCAB, (1, 9)))
    # decoding one token at a time reaches the same limit through the cache offset
    with pytest.raises(ValueError, match="max_len=8"):
        model.eval().generate(torch.randint(4, VOCAB, (1, 4)), eos=0, max_new_tokens=6)


def test_tokens_must_be_long_matrix():
    model = build_model(tiny("encoder", "none"), VOCAB)
    with pytest.raises(ValueError, match=r"\(B, L\) int64"):
        model(torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("scheme", ["none", "shaw", "t5", "alibi", "rope", "learned"])
@pytest.mark.parametrize("arch", ARCHS)
def test_empty_batch_gives_empty_logits(arch, scheme):
    model = build_model(tiny(arch, scheme), VOCAB).eval()
    tokens = torch.randint(4, VOCAB, (0, 7))
    assert forward(model, tokens).shape == (0, 5 if arch == "encoder-decoder" else 7, VOCAB)


@pytest.mark.parametrize("scheme", ["none", "shaw", "t5", "alibi", "rope", "learned"])
def test_encoder_on_an_empty_sequence_gives_empty_logits(scheme):
    model = build_model(tiny("encoder", scheme), VOCAB).eval()
    assert model(torch.zeros(2, 0, dtype=torch.long)).shape == (2, 0, VOCAB)


def test_generate_needs_a_prompt_and_a_non_negative_budget():
    model = build_model(tiny("decoder", "shaw"), VOCAB).eval()
    with pytest.raises(ValueError, match=r"prompt must hold at least one token .*got \(2, 0\)"):
        model.generate(torch.zeros(2, 0, dtype=torch.long), eos=2, max_new_tokens=3)
    with pytest.raises(ValueError, match=r"max_new_tokens must be an int >= 0, got -1"):
        model.generate(torch.full((2, 3), 5), eos=2, max_new_tokens=-1)
    assert model.generate(torch.full((2, 3), 5), eos=2, max_new_tokens=0).shape == (2, 0)
    seq2seq = build_model(tiny("encoder-decoder", "shaw"), VOCAB).eval()
    with pytest.raises(ValueError, match=r"max_new_tokens must be an int >= 0, got 2.0"):
        seq2seq.generate(torch.full((2, 3), 5), bos=1, eos=2, max_new_tokens=2.0)


def test_generate_needs_special_tokens_of_the_vocabulary():
    decoder = build_model(tiny("decoder", "shaw"), VOCAB).eval()
    seq2seq = build_model(tiny("encoder-decoder", "shaw"), VOCAB).eval()
    prompt = torch.full((2, 3), 5)
    # An eos the model cannot emit would never stop decoding early; a float bos was truncated.
    with pytest.raises(ValueError, match=rf"eos must be a token id in \[0, {VOCAB}\).*got 99"):
        decoder.generate(prompt, eos=99, max_new_tokens=3)
    with pytest.raises(TypeError, match=r"bos must be an int token id, got float 1.5"):
        seq2seq.generate(prompt, bos=1.5, eos=2, max_new_tokens=3)
    with pytest.raises(ValueError, match=r"eos must be a token id .*got -1"):
        seq2seq.generate(prompt, bos=1, eos=-1, max_new_tokens=3)


def test_padding_errors_name_the_models_argument():
    seq2seq = build_model(tiny("encoder-decoder", "shaw"), VOCAB)
    encoder = build_model(tiny("encoder", "shaw"), VOCAB)
    tokens = torch.full((2, 4), 5)
    with pytest.raises(ValueError, match=r"source_padding must have the shape of its tokens, "
                       r"\(2, 4\), got \(2, 3\)"):  # fmt: skip
        seq2seq(tokens, tokens, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"padding must be a bool tensor, True at padding, got "
                       r"torch.int64"):  # fmt: skip
        encoder(tokens, torch.zeros(2, 4, dtype=torch.long))


def test_source_and_target_batch_sizes_must_agree():
    model = build_model(tiny("encoder-decoder", "shaw"), VOCAB)
    with pytest.raises(ValueError, match=r"source has 2 rows but target has 1"):
        model(torch.full((2, 4), 5), torch.full((1, 3), 5))


def test_caches_must_cover_every_layer():
    model = build_model(tiny("decoder", "shaw"), VOCAB).eval()
    tokens = torch.full((2, 1), 5)
    with pytest.raises(ValueError, match=r"caches must hold one KVCache per layer \(2\), got 1"):
        model(tokens, caches=[KVCache()])
    with pytest.raises(ValueError, match=r"caches must hold one KVCache per layer \(2\), got 0"):
        model(tokens, caches=[])
    with pytest.raises(TypeError, match=r"caches must be a list of KVCache, got KVCache"):
        model(tokens, caches=KVCache())
    with pytest.raises(TypeError, match=r"caches must be a list of KVCache, got a dict"):
        model(tokens, caches=[KVCache(), {}])
    seq2seq = build_model(tiny("encoder-decoder", "shaw"), VOCAB).eval()
    memory = seq2seq.encode(torch.full((2, 4), 5))
    with pytest.raises(ValueError, match=r"caches must hold one KVCache per layer \(2\), got 3"):
        seq2seq.decode(tokens, memory, caches=[KVCache() for _ in range(3)])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("bad", [VOCAB, -1])
def test_token_ids_outside_the_vocabulary_are_refused(arch, bad):
    model = build_model(tiny(arch, "shaw"), VOCAB)
    tokens = torch.full((2, 7), 5)
    tokens[1, 3] = bad
    with pytest.raises(ValueError, match=rf"token ids must be in \[0, {VOCAB}\).*got {bad}"):
        forward(model, tokens)
