"""Behaviours of the modules that produce the experiments' numbers that an earlier test suite did
not pin down (found by mutation testing).

For each test here, a small wrong change to the library (a dropped EOS cut, a label shifted by one,
a population instead of a sample standard deviation, a warmup that starts one step late, an
off-by-one length range) left every earlier test passing. The expected values come from an
independent formulation: a worked example computed by hand, a formula written out, or a property
checked with a plain loop, never from the implementation under test.
"""

import itertools
import math

import pytest
import torch
from torch import nn

from relpos.tasks import Example, TaskData
from relpos.training.data import IGNORE, encode_examples
from relpos.training.evaluate import evaluate
from relpos.training.tokenizer import BOS, EOS, PAD, SEP, Tokenizer

# ---------------------------------------------------------------------------------------------
# evaluate: a scripted model whose outputs are fixed per source, so every rate is a hand count

VOCAB = ["a", "b", "c"]


class Scripted(nn.Module):
    """A stand-in model: for each source (a tuple of task tokens) it decodes ``free[source]``
    free-running, and under teacher forcing predicts ``forced[source][t]`` at the ``t``-th labelled
    position, whatever the prefix. ``"<eos>"`` in a script is EOS; a free script without it repeats
    its last token, as a model that never stops would. Every call records ``self.training``."""

    def __init__(self, arch, free, forced):
        super().__init__()
        self.arch = arch
        self.tokenizer = Tokenizer(VOCAB)
        self.free, self.forced = free, forced
        self.modes = []

    def _id(self, token):
        return EOS if token == "<eos>" else self.tokenizer.ids[token]

    def _source(self, ids):
        return tuple(self.tokenizer.tokens[int(i)] for i in ids if int(i) != PAD)

    def _logits(self, rows, offsets, width):
        vocab = len(self.tokenizer)
        out = torch.zeros(len(rows), width, vocab)
        out[..., PAD] = 1.0  # anything unscripted predicts PAD
        for b, (source, offset) in enumerate(zip(rows, offsets, strict=True)):
            for t, token in enumerate(self.forced[source]):
                if offset + t < width:
                    out[b, offset + t] = 0.0
                    out[b, offset + t, self._id(token)] = 1.0
        return out

    def forward(self, *args):
        self.modes.append(self.training)
        if self.arch == "encoder-decoder":
            source, inputs, _ = args
            rows = [self._source(row) for row in source]
            return self._logits(rows, [0] * len(rows), inputs.shape[1])
        if self.arch == "decoder":
            (inputs,) = args
            seps = [int((row == SEP).nonzero()[0]) for row in inputs]
            rows = [self._source(row[:s]) for row, s in zip(inputs, seps, strict=True)]
            return self._logits(rows, seps, inputs.shape[1])
        inputs, _ = args
        rows = [self._source(row) for row in inputs]
        return self._logits(rows, [0] * len(rows), inputs.shape[1])

    def _decode(self, sources, max_new_tokens):
        # greedy_decode's contract: a finished row is padded with EOS; stop once all finished
        scripts = [[self._id(t) for t in self.free[s]] for s in sources]
        streams, ends = [], []
        for script in scripts:
            stream = list(script) + [script[-1]] * max_new_tokens
            end = script.index(EOS) + 1 if EOS in script else None
            if end is not None:
                stream[end:] = [EOS] * (len(stream) - end)
            streams.append(stream)
            ends.append(end)
        width = max_new_tokens if None in ends else min(max_new_tokens, max(ends))
        return torch.tensor([s[:width] for s in streams], dtype=torch.long).view(len(sources), -1)

    def generate(self, *args, eos, max_new_tokens, bos=None):
        self.modes.append(self.training)
        assert eos == EOS
        if self.arch == "encoder-decoder":
            assert bos == BOS
            return self._decode([self._source(row) for row in args[0]], max_new_tokens)
        (prompt,) = args
        assert bool((prompt[:, -1] == SEP).all())
        return self._decode([self._source(row[:-1]) for row in prompt], max_new_tokens)


def ex(source, target, length=None):
    return Example(tuple(source), tuple(target), len(target) if length is None else length)


# (source, target, free-running output, teacher-forced predictions); length = len(target), so it
# differs from the source length; train lengths 1-2.
WORKED = [
    ("a", "bc", "bc$", "bc$"),  # exact; token 2/2; tf 2/2
    ("b", "c", "c$", "a$"),  # exact (stops before the row above); token 1/1; tf 0/1
    ("c", "aaa", "aa$", "aba$"),  # not exact; token 2/3; tf 2/3
    ("ab", "ba", "bab", "ba$"),  # never stops: not exact; token 2/2; tf 2/2
    ("cc", "ccccc", "ccccc$", "ccbcc$"),  # exact, the longest of its batch; token 5/5; tf 4/5
    ("acb", "b", "a$", "c$"),  # not exact; token 0/1; tf 0/1
    ("bb", "a", "a$", "a$"),  # exact; token 1/1; tf 1/1
]


