"""length-gen's six experiments with transformer-xl and deberta (k = 4, as shaw in the preset)
alone; the preset keeps its eight schemes so that its stored results still match it."""

from relpos.experiments import Variant, get_preset, run_compare

if __name__ == "__main__":  # run_compare's worker processes re-import this file
    experiments = get_preset("length-gen")
    for experiment in experiments:
        experiment.variants = [Variant("transformer-xl"), Variant("deberta", {"max_distance": 4})]
    run_compare(
        experiments,
        "runs/length-gen-pair-bias",
        command="python run.py (length-gen's experiments, variants=[transformer-xl, deberta k=4])",
        preset="length-gen",
        progress=False,
    )
