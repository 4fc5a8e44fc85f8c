"""``relpos plot``: every figure writes a PNG; attention maps are the weights the layers use."""

from __future__ import annotations

import pytest
import torch

import relpos
from relpos.cli import main
from relpos.experiments import Experiment, Variant, run_compare
from relpos.experiments import plots as plots_module
from relpos.experiments.plots import (
    attention_maps,
    distance_profiles,
    plot_index,
    plot_vectors,
    relative_key_tables,
)
from relpos.layers import MultiheadAttention
from relpos.models import ModelConfig
from relpos.schemes import get_scheme
from relpos.training import TrainConfig, load_run, train


def _is_png(path) -> bool:
    data = path.read_bytes()
    return data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory):
    """A tiny compare folder with one sinusoidal and one Shaw run (seconds to train)."""
    out = tmp_path_factory.mktemp("plot") / "run"
    experiment = Experiment(
        task="reverse",
        task_options={"max_train_length": 3, "eval_lengths": [1, 2, 3, 4, 5], "n_train": 300},
        variants=[Variant("sinusoidal"), Variant("shaw", {"max_distance": 2})],
        seeds=[0],
        train={"steps": 6, "batch_size": 16},
    )
    run_compare([experiment], out, progress=False, log=None, jobs=1)
    return out


@pytest.mark.parametrize(
    "argv",
    [
        ["sinusoidal", "--length", "32", "--dim", "16"],
        ["randomized"],
        ["randomized", "--length", "3"],
        ["index"],
        ["index", "--tokens", "I think therefore I am", "-k", "4"],
        ["distances"],
        ["distances", "--length", "20", "-k", "2"],
        ["window"],
        ["window", "--window", "3x5", "--query", "0,4"],
    ],
)
def test_plots_without_a_run(tmp_path, capsys, argv):
    out = tmp_path / "figure.png"
    assert main(["plot", *argv, "--out", str(out)]) == 0
    assert _is_png(out)
    assert str(out) in capsys.readouterr().out


@pytest.mark.parametrize("figure", ["vectors", "attention", "accuracy"])
def test_plots_of_a_compare_folder(compare_dir, tmp_path, figure):
    out = tmp_path / f"{figure}.png"
    assert main(["plot", figure, str(compare_dir), "--out", str(out)]) == 0
    assert _is_png(out)


def test_plots_of_one_training_run(compare_dir, tmp_path):
    run_dir = compare_dir / "runs" / "reverse" / "sinusoidal" / "seed0"
    out = tmp_path / "attention.png"
    assert main(["plot", "attention", str(run_dir), "--out", str(out), "--length", "4"]) == 0
    assert _is_png(out)
    # A sinusoidal model has no relative vectors: a clear error, exit code 2.
    assert main(["plot", "vectors", str(run_dir), "--out", str(tmp_path / "v.png")]) == 2


def test_variants_of_a_figure_do_not_replace_the_one_compare_wrote(compare_dir, capsys):
    written = (compare_dir / "accuracy.png").read_bytes()
    assert main(["plot", "accuracy", str(compare_dir), "--metric", "tf_token"]) == 0
    assert main(["plot", "attention", str(compare_dir), "--scheme", "sinusoidal"]) == 0
    assert (compare_dir / "accuracy.png").read_bytes() == written
    assert _is_png(compare_dir / "accuracy-tf_token.png")
    assert _is_png(compare_dir / "attention-sinusoidal.png")


