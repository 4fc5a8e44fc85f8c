"""Named experiments for ``relpos compare --preset NAME``.

* ``default`` — what ``relpos compare`` runs with no arguments: none, sinusoidal, learned and
  shaw on a task where the difference between absolute and relative positions is visible within
  a few CPU minutes (the choice, and what else was tried, is in ``docs/experiments.md``);
* ``k-sweep`` — shaw with ``k = 0, 1, 2, 4, 16, 64``: Shaw et al. (2018) Table 2;
* ``kv-ablation`` — shaw with both relative terms, the key term only, the value term only, and
  neither: Shaw et al. (2018) Table 3;
* ``length-gen`` — the eight schemes of ``SCHEME_ORDER`` on reverse/duplicate (Ontañón et al.
  2022) and copy on their lengths, the decoder-only copy/reverse of Kazemnejad et al. (2023),
  and SCAN's length split.

Each preset is a function returning fresh :class:`~relpos.experiments.compare.Experiment`
objects, so callers may edit them (the CLI applies its flags that way).
"""

from __future__ import annotations

from collections.abc import Callable

from .compare import Experiment, Variant

__all__ = ["PRESETS", "DEFAULT_PRESET", "get_preset", "available_presets", "register_preset"]

PRESETS: dict[str, Callable[[], list[Experiment]]] = {}
DEFAULT_PRESET = "default"


def register_preset(name: str):
    """Decorator: make a function returning ``list[Experiment]`` available as ``--preset name``."""

    def decorate(factory: Callable[[], list[Experiment]]):
        if name in PRESETS and PRESETS[name] is not factory:
            raise ValueError(f"a preset named {name!r} is already registered")
        PRESETS[name] = factory
        return factory

    return decorate


def available_presets() -> list[str]:
    """The preset grids ``relpos compare --preset`` runs (Shaw et al.'s tables' analogues)."""
    return sorted(PRESETS)


