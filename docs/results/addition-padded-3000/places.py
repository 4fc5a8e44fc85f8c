"""Per-place accuracy of the models of a padded addition compare (``pad_to`` set, so every output
has ``pad_to + 1`` places) on their own unseen-length evaluation sums: place 0 is the units, place
``pad_to`` the carry out of the top digit. For each place, the share of outputs with the right
digit there, over the sums whose digit at that place is not a padding zero, and how many of the
wrong ones wrote 0 there (usage: python places.py RUN_FOLDER ...; runs/ folders are not in git)."""

import sys
from pathlib import Path

from relpos.tasks import get_task
from relpos.training.checkpoint import load_run

for folder in sys.argv[1:]:
    for run_dir in sorted(Path(folder).glob("runs/*/*/seed*")):
        run = load_run(run_dir)
        options = run.config.task_options
        task = get_task(run.config.task, **options)
        data = task.generate(run.config.seed)
        unseen = [ex for ex in data.evaluation if not data.seen(ex.length)]
        outputs = run.predict([ex.source for ex in unseen])
        places = task.pad_to + 1
        right, wrote_zero, counted = [0] * places, [0] * places, [0] * places
        for ex, got in zip(unseen, outputs, strict=True):
            a, b = (
                int(o[::-1] if task.reverse_digits else o) for o in "".join(ex.source).split("+")
            )
            expected = list(ex.target)
            if not task.reverse_digits:  # index by place: units first
                expected, got = expected[::-1], got[::-1]
            for place in range(places):
                if 10**place > a + b:  # a padding zero in the sum: not counted
                    continue
                counted[place] += 1
                have = got[place] if place < len(got) else None
                right[place] += have == expected[place]
                wrote_zero[place] += have != expected[place] and have == "0"
        shown = "  ".join(
            f"{p}:{right[p] / counted[p]:.2f}({wrote_zero[p]}/{counted[p] - right[p]} zero)"
            for p in range(places)
            if counted[p]
        )
        print(f"{run_dir.parent.name} {run_dir.name}: {shown}")