def test_attention_on_a_source_of_your_own(compare_dir, monkeypatch, capsys):
    drawn = {}

    def capture(maps, out, **kwargs):
        drawn.update(kwargs, names=[name for name, _ in maps])
        return out

    monkeypatch.setattr(plots_module, "plot_attention", capture)
    assert main(["plot", "attention", str(compare_dir), "--source", "12345"]) == 0
    assert str(compare_dir / "attention-12345.png") in capsys.readouterr().out
    assert drawn["query_labels"]["encoder.blocks.0.self_attn"] == list("12345")
    assert drawn["key_labels"]["decoder.blocks.0.cross_attn"] == list("12345")
    assert drawn["query_labels"]["decoder.blocks.0.self_attn"] == ["<bos>", *"54321"]
    (output,) = load_run(compare_dir / "runs/reverse/shaw_k=2/seed0").predict(
        ["12345"], max_new_tokens=6
    )
    verdict = "correct" if output == list("54321") else "wrong"  # the plot decodes 5 + 1 tokens
    assert f"length 5 (UNSEEN in training): 1 2 3 4 5 → {' '.join(output)}" in drawn["title"]
    assert drawn["title"].endswith(f"({verdict})")
    assert main(["plot", "attention", str(compare_dir), "--source", "1", "--seed", "3"]) == 2
    assert "--source is the example itself" in capsys.readouterr().err
    assert main(["plot", "index", "--source", "1"]) == 2
    assert "--source does not apply to `index`" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["attention", "{run}", "-k", "2"],
            "-k does not apply to `attention` (only index, distances)",
        ),
        (["accuracy", "{run}", "--tokens", "a b"], "--tokens does not apply to `accuracy`"),
        (["index", "--scheme", "shaw"], "--scheme does not apply to `index`"),
        (["vectors", "{run}", "--length", "5"], "--length does not apply to `vectors`"),
        (["sinusoidal", "--length", "100000"], "length must be an int in 1..4096, got 100000"),
        (["randomized", "--length", "65"], "--length (the longest training length) must be <= 64"),
        (["randomized", "-k", "2"], "-k does not apply to `randomized`"),
        # The flag, not plot_distances' keyword (the message once said "span must be").
        (["distances", "--length", "5000"], "--length (the largest |j − i| drawn) must be <= 4096"),
        (
            ["attention", "{run}", "--scheme", "t5"],
            "no finished run of scheme 't5'; its finished runs are of",
        ),
        (["attention", "{run}", "--task", "copy"], "has no 'copy' experiment; its tasks: reverse"),
        (["index", "--task", "copy"], "--task does not apply to `index`"),
        (["index", "--window", "3x3"], "--window does not apply to `index` (only window)"),
        (["window", "--query", "1"], "--query must look like y,x"),
        (["window", "--query", "0,4"], "--query 0,4 is outside the 4x4 window: y must be in 0..3"),
        (["window", "--window", "7"], "--window must look like HxW"),
    ],
)
def test_flags_that_do_not_apply_and_bad_values(compare_dir, capsys, args, message):
    args = [arg.format(run=compare_dir) for arg in args]
    assert main(["plot", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("window, query", [((4, 4), (1, 1)), ((3, 5), (0, 4)), ((2, 3), (1, 0))])
def test_window_views_are_swins_offsets(window, query):
    """Each key patch's row is its offset from the query, (dy + Wh − 1)(2Ww − 1) + dx + Ww − 1 with
    (dy, dx) = query − key (Swin's order), and the rows read are those offsets and no others."""
    window_h, window_w = window
    index, key_rows, reads = plots_module.window_views(window, query)
    assert index.shape == (window_h * window_w,) * 2
    read = set()
    for y in range(window_h):
        for x in range(window_w):
            dy, dx = query[0] - y, query[1] - x
            assert key_rows[y, x] == (dy + window_h - 1) * (2 * window_w - 1) + dx + window_w - 1
            read.add((dy + window_h - 1, dx + window_w - 1))
    assert {tuple(cell) for cell in reads.nonzero().tolist()} == read
    # Over all the window's queries, every one of the (2Wh − 1)(2Ww − 1) rows is read.
    every = torch.zeros_like(reads)
    for y in range(window_h):
        for x in range(window_w):
            every |= plots_module.window_views(window, (y, x))[2]
    assert every.all()


def test_vector_formats(tmp_path):
    assert plot_index(tmp_path / "index.pdf").read_bytes().startswith(b"%PDF")
    assert b"<svg" in plot_index(tmp_path / "index.svg").read_bytes()[:400]


def test_plot_errors(tmp_path, capsys):
    assert main(["plot", "vectors", "--out", str(tmp_path / "v.png")]) == 2
    assert "needs a RUN_DIR" in capsys.readouterr().err
    assert main(["plot", "accuracy", str(tmp_path)]) == 2
    assert "results.json" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"\.png, \.pdf, \.svg"):
        plot_index(tmp_path / "index.jpg")
    with pytest.raises(ValueError, match="no Shaw relative key tables"):
        plot_vectors(torch.nn.Linear(2, 2), tmp_path / "v.png")


class _Wrapper(torch.nn.Module):
    def __init__(self, attention: MultiheadAttention) -> None:
        super().__init__()
        self.attention = attention


@pytest.mark.parametrize("causal", [False, True])
def test_attention_maps_are_the_weights_the_layer_uses(causal):
    torch.manual_seed(0)
    attention = MultiheadAttention(16, 2, max_distance=2, value_term=False).eval()
    x = torch.randn(1, 7, 16)
    (name, weights), *rest = attention_maps(
        _Wrapper(attention), lambda: attention(x, is_causal=causal)
    )
    assert name == "attention" and not rest
    assert weights.shape == (2, 7, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 7))
    if causal:
        assert weights.triu(1).abs().max() == 0
    # Without a value term the layer's output is exactly the weights times the values.
    values = attention.v_proj(x).view(1, 7, 2, 8).transpose(1, 2)  # (B, H, L, D)
    mixed = (weights[None] @ values).transpose(1, 2).reshape(1, 7, 16)  # (B, L, E)
    torch.testing.assert_close(attention.out_proj(mixed), attention(x, is_causal=causal))
    # The patch is undone: the position module's own attend is back.
    assert "attend" not in vars(attention.position)