def get_preset(name: str) -> list[Experiment]:
    """Fresh experiments of a named preset; unknown names list the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid names: {', '.join(available_presets())}")
    return PRESETS[name]()


# ------------------------------------------------------------------------------ the default

#: shared by the default and the Shaw ablations: one small, fast setting (see docs/experiments.md).
DEFAULT_TASK = "reverse"
DEFAULT_TASK_OPTIONS = {"max_train_length": 8, "max_eval_length": 16, "n_eval_per_length": 50}
DEFAULT_TRAIN = {"steps": 800, "batch_size": 64, "lr": 2e-3, "warmup_steps": 50}
DEFAULT_MODEL = {"arch": "encoder-decoder"}
DEFAULT_SEEDS = [0, 1, 2]
#: Shaw's clipping distance in the default grid: smaller than the training lengths, so every
#: table row is trained and longer inputs only meet distances already seen.
DEFAULT_K = 4


@register_preset("default")
def default() -> list[Experiment]:
    return [
        Experiment(
            task=DEFAULT_TASK,
            task_options=dict(DEFAULT_TASK_OPTIONS),
            variants=[
                Variant("none"),
                Variant("sinusoidal"),
                Variant("learned"),
                Variant("shaw", {"max_distance": DEFAULT_K}),
            ],
            seeds=list(DEFAULT_SEEDS),
            train=dict(DEFAULT_TRAIN),
            model=dict(DEFAULT_MODEL),
        )
    ]


# ------------------------------------------------------------------------ Shaw et al. tables


@register_preset("k-sweep")
def k_sweep() -> list[Experiment]:
    """Shaw et al. Table 2: the clipping distance ``k`` (k = 0 means no position information)."""
    return [
        Experiment(
            task=DEFAULT_TASK,
            title=f"{DEFAULT_TASK}: clipping distance k",
            task_options=dict(DEFAULT_TASK_OPTIONS),
            variants=[Variant("shaw", {"max_distance": k}) for k in (0, 1, 2, 4, 16, 64)],
            seeds=list(DEFAULT_SEEDS),
            train=dict(DEFAULT_TRAIN),
            model=dict(DEFAULT_MODEL),
        )
    ]


@register_preset("kv-ablation")
def kv_ablation() -> list[Experiment]:
    """Shaw et al. Table 3: which relative terms, ``a^K`` (logits) and/or ``a^V`` (outputs)."""
    terms = [
        ("a^K + a^V", True, True),
        ("a^K only", True, False),
        ("a^V only", False, True),
        ("neither", False, False),
    ]
    return [
        Experiment(
            task=DEFAULT_TASK,
            title=f"{DEFAULT_TASK}: relative key/value terms (k = {DEFAULT_K})",
            task_options=dict(DEFAULT_TASK_OPTIONS),
            variants=[
                Variant(
                    "shaw",
                    {"max_distance": DEFAULT_K, "key_term": key, "value_term": value},
                    label=f"shaw {label}",
                )
                for label, key, value in terms
            ],
            seeds=list(DEFAULT_SEEDS),
            train=dict(DEFAULT_TRAIN),
            model=dict(DEFAULT_MODEL),
        )
    ]


# ----------------------------------------------------------------------- length generalisation


#: the order schemes are listed in: no positions, absolute, rotary, relative embeddings, biases.
SCHEME_ORDER = ("none", "sinusoidal", "learned", "rope", "shaw", "huang", "t5", "alibi")


def _every_scheme() -> list[Variant]:
    """One variant per scheme of ``SCHEME_ORDER``, at its defaults (shaw at the default k).

    A fixed list, not every registered name: a scheme added later (``integer``, a user's own)
    would otherwise change the preset under its stored results (docs/results/preset-length-gen).
    """
    return [
        Variant(name, {"max_distance": DEFAULT_K} if name == "shaw" else {})
        for name in SCHEME_ORDER
    ]


@register_preset("length-gen")
def length_gen() -> list[Experiment]:
    """Every scheme on the literature's length-generalisation tasks, scaled to a CPU budget.

    Budgets were chosen by trying (docs/experiments.md): the encoder-decoder string tasks learn
    their training range in 800 steps; a decoder-only model needs ~2500 steps before copying
    works at all (it must learn to look up "the token after the one I just wrote"); SCAN
    follows Kazemnejad et al.'s ``length25`` split with an encoder-decoder, which learned it
    faster than a decoder-only model at this budget.
    """
    seeds = [0, 1]
    encoder_decoder = {"arch": "encoder-decoder"}
    strings = {"max_train_length": 8, "max_eval_length": 16, "n_eval_per_length": 30}
    experiments = [
        Experiment(
            task=name,
            task_options=dict(strings),
            variants=_every_scheme(),
            seeds=list(seeds),
            train=dict(DEFAULT_TRAIN),
            model=dict(encoder_decoder),
        )
        for name in ("copy", "reverse", "duplicate")
    ]
    experiments += [
        Experiment(
            task=name,
            title=f"{name} (decoder-only)",
            task_options={"max_train_length": 10, "max_eval_length": 20, "n_eval_per_length": 30},
            variants=_every_scheme(),
            seeds=list(seeds),
            train={**DEFAULT_TRAIN, "steps": 2500, "warmup_steps": 100},
            model={"arch": "decoder"},
        )
        for name in ("copy-kz", "reverse-kz")
    ]
    experiments.append(
        Experiment(
            task="scan",
            title="scan (length25 split)",
            # 300 of the 3,136 unseen-length test commands, and 200 training commands held
            # out as a seen-length baseline: greedy decoding of all of them costs minutes.
            task_options={"split": "length25", "n_eval": 300, "n_eval_seen": 200},
            variants=_every_scheme(),
            seeds=list(seeds),
            train={**DEFAULT_TRAIN, "steps": 1500, "warmup_steps": 100},
            model=dict(encoder_decoder),
        )
    )
    return experiments
