"""Experiments built on models, tasks and training: ``relpos compare``, its presets, and figures.

* :mod:`relpos.experiments.compare` — train a grid of schemes, score seen and unseen lengths;
* :mod:`relpos.experiments.presets` — the named experiments (default, k-sweep, kv-ablation,
  length-gen);
* :mod:`relpos.experiments.predict` — trained runs on inputs of your own (``relpos predict``);
* :mod:`relpos.experiments.plots` — figures (matplotlib, imported lazily).
"""

from .compare import Experiment, Variant, format_table, markdown_table, run_compare, summarise
from .presets import DEFAULT_PRESET, PRESETS, available_presets, get_preset, register_preset

__all__ = [
    "Experiment",
    "Variant",
    "run_compare",
    "summarise",
    "format_table",
    "markdown_table",
    "PRESETS",
    "DEFAULT_PRESET",
    "available_presets",
    "get_preset",
    "register_preset",
]
