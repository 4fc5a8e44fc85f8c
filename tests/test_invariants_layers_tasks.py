"""Behaviours of the multi-head attention layer, the SCAN and TSV tasks and the plots' data
functions that an earlier test suite did not pin down (found by mutation testing).

For each test here, a small wrong change to the library (a bias that is never copied, a dropout
that cross-attention ignores, a causal mask that forgets the query offset, a grammar rule
dropped, an off-by-one length threshold) left every earlier test passing. The expected values
come from an independent formulation: torch's own layer, attention written out with plain tensor
operations, RoFormer's rotation written out with complex numbers, the published SCAN counts, a
worked example computed by hand, or a property checked directly, never from the implementation
under test.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from test_invariants import complex_rope  # RoFormer Eq. 34, one complex number at a time

import relpos
from relpos.schemes import AttentionPosition
from relpos.tasks import ScanTask, TsvTask, interpret, read_tsv

# ---------------------------------------------------------------------------------------------
# multihead.py


def _torch_layer(seed=0, **options):
    """A torch.nn.MultiheadAttention with random (non-zero) biases, float64, eval mode."""
    torch.manual_seed(seed)
    theirs = torch.nn.MultiheadAttention(8, 2, batch_first=True, **options).double().eval()
    with torch.no_grad():
        for name, parameter in theirs.named_parameters():
            if "bias" in name:
                parameter.normal_()
    return theirs


def _plain_attention(layer, xq, xkv, allowed=None, q_positions=None, k_positions=None):
    """softmax(q·k / sqrt(D)) v per head on ``layer``'s projections, written out; ``allowed
    (Lq, Lk)`` True where a query may look; RoPE on q and k at the given positions if any."""
    batch, lq, width = xq.shape
    heads = layer.num_heads
    size = width // heads

    def split(x, proj):
        return (x @ proj.weight.T + proj.bias).view(batch, x.shape[1], heads, size).transpose(1, 2)

    q, k, v = split(xq, layer.q_proj), split(xkv, layer.k_proj), split(xkv, layer.v_proj)
    if q_positions is not None:  # complex_rope takes one sequence of one head at a time
        q, k = (
            torch.stack([torch.stack([complex_rope(t[b, h], positions) for h in range(heads)])
                         for b in range(batch)])
            for t, positions in ((q, q_positions), (k, k_positions))
        )  # fmt: skip
    logits = q @ k.transpose(-1, -2) / math.sqrt(size)
    if allowed is not None:
        logits = logits.masked_fill(~allowed, -math.inf)
    out = torch.softmax(logits, dim=-1) @ v  # (B, H, Lq, D)
    out = out.transpose(1, 2).reshape(batch, lq, width)
    return out @ layer.out_proj.weight.T + layer.out_proj.bias


def test_from_torch_copies_the_input_and_output_biases():
    # Pins: from_torch copies in_proj_bias (q, k, v thirds) and out_proj.bias. torch initialises
    # both to zero, and relpos's layer too, so a fresh torch module cannot tell a skipped copy.
    theirs = _torch_layer()
    ours = relpos.MultiheadAttention.from_torch(theirs).eval()
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    memory = torch.randn(2, 5, 8, dtype=torch.float64)
    expected, _ = theirs(x, memory, memory, need_weights=False)
    assert torch.allclose(ours(x, memory, memory), expected, atol=1e-12)
    assert torch.equal(ours.out_proj.bias, theirs.out_proj.bias)
    assert torch.equal(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]),
                       theirs.in_proj_bias)  # fmt: skip


def test_from_torch_copies_dropout_and_refuses_it_as_an_option():
    # Pins: the dropout probability is copied from the torch module, and passing dropout= to
    # from_torch is refused with the same ValueError as the other copied settings.
    theirs = torch.nn.MultiheadAttention(8, 2, dropout=0.25, batch_first=True)
    assert relpos.MultiheadAttention.from_torch(theirs).dropout == 0.25
    with pytest.raises(ValueError, match="dropout is copied from module"):
        relpos.MultiheadAttention.from_torch(theirs, dropout=0.1)


def test_new_layer_starts_with_zero_biases_like_torchs():
    # Pins: reset_parameters zeroes every projection bias (as torch.nn.MultiheadAttention
    # does); nn.Linear's own initialisation would leave them uniform in ±1/sqrt(fan_in).
    torch.manual_seed(0)
    layer = relpos.MultiheadAttention(8, 2)
    for proj in (layer.q_proj, layer.k_proj, layer.v_proj, layer.out_proj):
        assert torch.count_nonzero(proj.bias) == 0


def test_bias_false_leaves_every_projection_without_bias():
    # Pins: bias=False reaches all four projections, the output projection included: 4 E² weights
    # and nothing else.
    layer = relpos.MultiheadAttention(8, 2, bias=False)
    for proj in (layer.q_proj, layer.k_proj, layer.v_proj, layer.out_proj):
        assert proj.bias is None
    assert sum(p.numel() for p in layer.parameters()) == 4 * 8 * 8


def test_dropout_of_one_is_refused():
    # Pins: dropout must lie in [0, 1): p = 1 would zero every attention weight in training.
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        relpos.MultiheadAttention(8, 2, dropout=1.0)


def test_cross_attention_applies_dropout_in_training_only():
    # Pins: cross-attention drops attention weights in train() mode too (not only
    # self-attention), and never in eval() mode.
    torch.manual_seed(1)
    layer = relpos.MultiheadAttention(8, 2, dropout=0.5).double()
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    memory = torch.randn(2, 6, 8, dtype=torch.float64)
    layer.eval()
    expected = _plain_attention(layer, x, memory)
    assert torch.allclose(layer(x, memory, memory), expected, atol=1e-12)
    layer.train()
    assert not torch.allclose(layer(x, memory, memory), expected, atol=1e-6)


def test_causal_cross_attention_with_a_query_offset_sees_keys_up_to_its_position():
    # Pins: with query_offset = o, a causal query r sees the keys c <= o + r (the mask by
    # position), not SDPA's top-left c <= r.
    theirs = _torch_layer(seed=2)
    ours = relpos.MultiheadAttention.from_torch(theirs).eval()
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    memory = torch.randn(2, 6, 8, dtype=torch.float64)
    rows, cols = torch.arange(3)[:, None], torch.arange(6)[None, :]
    blocked = cols > rows + 2  # torch's bool mask: True = may NOT attend
    expected, _ = theirs(x, memory, memory, attn_mask=blocked, need_weights=False)
    got = ours(x, memory, memory, is_causal=True, query_offset=2)
    assert torch.allclose(got, expected, atol=1e-12)


class _FlagOnlyPosition(AttentionPosition):
    """A user's own position module that knows only SDPA's flag, not the offsets."""

    def attend(self, query, key, value, *, attn_mask=None, is_causal=False, dropout_p=0.0,
               **ignored):  # fmt: skip
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask=attn_mask, is_causal=is_causal, dropout_p=dropout_p
        )


def test_cached_decoding_with_a_position_module_that_knows_only_the_flag():
    # Pins: with cached keys the layer turns is_causal into a mask by position itself, so a
    # position module that reads only the flag (SDPA's top-left meaning) still decodes what the
    # full causal sequence computes.
    torch.manual_seed(3)
    layer = relpos.MultiheadAttention(8, 2, position=_FlagOnlyPosition()).double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    full = layer(x, is_causal=True)
    cache = relpos.KVCache()
    steps = [layer(x[:, :2], is_causal=True, cache=cache)]
    steps += [layer(x[:, t : t + 1], is_causal=True, cache=cache) for t in range(2, 5)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-12)


def test_rotary_self_attention_rotates_queries_by_an_explicit_query_offset():
    # Pins: query_offset given explicitly (no cache) turns the queries by o + r and the keys by
    # their own positions 0 … L - 1, written out with RoFormer's complex rotation.
    torch.manual_seed(4)
    rope = relpos.get_scheme("rope").attention_position(2, 4, causal=False)
    layer = relpos.MultiheadAttention(8, 2, position=rope).double().eval()
    with torch.no_grad():
        for proj in (layer.q_proj, layer.k_proj, layer.v_proj, layer.out_proj):
            proj.bias.normal_()
    x = torch.randn(1, 3, 8, dtype=torch.float64)
    expected = _plain_attention(layer, x, x, q_positions=range(4, 7), k_positions=range(3))
    assert torch.allclose(layer(x, query_offset=4), expected, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# scan.py


@pytest.mark.parametrize("command", ["jump jump left", "walk twice left", "turn left left"])
def test_scan_refuses_a_three_word_phrase_whose_middle_word_is_not_opposite_or_around(command):
    # Pins: V -> X opposite Dir | X around Dir: only those two words may stand between the verb
    # and the direction.
    with pytest.raises(ValueError, match="not a SCAN command"):
        interpret(command)


def test_scan_names_the_second_conjunction_as_the_fault():
    # Pins: C -> S and S | S after S: a second conjunction is refused as such, not as a phrase
    # that cannot be read.
    with pytest.raises(ValueError, match="at most one 'and' / 'after' is allowed"):
        interpret("walk and run and look")


def test_scan_reads_words_separated_by_any_whitespace():
    # Pins: a command string is split on runs of whitespace (str.split()), so doubled spaces,
    # tabs and surrounding spaces do not make empty words.
    assert interpret("  look \t after  jump  twice\n") == ("I_JUMP", "I_JUMP", "I_LOOK")


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(n_train=0), "n_train must be an int >= 1 or None, got 0"),
        (dict(n_train=True), "n_train must be an int >= 1 or None, got True"),
        (dict(n_eval=False, n_eval_seen=3), "n_eval must be an int >= 0 or None, got False"),
        (dict(n_eval_seen=None), r"n_eval_seen must be an int >= 0, got None"),
    ],
)
def test_scan_refuses_bad_counts_when_built(options, message):
    # Pins: n_train >= 1 (0 would train on nothing), no bools for counts, and n_eval_seen is
    # never None, all refused when the task is built.
    with pytest.raises(ValueError, match=message):
        ScanTask(**options)


def test_scan_vocabulary_is_the_command_words_then_the_actions_in_a_fixed_order():
    # Pins: TaskData.vocabulary is "in a fixed order" (token ids follow it); for SCAN it is the
    # command words in the grammar's order, then the actions.
    expected = [
        "walk", "look", "run", "jump", "turn", "left", "right", "opposite", "around", "twice",
        "thrice", "and", "after",
        "I_WALK", "I_LOOK", "I_RUN", "I_JUMP", "I_TURN_LEFT", "I_TURN_RIGHT",
    ]  # fmt: skip
    assert ScanTask().generate(0).vocabulary == expected


def test_scan_train_lengths_are_the_splits_range_whatever_is_left_in_training():
    # Pins: train_lengths = (1, cutoff) even when n_train or n_eval_seen leave the shortest or
    # the longest lengths out of training (module docstring).
    small = ScanTask(n_train=5, n_eval=10).generate(0)
    assert max(ex.length for ex in small.train) < 22
    assert small.train_lengths == (1, 22)
    # Hold out all but one of the 16,990 training commands: the one left is not of length 1.
    one_left = ScanTask(n_eval=0, n_eval_seen=16_989).generate(0)
    assert len(one_left.train) == 1 and one_left.train[0].length != 1
    assert one_left.train_lengths == (1, 22)


def test_scan_evaluation_set_is_sorted_by_length():
    # Pins: held-out seen-length commands and unseen-length test commands come out together,
    # shortest first.
    data = ScanTask(n_eval=50, n_eval_seen=50).generate(3)
    lengths = [ex.length for ex in data.evaluation]
    assert len(lengths) == 100 and lengths == sorted(lengths)
    assert min(lengths) <= 22 < max(lengths)


# ---------------------------------------------------------------------------------------------
# files.py


def _tsv(tmp_path, text, name="data.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(length_of="both", max_train_length=1), ValueError, "length_of must be 'source' or"),
        (dict(char_level="yes", max_train_length=1), TypeError, "char_level must be a bool"),
        (dict(n_eval_seen=True), TypeError, "n_eval_seen must be an int, got True"),
        (dict(n_eval_seen=-1, max_train_length=1), ValueError, "n_eval_seen must be >= 0, got -1"),
        (dict(max_train_length=0), ValueError, "max_train_length must be an int >= 1 or None"),
        (dict(max_train_length=True), ValueError, "max_train_length must be an int >= 1 or None"),
    ],
)
def test_tsv_task_refuses_bad_options_when_built(tmp_path, options, error, message):
    # Pins: each option check of TsvTask, with its own message (a bool is not a count or a
    # threshold; a char_level of "yes" is not silently truthy).
    path = _tsv(tmp_path, "a\ta\nb b\tb b\n")
    with pytest.raises(error, match=message):
        TsvTask(path, **options)


def test_tsv_task_refuses_a_path_that_is_not_a_path_or_a_file(tmp_path):
    # Pins: a path of the wrong type is a TypeError naming path; a directory is a ValueError
    # saying it is not a regular file (not an IsADirectoryError from open()).
    with pytest.raises(TypeError, match="path must be a str or path, got int"):
        TsvTask(123, max_train_length=1)
    with pytest.raises(ValueError, match="is not a regular file"):
        read_tsv(tmp_path)


def test_tsv_file_that_is_not_utf8_is_a_value_error(tmp_path):
    # Pins: a Latin-1 file is reported as a ValueError naming the file, not a bare
    # UnicodeDecodeError.
    path = tmp_path / "latin1.tsv"
    path.write_bytes("caf\xe9\tcoffee\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.tsv: expected UTF-8 text"):
        read_tsv(path)


def test_tsv_error_on_a_crlf_line_does_not_blame_line_breaks(tmp_path):
    # Pins: the "\r" of a CR LF ending is dropped before the line is checked, so a line with two
    # tabs is shown without it and without the hint about lone "\r" line breaks.
    path = tmp_path / "crlf.tsv"
    path.write_bytes(b"1\t1\r\n2\t2\t2\r\n")
    with pytest.raises(ValueError, match=r"line 2: .*found 2 tabs in '2\\t2\\t2'$"):
        read_tsv(path)


def test_tsv_error_shows_at_most_sixty_characters_of_the_line(tmp_path):
    # Pins: a malformed line is quoted up to 60 characters and an ellipsis.
    path = _tsv(tmp_path, "x" * 100 + "\n")
    with pytest.raises(ValueError) as error:
        read_tsv(path)
    assert str(error.value).endswith("found 0 tabs in '" + "x" * 60 + "…'")


def test_tsv_threshold_and_hold_out_errors_give_the_numbers(tmp_path):
    # Pins: the threshold error gives the file's length range; the hold-out error counts lines
    # as well as distinct examples when lines repeat.
    path = _tsv(tmp_path, "a\ta\nb b\tb b\n")
    with pytest.raises(ValueError, match="its source lengths run 1–2"):
        TsvTask(path, max_train_length=2)
    repeated = _tsv(tmp_path, "a\ta\na\ta\nb\tb\n", name="repeated.tsv")
    with pytest.raises(ValueError, match=r"below the 2 distinct training examples \(3 lines\)"):
        TsvTask(repeated, n_eval_seen=2)


def test_tsv_seed_shuffles_the_training_set_and_the_evaluation_is_sorted(tmp_path):
    # Pins: generate(seed) shuffles the training lines by the seed (a permutation of the file),
    # refuses a seed that is not an int, and gives the evaluation set shortest first.
    train = _tsv(tmp_path, "".join(f"{i}\t{i}\n" for i in range(30)))
    evaluation = _tsv(tmp_path, "1 2 3\t1\n1\t1\n1 2\t1\n", name="eval.tsv")
    task = TsvTask(train, eval_path=evaluation)
    a, b = task.generate(0), task.generate(1)
    assert a.train != b.train and sorted(map(repr, a.train)) == sorted(map(repr, b.train))
    assert [ex.length for ex in a.evaluation] == [1, 2, 3]
    with pytest.raises(TypeError, match="seed must be an int"):
        task.generate("0")


# ---------------------------------------------------------------------------------------------
# experiments/plots.py: the functions that return numbers


def test_window_views_refuses_a_query_on_the_window_edge():
    # Pins: the query patch must satisfy 0 <= y < Wh (y = Wh is one row past the window).
    from relpos.experiments.plots import window_views

    with pytest.raises(ValueError, match=r"query patch must lie in the 2x3 window, got \(2, 0\)"):
        window_views((2, 3), (2, 0))


def test_distance_profiles_refuses_a_bool_and_works_for_a_short_span():
    # Pins: max_distance=True is refused like any non-int; and a span shorter than k + 2 still
    # gives DeBERTa's log-bucket curve (its maximum distance must exceed 2k // 2 + 1 = k + 1).
    from relpos.experiments.plots import distance_profiles

    with pytest.raises(ValueError, match="max_distance must be an int >= 1, got True"):
        distance_profiles(max_distance=True)
    panels = distance_profiles(span=2, max_distance=4)
    assert "log buckets: 8 per side, up to 6" in panels["deberta"]


def test_distance_profiles_show_the_first_middle_and_last_alibi_heads():
    # Pins: heads 1, H/2 + 1 and H, with slopes 2^(-8h/H) (Press et al.): 8 heads → h = 1, 5, 8.
    from relpos.experiments.plots import distance_profiles

    alibi = distance_profiles(span=3, heads=8)["alibi"]
    assert list(alibi) == ["head 1, m = 0.5", "head 5, m = 0.0312", "head 8, m = 0.00391"]
    distances, values = alibi["head 5, m = 0.0312"]
    assert torch.allclose(values, -(2.0**-5) * distances.abs().double())


def test_relative_key_tables_skips_shaw_layers_without_a_key_table():
    # Pins: a Shaw layer with key_term=False (values only) has no key table to show and is
    # left out; one with a key table is listed.
    from relpos.experiments.plots import relative_key_tables

    model = torch.nn.ModuleDict({
        "values_only": relpos.MultiheadAttention(8, 2, max_distance=2, key_term=False),
        "both": relpos.MultiheadAttention(8, 2, max_distance=2),
    })  # fmt: skip
    assert [name for name, _, _ in relative_key_tables(model)] == ["both.position"]


def test_attention_maps_leaves_a_training_model_in_training_mode():
    # Pins: attention_maps runs the pass in eval mode and then puts back the mode it found.
    from relpos.experiments.plots import attention_maps

    layer = relpos.MultiheadAttention(8, 2, max_distance=2).double().train()
    x = torch.randn(1, 3, 8, dtype=torch.float64)
    maps = attention_maps(layer, lambda: layer(x))
    assert len(maps) == 1 and maps[0][1].shape == (2, 3, 3)
    assert layer.training


def test_attention_maps_of_cross_attention_are_the_first_rows_scaled_and_masked_weights():
    # Pins: cross-attention weights are softmax(q·k / sqrt(D)) with padded keys masked, for
    # batch row 0 (written out here); a torch-style self-attention call (x, x, x) is recorded
    # once, by the position module, not a second time as cross-attention.
    from relpos.experiments.plots import attention_maps

    torch.manual_seed(5)
    layer = relpos.MultiheadAttention(8, 2).double().eval()
    x, memory = torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(2, 4, 8, dtype=torch.float64)
    padding = torch.tensor([[False, False, False, True], [False] * 4])
    maps = attention_maps(layer, lambda: layer(x, memory, memory, key_padding_mask=padding))
    q = (x[0] @ layer.q_proj.weight.T + layer.q_proj.bias).view(3, 2, 4).transpose(0, 1)
    k = (memory[0] @ layer.k_proj.weight.T + layer.k_proj.bias).view(4, 2, 4).transpose(0, 1)
    logits = (q @ k.transpose(-1, -2) / 2.0).masked_fill(padding[0], -math.inf)  # sqrt(4) = 2
    assert len(maps) == 1 and torch.allclose(maps[0][1], torch.softmax(logits, -1).float())
    assert len(attention_maps(layer, lambda: layer(x, x, x))) == 1


def test_attention_maps_of_self_attention_are_the_first_batch_rows():
    # Pins: self-attention weights are reported for batch row 0 (written out here for content
    # attention: softmax(q·k / sqrt(D))), not another row of the batch.
    from relpos.experiments.plots import attention_maps

    torch.manual_seed(6)
    layer = relpos.MultiheadAttention(8, 2).double().eval()
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    maps = attention_maps(layer, lambda: layer(x))
    q = (x[0] @ layer.q_proj.weight.T + layer.q_proj.bias).view(3, 2, 4).transpose(0, 1)
    k = (x[0] @ layer.k_proj.weight.T + layer.k_proj.bias).view(3, 2, 4).transpose(0, 1)
    expected = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1)  # sqrt(D) = sqrt(4) = 2
    assert len(maps) == 1 and torch.allclose(maps[0][1], expected.float())
