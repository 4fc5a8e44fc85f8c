"""Shaw's variants at the longer budget of docs/results/pair-bias-2400 (the default grid at
2,400 steps): the key term alone, and per-head tables, to tell apart what DeBERTa's and Huang's
runs there differ from Shaw in (no value term; a table per head)."""

from relpos.experiments import Variant, get_preset, run_compare

if __name__ == "__main__":  # run_compare's worker processes re-import this file
    (experiment,) = get_preset("default")
    experiment.train["steps"] = 2400
    experiment.variants = [
        Variant("shaw", {"max_distance": 4, "value_term": False}),
        Variant("shaw", {"max_distance": 4, "per_head": True}),
    ]
    run_compare(
        [experiment],
        "runs/shaw-2400",
        command="python run.py (default grid, steps=2400, shaw k=4 key term only / per-head)",
        preset="default",
        progress=False,
    )