def test_attention_maps_ignore_the_value_term_and_keep_it():
    torch.manual_seed(0)
    with_values = MultiheadAttention(16, 2, max_distance=2).eval()
    without = MultiheadAttention(16, 2, max_distance=2, value_term=False).eval()
    without.load_state_dict(with_values.state_dict(), strict=False)
    x = torch.randn(1, 5, 16)
    before = with_values(x)
    ((_, w1),) = attention_maps(_Wrapper(with_values), lambda: with_values(x))
    ((_, w2),) = attention_maps(_Wrapper(without), lambda: without(x))
    torch.testing.assert_close(w1, w2)  # the value term changes outputs, not weights
    assert with_values.position.value_table is not None
    torch.testing.assert_close(with_values(x), before)


def test_attention_maps_of_a_model_cover_every_layer():
    from relpos.models import ModelConfig, build_model

    config = ModelConfig(num_layers=1, scheme="shaw", scheme_options={"max_distance": 2})
    model = build_model(config, vocab_size=12)
    source, target = torch.randint(4, 12, (1, 6)), torch.randint(4, 12, (1, 4))
    maps = dict(attention_maps(model, lambda: model(source, target)))
    assert {name: tuple(w.shape) for name, w in maps.items()} == {
        "encoder.blocks.0.self_attn": (4, 6, 6),
        "decoder.blocks.0.self_attn": (4, 4, 4),
        "decoder.blocks.0.cross_attn": (4, 4, 6),
    }
    assert get_scheme("shaw").max_distance == 16  # untouched by the plots


def test_distance_profiles_are_the_schemes_own_numbers():
    profiles = distance_profiles(span=20, max_distance=3, heads=4, head_dim=16)
    (d, shaw), (_, unclipped) = profiles["shaw"].values()
    assert d.tolist() == list(range(-20, 21))
    assert torch.equal(shaw, d.clamp(-3, 3)) and torch.equal(unclipped, d)
    (_, deberta), (_, log_rows) = profiles["deberta"].values()
    assert torch.equal(deberta, (3 - d).clamp(0, 5))  # δ = clamp(i − j + k, 0, 2k − 1)
    assert log_rows[d == 0].item() == 6 and (log_rows[:-1] >= log_rows[1:]).all()
    ((_, t5),) = profiles["t5"].values()
    assert t5[d == 0].item() == 0 and t5[d == 1].item() == 17 and t5[d == -1].item() == 1
    slopes = relpos.alibi_slopes(4).double()
    for label, (_, bias) in profiles["alibi"].items():
        head = int(label.split()[1].rstrip(",")) - 1
        torch.testing.assert_close(bias, -slopes[head] * d.abs().double())
    ((_, decay),) = profiles["rope"].values()
    assert decay[d == 0].item() == pytest.approx(1.0) and torch.equal(decay, decay.flip(0))
    with pytest.raises(ValueError, match="max_distance must be an int >= 1"):
        distance_profiles(max_distance=0)


def test_a_stored_results_folder_without_checkpoints_says_so(compare_dir, tmp_path, capsys):
    # docs/results keeps results.json and table.md only: the runs it lists are not there.
    stored = tmp_path / "stored"
    stored.mkdir()
    for name in ("results.json", "table.md"):
        (stored / name).write_bytes((compare_dir / name).read_bytes())
    assert main(["plot", "vectors", str(stored), "--out", str(tmp_path / "v.png")]) == 2
    err = capsys.readouterr().err
    assert "lists the run" in err and "rerun the compare" in err


