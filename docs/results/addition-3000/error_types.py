"""How the models of an addition compare go wrong on the unseen lengths: for each run, its own
evaluation sums of every unseen length (regenerated from the run's config and seed), counted as
right, stopping early (fewer tokens than the sum), running long, or of the right length with a
wrong digit; and how many tokens each output gets right before its first error, in the order it
writes them (usage: python error_types.py RUN_FOLDER ...; runs/ folders are not in git)."""

import sys
from collections import Counter
from pathlib import Path

from relpos.tasks import get_task
from relpos.training.checkpoint import load_run


def right_before_first_error(got, expected):
    count = 0
    for a, b in zip(got, expected, strict=False):
        if a != b:
            break
        count += 1
    return count


for folder in sys.argv[1:]:
    for run_dir in sorted(Path(folder).glob("runs/*/*/seed*")):
        run = load_run(run_dir)
        task = get_task(run.config.task, **run.config.task_options)
        data = task.generate(run.config.seed)
        unseen = [ex for ex in data.evaluation if not data.seen(ex.length)]
        outputs = run.predict([ex.source for ex in unseen])
        kinds, prefix = Counter(), Counter()
        for ex, got in zip(unseen, outputs, strict=True):
            expected = list(ex.target)
            if got == expected:
                kinds["right"] += 1
            elif len(got) < len(expected):
                kinds["stops early"] += 1
            elif len(got) > len(expected):
                kinds["runs long"] += 1
            else:
                kinds["wrong digit"] += 1
            prefix[right_before_first_error(got, expected)] += 1
        shown = ", ".join(
            f"{k} {kinds[k]}" for k in ("right", "stops early", "runs long", "wrong digit")
        )
        lengths = " ".join(f"{n}:{prefix[n]}" for n in sorted(prefix))
        print(
            f"{run_dir.parent.name} {run_dir.name}: {shown} (of {len(unseen)}); "
            f"tokens right before the first error: {lengths}"
        )