def _scripts(rows):
    def tokens(text):
        return tuple("<eos>" if ch == "$" else ch for ch in text)

    free = {tuple(s): tokens(f) for s, _, f, _ in rows}
    forced = {tuple(s): tokens(t) for s, _, _, t in rows}
    return free, forced


# Hand counts for WORKED. seen (lengths 1, 2): examples 0, 1, 3, 5, 6; unseen (3, 5): 2, 4.
WORKED_EXPECTED = {
    "by_length": {
        "1": {"exact": 2 / 3, "token": 2 / 3, "tf_token": 1 / 3, "count": 3, "seen": True},
        "2": {"exact": 1 / 2, "token": 4 / 4, "tf_token": 4 / 4, "count": 2, "seen": True},
        "3": {"exact": 0 / 1, "token": 2 / 3, "tf_token": 2 / 3, "count": 1, "seen": False},
        "5": {"exact": 1 / 1, "token": 5 / 5, "tf_token": 4 / 5, "count": 1, "seen": False},
    },
    "seen": {"exact": 3 / 5, "token": 6 / 7, "tf_token": 5 / 7, "count": 5},
    "unseen": {"exact": 1 / 2, "token": 7 / 8, "tf_token": 6 / 8, "count": 2},
}


@pytest.mark.parametrize("arch", ["encoder-decoder", "decoder"])
def test_evaluate_matches_a_hand_count_on_a_worked_example(arch):
    # Pins: the EOS cut (only after the first EOS; the EOS itself kept), PAD (not EOS) filling a
    # short output, the gold's IGNORE padding turned into PAD, decoding as many tokens as the
    # target and its EOS need, token accuracy over target tokens only (EOS excluded, per target
    # token not per example), teacher-forced counts apart from free-running ones, exact rates as
    # Python fractions (2/3, not float32's 0.66666669), lengths from Example.length, the
    # seen/unseen grouping, and one batch per source length.
    data = TaskData(
        train=[ex("a", "b")],
        evaluation=[ex(s, t) for s, t, _, _ in WORKED],
        train_lengths=(1, 2),
        vocabulary=VOCAB,
    )
    model = Scripted(arch, *_scripts(WORKED))
    assert evaluate(model, data) == WORKED_EXPECTED


def test_evaluate_runs_in_eval_mode_and_restores_the_mode():
    # Pins: evaluation decodes with dropout off (model.eval()) and hands the model back in the
    # mode it came in, training or not.
    data = TaskData([ex("a", "b")], [ex(s, t) for s, t, _, _ in WORKED], (1, 2), VOCAB)
    for was_training in (True, False):
        model = Scripted("encoder-decoder", *_scripts(WORKED)).train(was_training)
        evaluate(model, data)
        assert model.modes and not any(model.modes)
        assert model.training is was_training


def test_evaluate_an_empty_group_is_none():
    # Pins: with no unseen lengths the unseen summary is None values and count 0, not an error.
    rows = [r for r in WORKED if len(r[1]) <= 2]
    data = TaskData([ex("a", "b")], [ex(s, t) for s, t, _, _ in rows], (1, 2), VOCAB)
    metrics = evaluate(Scripted("decoder", *_scripts(rows)), data)
    assert metrics["unseen"] == {"exact": None, "token": None, "tf_token": None, "count": 0}
    assert metrics["seen"] == WORKED_EXPECTED["seen"]


