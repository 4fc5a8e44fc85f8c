"""Which part of DeBERTa's terms extrapolates? The default grid at 2,400 steps (as
docs/results/pair-bias-2400) with DeBERTa's two position terms one at a time, and Huang et al.'s
key-query term (one table for both directions, no value term) at the same k = 4."""

from relpos.experiments import Variant, get_preset, run_compare

if __name__ == "__main__":  # run_compare's worker processes re-import this file
    (experiment,) = get_preset("default")
    experiment.train["steps"] = 2400
    experiment.variants = [
        Variant("deberta", {"max_distance": 4, "p2c": False}),
        Variant("deberta", {"max_distance": 4, "c2p": False}),
        Variant("huang", {"max_distance": 4}),
    ]
    run_compare(
        [experiment],
        "runs/pair-bias-ablation",
        command="python run.py (default grid, steps=2400, deberta c2p / p2c alone, huang k=4)",
        preset="default",
        progress=False,
    )
