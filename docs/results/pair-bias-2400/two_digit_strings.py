"""Decode all 100 two-digit strings with every model of a compare run folder and list the ones it
reverses wrongly (usage: python two_digit_strings.py RUN_FOLDER ...; the run folders under runs/
are not kept in git, so rerun the compare first)."""

import sys
from pathlib import Path

import torch

from relpos.training.checkpoint import load_run

digits = [str(d) for d in range(10)]
strings = [[a, b] for a in digits for b in digits]
for folder in sys.argv[1:]:
    for run_dir in sorted(Path(folder).glob("runs/*/*/seed*")):
        run = load_run(run_dir)
        source = torch.tensor([run.tokenizer.encode(s) for s in strings])
        output = run.model.generate(source, None, bos=1, eos=2, max_new_tokens=4)
        wrong = [
            f"{''.join(s)}->{''.join(run.tokenizer.decode(o))}"
            for s, o in zip(strings, output.tolist(), strict=True)
            if run.tokenizer.decode(o) != s[::-1]
        ]
        print(f"{run_dir.parent.name} {run_dir.name}: {len(wrong)} wrong {' '.join(wrong)}")