@pytest.mark.parametrize("arch", ["encoder-decoder", "encoder"])
def test_model_logits_of_a_padded_row_equal_the_row_alone(arch):
    # Pins: model_logits passes the source padding mask, so a short example batched with a long
    # one (as in training) gets the logits it gets alone.
    from relpos.models import ModelConfig, build_model
    from relpos.training.evaluate import model_logits

    torch.manual_seed(0)
    tokenizer = Tokenizer(VOCAB)
    config = ModelConfig(arch=arch, d_model=16, num_heads=2, num_layers=1, d_ff=32, dropout=0.0)
    model = build_model(config, len(tokenizer)).eval()
    examples = [ex("abcab", "cabba"), ex("ca", "ab")]
    encoded = encode_examples(examples, tokenizer, arch)
    with torch.no_grad():
        both = model_logits(model, encoded.batch(torch.tensor([0, 1])))
        alone = model_logits(model, encoded.batch(torch.tensor([1])))
    width = alone.shape[1]
    torch.testing.assert_close(both[1, :width], alone[0], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# data: layouts written out by hand (a=4, b=5, c=6; I = IGNORE)

I = IGNORE  # noqa: E741


def test_layouts_by_hand():
    # Pins: each architecture's source / inputs / labels (BOS first, EOS only as a label, labels
    # shifted so position p predicts token p+1 in the decoder, PAD for inputs and source, IGNORE
    # for labels), the reported, source, target and input lengths, the padding mask and
    # num_targets.
    tokenizer = Tokenizer(VOCAB)
    pair = [ex("ab", "c", length=7), ex("c", "abc")]

    def check(encoded, **expected):
        for name, value in expected.items():
            got = getattr(encoded, name)
            assert (None if got is None else got.tolist()) == value, name

    enc_dec = encode_examples(pair, tokenizer, "encoder-decoder")
    check(
        enc_dec,
        source=[[4, 5], [6, PAD]],
        inputs=[[BOS, 6, PAD, PAD], [BOS, 4, 5, 6]],
        labels=[[6, EOS, I, I], [4, 5, 6, EOS]],
        lengths=[7, 3],
        source_lengths=[2, 1],
        target_lengths=[1, 3],
        input_lengths=[2, 4],
    )
    decoder = encode_examples(pair, tokenizer, "decoder")
    check(
        decoder,
        source=None,
        inputs=[[4, 5, SEP, 6, PAD], [6, SEP, 4, 5, 6]],
        labels=[[I, I, 6, EOS, I], [I, 4, 5, 6, EOS]],
        lengths=[7, 3],
        source_lengths=[2, 1],
        target_lengths=[1, 3],
        input_lengths=[4, 5],
    )
    encoder = encode_examples([ex("ab", "ca"), ex("c", "b")], tokenizer, "encoder")
    check(
        encoder,
        source=[[4, 5], [6, PAD]],
        inputs=[[4, 5], [6, PAD]],
        labels=[[6, 4], [5, I]],
        lengths=[2, 1],
        target_lengths=[2, 1],
        input_lengths=[2, 1],
    )

    # A batch keeps the columns its longest row needs, source and inputs alike.
    batch = enc_dec.batch(torch.tensor([1, 0]))
    assert batch.source.tolist() == [[6, PAD], [4, 5]]
    assert batch.source_padding.tolist() == [[False, True], [False, False]]
    assert batch.labels.tolist() == [[4, 5, 6, EOS], [6, EOS, I, I]]
    assert batch.num_targets == 6
    alone = enc_dec.batch(torch.tensor([1]))
    assert alone.source.tolist() == [[6]] and alone.inputs.tolist() == [[BOS, 4, 5, 6]]
    first = enc_dec.batch(torch.tensor([0]))
    assert first.source.tolist() == [[4, 5]] and first.inputs.tolist() == [[BOS, 6]]
    assert decoder.batch(torch.tensor([0])).num_targets == 2


def test_longest_covers_a_source_longer_than_the_decoder_inputs():
    # Pins: EncodedExamples.longest (what a learned absolute table must cover) counts the source:
    # "abcd" -> "a" has 4 source positions but only 2 decoder inputs (BOS a).
    encoded = encode_examples([ex("abca", "a")], Tokenizer(VOCAB), "encoder-decoder")
    assert encoded.longest == 4


# ---------------------------------------------------------------------------------------------
# BatchOrder: properties checked with plain loops


def _steps(order, steps):
    return [order.indices(s).tolist() for s in steps]


def test_batch_order_epochs_are_permutations_that_differ_by_epoch_and_seed():
    # Pins: steps 0-2 of 12 examples in batches of 4 are exactly epoch 0 (each example once), the
    # next three epoch 1; each epoch has its own permutation, and the seed changes the order.
    from relpos.training.data import BatchOrder

    order = BatchOrder(12, 4, seed=3)
    epoch0 = sum(_steps(order, range(0, 3)), [])
    epoch1 = sum(_steps(order, range(3, 6)), [])
    assert sorted(epoch0) == list(range(12)) and sorted(epoch1) == list(range(12))
    assert epoch0 != epoch1
    other_seed = sum(_steps(BatchOrder(12, 4, seed=4), range(0, 3)), [])
    assert other_seed != epoch0


def test_batch_order_window_without_lengths_is_plain_order():
    # Pins: window > 1 only buckets when lengths are given; without them it is the plain order.
    from relpos.training.data import BatchOrder

    plain = _steps(BatchOrder(30, 4, seed=1), range(12))
    assert _steps(BatchOrder(30, 4, seed=1, window=3), range(12)) == plain


def test_batch_order_buckets_by_length_within_a_window_and_visits_in_a_seeded_order():
    # Pins: within a window of W batches, the batches split the window's length-sorted items (no
    # two batches' length ranges interleave); the batches are visited in a shuffled order, not
    # shortest first; and every epoch still holds every example once.
    import random

    from relpos.training.data import BatchOrder

    rng = random.Random(0)
    n, size, window = 200, 5, 4
    lengths = torch.tensor([rng.randint(1, 1000) for _ in range(n)])
    order = BatchOrder(n, size, seed=0, lengths=lengths, window=window)
    ascending = 0
    steps = n // size
    batches = _steps(order, range(steps))
    for start in range(0, steps, window):
        group = [[int(lengths[i]) for i in batch] for batch in batches[start : start + window]]
        by_min = sorted(group, key=min)
        for low, high in itertools.pairwise(by_min):
            assert max(low) <= min(high)
        ascending += by_min == group
    assert ascending < steps // window  # 10 windows, each ascending with chance 1/24
    assert sorted(sum(batches, [])) == list(range(n))


# ---------------------------------------------------------------------------------------------
# compare: summaries and the table from hand-made metrics


def _group(exact, token, tf):
    return {"exact": exact, "token": token, "tf_token": tf, "count": 0 if exact is None else 5}


def _length(exact, count, seen):
    return {"exact": exact, "token": exact, "tf_token": exact, "count": count, "seen": seen}


# Three seeds of one variant; seed 2 has no unseen examples (its unseen rates are None), and
# length 3 is evaluated by seeds 0 and 1 only.
SEED_RUNS = [
    {"variant": "v", "seed": 0, "seconds": 10.0, "metrics": {
        "seen": _group(1.0, 0.9, 0.95), "unseen": _group(0.2, 0.6, 0.7), "final_loss": 0.3,
        "by_length": {"1": _length(1.0, 4, True), "3": _length(0.2, 5, False)}}},
    {"variant": "v", "seed": 1, "seconds": 20.0, "metrics": {
        "seen": _group(0.8, 0.7, 0.75), "unseen": _group(0.4, 0.5, 0.6), "final_loss": 0.5,
        "by_length": {"1": _length(0.8, 4, True), "3": _length(0.4, 5, False)}}},
    {"variant": "v", "seed": 2, "seconds": 30.0, "metrics": {
        "seen": _group(0.9, 0.8, 0.85), "unseen": _group(None, None, None), "final_loss": 0.7,
        "by_length": {"1": _length(0.9, 4, True)}}},
]  # fmt: skip


def _sample_std(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_summarise_by_hand_skipping_missing_values():
    # Pins: mean and *sample* std over seeds per group and measure (tf_token included); None
    # (no unseen examples) skipped, not averaged in as 0; a length some seeds lack averaged over
    # the others, its count summed over seeds; final_loss_mean and seconds_mean are means.
    from relpos.experiments.compare import summarise

    s = summarise(SEED_RUNS)["v"]
    approx = pytest.approx
    assert s["seeds"] == 3
    assert s["seen"] == approx({
        "exact_mean": 0.9, "exact_std": _sample_std([1.0, 0.8, 0.9]),
        "token_mean": 0.8, "token_std": _sample_std([0.9, 0.7, 0.8]),
        "tf_token_mean": 0.85, "tf_token_std": _sample_std([0.95, 0.75, 0.85])})  # fmt: skip
    assert s["unseen"] == approx({
        "exact_mean": 0.3, "exact_std": math.sqrt(0.02),
        "token_mean": 0.55, "token_std": math.sqrt(0.005),
        "tf_token_mean": 0.65, "tf_token_std": math.sqrt(0.005)})  # fmt: skip
    assert s["by_length"]["3"] == approx({
        "exact_mean": 0.3, "exact_std": math.sqrt(0.02), "token_mean": 0.3,
        "token_std": math.sqrt(0.02), "tf_token_mean": 0.3, "tf_token_std": math.sqrt(0.02),
        "seen": False, "count": 10})  # fmt: skip
    assert s["by_length"]["1"]["count"] == 12
    assert s["final_loss_mean"] == approx(0.5) and s["seconds_mean"] == approx(20.0)
    one = summarise(SEED_RUNS[2:])["v"]
    assert one["seen"]["exact_mean"] == 0.9 and one["seen"]["exact_std"] == 0.0
    assert one["unseen"]["exact_mean"] is None and one["unseen"]["exact_std"] is None


def test_table_row_puts_each_measure_in_its_column():
    # Pins: the columns are seen exact, unseen exact, unseen token, unseen teacher-forced token
    # and seconds per run, each mean ± sample std over seeds.
    from relpos.experiments.compare import markdown_table, summarise

    results = {"experiments": [{"title": "t", "seeds": [0, 1, 2], "train_lengths": [1, 2],
                                "summary": summarise(SEED_RUNS)}]}  # fmt: skip
    table = markdown_table(results)
    assert "| variant | seen 1 | unseen 3 | unseen token | unseen token, TF | s/run |" in table
    assert "| v | 0.90 ± 0.10 | 0.30 ± 0.14 | 0.55 ± 0.07 | 0.65 ± 0.07 | 20 |" in table


# ---------------------------------------------------------------------------------------------
# training loop: a tiny run on four examples, checked against a loss written out by hand


class FourExamples:
    name = "four"
    examples = [ex("ab", "ba"), ex("c", "c"), ex("abc", "cba"), ex("ca", "ac")]

    def generate(self, seed):
        return TaskData(list(self.examples), list(self.examples), (1, 3), VOCAB)


def _loop_config(**changes):
    from relpos.models import ModelConfig
    from relpos.training import TrainConfig

    model = ModelConfig(d_model=16, num_heads=2, num_layers=1, d_ff=32, dropout=0.0, max_len=16)
    fields = dict(task="four", model=model, steps=1, batch_size=4, bucket_window=1, lr=1e-2)
    fields.update(warmup_steps=2, log_every=1, checkpoint_every=0, eval_batch_size=4, threads=1)
    return TrainConfig(**{**fields, **changes})


def _hand_loss(model):
    """Mean cross-entropy over every target token and EOS of FourExamples, one example at a
    time through the encoder-decoder (BOS target -> target EOS)."""
    ids = Tokenizer(VOCAB).ids
    total, tokens = 0.0, 0
    for example in FourExamples.examples:
        source = torch.tensor([[ids[t] for t in example.source]])
        target = [ids[t] for t in example.target]
        logits = model(source, torch.tensor([[BOS, *target]]), None)[0]
        for position, label in enumerate([*target, EOS]):
            total = total - torch.log_softmax(logits[position], -1)[label]
            tokens += 1
    return total / tokens


def test_the_step_loss_and_gradient_are_the_mean_over_target_tokens(monkeypatch):
    # Pins: the loss is summed over target tokens (EOS included) and divided by their count, not
    # by the number of examples; the logged loss is that mean; clipping uses grad_clip.
    from relpos.training import train

    initial = train(_loop_config(steps=0), task=FourExamples(), progress=False).model
    expected = _hand_loss(initial)
    expected.backward()
    expected = expected.item()
    hand_grads = [p.grad.clone() for p in initial.parameters()]

    seen = []

    def spy(parameters, max_norm, *args, **kwargs):
        seen.append((max_norm, [p.grad.clone() for p in parameters]))
        return torch.tensor(0.0)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    result = train(_loop_config(grad_clip=0.7), task=FourExamples(), progress=False)
    assert result.history[0]["loss"] == pytest.approx(expected, rel=1e-5)
    (max_norm, grads) = seen[0]
    assert max_norm == 0.7
    for got, want in zip(grads, hand_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)

    seen.clear()
    train(_loop_config(grad_clip=0.0), task=FourExamples(), progress=False)
    assert seen == []  # grad_clip=0 disables clipping


def test_history_lr_schedule_modes_and_bucketing(monkeypatch):
    # Pins: one history entry per log_every steps plus the last partial interval; each entry's
    # lr is that of its last (0-based) step s: lr·(s+1)/warmup during warmup, then the cosine
    # from lr; final_loss is the last entry's loss; the forward passes run in training mode;
    # the batch order buckets with the configured bucket_window.
    import relpos.training.loop as loop

    modes, windows = [], []
    real_logits, real_order = loop.model_logits, loop.BatchOrder

    def logits_spy(model, batch):
        modes.append(getattr(model, "module", model).training)
        return real_logits(model, batch)

    def order_spy(*args, **kwargs):
        windows.append(kwargs.get("window"))
        return real_order(*args, **kwargs)

    monkeypatch.setattr(loop, "model_logits", logits_spy)
    monkeypatch.setattr(loop, "BatchOrder", order_spy)
    config = _loop_config(steps=5, log_every=2, warmup_steps=4, batch_size=2, bucket_window=2)
    result = loop.train(config, task=FourExamples(), progress=False)
    assert [h["step"] for h in result.history] == [2, 4, 5]
    lr = 1e-2
    cosine = [0.1 * lr + 0.5 * 0.9 * lr * (1 + math.cos(math.pi * (s - 4) / 1)) for s in (4,)]
    assert [h["lr"] for h in result.history] == pytest.approx([lr * 2 / 4, lr * 4 / 4, *cosine])
    assert result.metrics["final_loss"] == result.history[-1]["loss"]
    assert result.history[0]["loss"] != result.history[-1]["loss"]
    assert len(modes) == 5 and all(modes)
    assert windows == [2]


def test_weight_decay_on_matrices_only():
    # Pins: AdamW decays tensors with >= 2 dimensions (projections, embeddings, tables) and no
    # 1-D ones (biases, LayerNorm gains), as nanoGPT does.
    from relpos.models import ModelConfig, build_model
    from relpos.training import TrainConfig, make_optimizer

    config = TrainConfig(weight_decay=0.05)
    model = build_model(ModelConfig(d_model=16, num_heads=2, num_layers=1, d_ff=32), 8)
    optimizer = make_optimizer(model, config)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        assert decay[id(p)] == (0.05 if p.dim() >= 2 else 0.0), name


# ---------------------------------------------------------------------------------------------
# tasks: length ranges, held-out strings, SCAN and TSV details, counted with plain loops


def test_string_task_length_ranges_are_inclusive():
    # Pins: training draws every length from min_train_length to max_train_length inclusive;
    # the default evaluation runs from min_train_length to max_eval_length inclusive; repeated
    # eval_lengths count once; min_train_length == max_train_length is allowed.
    from relpos.tasks import StringTask

    data = StringTask(min_train_length=2, max_train_length=4, max_eval_length=6, n_train=300,
                      n_eval_per_length=3).generate(0)  # fmt: skip
    assert {len(e.source) for e in data.train} == {2, 3, 4}
    assert sorted({e.length for e in data.evaluation}) == [2, 3, 4, 5, 6]
    assert data.train_lengths == (2, 4)
    single = StringTask(min_train_length=3, max_train_length=3, eval_lengths=(5, 3, 5),
                        n_train=10, n_eval_per_length=4).generate(0)  # fmt: skip
    assert [e.length for e in single.evaluation] == [3] * 4 + [5] * 4


def test_string_task_evaluation_avoids_training_strings_as_far_as_the_space_allows():
    # Pins: at every length, the evaluation strings are distinct, as many as asked (or all that
    # exist), and reuse training strings only for the part the unseen ones cannot fill: the
    # overlap is exactly max(0, count - (2**length - |training strings of that length|)).
    from relpos.tasks import StringTask

    for seed in range(3):
        task = StringTask(max_train_length=6, max_eval_length=7, vocab_size=2, n_train=40,
                          n_eval_per_length=6)  # fmt: skip
        data = task.generate(seed)
        for length in range(1, 8):
            train = {e.source for e in data.train if len(e.source) == length}
            evaluated = [e.source for e in data.evaluation if e.length == length]
            count = min(6, 2**length)
            assert len(evaluated) == len(set(evaluated)) == count
            assert len(train & set(evaluated)) == max(0, count - (2**length - len(train)))


def test_string_task_small_space_draws_unseen_strings_at_random():
    # Pins: where the unseen strings are enumerated (30 of the ~90 unseen 2-digit strings), they
    # are a random draw, not the first ones in order: some start with a digit above 4.
    from relpos.tasks import StringTask

    data = StringTask(max_train_length=2, eval_lengths=[2], n_train=10,
                      n_eval_per_length=30).generate(0)  # fmt: skip
    firsts = {e.source[0] for e in data.evaluation}
    assert firsts & set("56789")


def test_scan_details():
    # Pins: an example's length is its action count (not its word count); at most one
    # conjunction; n_eval subsamples the test set by seed (not its first commands); n_eval=0 is
    # allowed with n_eval_seen > 0, and n_eval_seen=0 is allowed with n_eval > 0.
    from relpos.tasks import ScanTask, interpret

    assert ScanTask().example("walk around left").length == 8
    with pytest.raises(ValueError):
        interpret("jump and walk and run")
    samples = [ScanTask(n_eval=50).generate(seed).evaluation for seed in (0, 1)]
    assert samples[0] != samples[1]
    assert len(ScanTask(n_eval=0, n_eval_seen=3).generate(0).evaluation) == 3
    assert len(ScanTask(n_eval=5, n_eval_seen=0).generate(0).evaluation) == 5


def test_tsv_refuses_holding_out_every_distinct_example_when_built(tmp_path):
    # Pins: n_eval_seen must leave training one distinct example; asking for all of them fails
    # when the task is built, not at generate().
    from relpos.tasks import TsvTask

    path = tmp_path / "d.tsv"
    path.write_text("a\tb\nc\td\nc\td\n", encoding="utf-8")
    with pytest.raises(ValueError, match="n_eval_seen=2"):
        TsvTask(path, n_eval_seen=2)


# ---------------------------------------------------------------------------------------------
# predict helpers


def test_predict_helpers_defaults():
    # Pins: a task without char_level splits sources into words (char_level False by default);
    # task_examples keeps the *first* example of a source (training before evaluation).
    from relpos.experiments.predict import char_level, task_examples
    from relpos.training import TrainConfig

    assert char_level(TrainConfig()) is False
    data = TaskData([ex("a", "b")], [ex("a", "c"), ex("b", "a")], (1, 1), VOCAB)
    known = task_examples(data)
    assert known[("a",)].target == ("b",) and known[("b",)].target == ("a",)


def test_compare_records_eval_lengths_as_example_lengths(tmp_path, monkeypatch):
    # Pins: results.json's eval_lengths are the evaluation examples' lengths (SCAN: action
    # counts, not command words), which the unseen example under the table is chosen from.
    import types

    import relpos.training
    from relpos.experiments.compare import Experiment, Variant, run_compare
    from relpos.tasks import ScanTask, interpret

    def fake_train(config, run_dir, **kwargs):
        group = {"exact": 1.0, "token": 1.0, "count": 1}
        metrics = {"by_length": {"1": {**group, "seen": True}}, "seen": group, "unseen": group}
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text("{}")
        return types.SimpleNamespace(metrics=metrics, seconds=0.0)

    monkeypatch.setattr(relpos.training, "train", fake_train)
    options = {"n_train": 30, "n_eval": 12}
    experiment = Experiment("scan", [Variant("none")], seeds=[0], task_options=options,
                            model={"d_model": 16, "num_heads": 2, "d_ff": 32})  # fmt: skip
    # jobs=1: the runs in this process, where train is replaced
    results = run_compare([experiment], tmp_path, progress=False, log=None, plot=False, jobs=1)
    evaluation = ScanTask(**options).generate(0).evaluation
    expected = sorted({len(interpret(e.source)) for e in evaluation})
    assert results["experiments"][0]["eval_lengths"] == expected


def test_defaults_the_stored_results_were_trained_with():
    # Pins: the training recipe defaults that every stored result (docs/results, which record
    # only the settings they changed) was trained with, and the seeds 0, 1, 2 that
    # docs/experiments.md gives as a comparison's default.
    from relpos.experiments.compare import Experiment, Variant
    from relpos.training import TrainConfig

    config = TrainConfig()
    assert (config.min_lr_ratio, config.grad_clip, config.bucket_window) == (0.1, 1.0, 8)
    assert (config.warmup_steps, config.weight_decay) == (100, 0.01)
    assert Experiment("reverse", [Variant("shaw")]).seeds == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# flex_bias: per-distance and factored biases against softmax written out pair by pair


def _brute(q, k, v, bias, allowed):
    """softmax(q·k/sqrt(D) + bias(h, i, j)) v over the allowed (i, j), one pair at a time; a row
    with no allowed key gives zeros. ``bias(b, h, i, j)`` is a Python function."""
    batch, heads, lq, d = q.shape
    out = torch.zeros(batch, heads, lq, v.shape[-1], dtype=q.dtype)
    for b in range(batch):
        for h in range(heads):
            for i in range(lq):
                keys = [j for j in range(k.shape[2]) if allowed(i, j)]
                if not keys:
                    continue
                logits = torch.stack(
                    [q[b, h, i] @ k[b, h, j] / math.sqrt(d) + bias(b, h, i, j) for j in keys]
                )
                weights = torch.softmax(logits, 0)
                out[b, h, i] = sum(w * v[b, h, j] for w, j in zip(weights, keys, strict=True))
    return out


def test_distance_and_factored_biases_match_pairwise_softmax():
    # Pins: relative_distances / expand_distance_bias order (column c - r + Lq - 1 is distance
    # j - i, with offsets), per-head tables, FlexAttention's score_mod (distance, query and key
    # scores, dense mask, top-left causal mask), zeros for fully masked rows, RelativeScores.dense,
    # and the eager path's bias plus attn_mask.
    from relpos.attention.flex_bias import (
        RelativeScores,
        dense_bias_attention,
        expand_distance_bias,
        flex_bias_attention,
        relative_distances,
    )

    torch.manual_seed(0)
    batch, heads, lq, lk, d = 1, 2, 3, 5, 4
    q, k, v = (torch.randn(batch, heads, n, d, dtype=torch.float64) for n in (lq, lk, lk))
    table = torch.randn(heads, lq + lk - 1, dtype=torch.float64)
    assert relative_distances(lq, lk, query_offset=2, key_offset=1).tolist() == list(
        range(1 - 2 - (lq - 1), 1 - 2 + lk)
    )

    def by_distance(b, h, i, j):
        return table[h, (j - i) + lq - 1]

    dense = expand_distance_bias(table, lq, lk)
    for h, i, j in ((0, 0, 4), (1, 2, 0), (1, 1, 3)):
        assert dense[h, i, j] == by_distance(0, h, i, j)
    everything = _brute(q, k, v, by_distance, lambda i, j: True)
    flex = flex_bias_attention(q, k, v, distance_bias=table, compiled=False)
    torch.testing.assert_close(flex, everything)
    causal = flex_bias_attention(q, k, v, distance_bias=table, is_causal=True, compiled=False)
    torch.testing.assert_close(causal, _brute(q, k, v, by_distance, lambda i, j: j <= i))

    # A boolean mask with one fully masked row (row 1), read inside score_mod.
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [0, 1, 1, 0, 1]], dtype=torch.bool)
    masked = flex_bias_attention(q, k, v, distance_bias=table, attn_mask=mask, compiled=False)
    expected = _brute(q, k, v, by_distance, lambda i, j: bool(mask[i, j]))
    torch.testing.assert_close(masked, expected)
    eager = dense_bias_attention(q, k, v, dense, attn_mask=mask, backend="eager")
    torch.testing.assert_close(eager[..., [0, 2], :], expected[..., [0, 2], :])

    # Factored content-and-distance bias: b(i, j) = qs[i, rho] + ks[j, rho].
    rows = torch.tensor([0, 1, 2, 2, 1, 0, 1], dtype=torch.long)  # one row per distance
    qs, ks = torch.randn(batch, heads, lq, 3), torch.randn(batch, heads, lk, 3)
    qs, ks = qs.double(), ks.double()
    scores = RelativeScores(rows, qs, ks)

    def factored(b, h, i, j):
        rho = rows[(j - i) + lq - 1]
        return qs[b, h, i, rho] + ks[b, h, j, rho]

    pair = scores.dense(lq, lk)
    for i in range(lq):
        for j in range(lk):
            assert torch.allclose(pair[0, 1, i, j], factored(0, 1, i, j))
    flex = flex_bias_attention(q, k, v, relative_scores=scores, compiled=False)
    torch.testing.assert_close(flex, _brute(q, k, v, factored, lambda i, j: True))


