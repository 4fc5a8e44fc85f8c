"""How the models of a reverse run go wrong past the training lengths: for 100 fresh random digit
strings of each length 9-16 (seed 1234, not the evaluation set), count outputs that are right,
that stop early (shorter than the input), that run long, or that have the right length and a
wrong digit (usage: python error_types.py RUN_FOLDER ...; runs/ folders are not in git)."""

import random
import sys
from collections import Counter
from pathlib import Path

import torch

from relpos.training.checkpoint import load_run

rng = random.Random(1234)
strings = [[rng.choice("0123456789") for _ in range(n)] for n in range(9, 17) for _ in range(100)]
for folder in sys.argv[1:]:
    for run_dir in sorted(Path(folder).glob("runs/*/*/seed*")):
        run = load_run(run_dir)
        counts: Counter[str] = Counter()
        for length in range(9, 17):
            batch = [s for s in strings if len(s) == length]
            source = torch.tensor([run.tokenizer.encode(s) for s in batch])
            output = run.model.generate(source, None, bos=1, eos=2, max_new_tokens=length + 4)
            for s, o in zip(batch, output.tolist(), strict=True):
                got = run.tokenizer.decode(o)
                if got == s[::-1]:
                    counts["right"] += 1
                elif len(got) < len(s):
                    counts["stops early"] += 1
                elif len(got) > len(s):
                    counts["runs long"] += 1
                else:
                    counts["wrong digit"] += 1
        kinds = ("right", "stops early", "runs long", "wrong digit")
        shown = ", ".join(f"{kind} {counts[kind]}" for kind in kinds)
        print(f"{run_dir.parent.name} {run_dir.name}: {shown} (of 800)")
