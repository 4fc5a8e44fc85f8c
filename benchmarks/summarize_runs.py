"""Combine several ``relpos bench --json`` files: per (length, backend), each run's ratio to SDPA
and the median over runs, as a Markdown table.

    python benchmarks/summarize_runs.py runs/a.json runs/b.json runs/c.json
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict


def main(paths: list[str]) -> None:
    ratios: dict[tuple[int, str], list[float]] = defaultdict(list)
    medians: dict[tuple[int, str], list[float]] = defaultdict(list)
    peaks: dict[tuple[int, str], float | None] = {}
    loads = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            results = json.load(handle)
        loads.append(results["load_average"])
        for row in results["rows"]:
            key = (row["length"], row["backend"])
            ratios[key].append(row["ratio_to_sdpa"])
            medians[key].append(row["median_ms"])
            peaks[key] = row["peak_mib"]
    runs = len(paths)
    print(
        "| L | backend | median ms (median of runs) | × SDPA, each run | × SDPA, median | "
        "peak MiB |"
    )
    print("|---|---|---|---|---|---|")
    for length, backend in sorted(ratios, key=lambda key: (key[0], key[1] != "sdpa", key[1])):
        key = (length, backend)
        each = ", ".join(f"{r:.2f}" for r in ratios[key])
        print(
            f"| {length} | {backend} | {statistics.median(medians[key]):.1f} | {each} | "
            f"{statistics.median(ratios[key]):.2f} | {peaks[key]} |"
        )
    print(f"\n{runs} runs; load average (1, 5, 15 min) before / after each run: ")
    for load in loads:
        print(f"- {load['before']} / {load['after']}")


if __name__ == "__main__":
    main(sys.argv[1:])
