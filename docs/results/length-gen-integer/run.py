"""length-gen's six experiments with the integer scheme alone (the preset keeps its eight)."""

from relpos.experiments import Variant, get_preset, run_compare

if __name__ == "__main__":  # run_compare's worker processes re-import this file
    experiments = get_preset("length-gen")
    for experiment in experiments:
        experiment.variants = [Variant("integer")]
    run_compare(
        experiments,
        "runs/length-gen-integer",
        command="python run.py (length-gen's experiments, variants=[integer])",
        preset="length-gen",
        progress=False,
    )
