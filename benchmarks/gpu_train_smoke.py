"""End-to-end check of training on a GPU: the default task, Shaw's model in float32 and bf16.

    python benchmarks/gpu_train_smoke.py                 # on CUDA (part of gpu_session.sh)
    python benchmarks/gpu_train_smoke.py --dry-run       # on the CPU, a few steps (the tests)

Trains the main job's task (reverse, lengths 1-8, evaluated to 16) with Shaw's relative attention
(k = 4) and, as the baseline, without positions (SDPA), each in float32 and under bf16 autocast
(``TrainConfig.precision``), and prints per run: seconds per step, the final loss, exact match on
seen and unseen lengths, and which attention backends ran (counted calls; on CUDA ``auto`` should
pick the Triton kernel for Shaw). The model is wider than the CPU default (d = 256, 4 heads of 64)
and keeps the default dropout of 0.1 on the attention weights too, which the kernels draw
themselves (``FusedDropout``; SDPA draws its own for the baseline). One seed and a short budget:
a smoke test with times, not a result.
"""

from __future__ import annotations

import argparse
import collections
import time

import torch

from relpos.attention import api
from relpos.models import ModelConfig
from relpos.training import TrainConfig, train

TASK = {"max_train_length": 8, "max_eval_length": 16, "n_eval_per_length": 20}


def count_backend_calls() -> collections.Counter:
    """Wrap every registered Shaw backend so that each call is counted by name."""
    calls: collections.Counter = collections.Counter()
    for name, function in list(api.BACKENDS.items()):

        def counted(*args, _name=name, _function=function, **kwargs):
            calls[_name] += 1
            return _function(*args, **kwargs)

        api.BACKENDS[name] = counted
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--dry-run", action="store_true", help="CPU, 3 steps, a small model")
    args = parser.parse_args()
    device, steps, width = args.device, args.steps, 256
    if args.dry_run:
        device, steps, width = "cpu", 3, 32
    print(f"torch {torch.__version__}, device {device}, {steps} steps per run", flush=True)
    calls = count_backend_calls()
    print("scheme  precision  ms/step (train+eval)  wall s  final loss  seen  unseen  backends")
    # bf16 first: the setting the GPU is for, printed even if the time bound cuts the rest.
    for precision in ("bf16", "fp32"):
        for scheme, options in (("shaw", {"max_distance": 4}), ("none", {})):
            calls.clear()
            config = TrainConfig(
                task="reverse",
                task_options=TASK,
                model=ModelConfig(
                    d_model=width,
                    num_heads=4,
                    d_ff=4 * width,
                    scheme=scheme,
                    scheme_options=options,
                ),
                steps=steps,
                lr=2e-3,
                warmup_steps=min(50, steps),
                device=device,
                precision=precision,
                threads=None,
            )
            began = time.perf_counter()
            result = train(config, progress=False)
            wall = time.perf_counter() - began
            ms = result.seconds / max(1, steps) * 1e3
            metrics = result.metrics
            print(
                f"{scheme:6s}  {precision:9s}  {ms:20.1f}  {wall:6.1f}  "
                f"{metrics['final_loss']:10.4f}  {metrics['seen']['exact']:4.2f}  "
                f"{metrics['unseen']['exact']:6.2f}  {dict(calls) or '(sdpa)'}",
                flush=True,
            )


if __name__ == "__main__":
    main()