def test_tsv_char_level_strips_each_field_and_range_after_hold_out(tmp_path):
    # Pins: char_level tokens are a field's characters after stripping its ends (inner spaces
    # kept); train_lengths' shortest end comes from the training set left after the hold-out.
    from relpos.tasks import TsvTask, read_tsv

    path = tmp_path / "c.tsv"
    path.write_text(" a b \tba\n", encoding="utf-8")
    assert read_tsv(path, char_level=True)[0].source == ("a", " ", "b")

    lines = "".join(f"{' '.join('x' * (2 + i % 2))}\t{i}\n" for i in range(20)) + "z\tq\n"
    (tmp_path / "d.tsv").write_text(lines, encoding="utf-8")
    task = TsvTask(tmp_path / "d.tsv", n_eval_seen=6)
    held_short = 0
    for seed in range(12):
        data = task.generate(seed)
        kept = [len(e.source) for e in data.train]
        assert data.train_lengths == (min(kept), max(kept))
        held_short += 1 not in kept
    assert held_short > 0  # the case this test is about did happen


class _StubRun:
    """What predict_runs needs of a loaded run: config, tokenizer, predict (here: reverse)."""

    def __init__(self, config, vocabulary):
        self.config, self.tokenizer = config, Tokenizer(vocabulary)

    def predict(self, sources, max_new_tokens=None):
        return [list(source)[::-1] for source in sources]