def test_vectors_label_each_row_with_its_distance_under_asymmetric_clipping(tmp_path, monkeypatch):
    # Rows of a table clipped to [-3, 1] are distances -3..+1 (they were labelled -2..+2).
    layer = relpos.MultiheadAttention(
        8, 2, position=relpos.ShawRelativePosition(4, 3, max_left=3, max_right=1, num_heads=2)
    )
    ((_, table, max_left),) = relative_key_tables(layer)
    assert table.shape[1] == 5 and max_left == 3
    drawn = []
    save = plots_module._save
    monkeypatch.setattr(plots_module, "_save", lambda fig, out: drawn.append(fig) or save(fig, out))
    plot_vectors(layer, tmp_path / "v.png")
    labels = [t.get_text() for t in drawn[0].axes[0].get_xticklabels()]
    assert labels == ["-3", "-2", "-1", "0", "+1"]


@pytest.mark.parametrize(
    ("max_left", "max_right", "expected"),
    [
        (16, 16, ["-16", "-12", "-8", "-4", "0", "+4", "+8", "+12", "+16"]),
        (6, 2, ["-6", "-5", "-4", "-3", "-2", "-1", "0", "+1", "+2"]),
        (3, 17, ["-3", "0", "+3", "+6", "+9", "+12", "+15"]),
    ],
)
def test_vectors_label_at_most_nine_distances_and_always_zero(
    tmp_path, monkeypatch, max_left, max_right, expected
):
    # k = 16 labelled every third row from -16 (-16, -13, …, +14: 11 labels that ran into each
    # other, none at 0).
    position = relpos.ShawRelativePosition(
        4, max(max_left, max_right), max_left=max_left, max_right=max_right, num_heads=2
    )
    layer = relpos.MultiheadAttention(8, 2, position=position)
    drawn = []
    save = plots_module._save
    monkeypatch.setattr(plots_module, "_save", lambda fig, out: drawn.append(fig) or save(fig, out))
    plot_vectors(layer, tmp_path / "v.png")
    axis = drawn[0].axes[0]
    assert [t.get_text() for t in axis.get_xticklabels()] == expected
    assert [t.get_text() for t in axis.get_yticklabels()] == expected


def test_scheme_on_a_train_run_folder_is_checked(tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = TrainConfig(
        task="reverse",
        task_options={"max_train_length": 3, "eval_lengths": [1, 2, 3, 4], "n_train": 40},
        model=ModelConfig(d_model=16, num_heads=2, num_layers=1, d_ff=32, scheme="t5"),
        steps=2,
        batch_size=8,
    )
    train(config, run_dir, progress=False)
    out = str(tmp_path / "a.png")
    assert main(["plot", "attention", str(run_dir), "--scheme", "shaw", "--out", out]) == 2
    assert "is a 't5' run, not a 'shaw' one" in capsys.readouterr().err
    assert main(["plot", "attention", str(run_dir), "--out", out]) == 0  # no --scheme: this run


def test_long_attention_plots_thin_their_ticks_and_titles():
    labels = [str(n) for n in range(49)]
    positions, shown = plots_module._thinned(labels)
    assert len(shown) <= 32 and shown[0] == "0" and positions == [int(x) for x in shown]
    assert plots_module._thinned(labels[:10]) == (list(range(10)), labels[:10])
    assert plots_module._shortened(list("ab")) == "a b"
    assert plots_module._shortened(labels, most=3) == "0 1 2 … (+46)"


def test_position_coverage_counts_what_training_reaches():
    # Lengths uniform in 1..4: 0, 1, 2, … holds position p in a share (4 - p) / 4 of the
    # sequences and nothing past 3; random draws from [0, 12) hold each p in E[n] / 12 = 2.5 / 12
    # of them. Both total E[n] = 2.5 positions per sequence.
    consecutive, randomized = plots_module.position_coverage(4, 12, sequences=40_000)
    torch.testing.assert_close(consecutive[4:], torch.zeros(8, dtype=torch.float64))
    expected = torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64)
    torch.testing.assert_close(consecutive[:4], expected, atol=0.01, rtol=0)
    torch.testing.assert_close(randomized, torch.full((12,), 2.5 / 12, dtype=torch.float64),
                               atol=0.01, rtol=0)  # fmt: skip
    assert abs(consecutive.sum().item() - randomized.sum().item()) < 1e-9
    with pytest.raises(ValueError, match=r"train_length \(5\) must be <= max_position \(4\)"):
        plots_module.position_coverage(5, 4)