def test_predict_seen_uses_the_task_length_and_unseen_example_looks_above(tmp_path, monkeypatch):
    # Pins: a prediction's seen/unseen comes from the example's length (SCAN: 24 actions from a
    # 4-word command is unseen), and the compare's unseen example is the first evaluation input
    # one past the training range, even when shorter unseen lengths exist.
    import json

    import relpos.training
    from relpos.experiments.predict import predict_runs, unseen_example
    from relpos.tasks import ScanTask, StringTask
    from relpos.training import TrainConfig

    scan = TrainConfig(task="scan", task_options={"n_train": 30, "n_eval": 5})
    monkeypatch.setattr(
        relpos.training, "load_run", lambda path, device: _StubRun(scan, ScanTask().vocabulary)
    )
    table = predict_runs({"x": tmp_path}, ["walk around left thrice"])
    assert (table.rows[0].length, table.rows[0].seen) == (24, False)

    options = {"min_train_length": 3, "max_train_length": 4, "eval_lengths": [1, 2, 3, 4, 5, 6],
               "n_train": 20, "n_eval_per_length": 2}  # fmt: skip
    config = TrainConfig(task="reverse", task_options=options, seed=0)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(config.to_dict()))
    monkeypatch.setattr(
        relpos.training, "load_run", lambda path, device: _StubRun(config, list("0123456789"))
    )
    experiment = {"train_lengths": [3, 4], "eval_lengths": [1, 2, 3, 4, 5, 6],
                  "variants": [{"label": "v", "scheme": "shaw"}],
                  "runs": [{"variant": "v", "seed": 0, "run_dir": "run"}]}  # fmt: skip
    evaluation = StringTask(**options).generate(0).evaluation
    first_above = next(e for e in evaluation if e.length == 5)
    row = unseen_example(tmp_path, experiment).rows[0]
    assert (row.source, row.length, row.seen) == (first_above.source, 5, False)
